//! DireClaw's `orchestrator.yaml`, read as it is (its spec §3): the file's agents, its
//! `workflow_orchestration` defaults and one of its workflows become a Steward workflow.
//!
//! A run of one workflow of such a file stores the file's text unchanged with two comment
//! lines added at its end ([`select`]): `# steward_workflow: <id>` and `# steward_origin: <path>`.
//! Comments, because they may follow any document (one that ends in a block scalar, a flow
//! mapping, a `...`) without changing what it says or moving a line. Every reader of a stored
//! definition calls [`super::parse`], which reads a document that lists `workflows` through
//! here, so a resumed run reads the file it started with, and every diagnostic names the line
//! of the orchestrator file itself.
//!
//! How DireClaw's terms map onto Steward's:
//! - an agent's `provider: anthropic` runs the `claude` CLI and `openai` the `codex` CLI
//!   (Steward's `provider: command`, spec 06's command contract); Anthropic's aliases
//!   `sonnet`, `opus` and `haiku` are mapped to their model names, an unknown alias is refused.
//! - limits resolve as §4.8 says: a workflow's `limits`, then the orchestrator's
//!   `workflow_orchestration` (`max_total_iterations`, `default_run_timeout_seconds`,
//!   `default_step_timeout_seconds` capped by `max_step_timeout_seconds`), then DireClaw's
//!   defaults, which are Steward's.
//! - a `next` that names no step (spec §5's engineering example ends with `next: done`) loads,
//!   and the run fails when that step completes, as DireClaw's HEAD reports it
//!   (`TransitionValidation`, not retried).
//! - where DireClaw's baseline and its HEAD differ, both are accepted: `inputs` as a list or a
//!   map, `workspace_mode: agent_workspace` (read as `run_workspace`), an agent's
//!   `private_workspace` and `shared_access` (which Steward's sandbox replaces; ignored).
//!
//! Every workflow of the file is checked, as DireClaw checks the whole file when it loads it;
//! the selected one is returned.

use super::parse::{Reader, join, lookup, suggest};
use super::{AgentDecl, Limits, Provider, Workflow};
use crate::yaml::{Node, NodeKind};

/// The comment [`select`] adds: which workflow of the file the run runs.
const SELECT_MARK: &str = "# steward_workflow: ";
/// The comment [`select`] adds: the file the run came from, for people.
const ORIGIN_MARK: &str = "# steward_origin: ";

const ORCHESTRATOR_KEYS: &[&str] = &[
    "id",
    "selector_agent",
    "default_workflow",
    "selection_max_retries",
    "selector_timeout_seconds",
    "agents",
    "workflows",
    "workflow_orchestration",
];
const AGENT_KEYS: &[&str] = &["provider", "model", "can_orchestrate_workflows", "private_workspace", "shared_access"];
const WORKFLOW_KEYS: &[&str] = &["id", "version", "description", "tags", "inputs", "limits", "steps"];
const ORCHESTRATION_KEYS: &[&str] = &[
    "max_total_iterations",
    "default_run_timeout_seconds",
    "default_step_timeout_seconds",
    "max_step_timeout_seconds",
];
const PROVIDERS: &str = "anthropic, openai";
const STEP_TYPES: &str = "agent_task, agent_review";

/// Anthropic's model aliases (spec 06) and the names they stand for; either spelling is taken.
const ANTHROPIC_MODELS: &[(&str, &str)] =
    &[("sonnet", "claude-sonnet-4-5"), ("opus", "claude-opus-4-6"), ("haiku", "claude-haiku-4-5")];

/// A run's state in DireClaw's words (spec §4.1: `queued`, `running`, `waiting`, `succeeded`,
/// `failed`, `canceled`), for scripts written against DireClaw's `workflow status`. A stalled
/// run waits for `steward resume`; one awaiting a person waits for that person.
pub fn run_state(state: crate::state::RunState) -> &'static str {
    use crate::state::RunState;
    match state {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Stalled | RunState::AwaitingUser => "waiting",
        RunState::Completed | RunState::CompletedWithIssues => "succeeded",
        RunState::Failed | RunState::Poisoned => "failed",
        RunState::Cancelled => "canceled",
    }
}

/// Whether a document is an orchestrator file (it lists `workflows`) rather than one workflow.
pub(super) fn is_orchestrator(root: &Node) -> bool {
    match &root.kind {
        NodeKind::Map(entries) => entries.iter().any(|(k, _)| k.as_str() == Some("workflows")),
        _ => false,
    }
}

/// Whether `text` is an orchestrator file (for commands that treat one differently).
pub fn is_orchestrator_text(text: &str) -> bool {
    crate::yaml::parse(text).is_ok_and(|root| is_orchestrator(&root))
}

/// What Steward stores for a run of `workflow` of the orchestrator file `text` read from
/// `origin`: the file as it is, with the choice noted in two comment lines after its last.
pub fn select(text: &str, workflow: &str, origin: &str) -> String {
    // A JSON string is read back exactly, whatever the id or path holds.
    let quoted = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut out = String::with_capacity(text.len() + workflow.len() + origin.len() + 48);
    out.push_str(text);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{SELECT_MARK}{}\n{ORIGIN_MARK}{}\n", quoted(workflow), quoted(origin)));
    out
}

/// What [`select`] noted at the end of a stored text: the workflow with the line it is noted
/// on, and the origin. Only the trailing comment lines are read, where `select` writes.
#[derive(Debug, Default)]
pub(super) struct Selection {
    workflow: Option<(String, usize)>,
    origin: Option<String>,
}

pub(super) fn selection(text: &str) -> Selection {
    let mut found = Selection::default();
    let read = |rest: &str| serde_json::from_str::<String>(rest.trim()).ok();
    for (i, line) in text.lines().enumerate().collect::<Vec<_>>().into_iter().rev() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            break;
        }
        if let Some(id) = line.strip_prefix(SELECT_MARK).and_then(read) {
            found.workflow.get_or_insert((id, i + 1));
        } else if let Some(origin) = line.strip_prefix(ORIGIN_MARK).and_then(read) {
            found.origin.get_or_insert(origin);
        }
    }
    found
}

/// One workflow of an orchestrator file, as `steward workflow list|show` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Its id.
    pub id: String,
    /// Its description, if it has one.
    pub description: Option<String>,
    /// Its entry in the file, as written.
    pub entry: Node,
}

/// An orchestrator file after checking all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchestratorFile {
    /// The orchestrator's id.
    pub id: String,
    /// Its workflows, in the file's order.
    pub workflows: Vec<Listed>,
}

/// An orchestrator file's id as written (`None` if it has none), without checking the rest:
/// what a registry of orchestrator files looks up.
pub fn orchestrator_id(text: &str) -> Option<String> {
    let root = crate::yaml::parse(text).ok()?;
    let NodeKind::Map(entries) = &root.kind else { return None };
    entries.iter().find(|(k, _)| k.as_str() == Some("id")).and_then(|(_, v)| v.as_str()).map(str::to_owned)
}

/// An orchestrator file's workflows after checking all of it, or every problem found.
pub fn read(text: &str) -> Result<OrchestratorFile, Vec<super::Diagnostic>> {
    let root = super::parse::root_of(text)?;
    if !is_orchestrator(&root) {
        return Err(vec![super::Diagnostic::error(
            root.pos.line,
            None,
            "workflows",
            "not an orchestrator file: it lists no `workflows`",
        )]);
    }
    let mut r = Reader::default();
    match r.orchestrator_file(&root) {
        Some(o) if r.diags.is_empty() => {
            Ok(OrchestratorFile { id: o.id, workflows: o.workflows.into_iter().map(|(listed, _)| listed).collect() })
        }
        _ => {
            r.diags.sort_by_key(|d| d.line);
            Err(r.diags)
        }
    }
}

/// An orchestrator file as read: its id and each workflow with what it became.
struct Orchestrator {
    id: String,
    workflows: Vec<(Listed, Option<Workflow>)>,
}

impl Reader {
    /// The workflow of an orchestrator file that [`select`]'s note chose.
    pub(super) fn orchestrator(&mut self, root: &Node, chosen: Selection) -> Option<Workflow> {
        let o = self.orchestrator_file(root)?;
        let Some((selected, line)) = chosen.workflow else {
            let ids: Vec<&str> = o.workflows.iter().map(|(l, _)| l.id.as_str()).collect();
            self.err(
                root.pos.line,
                "",
                format!(
                    "orchestrator `{}` holds {} workflow(s) ({}): name the one to run (`--workflow ID`)",
                    o.id,
                    ids.len(),
                    ids.join(", ")
                ),
            );
            return None;
        };
        let known: Vec<String> = o.workflows.iter().map(|(l, _)| l.id.clone()).collect();
        let Some(index) = known.iter().position(|id| *id == selected) else {
            self.err(
                line,
                "",
                format!(
                    "invalid workflow id `{selected}`{}: orchestrator `{}` declares {}",
                    suggest(&selected, known.iter().map(String::as_str)),
                    o.id,
                    known.join(", ")
                ),
            );
            return None;
        };
        // What was noted about the other workflows of the file is not this run's concern.
        let own = format!("workflows[{index}]");
        self.notes.retain(|n| !n.field.starts_with("workflows[") || n.field.starts_with(&own));
        let mut wf = o.workflows.into_iter().nth(index).and_then(|(_, wf)| wf)?;
        let from = chosen.origin.unwrap_or_else(|| "an orchestrator file".to_owned());
        wf.origin = Some(format!("{from}: orchestrator {}, workflow {}", o.id, wf.id));
        Some(wf)
    }

    /// Reads and checks the whole file.
    fn orchestrator_file(&mut self, root: &Node) -> Option<Orchestrator> {
        self.direclaw = true;
        let entries = self.map(root, "", ORCHESTRATOR_KEYS)?;
        let get = |k: &str| lookup(&entries, k);
        let required = |r: &mut Reader, k: &str| match get(k) {
            Some(n) => r.string(n, k).map(|s| (s, n.pos.line)),
            None => {
                r.err(root.pos.line, k, format!("missing required key `{k}`"));
                None
            }
        };
        let id = required(self, "id");
        if let Some((id, line)) = &id
            && !super::parse::valid_id(id)
        {
            self.err(*line, "id", format!("`{id}` is not a valid id (letters, digits, `_` and `-`)"));
        }
        let selector = required(self, "selector_agent");
        let default_workflow = required(self, "default_workflow");
        for k in ["selection_max_retries", "selector_timeout_seconds"] {
            if let Some(n) = get(k) {
                self.uint(n, k, 1);
            }
        }

        let agents = match get("agents") {
            Some(n) => self.direclaw_agents(n),
            None => {
                self.err(root.pos.line, "agents", "missing required key `agents`: no agents are configured");
                Vec::new()
            }
        };
        if let Some((selector, line)) = &selector {
            match agents.iter().find(|(a, _)| &a.id == selector) {
                None => {
                    self.err(*line, "selector_agent", format!("selector agent `{selector}` is missing from `agents`"))
                }
                Some((_, false)) => self.err(
                    *line,
                    "selector_agent",
                    format!(
                        "selector agent `{selector}` cannot orchestrate workflows (`can_orchestrate_workflows: true`)"
                    ),
                ),
                Some(_) => {}
            }
        }
        let base = get("workflow_orchestration").map_or_else(Limits::default, |n| self.orchestration(n));
        let agents: Vec<AgentDecl> = agents.into_iter().map(|(a, _)| a).collect();

        let list = get("workflows")?;
        let NodeKind::Seq(items) = &list.kind else {
            self.err(list.pos.line, "workflows", format!("expected a list of workflows, found a {}", list.kind_name()));
            return None;
        };
        if items.is_empty() {
            self.err(list.pos.line, "workflows", "an orchestrator needs at least one workflow");
        }
        let mut workflows: Vec<(Listed, Option<Workflow>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("workflows[{i}]");
            let Some(wf_entries) = self.map(item, &field, WORKFLOW_KEYS) else { continue };
            let wf_get = |k: &str| lookup(&wf_entries, k);
            if let Some(n) = wf_get("tags") {
                self.string_list(n, &join(&field, "tags"));
            }
            let wf_id = wf_get("id").and_then(|n| self.string(n, &join(&field, "id")));
            if let Some(wf_id) = &wf_id
                && let Some((first, _)) = workflows.iter().find(|(l, _)| &l.id == wf_id)
            {
                let line = wf_get("id").map_or(item.pos.line, |n| n.pos.line);
                self.err(line, join(&field, "id"), format!("duplicate workflow id `{}`", first.id));
            }
            let steps = wf_get("steps");
            if let Some(steps) = steps {
                self.direclaw_steps(steps, &join(&field, "steps"));
            }
            self.prefix = field;
            let wf = self.workflow_body(item, &wf_entries, agents.clone(), base);
            self.prefix.clear();
            self.step = None;
            let description = wf.as_ref().and_then(|w| w.description.clone());
            workflows.push((Listed { id: wf_id.unwrap_or_default(), description, entry: item.clone() }, wf));
        }
        if let Some((default, line)) = &default_workflow
            && !workflows.iter().any(|(l, _)| &l.id == default)
        {
            self.err(*line, "default_workflow", format!("default workflow `{default}` is not among the workflows"));
        }
        Some(Orchestrator { id: id.map(|(id, _)| id).unwrap_or_default(), workflows })
    }

    /// `agents:` with whether each may orchestrate workflows.
    fn direclaw_agents(&mut self, node: &Node) -> Vec<(AgentDecl, bool)> {
        let mut out = Vec::new();
        if matches!(&node.kind, NodeKind::Map(entries) if entries.is_empty()) {
            self.err(node.pos.line, "agents", "no agents are configured");
        }
        for (id, decl, a) in self.agent_entries(node, AGENT_KEYS) {
            let field = format!("agents.{id}");
            let get = |k: &str| lookup(&a, k);
            let provider = match get("provider") {
                Some(n) => self.string(n, &join(&field, "provider")).map(|p| (p, n.pos.line)),
                None => {
                    self.err(
                        decl.pos.line,
                        join(&field, "provider"),
                        format!("missing required key `provider` ({PROVIDERS})"),
                    );
                    None
                }
            };
            let model = match get("model") {
                Some(n) => self.string(n, &join(&field, "model")).map(|m| (m, n.pos.line)),
                None => {
                    self.err(decl.pos.line, join(&field, "model"), "missing required key `model`");
                    None
                }
            };
            let orchestrates = get("can_orchestrate_workflows")
                .and_then(|n| self.bool(n, &join(&field, "can_orchestrate_workflows")))
                .unwrap_or(false);
            // The baseline's; the sandbox decides what a step may touch, so both are read and
            // said to be ignored.
            if let Some(n) = get("private_workspace") {
                let key = join(&field, "private_workspace");
                if self.string(n, &key).is_some() {
                    self.note(
                        n.pos.line,
                        key,
                        "ignored: the agent's CLI runs in the run's directory, in Steward's sandbox",
                    );
                }
            }
            if let Some(n) = get("shared_access") {
                let key = join(&field, "shared_access");
                if self.string_list(n, &key).is_some() {
                    self.note(
                        n.pos.line,
                        key,
                        "ignored: what the agent's CLI may read and write is the sandbox's to decide ([sandbox] in steward.toml)",
                    );
                }
            }
            let cli = match provider.as_ref().map(|(p, line)| (p.as_str(), *line)) {
                Some(("anthropic", _)) => "claude",
                Some(("openai", _)) => "codex",
                Some((other, line)) => {
                    self.err(
                        line,
                        join(&field, "provider"),
                        format!(
                            "unknown provider `{other}`{} (expected one of: {PROVIDERS})",
                            suggest(other, PROVIDERS.split(", "))
                        ),
                    );
                    continue;
                }
                None => continue,
            };
            let Some((model, line)) = model else { continue };
            let model = if cli == "claude" {
                match ANTHROPIC_MODELS.iter().find(|(alias, name)| *alias == model || *name == model) {
                    Some((_, name)) => (*name).to_owned(),
                    None => {
                        let known: Vec<&str> = ANTHROPIC_MODELS.iter().flat_map(|(a, n)| [*a, *n]).collect();
                        self.err(
                            line,
                            join(&field, "model"),
                            format!(
                                "unknown anthropic model `{model}`{} (expected one of: {})",
                                suggest(&model, known.iter().copied()),
                                known.join(", ")
                            ),
                        );
                        continue;
                    }
                }
            } else {
                model
            };
            let agent = AgentDecl {
                id: id.to_owned(),
                provider: Provider::Command,
                model,
                base_url: None,
                api_key_env: None,
                options: Default::default(),
                cli: Some(cli.to_owned()),
                script: None,
                line: decl.pos.line,
            };
            out.push((agent, orchestrates));
        }
        out
    }

    /// `workflow_orchestration:` as the limits a workflow starts from (§4.8).
    fn orchestration(&mut self, node: &Node) -> Limits {
        let mut l = Limits::default();
        for (k, v) in self.map(node, "workflow_orchestration", ORCHESTRATION_KEYS).unwrap_or_default() {
            let f = join("workflow_orchestration", k);
            match k {
                "max_total_iterations" => l.max_total_iterations = self.u32(v, &f, 1).unwrap_or(l.max_total_iterations),
                "default_run_timeout_seconds" => {
                    l.run_timeout_seconds = self.uint(v, &f, 1).unwrap_or(l.run_timeout_seconds)
                }
                "default_step_timeout_seconds" => {
                    l.step_timeout_seconds = self.uint(v, &f, 1).unwrap_or(l.step_timeout_seconds)
                }
                _ => self.max_step_timeout = self.uint(v, &f, 1),
            }
        }
        l
    }

    /// DireClaw's own rules for steps, beyond Steward's: agent steps only, a non-empty prompt,
    /// and `outputs` that come with `output_files`.
    fn direclaw_steps(&mut self, steps: &Node, field: &str) {
        let NodeKind::Seq(items) = &steps.kind else { return };
        for (i, step) in items.iter().enumerate() {
            let base = format!("{field}[{i}]");
            let NodeKind::Map(entries) = &step.kind else { continue };
            let get = |k: &str| entries.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v);
            self.step = get("id").and_then(|n| n.as_str()).map(str::to_owned);
            if let Some(t) = get("type").and_then(|n| n.as_str())
                && !matches!(t, "agent_task" | "agent_review")
            {
                let line = get("type").map_or(step.pos.line, |n| n.pos.line);
                self.err(line, join(&base, "type"), format!("an orchestrator's steps are {STEP_TYPES}, not `{t}`"));
            }
            if let Some(p) = get("prompt")
                && p.as_str().is_some_and(|p| p.trim().is_empty())
            {
                self.err(p.pos.line, join(&base, "prompt"), "the prompt is empty");
            }
            let Some(outputs) = get("outputs") else { continue };
            let keys: Vec<String> = match &outputs.kind {
                NodeKind::Seq(keys) => {
                    keys.iter().filter_map(|k| k.as_str()).map(|k| k.trim_end_matches('?').to_owned()).collect()
                }
                _ => continue,
            };
            if keys.is_empty() {
                self.err(outputs.pos.line, join(&base, "outputs"), "`outputs` is empty: list a key, or leave it out");
                continue;
            }
            // Each key's path is Steward's own rule (`output ... has no file in output_files`);
            // DireClaw's adds that `outputs` come with `output_files` at all.
            if get("output_files").is_none() {
                self.err(
                    outputs.pos.line,
                    join(&base, "output_files"),
                    format!("`outputs` needs `output_files` with a path for each key ({})", keys.join(", ")),
                );
            }
        }
        self.step = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Ref;
    use crate::workflow::{StepKind, WorkspaceMode, parse};

    /// Spec §5's minimal orchestrator (baseline: `agent_workspace`, `outputs: [result]`).
    const MINIMAL: &str = r#"id: default_orchestrator
selector_agent: workflow_router
default_workflow: minimal_single_agent
selection_max_retries: 2
agents:
  workflow_router:
    provider: anthropic
    model: sonnet
    can_orchestrate_workflows: true
  default:
    provider: anthropic
    model: sonnet
workflows:
  - id: minimal_single_agent
    version: 1
    inputs: [user_prompt]
    steps:
      - id: generate
        type: agent_task
        agent: default
        workspace_mode: agent_workspace
        prompt: |
          {{inputs.user_prompt}}
          Write the result to {{workflow.output_paths.result}}.
        outputs: [result]
        output_files:
          result: output/result__{{workflow.run_id}}__{{workflow.step_id}}__a{{workflow.attempt}}.md
  - id: review_loop
    version: 2
    description: plan, then review
    inputs:
      user_message: string
    limits:
      max_total_iterations: 6
    steps:
      - id: plan
        type: agent_task
        agent: default
        prompt: "Plan {{inputs.user_message}}. Feedback: {{state.review_feedback}}"
        outputs: [plan_doc]
        output_files: {plan_doc: "plan/{{workflow.run_id}}.md"}
      - id: review
        type: agent_review
        agent: workflow_router
        prompt: "Review {{steps.plan.outputs.plan_doc}}"
        on_approve: plan
        on_reject: plan
        outputs: [decision, feedback?]
        output_files: {decision: "review/d.md", feedback: "review/f.md"}
        limits: {max_retries: 3}
        write_state: {review_feedback: "{{ outputs.feedback }}"}
workflow_orchestration:
  max_total_iterations: 12
  default_run_timeout_seconds: 3600
  default_step_timeout_seconds: 900
  max_step_timeout_seconds: 600
"#;

    fn errors_of(text: &str) -> Vec<String> {
        parse(text).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_selected_workflow_becomes_a_steward_workflow() {
        let wf = parse(&select(MINIMAL, "minimal_single_agent", "examples/o.yaml")).unwrap();
        assert_eq!(wf.id, "minimal_single_agent");
        assert_eq!(
            wf.origin.as_deref(),
            Some("examples/o.yaml: orchestrator default_orchestrator, workflow minimal_single_agent")
        );
        // provider anthropic runs the claude CLI, the alias mapped (spec 06).
        let agent = wf.agent("default").unwrap();
        assert_eq!(
            (agent.provider, agent.cli.as_deref(), agent.model.as_str()),
            (Provider::Command, Some("claude"), "claude-sonnet-4-5")
        );
        // §4.8: the orchestrator's defaults, the step timeout capped by max_step_timeout_seconds.
        assert_eq!((wf.limits.max_total_iterations, wf.limits.run_timeout_seconds), (12, 3600));
        assert_eq!(wf.limits.step_timeout_seconds, 600);
        assert_eq!(wf.steps[0].timeout_seconds, 600);
        let StepKind::Agent(a) = &wf.steps[0].kind else { panic!("an agent step") };
        assert_eq!(a.workspace_mode, WorkspaceMode::Agent, "the baseline's agent_workspace is accepted");
        assert!(wf.input("user_prompt").is_some_and(|i| i.required), "the list form declares required inputs");
    }

    #[test]
    fn workflow_limits_inputs_as_a_map_and_write_state() {
        let wf = parse(&select(MINIMAL, "review_loop", "o.yaml")).unwrap();
        assert_eq!(wf.limits.max_total_iterations, 6, "the workflow's own limit wins");
        assert_eq!(wf.limits.run_timeout_seconds, 3600);
        assert_eq!(wf.description.as_deref(), Some("plan, then review"));
        assert!(wf.input("user_message").is_some());
        let review = wf.step("review").unwrap();
        assert_eq!(review.retry.max_attempts, 4, "limits.max_retries: 3");
        let StepKind::Agent(a) = &review.kind else { panic!("an agent step") };
        assert!(a.review);
        let (key, t) = &a.write_state[0];
        assert_eq!(key, "review_feedback");
        let refs: Vec<&Ref> = t.refs().collect();
        assert_eq!(
            refs,
            [&Ref::StepOutput { step: "review".into(), key: "feedback".into() }],
            "{{outputs.k}} is the step's own"
        );
        let StepKind::Agent(plan) = &wf.step("plan").unwrap().kind else { panic!("an agent step") };
        assert_eq!(plan.workspace_mode, WorkspaceMode::Run);
        let other = wf.agent("workflow_router").unwrap();
        assert_eq!(other.model, "claude-sonnet-4-5");
    }

    #[test]
    fn the_workflow_to_run_is_named() {
        let errors = errors_of(MINIMAL);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("holds 2 workflow(s) (minimal_single_agent, review_loop)")
                && errors[0].contains("--workflow"),
            "{errors:?}"
        );
        let errors = errors_of(&select(MINIMAL, "review-lop", "o.yaml"));
        assert!(
            errors[0].contains("invalid workflow id `review-lop`") && errors[0].contains("review_loop"),
            "{errors:?}"
        );
        let file = read(MINIMAL).unwrap();
        assert_eq!(file.id, "default_orchestrator");
        let listed: Vec<(&str, Option<&str>, usize)> =
            file.workflows.iter().map(|l| (l.id.as_str(), l.description.as_deref(), l.entry.pos.line)).collect();
        assert_eq!(listed, [("minimal_single_agent", None, 14), ("review_loop", Some("plan, then review"), 28)]);
        assert_eq!(orchestrator_id(MINIMAL).as_deref(), Some("default_orchestrator"));
        assert_eq!(orchestrator_id("workflows: []"), None);
    }

    /// DireClaw stores every `--input` of a run; its channel-started runs carry `channel`,
    /// `sender_id`, ... that `{{workflow.channel}}` reads. A Steward file declares what it reads.
    #[test]
    fn an_orchestrators_runs_take_any_input_and_channel_placeholders_read_them() {
        let text = MINIMAL.replace("Write the result to", "From {{workflow.channel}}. Write the result to");
        let wf = parse(&select(&text, "minimal_single_agent", "o.yaml")).unwrap();
        assert!(wf.open_inputs);
        let given = serde_json::json!({"user_prompt": "x", "channel": "slack"});
        let resolved = crate::inputs::resolve(&wf, given.as_object().unwrap()).unwrap();
        assert_eq!(resolved["channel"], "slack");
        // ... named as any input is: a line break in a name would forge `key=value` output.
        let forged = serde_json::json!({"user_prompt": "x", "a\nstate=succeeded": "1"});
        let errors = crate::inputs::resolve(&wf, forged.as_object().unwrap()).unwrap_err();
        assert!(errors[0].contains("input name \"a\\nstate=succeeded\" is not a valid name"), "{errors:?}");
        let errors =
            errors_of("id: s\nversion: 1\nsteps:\n  - {id: a, type: shell, run: \"echo {{workflow.channel}}\"}\n");
        assert!(
            errors[0].contains(
                "template `{{workflow.channel}}` reads the run's `channel` input, which the workflow does not declare"
            ),
            "{errors:?}"
        );
        let steward = parse("id: s\nversion: 1\nsteps:\n  - {id: a, type: noop}\n").unwrap();
        assert!(crate::inputs::resolve(&steward, given.as_object().unwrap()).is_err(), "a Steward file's are refused");
    }

    /// Spec §3's validation rules, each a located error naming the file's line and field.
    #[test]
    fn the_rules_of_spec_3_hold_with_located_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "id: default_orchestrator",
                "id: \"default\\norchestrator\"",
                "line 1, field `id`: `default\norchestrator` is not a valid id",
            ),
            (
                "    can_orchestrate_workflows: true\n",
                "    can_orchestrate_workflows: false\n",
                "line 2, field `selector_agent`: selector agent `workflow_router` cannot orchestrate workflows",
            ),
            (
                "default_workflow: minimal_single_agent",
                "default_workflow: nope",
                "line 3, field `default_workflow`: default workflow `nope` is not among the workflows",
            ),
            (
                "  default:\n    provider: anthropic",
                "  default:\n    provider: gemini",
                "line 11, field `agents.default.provider`: unknown provider `gemini`",
            ),
            (
                "  default:\n    provider: anthropic\n    model: sonnet",
                "  default:\n    provider: anthropic\n    model: sonet",
                "line 12, field `agents.default.model`: unknown anthropic model `sonet` (did you mean `sonnet`?)",
            ),
            (
                "        outputs: [result]\n",
                "        outputs: [result, extra]\n",
                "step `generate`, field `workflows[0].steps[0].output_files`: output `extra` has no file in `output_files`",
            ),
            (
                "        type: agent_task\n        agent: default\n        workspace_mode",
                "        type: shell\n        agent: default\n        workspace_mode",
                "step `generate`, field `workflows[0].steps[0].type`: an orchestrator's steps are agent_task, agent_review, not `shell`",
            ),
            (
                "workspace_mode: agent_workspace",
                "workspace_mode: my_workspace",
                "line 21, step `generate`, field `workflows[0].steps[0].workspace_mode`: unknown workspace_mode `my_workspace`",
            ),
            (
                "selection_max_retries: 2",
                "selection_max_retries: 0",
                "line 4, field `selection_max_retries`: expected a whole number >= 1, found `0`",
            ),
            (
                "    version: 2\n",
                "    version: 2\n    tags: [a]\n    needs: x\n",
                "field `workflows[1].needs`: unknown key `needs`",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(MINIMAL.contains(from), "{from:?}");
            let text = select(&MINIMAL.replacen(from, to, 1), "minimal_single_agent", "o.yaml");
            let errors = errors_of(&text);
            assert!(errors.iter().any(|e| e.contains(expected)), "expected {expected:?} in {errors:#?}");
        }
        // Outputs without their files; an empty prompt; a step of another workflow is checked too.
        let text = MINIMAL
            .replacen("        output_files: {plan_doc: \"plan/{{workflow.run_id}}.md\"}\n", "", 1)
            .replacen("prompt: \"Review {{steps.plan.outputs.plan_doc}}\"", "prompt: \" \"", 1);
        let errors = errors_of(&select(&text, "minimal_single_agent", "o.yaml"));
        assert!(errors.iter().any(|e| e.contains("step `plan`, field `workflows[1].steps[0].output_files`: `outputs` needs `output_files` with a path for each key (plan_doc)")), "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("step `review`, field `workflows[1].steps[1].prompt`: the prompt is empty")),
            "{errors:#?}"
        );
        // No agents at all.
        let bare = "id: o\nselector_agent: r\ndefault_workflow: w\nagents: {}\nworkflows: []\n";
        let errors = errors_of(bare);
        assert!(errors.iter().any(|e| e.contains("no agents are configured")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("an orchestrator needs at least one workflow")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("selector agent `r` is missing")), "{errors:#?}");
    }

    #[test]
    fn openai_agents_run_codex_with_the_model_as_written() {
        let text = MINIMAL.replacen(
            "  default:\n    provider: anthropic\n    model: sonnet",
            "  default:\n    provider: openai\n    model: gpt-5.3-codex",
            1,
        );
        let wf = parse(&select(&text, "minimal_single_agent", "o.yaml")).unwrap();
        let a = wf.agent("default").unwrap();
        assert_eq!((a.cli.as_deref(), a.model.as_str()), (Some("codex"), "gpt-5.3-codex"));
        // The baseline's agent fields are accepted (HEAD refuses them; Steward's sandbox replaces them).
        let text = MINIMAL.replacen(
            "    model: sonnet\nworkflows:",
            "    model: sonnet\n    private_workspace: /tmp/x\n    shared_access: [docs]\nworkflows:",
            1,
        );
        assert_ne!(text, MINIMAL);
        parse(&select(&text, "minimal_single_agent", "o.yaml")).unwrap();
        // ... and said to be ignored, as is the baseline's agent_workspace, each at its line.
        let notes: Vec<String> = crate::workflow::compatibility_notes(&text).iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("line 13, field `agents.default.private_workspace`: ignored"), "{notes:?}");
        assert!(notes[1].starts_with("line 14, field `agents.default.shared_access`: ignored"), "{notes:?}");
        assert!(
            notes[2].contains("field `workflows[0].steps[0].workspace_mode`: `agent_workspace` (DireClaw's baseline)"),
            "{notes:?}"
        );
    }

    #[test]
    fn a_transition_that_names_no_step_loads_from_an_orchestrator_file_only() {
        let text =
            MINIMAL.replacen("        outputs: [result]\n", "        next: done\n        outputs: [result]\n", 1);
        let wf = parse(&select(&text, "minimal_single_agent", "o.yaml")).unwrap();
        assert_eq!(wf.steps[0].missing_target(None), Some("done"));
        assert_eq!(
            parse(&select(MINIMAL, "minimal_single_agent", "o.yaml")).unwrap().steps[0].missing_target(None),
            None
        );
        let steward = "id: s\nversion: 1\nsteps:\n  - {id: a, type: noop, next: done}\n";
        let errors = errors_of(steward);
        assert!(errors[0].contains("unknown step `done`"), "{errors:?}");
        // So may a review's targets (spec §4.7's fixture approves to `done`).
        let text = MINIMAL.replacen("on_approve: plan", "on_approve: done", 1);
        let wf = parse(&select(&text, "review_loop", "o.yaml")).unwrap();
        let review = wf.step("review").unwrap();
        assert_eq!((review.missing_target(Some(true)), review.missing_target(Some(false))), (Some("done"), None));
    }

    #[test]
    fn the_choice_is_noted_in_comments_after_the_last_line() {
        let text = select("id: o\nworkflows: []", "w \"x\"", "a path/o.yaml");
        assert_eq!(
            text,
            "id: o\nworkflows: []\n# steward_workflow: \"w \\\"x\\\"\"\n# steward_origin: \"a path/o.yaml\"\n"
        );
        let chosen = selection(&text);
        assert_eq!((chosen.workflow, chosen.origin.as_deref()), (Some(("w \"x\"".into(), 3)), Some("a path/o.yaml")));
        // Whatever the file ends with, the comments say nothing to YAML: a block scalar, a
        // document end marker, a flow mapping (after a `---` line, a comment with braces).
        let flow = "---\n{id: o, selector_agent: r, default_workflow: w,\n agents: {r: {provider: anthropic, model: sonnet, can_orchestrate_workflows: true}},\n workflows: [{id: w, version: 1, steps: [{id: s, type: agent_task, agent: r, prompt: hi}]}]}  # see {x}\n";
        for (file, id) in [
            (MINIMAL.to_owned(), "review_loop"),
            (format!("{MINIMAL}... # the end\n"), "review_loop"),
            (flow.to_owned(), "w"),
        ] {
            let wf = parse(&select(&file, id, "o.yaml")).unwrap_or_else(|e| panic!("{file}: {e:?}"));
            assert_eq!(wf.id, id);
            assert!(wf.origin.as_deref().unwrap().starts_with("o.yaml: orchestrator "));
        }
        assert_eq!(parse(&select(flow, "w", "o.yaml")).unwrap().steps[0].line, 4, "no line moves");
        // A prompt's own text is not a choice: only the trailing comment lines are read.
        let inside = MINIMAL.replacen("Review {{", "# steward_workflow: \"minimal_single_agent\"\n Review {{", 1);
        assert!(selection(&inside).workflow.is_none());
    }
}
