//! Reads a workflow from YAML text, collecting every problem as a located diagnostic.

use serde_json::Value;

use super::graph::Route;
use super::{
    AgentDecl, AgentStep, ApprovalStep, Diagnostic, Graph, InputDecl, InputType, Limits, MicroTasksStep, OutputDecl,
    Provider, RetryPolicy, ShellStep, Step, StepKind, Workflow, WorkspaceMode,
};
use crate::template::{Part, Ref, Template, TemplateError, WorkflowVar};
use crate::yaml::{self, Node, NodeKind};

const TOP_KEYS: &[&str] =
    &["id", "version", "description", "capability_profile", "inputs", "limits", "agents", "steps"];
const AGENT_KEYS: &[&str] = &["provider", "model", "base_url", "api_key_env", "options", "cli", "script"];
const STEP_LIMIT_KEYS: &[&str] = &["max_retries"];
const PROVIDERS: &str = "openai, ollama, command, scripted";
const INPUT_KEYS: &[&str] = &["type", "required", "default", "description", "secret"];
const LIMIT_KEYS: &[&str] = &[
    "max_total_iterations",
    "run_timeout_seconds",
    "step_timeout_seconds",
    "max_retries",
    "max_concurrent_steps",
    "max_recoveries",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "type",
    "description",
    "run",
    "env",
    "cwd",
    "agent",
    "prompt",
    "output_files",
    "timeout_seconds",
    "retry",
    "limits",
    "needs",
    "next",
    "on_approve",
    "on_reject",
    "on_timeout",
    "outputs",
    "packet",
    "policy",
    "form",
    "approvers",
    "workspace_mode",
    "write_state",
];
const SHELL_ONLY: &[&str] = &["run", "env", "cwd"];
const AGENT_ONLY: &[&str] = &["agent", "output_files", "workspace_mode", "write_state"];
/// DireClaw's `workspace_mode` values; `agent_workspace` is the baseline's, dropped at HEAD.
const WORKSPACE_MODES: &str = "run_workspace, orchestrator_workspace, agent_workspace";
const PROMPTED_ONLY: &[&str] = &["prompt"];
const MICRO_TASKS_ONLY: &[&str] = &["packet", "policy"];
const APPROVAL_ONLY: &[&str] = &["form", "approvers", "on_timeout"];
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff"];
const BACKOFF_KEYS: &[&str] = &["initial_seconds", "multiplier", "max_seconds"];
const STEP_TYPES: &str = "shell, noop, agent_task, agent_review, micro_tasks, approval";

/// Parses and validates a workflow definition. On failure, every problem found.
pub fn parse(source: &str) -> Result<Workflow, Vec<Diagnostic>> {
    let (wf, mut r) = read(source)?;
    if r.diags.is_empty()
        && let Some(wf) = wf
    {
        return Ok(wf);
    }
    r.diags.sort_by_key(|d| d.line);
    Err(r.diags)
}

/// What reading `source` decided on its author's behalf that a DireClaw user may not expect (a
/// key Steward ignores, or reads as DireClaw's later versions do), as located warnings: the
/// definition runs, and says so once.
pub fn compatibility_notes(source: &str) -> Vec<Diagnostic> {
    let mut notes = read(source).map(|(_, r)| r.notes).unwrap_or_default();
    notes.sort_by_key(|d| d.line);
    notes
}

fn read(source: &str) -> Result<(Option<Workflow>, Reader), Vec<Diagnostic>> {
    let root = root_of(source)?;
    let mut r = Reader::default();
    let wf = if super::direclaw::is_orchestrator(&root) {
        r.orchestrator(&root, super::direclaw::selection(source))
    } else {
        r.workflow(&root)
    };
    Ok((wf, r))
}

/// The document's tree, or where it is not YAML.
pub(super) fn root_of(source: &str) -> Result<Node, Vec<Diagnostic>> {
    yaml::parse(source).map_err(|errs| {
        errs.into_iter()
            .map(|e| Diagnostic::error(e.pos.line, None, "", format!("invalid YAML: {}", e.message)))
            .collect::<Vec<_>>()
    })
}

/// A mapping's entries as [`Reader::map`] returns them: key and value, in file order.
pub(super) type Entries<'a> = Vec<(&'a str, &'a Node)>;

#[derive(Default)]
pub(super) struct Reader {
    pub(super) diags: Vec<Diagnostic>,
    /// Warnings about what was read differently than a DireClaw user may expect.
    pub(super) notes: Vec<Diagnostic>,
    pub(super) step: Option<String>,
    /// Put before every diagnostic's field: `workflows[2]` while one workflow of an
    /// orchestrator file is read.
    pub(super) prefix: String,
    /// An orchestrator's `max_step_timeout_seconds`: no step's timeout is longer.
    pub(super) max_step_timeout: Option<u64>,
    /// Whether the file is read as DireClaw reads an orchestrator file: a `next` that names no
    /// step loads (the run fails when it is taken), and inputs need not be declared.
    pub(super) direclaw: bool,
}

/// A step as read, before references are resolved.
struct RawStep<'a> {
    id: String,
    node: &'a Node,
    kind: Option<StepKind>,
    needs: Option<Vec<(String, usize)>>,
    next: Option<(String, usize)>,
    outputs: Vec<OutputDecl>,
    timeout_seconds: Option<u64>,
    retry: Option<RetryPolicyRaw>,
    templates: Vec<(String, usize, Template)>,
    /// Templates rendered once the step has completed (`write_state`): they may read its own
    /// outputs.
    after: Vec<(String, usize, Template)>,
    /// `(agent, line)` for agent steps.
    agent: Option<(String, usize)>,
    on_approve: Option<(String, usize)>,
    on_reject: Option<(String, usize)>,
    on_timeout: Option<(String, usize)>,
}

struct RetryPolicyRaw {
    max_attempts: Option<u32>,
    initial_delay_ms: Option<u64>,
    multiplier: Option<f64>,
    max_delay_ms: Option<u64>,
}

impl Reader {
    pub(super) fn err(&mut self, line: usize, field: impl Into<String>, message: impl Into<String>) {
        let field = join(&self.prefix, &field.into());
        self.diags.push(Diagnostic::error(line, self.step.clone(), field, message));
    }

    /// A located warning: the definition is valid, but reads differently than DireClaw did.
    pub(super) fn note(&mut self, line: usize, field: impl Into<String>, message: impl Into<String>) {
        let field = join(&self.prefix, &field.into());
        self.notes.push(Diagnostic::warning(line, self.step.clone(), field, message));
    }

    /// The entries of a mapping, reporting unknown keys. `None` if not a mapping.
    pub(super) fn map<'a>(&mut self, node: &'a Node, field: &str, allowed: &[&str]) -> Option<Entries<'a>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(node.pos.line, field, format!("expected a mapping, found a {}", node.kind_name()));
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.err(k.pos.line, field, "mapping keys must be strings");
                continue;
            };
            if !allowed.is_empty() && !allowed.contains(&key) {
                let f = join(field, key);
                self.err(
                    k.pos.line,
                    f,
                    format!(
                        "unknown key `{key}`{} (expected one of: {})",
                        suggest(key, allowed.iter().copied()),
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            out.push((key, v));
        }
        Some(out)
    }

    pub(super) fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar(s) if !s.text.is_empty() || s.quoted => Some(s.text.clone()),
            _ => {
                self.err(node.pos.line, field, format!("expected a string, found a {}", node.kind_name()));
                None
            }
        }
    }

    pub(super) fn uint(&mut self, node: &Node, field: &str, min: u64) -> Option<u64> {
        match node.to_json() {
            Value::Number(n) if n.as_u64().is_some_and(|v| v >= min) => n.as_u64(),
            other => {
                self.err(node.pos.line, field, format!("expected a whole number >= {min}, found {}", show(&other)));
                None
            }
        }
    }

    pub(super) fn u32(&mut self, node: &Node, field: &str, min: u64) -> Option<u32> {
        let v = self.uint(node, field, min)?;
        match u32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(node.pos.line, field, format!("{v} is too large"));
                None
            }
        }
    }

    fn float(&mut self, node: &Node, field: &str) -> Option<f64> {
        match node.to_json() {
            Value::Number(n) if n.as_f64().is_some_and(|f| f > 0.0) => n.as_f64(),
            other => {
                self.err(node.pos.line, field, format!("expected a positive number, found {}", show(&other)));
                None
            }
        }
    }

    pub(super) fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match node.to_json() {
            Value::Bool(b) => Some(b),
            other => {
                self.err(node.pos.line, field, format!("expected true or false, found {}", show(&other)));
                None
            }
        }
    }

    pub(super) fn string_list(&mut self, node: &Node, field: &str) -> Option<Vec<(String, usize)>> {
        let NodeKind::Seq(items) = &node.kind else {
            self.err(node.pos.line, field, format!("expected a list of strings, found a {}", node.kind_name()));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.string(item, &format!("{field}[{i}]")) {
                out.push((s, item.pos.line));
            }
        }
        Some(out)
    }

    pub(super) fn template(&mut self, text: &str, line: usize, field: &str, shell: bool) -> Option<Template> {
        let parsed = if shell { Template::parse_shell(text) } else { Template::parse(text) };
        match parsed {
            Ok(t) => Some(t),
            Err(
                e @ (TemplateError::Unclosed(_)
                | TemplateError::Empty
                | TemplateError::Unknown(..)
                | TemplateError::SingleQuoted(_)
                | TemplateError::Code(..)
                | TemplateError::Arithmetic(_)
                | TemplateError::Backquoted(_)
                | TemplateError::Shell(_)),
            ) => {
                self.err(line, field, e.to_string());
                None
            }
        }
    }

    fn workflow(&mut self, root: &Node) -> Option<Workflow> {
        let entries = self.map(root, "", TOP_KEYS)?;
        let agents = lookup(&entries, "agents").map(|n| self.agents(n)).unwrap_or_default();
        self.workflow_body(root, &entries, agents, Limits::default())
    }

    /// A workflow from its mapping's entries, with its agents already read and `base` for the
    /// limits it does not set (a Steward file's, or those its orchestrator file resolves).
    pub(super) fn workflow_body(
        &mut self,
        root: &Node,
        entries: &[(&str, &Node)],
        agents: Vec<AgentDecl>,
        base: Limits,
    ) -> Option<Workflow> {
        let get = |k: &str| lookup(entries, k);

        let id = match get("id") {
            Some(n) => self.string(n, "id"),
            None => {
                self.err(root.pos.line, "id", "missing required key `id`");
                None
            }
        };
        if let Some(id) = &id
            && !valid_id(id)
        {
            let line = get("id").map_or(1, |n| n.pos.line);
            self.err(line, "id", format!("`{id}` is not a valid id (letters, digits, `_` and `-`)"));
        }
        let version = match get("version") {
            Some(n) => self.u32(n, "version", 1),
            None => {
                self.err(root.pos.line, "version", "missing required key `version`");
                None
            }
        };
        let description = get("description").and_then(|n| self.string(n, "description"));
        let capability_profile = get("capability_profile").and_then(|n| {
            let name = self.string(n, "capability_profile")?;
            if crate::capability::profile(&name).is_none() {
                let known: Vec<&str> = crate::capability::profiles().iter().map(|p| p.id).collect();
                self.err(
                    n.pos.line,
                    "capability_profile",
                    format!(
                        "unknown capability profile `{name}`{} (expected one of: {})",
                        suggest(&name, known.iter().copied()),
                        known.join(", ")
                    ),
                );
                return None;
            }
            Some(name)
        });
        let inputs = get("inputs").map(|n| self.inputs(n, "inputs")).unwrap_or_default();
        let mut limits = get("limits").map_or(base, |n| self.limits(n, base));
        if let Some(max) = self.max_step_timeout {
            limits.step_timeout_seconds = limits.step_timeout_seconds.min(max);
        }

        let Some(steps_node) = get("steps") else {
            self.err(root.pos.line, "steps", "missing required key `steps`");
            return None;
        };
        let NodeKind::Seq(step_nodes) = &steps_node.kind else {
            self.err(
                steps_node.pos.line,
                "steps",
                format!("expected a list of steps, found a {}", steps_node.kind_name()),
            );
            return None;
        };
        if step_nodes.is_empty() {
            self.err(steps_node.pos.line, "steps", "a workflow needs at least one step");
            return None;
        }
        let raw: Vec<RawStep<'_>> = step_nodes.iter().enumerate().filter_map(|(i, n)| self.step(i, n)).collect();
        self.step = None;
        let steps = self.resolve(raw, &inputs, &limits, &agents)?;
        let (id, version) = (id?, version?);
        let graph = steps.1;
        // Ids are unique (checked above), so each names one index.
        let index = steps.0.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        Some(Workflow {
            id,
            version,
            description,
            origin: None,
            open_inputs: self.direclaw,
            capability_profile,
            inputs,
            agents,
            limits,
            steps: steps.0,
            graph,
            index,
        })
    }

    /// Typed declarations: a workflow's `inputs`, or an approval's `form` (at `field`).
    pub(super) fn inputs(&mut self, node: &Node, field: &str) -> Vec<InputDecl> {
        let mut out: Vec<InputDecl> = Vec::new();
        match &node.kind {
            // `inputs: [a, b]` declares required strings (DireClaw's list form).
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(name) = self.string(item, &format!("{field}[{i}]")) {
                        out.push(InputDecl {
                            name,
                            ty: InputType::String,
                            required: true,
                            default: None,
                            description: None,
                            secret: false,
                            line: item.pos.line,
                        });
                    }
                }
            }
            NodeKind::Map(_) => {
                for (name, decl) in self.map(node, field, &[]).unwrap_or_default() {
                    let field = format!("{field}.{name}");
                    if !valid_id(name) {
                        self.err(
                            decl.pos.line,
                            &field,
                            format!("`{name}` is not a valid name (letters, digits, `_` and `-`)"),
                        );
                    }
                    if let Some(d) = self.input(name, decl, &field) {
                        out.push(d);
                    }
                }
            }
            NodeKind::Scalar(_) => {
                self.err(
                    node.pos.line,
                    field,
                    format!("expected a mapping of typed declarations, found a {}", node.kind_name()),
                );
            }
        }
        out
    }

    fn input(&mut self, name: &str, decl: &Node, field: &str) -> Option<InputDecl> {
        // `name: string` is shorthand for `name: {type: string}`.
        if let Some(t) = decl.as_str() {
            let ty = self.input_type(t, decl.pos.line, &join(field, "type"))?;
            return Some(InputDecl {
                name: name.into(),
                ty,
                required: false,
                default: None,
                description: None,
                secret: false,
                line: decl.pos.line,
            });
        }
        let entries = self.map(decl, field, INPUT_KEYS)?;
        let mut ty = Some(InputType::String);
        let mut required = false;
        let mut default = None;
        let mut description = None;
        let mut secret = false;
        for (k, v) in entries {
            let f = join(field, k);
            match k {
                "type" => ty = v.as_str().and_then(|t| self.input_type(t, v.pos.line, &f)),
                "required" => required = self.bool(v, &f).unwrap_or(false),
                "default" => default = Some((v.to_json(), v.pos.line)),
                "secret" => secret = self.bool(v, &f).unwrap_or(false),
                _ => description = self.string(v, &f),
            }
        }
        let ty = ty?;
        if secret && let Some((_, line)) = &default {
            // A default is part of the definition, which every run stores in clear.
            self.err(
                *line,
                join(field, "default"),
                "a secret input cannot have a default: it would be written in the workflow file and stored in clear with every run; pass it with --input or --input-file",
            );
            default = None;
        }
        let default = match default {
            Some((value, line)) => match crate::inputs::coerce(ty, &value) {
                Ok(v) => Some(v),
                Err(msg) => {
                    self.err(line, join(field, "default"), msg);
                    None
                }
            },
            None => None,
        };
        Some(InputDecl { name: name.into(), ty, required, default, description, secret, line: decl.pos.line })
    }

    fn input_type(&mut self, t: &str, line: usize, field: &str) -> Option<InputType> {
        match t {
            "string" => Some(InputType::String),
            "number" => Some(InputType::Number),
            "bool" | "boolean" => Some(InputType::Bool),
            "json" => Some(InputType::Json),
            other => {
                self.err(
                    line,
                    field,
                    format!(
                        "unknown input type `{other}`{} (expected string, number, bool or json)",
                        suggest(other, ["string", "number", "bool", "json"].into_iter())
                    ),
                );
                None
            }
        }
    }

    pub(super) fn limits(&mut self, node: &Node, base: Limits) -> Limits {
        let mut l = base;
        for (k, v) in self.map(node, "limits", LIMIT_KEYS).unwrap_or_default() {
            let f = join("limits", k);
            match k {
                "max_total_iterations" => l.max_total_iterations = self.u32(v, &f, 1).unwrap_or(l.max_total_iterations),
                "run_timeout_seconds" => l.run_timeout_seconds = self.uint(v, &f, 1).unwrap_or(l.run_timeout_seconds),
                "step_timeout_seconds" => {
                    l.step_timeout_seconds = self.uint(v, &f, 1).unwrap_or(l.step_timeout_seconds)
                }
                "max_retries" => l.max_retries = self.u32(v, &f, 0).unwrap_or(l.max_retries),
                "max_recoveries" => l.max_recoveries = self.u32(v, &f, 0).unwrap_or(l.max_recoveries),
                _ => l.max_concurrent_steps = self.u32(v, &f, 1).unwrap_or(l.max_concurrent_steps),
            }
        }
        l
    }

    fn step<'a>(&mut self, i: usize, node: &'a Node) -> Option<RawStep<'a>> {
        let base = format!("steps[{i}]");
        self.step = None;
        let NodeKind::Map(_) = &node.kind else {
            self.err(node.pos.line, &base, format!("expected a step mapping, found a {}", node.kind_name()));
            return None;
        };
        // Read the id first so every later diagnostic names the step.
        let id = match node_get(node, "id") {
            Some(n) => self.string(n, &join(&base, "id")),
            None => {
                self.err(node.pos.line, join(&base, "id"), "missing required key `id`");
                None
            }
        };
        if let Some(id) = &id {
            self.step = Some(id.clone());
            if !valid_id(id) {
                self.err(
                    node.pos.line,
                    join(&base, "id"),
                    format!("`{id}` is not a valid step id (letters, digits, `_` and `-`)"),
                );
            }
        }
        let entries = self.map(node, &base, STEP_KEYS)?;
        let get = |k: &str| lookup(&entries, k);
        let mut raw = RawStep {
            id: id.clone().unwrap_or_default(),
            node,
            kind: None,
            needs: None,
            next: None,
            outputs: Vec::new(),
            timeout_seconds: None,
            retry: None,
            templates: Vec::new(),
            after: Vec::new(),
            agent: None,
            on_approve: None,
            on_reject: None,
            on_timeout: None,
        };
        let ty = match get("type") {
            Some(n) => self.string(n, &join(&base, "type")),
            None => {
                self.err(
                    node.pos.line,
                    join(&base, "type"),
                    format!("missing required key `type` (one of: {STEP_TYPES})"),
                );
                None
            }
        };
        let type_line = get("type").map_or(node.pos.line, |n| n.pos.line);
        match ty.as_deref() {
            Some("shell") => raw.kind = self.shell(&base, &entries, node, &mut raw.templates),
            Some("noop") => raw.kind = Some(StepKind::Noop),
            Some("micro_tasks") => raw.kind = self.micro_tasks_step(&base, &entries, node),
            Some("approval") => raw.kind = self.approval_step(&base, &entries, node, &mut raw.templates),
            Some(t @ ("agent_task" | "agent_review")) => {
                raw.kind = self.agent_step(&base, &entries, node, t == "agent_review", &mut raw)
            }
            Some(other) => self.err(
                type_line,
                join(&base, "type"),
                format!(
                    "unknown step type `{other}`{} (expected one of: {STEP_TYPES})",
                    suggest(other, STEP_TYPES.split(", "))
                ),
            ),
            None => {}
        }
        // Keys that belong to another step type.
        let is_shell = ty.as_deref() == Some("shell");
        let is_agent = matches!(ty.as_deref(), Some("agent_task" | "agent_review"));
        let is_review = ty.as_deref() == Some("agent_review");
        let is_micro_tasks = ty.as_deref() == Some("micro_tasks");
        let is_approval = ty.as_deref() == Some("approval");
        let misplaced = [
            (SHELL_ONLY, is_shell, "shell"),
            (AGENT_ONLY, is_agent, "agent_task and agent_review"),
            (PROMPTED_ONLY, is_agent || is_approval, "agent_task, agent_review and approval"),
            (MICRO_TASKS_ONLY, is_micro_tasks, "micro_tasks"),
            (APPROVAL_ONLY, is_approval, "approval"),
        ];
        for (keys, allowed, kinds) in misplaced {
            for k in keys.iter().filter(|_| !allowed && ty.is_some()) {
                if let Some(n) = get(k) {
                    self.err(n.pos.line, join(&base, k), format!("`{k}` is only valid on {kinds} steps"));
                }
            }
        }
        for k in ["on_approve", "on_reject", "on_timeout"] {
            if let Some(n) = get(k) {
                if is_review || is_approval {
                    let target = self.string(n, &join(&base, k)).map(|s| (s, n.pos.line));
                    match k {
                        "on_approve" => raw.on_approve = target,
                        "on_reject" => raw.on_reject = target,
                        _ => raw.on_timeout = target,
                    }
                } else if ty.is_some() && k != "on_timeout" {
                    self.err(
                        n.pos.line,
                        join(&base, k),
                        format!("`{k}` is only valid on agent_review and approval steps"),
                    );
                }
            }
        }
        let target = |t: &Option<(String, usize)>| t.as_ref().map(|(t, _)| t.clone());
        match &mut raw.kind {
            Some(StepKind::Agent(a)) => {
                a.on_approve = target(&raw.on_approve);
                a.on_reject = target(&raw.on_reject);
            }
            Some(StepKind::Approval(a)) => {
                a.on_approve = target(&raw.on_approve);
                a.on_reject = target(&raw.on_reject);
                a.on_timeout = target(&raw.on_timeout);
                // Its outputs are its form's fields, required or not as the form says.
                raw.outputs =
                    a.form.iter().map(|f| OutputDecl { key: f.name.clone(), optional: !f.required }).collect();
            }
            _ => {}
        }
        if (is_review || is_approval)
            && let Some(n) = get("next")
        {
            self.err(
                n.pos.line,
                join(&base, "next"),
                "a review or an approval routes by its decision: use `on_approve` and `on_reject`",
            );
        }
        if let Some(n) = get("needs") {
            raw.needs = self.string_list(n, &join(&base, "needs"));
        }
        if let Some(n) = get("next") {
            raw.next = self.string(n, &join(&base, "next")).map(|s| (s, n.pos.line));
        }
        if let Some(n) = get("outputs").filter(|_| !is_approval) {
            for (key, line) in self.string_list(n, &join(&base, "outputs")).unwrap_or_default() {
                let (name, optional) = match key.strip_suffix('?') {
                    Some(k) => (k.to_owned(), true),
                    None => (key.clone(), false),
                };
                if !valid_id(&name) {
                    self.err(
                        line,
                        join(&base, "outputs"),
                        format!("`{key}` is not a valid output key (letters, digits, `_`, `-`, optional trailing `?`)"),
                    );
                } else if raw.outputs.iter().any(|o| o.key == name) {
                    self.err(line, join(&base, "outputs"), format!("output `{name}` is declared twice"));
                } else {
                    raw.outputs.push(OutputDecl { key: name, optional });
                }
            }
        }
        if let Some(n) = get("timeout_seconds") {
            raw.timeout_seconds = self.uint(n, &join(&base, "timeout_seconds"), 1);
        }
        if let Some(n) = get("retry") {
            raw.retry = self.retry(n, &join(&base, "retry"));
        }
        // DireClaw's `limits.max_retries` on a step: retries after the first attempt.
        if let Some(n) = get("limits") {
            let field = join(&base, "limits");
            for (k, v) in self.map(n, &field, STEP_LIMIT_KEYS).unwrap_or_default() {
                let Some(retries) = self.u32(v, &join(&field, k), 0) else { continue };
                match &mut raw.retry {
                    Some(r) if r.max_attempts.is_some() => {
                        self.err(
                            v.pos.line,
                            join(&field, k),
                            "set either `retry.max_attempts` or `limits.max_retries`, not both",
                        );
                    }
                    Some(r) => r.max_attempts = Some(retries.saturating_add(1)),
                    None => {
                        raw.retry = Some(RetryPolicyRaw {
                            max_attempts: Some(retries.saturating_add(1)),
                            initial_delay_ms: None,
                            multiplier: None,
                            max_delay_ms: None,
                        })
                    }
                }
            }
        }
        if let Some(n) = get("description") {
            self.string(n, &join(&base, "description"));
        }
        id.map(|_| raw)
    }

    fn micro_tasks_step(&mut self, base: &str, entries: &[(&str, &Node)], node: &Node) -> Option<StepKind> {
        let get = |k: &str| lookup(entries, k);
        let packet_field = join(base, "packet");
        let Some(packet_node) = get("packet") else {
            self.err(node.pos.line, &packet_field, "micro_tasks steps need `packet` (a work packet file)");
            return None;
        };
        let packet = self.string(packet_node, &packet_field)?;
        let policy = match get("policy") {
            Some(n) => Some(self.string(n, &join(base, "policy"))?),
            None => None,
        };
        if let Some(n) = get("timeout_seconds") {
            // The job stops itself at its hard gate; cutting it off mid-iteration would not.
            self.err(
                n.pos.line,
                join(base, "timeout_seconds"),
                "a micro_tasks step is bounded by its execution policy (`max_duration_ms`, then the hard gate), not `timeout_seconds`",
            );
        }
        Some(StepKind::MicroTasks(MicroTasksStep { packet, policy }))
    }

    fn approval_step(
        &mut self,
        base: &str,
        entries: &[(&str, &Node)],
        node: &Node,
        templates: &mut Vec<(String, usize, Template)>,
    ) -> Option<StepKind> {
        let get = |k: &str| lookup(entries, k);
        for k in ["outputs", "retry", "limits"] {
            if let Some(n) = get(k) {
                let why = match k {
                    "outputs" => "an approval's outputs are the fields of its `form`",
                    _ => "an approval is decided once, never retried",
                };
                self.err(n.pos.line, join(base, k), format!("`{k}` is not valid on approval steps: {why}"));
            }
        }
        let form = match get("form") {
            Some(n) => self.inputs(n, &join(base, "form")),
            None => Vec::new(),
        };
        for f in form.iter().filter(|f| f.secret) {
            self.err(
                f.line,
                join(base, &format!("form.{}.secret", f.name)),
                "a form field cannot be secret: its value becomes an output that later steps and people read",
            );
        }
        for f in &form {
            if super::APPROVAL_OUTPUTS.contains(&f.name.as_str()) {
                self.err(
                    f.line,
                    join(base, &format!("form.{}", f.name)),
                    format!("`{}` is an output every approval records; name the field otherwise", f.name),
                );
            }
        }
        let approvers = match get("approvers") {
            Some(n) => {
                let field = join(base, "approvers");
                let list = self.string_list(n, &field).unwrap_or_default();
                if list.is_empty() && matches!(n.kind, NodeKind::Seq(_)) {
                    self.err(
                        n.pos.line,
                        &field,
                        "an empty list of approvers lets nobody decide; leave it out to let anyone",
                    );
                }
                list.into_iter().map(|(a, _)| a).collect()
            }
            None => Vec::new(),
        };
        let timeout_seconds = get("timeout_seconds").and_then(|n| self.uint(n, &join(base, "timeout_seconds"), 1));
        if timeout_seconds.is_none()
            && get("timeout_seconds").is_none()
            && let Some(n) = get("on_timeout")
        {
            self.err(
                n.pos.line,
                join(base, "on_timeout"),
                "`on_timeout` needs `timeout_seconds` (without it the approval waits for ever)",
            );
        }
        let prompt_field = join(base, "prompt");
        let Some(prompt_node) = get("prompt") else {
            self.err(node.pos.line, &prompt_field, "approval steps need `prompt` (the question a person answers)");
            return None;
        };
        let prompt_source = self.string(prompt_node, &prompt_field)?;
        let prompt = self.template(&prompt_source, prompt_node.pos.line, &prompt_field, false)?;
        templates.push((prompt_field, prompt_node.pos.line, prompt.clone()));
        Some(StepKind::Approval(ApprovalStep {
            prompt_source,
            prompt,
            form,
            approvers,
            timeout_seconds,
            on_approve: None,
            on_reject: None,
            on_timeout: None,
        }))
    }

    fn agent_step(
        &mut self,
        base: &str,
        entries: &[(&str, &Node)],
        node: &Node,
        review: bool,
        raw: &mut RawStep<'_>,
    ) -> Option<StepKind> {
        let get = |k: &str| lookup(entries, k);
        let agent_field = join(base, "agent");
        let agent = match get("agent") {
            Some(n) => self.string(n, &agent_field).map(|a| (a, n.pos.line)),
            None => {
                self.err(node.pos.line, &agent_field, "agent steps need `agent` (a key of `agents:`)");
                None
            }
        };
        raw.agent = agent.clone();
        let prompt_field = join(base, "prompt");
        let Some(prompt_node) = get("prompt") else {
            self.err(node.pos.line, &prompt_field, "agent steps need `prompt`");
            return None;
        };
        let prompt_source = self.string(prompt_node, &prompt_field)?;
        let prompt = self.template(&prompt_source, prompt_node.pos.line, &prompt_field, false);
        let mut output_files = Vec::new();
        if let Some(files) = get("output_files") {
            let field = join(base, "output_files");
            for (key, v) in self.map(files, &field, &[]).unwrap_or_default() {
                let f = join(&field, key);
                let Some(text) = self.string(v, &f) else { continue };
                // The same rule as every path a model or packet names (absolute, `..`, `\`, ...).
                if crate::relative_path::problem(&text).is_some() {
                    self.err(
                        v.pos.line,
                        &f,
                        format!("`{text}` must be a relative path inside the attempt's output directory"),
                    );
                    continue;
                }
                let Some(t) = self.template(&text, v.pos.line, &f, false) else { continue };
                // DireClaw: output paths may only use the run, step and attempt.
                if let Some(r) = t.refs().find(|r| {
                    !matches!(r, Ref::Workflow(WorkflowVar::RunId | WorkflowVar::StepId | WorkflowVar::Attempt))
                }) {
                    self.err(v.pos.line, &f, format!("output file paths may only use workflow.run_id, workflow.step_id and workflow.attempt, not `{r}`"));
                    continue;
                }
                output_files.push((key.to_owned(), t));
            }
        }
        let workspace_mode = match get("workspace_mode") {
            Some(n) => {
                let field = join(base, "workspace_mode");
                match self.string(n, &field).as_deref() {
                    Some("run_workspace") => WorkspaceMode::Run,
                    Some("orchestrator_workspace") => WorkspaceMode::Orchestrator,
                    Some("agent_workspace") => {
                        self.note(
                            n.pos.line,
                            &field,
                            "`agent_workspace` (DireClaw's baseline) ran the agent in a workspace of its own; \
                             here the step runs in the run's directory, as DireClaw's later versions run it",
                        );
                        WorkspaceMode::Agent
                    }
                    Some(other) => {
                        self.err(
                            n.pos.line,
                            &field,
                            format!(
                                "unknown workspace_mode `{other}`{} (expected one of: {WORKSPACE_MODES})",
                                suggest(other, WORKSPACE_MODES.split(", "))
                            ),
                        );
                        WorkspaceMode::default()
                    }
                    None => WorkspaceMode::default(),
                }
            }
            None => WorkspaceMode::default(),
        };
        let mut write_state = Vec::new();
        if let Some(n) = get("write_state") {
            let field = join(base, "write_state");
            for (key, v) in self.map(n, &field, &[]).unwrap_or_default() {
                let f = join(&field, key);
                if !valid_id(key) {
                    self.err(
                        v.pos.line,
                        &f,
                        format!("`{key}` is not a valid state key (letters, digits, `_` and `-`)"),
                    );
                    continue;
                }
                let Some(text) = self.string(v, &f) else { continue };
                // `{{outputs.<key>}}` is this step's own output: the same value as
                // `{{steps.<this step>.outputs.<key>}}`, which is what it is read as.
                let own = format!("steps.{}.outputs.", raw.id);
                let text = own_outputs(&text, &own);
                if let Some(t) = self.template(&text, v.pos.line, &f, false) {
                    if let Some(r) = t.refs().find(|r| matches!(r, Ref::State(_))) {
                        self.err(v.pos.line, &f, format!("`{{{{{r}}}}}`: write_state is set from the step's outputs, inputs and workflow values, not from state"));
                        continue;
                    }
                    raw.after.push((f, v.pos.line, t.clone()));
                    write_state.push((key.to_owned(), t));
                }
            }
        }
        let prompt = prompt?;
        raw.templates.push((prompt_field, prompt_node.pos.line, prompt.clone()));
        Some(StepKind::Agent(AgentStep {
            agent: agent.map(|(a, _)| a).unwrap_or_default(),
            prompt_source,
            prompt,
            output_files,
            review,
            on_approve: None,
            on_reject: None,
            workspace_mode,
            write_state,
        }))
    }

    /// Each agent of an `agents:` mapping with its entries (of `keys`), its id checked: a
    /// Steward file's agents and an orchestrator file's are read alike up to here.
    pub(super) fn agent_entries<'a>(&mut self, node: &'a Node, keys: &[&str]) -> Vec<(&'a str, &'a Node, Entries<'a>)> {
        let mut out = Vec::new();
        for (id, decl) in self.map(node, "agents", &[]).unwrap_or_default() {
            let field = format!("agents.{id}");
            if !valid_id(id) {
                self.err(
                    decl.pos.line,
                    &field,
                    format!("`{id}` is not a valid agent id (letters, digits, `_` and `-`)"),
                );
            }
            if let Some(entries) = self.map(decl, &field, keys) {
                out.push((id, decl, entries));
            }
        }
        out
    }

    fn agents(&mut self, node: &Node) -> Vec<AgentDecl> {
        let mut out = Vec::new();
        for (id, decl, entries) in self.agent_entries(node, AGENT_KEYS) {
            let field = format!("agents.{id}");
            let get = |k: &str| lookup(&entries, k);
            let text = |r: &mut Self, k: &str| get(k).and_then(|n| r.string(n, &join(&field, k)));
            let provider = match text(self, "provider").as_deref() {
                Some("openai") => Some(Provider::OpenAi),
                Some("ollama") => Some(Provider::Ollama),
                Some("command") => Some(Provider::Command),
                Some("scripted") => Some(Provider::Scripted),
                Some(other) => {
                    let line = get("provider").map_or(decl.pos.line, |n| n.pos.line);
                    let hint = suggest(other, PROVIDERS.split(", "));
                    self.err(
                        line,
                        join(&field, "provider"),
                        format!("unknown provider `{other}`{hint} (expected one of: {PROVIDERS})"),
                    );
                    None
                }
                None => {
                    self.err(
                        decl.pos.line,
                        join(&field, "provider"),
                        format!("missing required key `provider` (one of: {PROVIDERS})"),
                    );
                    None
                }
            };
            let model = text(self, "model");
            let base_url = text(self, "base_url");
            let api_key_env = text(self, "api_key_env");
            let cli = text(self, "cli");
            let script = text(self, "script");
            let options = match get("options") {
                Some(n) => match n.to_json() {
                    serde_json::Value::Object(m) => m,
                    _ => {
                        self.err(n.pos.line, join(&field, "options"), "expected a mapping of provider options");
                        Default::default()
                    }
                },
                None => Default::default(),
            };
            if let Some(env) = &api_key_env
                && !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.err(
                    decl.pos.line,
                    join(&field, "api_key_env"),
                    format!(
                        "`{env}` is not an environment variable name; put the key in the environment, never in the file"
                    ),
                );
            }
            let Some(provider) = provider else { continue };
            let required: &[(&str, bool)] = match provider {
                Provider::OpenAi | Provider::Ollama => &[("model", model.is_some())],
                Provider::Command => &[("cli", cli.is_some())],
                Provider::Scripted => &[("script", script.is_some())],
            };
            for (k, present) in required {
                if !present {
                    self.err(decl.pos.line, join(&field, k), format!("{} agents need `{k}`", provider.as_str()));
                }
            }
            if let Some(c) = &cli
                && !matches!(c.as_str(), "claude" | "codex")
            {
                self.err(
                    decl.pos.line,
                    join(&field, "cli"),
                    format!("unknown agent CLI `{c}` (expected claude or codex)"),
                );
            }
            out.push(AgentDecl {
                id: id.to_owned(),
                provider,
                model: model.unwrap_or_else(|| provider.as_str().to_owned()),
                base_url,
                api_key_env,
                options,
                cli,
                script,
                line: decl.pos.line,
            });
        }
        out
    }

    fn shell(
        &mut self,
        base: &str,
        entries: &[(&str, &Node)],
        node: &Node,
        templates: &mut Vec<(String, usize, Template)>,
    ) -> Option<StepKind> {
        let get = |k: &str| lookup(entries, k);
        let run_field = join(base, "run");
        let Some(run_node) = get("run") else {
            self.err(node.pos.line, &run_field, "shell steps need `run`");
            return None;
        };
        let run_source = self.string(run_node, &run_field)?;
        let run = self.template(&run_source, run_node.pos.line, &run_field, true);
        let mut env = Vec::new();
        if let Some(env_node) = get("env") {
            let field = join(base, "env");
            for (k, v) in self.map(env_node, &field, &[]).unwrap_or_default() {
                let f = join(&field, k);
                if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || k.starts_with(|c: char| c.is_ascii_digit())
                {
                    self.err(v.pos.line, &f, format!("`{k}` is not a valid environment variable name"));
                    continue;
                }
                let text = match &v.kind {
                    NodeKind::Scalar(s) => s.text.clone(),
                    _ => {
                        self.err(v.pos.line, &f, format!("expected a string, found a {}", v.kind_name()));
                        continue;
                    }
                };
                if let Some(t) = self.template(&text, v.pos.line, &f, false) {
                    templates.push((f, v.pos.line, t.clone()));
                    env.push((k.to_owned(), t));
                }
            }
        }
        let cwd = match get("cwd") {
            Some(n) => {
                let f = join(base, "cwd");
                let text = self.string(n, &f)?;
                let t = self.template(&text, n.pos.line, &f, false)?;
                // HSK-TERM-003, as `run` checks it: placeholders stand for one directory name here.
                let literal: String = t
                    .parts
                    .iter()
                    .map(|p| match p {
                        Part::Lit(s) => s.as_str(),
                        Part::Ref(_) => "x",
                    })
                    .collect();
                if let Some(escape) = crate::shell::paths::CwdEscape::of(&literal) {
                    self.err(n.pos.line, &f, format!("HSK-TERM-003: {}", escape.reason(&text)));
                }
                templates.push((f, n.pos.line, t.clone()));
                Some(t)
            }
            None => None,
        };
        let run = run?;
        templates.push((run_field, run_node.pos.line, run.clone()));
        Some(StepKind::Shell(ShellStep { run_source, run, env, cwd }))
    }

    fn retry(&mut self, node: &Node, field: &str) -> Option<RetryPolicyRaw> {
        let mut r = RetryPolicyRaw { max_attempts: None, initial_delay_ms: None, multiplier: None, max_delay_ms: None };
        for (k, v) in self.map(node, field, RETRY_KEYS)? {
            let f = join(field, k);
            if k == "max_attempts" {
                r.max_attempts = self.u32(v, &f, 1);
                continue;
            }
            for (bk, bv) in self.map(v, &f, BACKOFF_KEYS).unwrap_or_default() {
                let bf = join(&f, bk);
                match bk {
                    "initial_seconds" => r.initial_delay_ms = self.seconds_ms(bv, &bf),
                    "multiplier" => r.multiplier = self.float(bv, &bf),
                    _ => r.max_delay_ms = self.seconds_ms(bv, &bf),
                }
            }
        }
        Some(r)
    }

    fn seconds_ms(&mut self, node: &Node, field: &str) -> Option<u64> {
        match node.to_json() {
            Value::Number(n) if n.as_f64().is_some_and(|f| (0.0..=86_400.0).contains(&f)) => {
                n.as_f64().map(|f| (f * 1000.0) as u64)
            }
            other => {
                self.err(node.pos.line, field, format!("expected seconds between 0 and 86400, found {}", show(&other)));
                None
            }
        }
    }

    /// Resolves step references, builds the graph, and checks templates.
    fn resolve(
        &mut self,
        raw: Vec<RawStep<'_>>,
        inputs: &[InputDecl],
        limits: &Limits,
        agents: &[AgentDecl],
    ) -> Option<(Vec<Step>, Graph)> {
        let mut ok = true;
        // Duplicate ids; each id's first step, looked up by id (a scan per step would make a
        // workflow's parse cost the square of its size).
        let mut first_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            let first = *first_of.entry(s.id.as_str()).or_insert(i);
            if first != i {
                let first = &raw[first];
                self.step = Some(s.id.clone());
                self.err(
                    s.node.pos.line,
                    format!("steps[{i}].id"),
                    format!("duplicate step id `{}` (first defined at line {})", s.id, first.node.pos.line),
                );
                ok = false;
            }
        }
        let index = |id: &str| first_of.get(id).copied();
        let mut needs = Vec::new();
        let mut next = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            self.step = Some(s.id.clone());
            let resolved_needs = s.needs.as_ref().map(|list| {
                let mut v: Vec<usize> = Vec::new();
                for (dep, line) in list {
                    match index(dep) {
                        Some(j) if j == i => {
                            self.err(*line, format!("steps[{i}].needs"), "a step cannot need itself");
                            ok = false;
                        }
                        Some(j) if !v.contains(&j) => v.push(j),
                        Some(_) => {}
                        None => {
                            self.err(
                                *line,
                                format!("steps[{i}].needs"),
                                format!("unknown step `{dep}`{}", suggest(dep, raw.iter().map(|s| s.id.as_str()))),
                            );
                            ok = false;
                        }
                    }
                }
                v
            });
            needs.push(resolved_needs);
            next.push(match &s.next {
                Some((target, line)) => match index(target) {
                    Some(j) => Some((j, *line)),
                    // DireClaw's HEAD loads such a file and fails the run when the step
                    // completes (`Step::missing_target`); a Steward file may not.
                    None if self.direclaw => None,
                    None => {
                        self.err(
                            *line,
                            format!("steps[{i}].next"),
                            format!("unknown step `{target}`{}", suggest(target, raw.iter().map(|s| s.id.as_str()))),
                        );
                        ok = false;
                        None
                    }
                },
                None => None,
            });
        }
        for (i, n) in next.iter().enumerate() {
            if let Some((j, line)) = n
                && needs[*j].is_some()
            {
                self.step = Some(raw[i].id.clone());
                self.err(
                    *line,
                    format!("steps[{i}].next"),
                    format!(
                        "step `{}` declares `needs`, so it runs when those finish and cannot also be a `next` target",
                        raw[*j].id
                    ),
                );
                ok = false;
            }
        }
        // Review decisions route like `next`, and their targets obey the same rules.
        let mut routes = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            self.step = Some(s.id.clone());
            let mut target = |me: &mut Self, field: &str, t: &Option<(String, usize)>| -> Option<usize> {
                let (name, line) = t.as_ref()?;
                match index(name) {
                    Some(j) if needs[j].is_some() => {
                        me.err(
                            *line,
                            format!("steps[{i}].{field}"),
                            format!("step `{name}` declares `needs` and cannot be a `{field}` target"),
                        );
                        ok = false;
                        None
                    }
                    Some(j) => Some(j),
                    // As a `next` above: an agent review's decision that leads nowhere fails
                    // the run when it is taken.
                    None if me.direclaw && field != "on_timeout" => None,
                    None => {
                        let hint = suggest(name, raw.iter().map(|s| s.id.as_str()));
                        me.err(*line, format!("steps[{i}].{field}"), format!("unknown step `{name}`{hint}"));
                        ok = false;
                        None
                    }
                }
            };
            let decides = matches!(&s.kind, Some(StepKind::Agent(a)) if a.review)
                || matches!(&s.kind, Some(StepKind::Approval(_)));
            routes.push(if decides {
                Route::Decision {
                    approve: target(self, "on_approve", &s.on_approve),
                    reject: target(self, "on_reject", &s.on_reject),
                    timeout: target(self, "on_timeout", &s.on_timeout),
                }
            } else {
                next[i].map_or(Route::FileOrder, |(j, _)| Route::Next(j))
            });
            if let Some((agent, line)) = &s.agent
                && !agents.iter().any(|a| &a.id == agent)
            {
                let hint = suggest(agent, agents.iter().map(|a| a.id.as_str()));
                self.err(
                    *line,
                    format!("steps[{i}].agent"),
                    format!("unknown agent `{agent}`{hint} (declare it under `agents:`)"),
                );
            }
            if let Some(StepKind::Agent(a)) = &s.kind
                && !a.output_files.is_empty()
            {
                for o in &s.outputs {
                    if !a.output_files.iter().any(|(k, _)| k == &o.key) {
                        self.err(
                            s.node.pos.line,
                            format!("steps[{i}].output_files"),
                            format!("output `{}` has no file in `output_files`", o.key),
                        );
                    }
                }
                for (k, _) in &a.output_files {
                    if !s.outputs.iter().any(|o| &o.key == k) {
                        self.err(
                            s.node.pos.line,
                            format!("steps[{i}].output_files"),
                            format!("`{k}` is not a declared output"),
                        );
                    }
                }
            }
        }
        let graph = Graph::build(&needs, &routes);
        if ok {
            if let Some(cycle) = graph.find_cycle() {
                let names: Vec<&str> = cycle.iter().map(|&i| raw[i].id.as_str()).collect();
                let first = cycle[0];
                self.step = Some(raw[first].id.clone());
                self.err(
                    raw[first].node.pos.line,
                    format!("steps[{first}]"),
                    format!(
                        "cycle: {} (steps can only loop through the decisions of reviews and approvals)",
                        names.join(" -> ")
                    ),
                );
                ok = false;
            } else {
                for (i, reachable) in graph.reachable().into_iter().enumerate() {
                    if !reachable {
                        self.step = Some(raw[i].id.clone());
                        self.err(
                            raw[i].node.pos.line,
                            format!("steps[{i}]"),
                            "step is never reached: no step routes to it and it has no `needs` that can all run",
                        );
                        ok = false;
                    }
                }
            }
        }
        if raw.len() > limits.max_total_iterations as usize {
            self.step = None;
            let line = raw.first().map_or(1, |s| s.node.pos.line);
            self.err(
                line,
                "limits.max_total_iterations",
                format!(
                    "the workflow has {} steps but limits.max_total_iterations is {}; raise the limit",
                    raw.len(),
                    limits.max_total_iterations
                ),
            );
        }
        // Templates.
        for (i, s) in raw.iter().enumerate() {
            self.step = Some(s.id.clone());
            let templates = s.templates.iter().map(|t| (t, false)).chain(s.after.iter().map(|t| (t, true)));
            for ((field, line, t), own_ok) in templates {
                for r in t.refs() {
                    match r {
                        // An orchestrator's runs take inputs it does not declare (DireClaw
                        // fails such a placeholder when it renders without one): said, not refused.
                        Ref::Input { name, .. } if self.direclaw && !inputs.iter().any(|d| &d.name == name) => {
                            self.note(
                                *line,
                                field,
                                format!(
                                    "template `{{{{{r}}}}}` names input `{name}`, which the workflow does not declare{}: a run must be given it",
                                    suggest(name, inputs.iter().map(|d| d.name.as_str()))
                                ),
                            );
                        }
                        Ref::Input { name, .. } if !inputs.iter().any(|d| &d.name == name) => {
                            self.err(
                                *line,
                                field,
                                format!(
                                    "template `{{{{{r}}}}}` names unknown input `{name}`{}",
                                    suggest(name, inputs.iter().map(|d| d.name.as_str()))
                                ),
                            );
                        }
                        // A Steward file declares what its runs are given; an orchestrator's
                        // runs take any input, as DireClaw's channel-started ones do.
                        Ref::Workflow(WorkflowVar::FromInput(name))
                            if !self.direclaw && !inputs.iter().any(|d| d.name == *name) =>
                        {
                            self.err(
                                *line,
                                field,
                                format!(
                                    "template `{{{{{r}}}}}` reads the run's `{name}` input, which the workflow does not declare"
                                ),
                            );
                        }
                        Ref::StepOutput { step, key } => {
                            match index(step) {
                                None => self.err(
                                    *line,
                                    field,
                                    format!(
                                        "template `{{{{{r}}}}}` names unknown step `{step}`{}",
                                        suggest(step, raw.iter().map(|s| s.id.as_str()))
                                    ),
                                ),
                                Some(j) if j == i && !own_ok => self.err(
                                    *line,
                                    field,
                                    format!("template `{{{{{r}}}}}`: a step cannot read its own outputs"),
                                ),
                                Some(j) => {
                                    let producer = &raw[j];
                                    let builtin = producer.kind.as_ref().map_or(&[][..], StepKind::builtin_outputs);
                                    if !builtin.contains(&key.as_str())
                                        && !producer.outputs.iter().any(|o| &o.key == key)
                                    {
                                        self.err(*line, field, format!("template `{{{{{r}}}}}`: step `{step}` has no output `{key}` (it has: {})", output_names(builtin, &producer.outputs)));
                                    } else if ok && j != i && !graph.has_path(j, i) {
                                        self.err(*line, field, format!("template `{{{{{r}}}}}`: step `{step}` does not run before `{}`; add it to `needs`", s.id));
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        self.step = None;
        if !ok {
            return None;
        }
        let default_retry = RetryPolicy::from_limits(limits);
        let ids: Vec<String> = raw.iter().map(|s| s.id.clone()).collect();
        let steps = raw
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let retry = s.retry.map_or(default_retry, |r| RetryPolicy {
                    max_attempts: r.max_attempts.unwrap_or(default_retry.max_attempts),
                    initial_delay_ms: r.initial_delay_ms.unwrap_or(default_retry.initial_delay_ms),
                    multiplier: r.multiplier.unwrap_or(default_retry.multiplier),
                    max_delay_ms: r.max_delay_ms.unwrap_or(default_retry.max_delay_ms),
                });
                Some(Step {
                    route: routes[i],
                    id: s.id,
                    kind: s.kind?,
                    needs: needs[i].as_ref().map(|v| v.iter().map(|&j| ids[j].clone()).collect()),
                    next: s.next.map(|(n, _)| n),
                    outputs: s.outputs,
                    timeout_seconds: s.timeout_seconds.unwrap_or(limits.step_timeout_seconds),
                    retry,
                    line: s.node.pos.line,
                })
            })
            .collect::<Vec<_>>();
        if steps.len() != needs.len() {
            return None;
        }
        Some((steps, graph))
    }
}

/// `text` with each `{{outputs.` placeholder (spaces allowed inside the braces) spelled
/// `{{<own>`.
fn own_outputs(text: &str, own: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("{{") {
        let (before, after) = rest.split_at(at + 2);
        out.push_str(before);
        let inner = after.trim_start();
        match inner.strip_prefix("outputs.") {
            Some(tail) => {
                out.push_str(own);
                rest = tail;
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn lookup<'a>(entries: &[(&str, &'a Node)], key: &str) -> Option<&'a Node> {
    entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn node_get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.kind {
        NodeKind::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
        _ => None,
    }
}

pub(super) fn join(base: &str, key: &str) -> String {
    if base.is_empty() { key.to_owned() } else { format!("{base}.{key}") }
}

/// Whether `s` may name a workflow, step, agent, input or key: letters, digits, `_` and `-`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Null => "nothing".into(),
        other => format!("`{other}`"),
    }
}

fn output_names(builtin: &[&str], declared: &[OutputDecl]) -> String {
    let mut names: Vec<&str> = builtin.to_vec();
    names.extend(declared.iter().map(|o| o.key.as_str()));
    if names.is_empty() { "no outputs".into() } else { names.join(", ") }
}

/// " (did you mean `x`?)" when a known name is one or two edits away.
/// " (did you mean `x`?)" when a known name is one or two edits away, or extends it.
pub(super) fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .filter_map(|k| {
            let d = edit_distance(name, k);
            let close = d <= 2 && d < name.len().min(k.len());
            let extends = name.len() >= 4 && k.starts_with(name);
            (close || extends).then_some((d, k))
        })
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
