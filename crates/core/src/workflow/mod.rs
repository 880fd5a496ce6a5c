//! Workflow definitions: the validated model a run executes.
//!
//! A definition is read from YAML by [`parse`] into these types; every error
//! found on the way is collected as a [`Diagnostic`] with line, step and
//! field, so `steward validate` reports them all at once. The model is
//! immutable once built, and a run stores the source text it was built from
//! (identified by [`definition_hash`]) so a resumed run uses the definition it
//! started with.

pub mod direclaw;
mod graph;
mod literals;
mod parse;

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::template::Template;

pub use graph::{Decided, Graph, Route};
pub use literals::literal_secrets;
pub use parse::{compatibility_notes, parse, valid_id};

/// Default `limits.max_total_iterations` (DireClaw §4.8).
pub const DEFAULT_MAX_TOTAL_ITERATIONS: u32 = 12;
/// Default `limits.run_timeout_seconds`.
pub const DEFAULT_RUN_TIMEOUT_SECONDS: u64 = 3600;
/// Default `limits.step_timeout_seconds`.
pub const DEFAULT_STEP_TIMEOUT_SECONDS: u64 = 900;
/// Default `limits.max_retries` (so three attempts in all).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Default `limits.max_concurrent_steps`.
pub const DEFAULT_MAX_CONCURRENT_STEPS: u32 = 4;
/// Default `limits.max_recoveries` (as DBOS's `max_recovery_attempts`).
pub const DEFAULT_MAX_RECOVERIES: u32 = 5;

/// A validated workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// Stable identifier.
    pub id: String,
    /// Definition version.
    pub version: u32,
    /// Free text.
    pub description: Option<String>,
    /// Where it came from when it is not a Steward file: the orchestrator file and workflow of a
    /// DireClaw `orchestrator.yaml` (see [`direclaw`]).
    pub origin: Option<String>,
    /// Whether inputs it does not declare are taken as given, as DireClaw takes every
    /// `--input` of an orchestrator's workflow (its channel-started runs carry `channel`,
    /// `sender_id`, ... that `{{workflow.channel}}` reads); a Steward file's are refused.
    pub open_inputs: bool,
    /// The capability profile its steps run under, if it names one.
    pub capability_profile: Option<String>,
    /// Declared inputs, in file order.
    pub inputs: Vec<InputDecl>,
    /// Declared agents.
    pub agents: Vec<AgentDecl>,
    /// Run-wide limits with defaults applied.
    pub limits: Limits,
    /// Steps, in file order.
    pub steps: Vec<Step>,
    /// The routing graph derived from `next`, `needs` and file order.
    pub graph: Graph,
    /// Each step's index by id: the planner asks for it for every attempt of every turn, so a
    /// search through the steps would make a run's cost grow with the square of its size.
    index: HashMap<String, usize>,
}

impl Step {
    /// The transition target its completion would take that names no step of the workflow
    /// (`approved`: a review's decision): only an orchestrator file's may (see [`direclaw`]);
    /// the completion then fails the step, and the run with it.
    pub fn missing_target(&self, approved: Option<bool>) -> Option<&str> {
        match (&self.route, &self.kind, approved) {
            (Route::Decision { approve: None, .. }, StepKind::Agent(a), Some(true)) => a.on_approve.as_deref(),
            (Route::Decision { reject: None, .. }, StepKind::Agent(a), Some(false)) => a.on_reject.as_deref(),
            (Route::Decision { .. } | Route::Next(_), _, _) => None,
            (Route::FileOrder, _, _) => self.next.as_deref(),
        }
    }
}

impl Workflow {
    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.step_index(id).map(|i| &self.steps[i])
    }

    /// The index of the step with this id.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The profile the run's steps run under: the one it names, or the
    /// default for workflow runs.
    pub fn profile(&self) -> &str {
        self.capability_profile
            .as_deref()
            .unwrap_or_else(|| crate::capability::default_profile(crate::job::JobKind::WorkflowRun))
    }

    /// The declared agent with this id.
    pub fn agent(&self, id: &str) -> Option<&AgentDecl> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// The declared input with this name.
    pub fn input(&self, name: &str) -> Option<&InputDecl> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

/// The type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    /// Any string.
    String,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Bool,
    /// Any JSON value.
    Json,
}

impl InputType {
    /// The spelling in workflow files.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Bool => "bool",
            InputType::Json => "json",
        }
    }
}

/// A declared input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    /// Name used in `{{inputs.<name>}}` and `--input name=...`.
    pub name: String,
    /// Its type.
    pub ty: InputType,
    /// Whether a value must be given (a default satisfies it).
    pub required: bool,
    /// Used when no value is given.
    pub default: Option<Value>,
    /// Free text.
    pub description: Option<String>,
    /// `secret: true`: the value is sealed before it is stored and shown only as redacted
    /// (it may have no default, which would sit in the definition in clear).
    pub secret: bool,
    /// Where it is declared.
    pub line: usize,
}

/// Run-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most step attempts a run may make, retries included.
    pub max_total_iterations: u32,
    /// Wall-clock bound on the whole run.
    pub run_timeout_seconds: u64,
    /// Default per-step timeout.
    pub step_timeout_seconds: u64,
    /// Default retries per step visit.
    pub max_retries: u32,
    /// Most steps of one run in flight at once.
    pub max_concurrent_steps: u32,
    /// How often a run may be recovered after its engine died; past it the run is poisoned.
    pub max_recoveries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_iterations: DEFAULT_MAX_TOTAL_ITERATIONS,
            run_timeout_seconds: DEFAULT_RUN_TIMEOUT_SECONDS,
            step_timeout_seconds: DEFAULT_STEP_TIMEOUT_SECONDS,
            max_retries: DEFAULT_MAX_RETRIES,
            max_concurrent_steps: DEFAULT_MAX_CONCURRENT_STEPS,
            max_recoveries: DEFAULT_MAX_RECOVERIES,
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the workflow.
    pub id: String,
    /// What it does.
    pub kind: StepKind,
    /// Explicit dependencies (`needs:`); `None` means "the step before me".
    pub needs: Option<Vec<String>>,
    /// Explicit successor (`next:`).
    pub next: Option<String>,
    /// How it routes, resolved to step indexes.
    pub route: Route,
    /// Declared outputs read from the `[workflow_result]` block.
    pub outputs: Vec<OutputDecl>,
    /// Effective timeout.
    pub timeout_seconds: u64,
    /// Effective retry policy.
    pub retry: RetryPolicy,
    /// Where the step starts in the file.
    pub line: usize,
}

/// The step types this version executes.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// `type: shell`: a command run by `sh -c` through the tool bus.
    Shell(ShellStep),
    /// `type: noop`: does nothing; a join point, and the unit of the benchmark.
    Noop,
    /// `type: agent_task` or `type: agent_review`: a model (or agent CLI) is asked.
    Agent(AgentStep),
    /// `type: micro_tasks`: the micro-task executor works through a work packet.
    MicroTasks(MicroTasksStep),
    /// `type: approval`: the run waits, holding nothing, for a person's decision.
    Approval(ApprovalStep),
}

impl StepKind {
    /// The `type:` spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Shell(_) => "shell",
            StepKind::Noop => "noop",
            StepKind::Agent(a) if a.review => "agent_review",
            StepKind::Agent(_) => "agent_task",
            StepKind::MicroTasks(_) => "micro_tasks",
            StepKind::Approval(_) => "approval",
        }
    }

    /// Outputs every step of this type produces, besides declared ones.
    pub fn builtin_outputs(&self) -> &'static [&'static str] {
        match self {
            StepKind::Shell(_) => &["stdout", "stderr", "exit_code"],
            StepKind::Noop => &[],
            StepKind::Agent(a) if a.review => &["summary", "decision"],
            StepKind::Agent(_) => &["summary"],
            StepKind::MicroTasks(_) => &["status", "job_id", "state_dir"],
            StepKind::Approval(_) => APPROVAL_OUTPUTS,
        }
    }
}

/// What every approval records besides its form's fields: `approve`, `reject` or `timeout`, who
/// decided, and their comment.
pub const APPROVAL_OUTPUTS: &[&str] = &["decision", "decided_by", "comment"];

/// A `type: approval` step: a question for a person, answered from the CLI, the API or the
/// console. Its form's values become the step's outputs; its decision picks its route.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalStep {
    /// The question as written.
    pub prompt_source: String,
    /// The question, parsed (it may quote earlier steps' outputs).
    pub prompt: Template,
    /// The fields a person fills in, typed like inputs; their values are the step's outputs.
    pub form: Vec<InputDecl>,
    /// Who may decide; empty: anyone who may reach the run.
    pub approvers: Vec<String>,
    /// How long the run waits for a decision; `None`: for ever.
    pub timeout_seconds: Option<u64>,
    /// Where an approval goes (default: the following step).
    pub on_approve: Option<String>,
    /// Where a rejection goes (default: the step fails, and the run with it).
    pub on_reject: Option<String>,
    /// Where a timeout goes (default: the step fails, and the run with it).
    pub on_timeout: Option<String>,
}

/// A `micro_tasks` step: its work packet and optional execution policy, as files relative to the
/// run's working directory.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroTasksStep {
    /// The work packet (YAML or JSON).
    pub packet: String,
    /// A policy file that wins over the packet's own `execution_policy`.
    pub policy: Option<String>,
}

/// An `agent_task` or `agent_review` step.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStep {
    /// The agent (a key of `agents:`).
    pub agent: String,
    /// The prompt as written.
    pub prompt_source: String,
    /// The prompt, parsed.
    pub prompt: Template,
    /// Where each declared output is also written, relative to the attempt's output root.
    pub output_files: Vec<(String, Template)>,
    /// Whether this is a review, routed by its `decision`.
    pub review: bool,
    /// Where an approval goes (default: the following step).
    pub on_approve: Option<String>,
    /// Where a rejection goes (default: the run fails).
    pub on_reject: Option<String>,
    /// DireClaw's `workspace_mode`: which directory the step works in.
    pub workspace_mode: WorkspaceMode,
    /// DireClaw's `write_state`: run state keys this step sets from its outputs once it
    /// completes (`{{outputs.<key>}}` in the file, read as this step's output).
    pub write_state: Vec<(String, Template)>,
}

/// Which directory an agent step works in (DireClaw's `workspace_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspaceMode {
    /// `run_workspace` (the default): the run's own work area.
    #[default]
    Run,
    /// `orchestrator_workspace`: the directory the run was started in, shared by its runs.
    Orchestrator,
    /// `agent_workspace`: DireClaw's baseline per-agent directory, dropped at its HEAD; read
    /// as `run_workspace`.
    Agent,
}

/// How an agent is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// An OpenAI-compatible `/v1/chat/completions` endpoint.
    OpenAi,
    /// Ollama's `/api/chat`.
    Ollama,
    /// An agent CLI (`claude`, `codex`) run through the tool bus.
    Command,
    /// Answers replayed from a file; for tests and offline demos.
    Scripted,
}

impl Provider {
    /// The spelling in workflow files.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Ollama => "ollama",
            Provider::Command => "command",
            Provider::Scripted => "scripted",
        }
    }
}

/// A declared agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDecl {
    /// Its key.
    pub id: String,
    /// How it is reached.
    pub provider: Provider,
    /// The model name.
    pub model: String,
    /// The server (openai, ollama).
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Options passed through to the provider (temperature, max_tokens, seed, ...).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// For `command`: `claude` or `codex`.
    pub cli: Option<String>,
    /// For `scripted`: the answers file, relative to the workspace.
    pub script: Option<String>,
    /// Where it is declared.
    pub line: usize,
}

/// A shell step.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellStep {
    /// The command as written.
    pub run_source: String,
    /// The command, parsed.
    pub run: Template,
    /// Extra environment variables; values are templates.
    pub env: Vec<(String, Template)>,
    /// Working directory, relative to the workspace; absolute paths and `..`
    /// escapes are refused (HSK-TERM-003), by validation and again when it runs.
    pub cwd: Option<Template>,
}

/// A declared output key; a trailing `?` in the file makes it optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputDecl {
    /// The key.
    pub key: String,
    /// Whether it may be missing.
    pub optional: bool,
}

/// How a step visit retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per visit, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_delay_ms: u64,
    /// Growth factor per retry.
    pub multiplier: f64,
    /// Upper bound on any delay.
    pub max_delay_ms: u64,
}

impl RetryPolicy {
    /// The policy a step gets when it says nothing.
    pub fn from_limits(limits: &Limits) -> RetryPolicy {
        RetryPolicy {
            max_attempts: limits.max_retries.saturating_add(1),
            initial_delay_ms: 1000,
            multiplier: 2.0,
            max_delay_ms: 60_000,
        }
    }

    /// Delay before attempt number `n` of a visit (`n >= 2`).
    pub fn delay_before(&self, n: u32) -> u64 {
        let exp = n.saturating_sub(2).min(64) as i32;
        let d = self.initial_delay_ms as f64 * self.multiplier.powi(exp);
        if d.is_finite() { (d as u64).min(self.max_delay_ms) } else { self.max_delay_ms }
    }
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The definition cannot run.
    Error,
    /// The definition runs, but something in it is unwise (a secret written in the file).
    Warning,
}

impl Severity {
    /// `error` or `warning`, as printed and in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One validation problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Whether it stops the definition from running.
    pub severity: Severity,
    /// 1-based line.
    pub line: usize,
    /// The step it concerns, if any.
    pub step: Option<String>,
    /// Dotted path of the field, e.g. `steps[1].needs`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// An error at `line`.
    pub fn error(
        line: usize,
        step: Option<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic { severity: Severity::Error, line, step, field: field.into(), message: message.into() }
    }

    /// A warning at `line`.
    pub fn warning(
        line: usize,
        step: Option<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, line, step, field: field.into(), message: message.into() }
    }

    /// Step, field and message, without the line: for `FILE:LINE: ...` output.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.step {
            out.push_str(&format!("step `{s}`, "));
        }
        if !self.field.is_empty() {
            out.push_str(&format!("field `{}`: ", self.field));
        }
        out.push_str(&self.message);
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, {}", self.line, self.describe())
    }
}

/// SHA-256 of the definition source, hex: the identity a run pins.
pub fn definition_hash(source: &str) -> String {
    crate::sha256_hex(source.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"id: hello
version: 1
inputs:
  name: {type: string, required: true}
steps:
  - id: greet
    type: shell
    run: echo "hello {{inputs.name}}"
  - id: shout
    type: shell
    needs: [greet]
    run: echo "{{steps.greet.outputs.stdout}}" | tr a-z A-Z
"#;

    fn errors(src: &str) -> Vec<String> {
        parse(src).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_minimal_file_parses_with_defaults() {
        let wf = parse(HELLO).unwrap();
        assert_eq!((wf.id.as_str(), wf.version), ("hello", 1));
        assert_eq!(wf.limits, Limits::default());
        assert_eq!(wf.limits.max_total_iterations, 12);
        assert_eq!(wf.steps[1].needs, Some(vec!["greet".to_string()]));
        assert_eq!(wf.steps[1].timeout_seconds, 900);
        assert_eq!(wf.steps[1].retry.max_attempts, 3);
        assert_eq!(wf.steps[1].line, 9);
        assert!(wf.inputs[0].required);
        assert_eq!(definition_hash(HELLO).len(), 64);
    }

    #[test]
    fn every_error_is_reported_at_once_with_line_step_and_field() {
        let src = r#"id: bad
version: one
colour: blue
inputs:
  n: {type: integer}
steps:
  - id: a
    type: shell
    run: echo {{inputs.missing}}
    timout_seconds: 5
  - id: a
    type: python
  - id: c
    type: shell
    needs: [b]
    run: echo "{{steps.zzz.outputs.stdout}} {{steps.a.outputs.nope}}"
"#;
        let errs = errors(src);
        let expected = [
            "line 2, field `version`: expected a whole number >= 1, found `one`",
            "line 3, field `colour`: unknown key `colour` (expected one of: id, version, description, capability_profile, inputs, limits, agents, steps)",
            "line 5, field `inputs.n.type`: unknown input type `integer` (expected string, number, bool or json)",
            "line 9, step `a`, field `steps[0].run`: template `{{inputs.missing}}` names unknown input `missing`",
            "line 10, step `a`, field `steps[0].timout_seconds`: unknown key `timout_seconds` (did you mean `timeout_seconds`?) (expected one of: id, type, description, run, env, cwd, agent, prompt, output_files, timeout_seconds, retry, limits, needs, next, on_approve, on_reject, on_timeout, outputs, packet, policy, form, approvers, workspace_mode, write_state)",
            "line 11, step `a`, field `steps[1].id`: duplicate step id `a` (first defined at line 7)",
            "line 12, step `a`, field `steps[1].type`: unknown step type `python` (expected one of: shell, noop, agent_task, agent_review, micro_tasks, approval)",
            "line 15, step `c`, field `steps[2].needs`: unknown step `b`",
            "line 16, step `c`, field `steps[2].run`: template `{{steps.zzz.outputs.stdout}}` names unknown step `zzz`",
            "line 16, step `c`, field `steps[2].run`: template `{{steps.a.outputs.nope}}`: step `a` has no output `nope` (it has: stdout, stderr, exit_code)",
        ];
        assert_eq!(errs, expected);
    }

    #[test]
    fn micro_tasks_steps_name_their_packet() {
        let src = "id: m\nversion: 1\nsteps:\n  - {id: fix, type: micro_tasks, packet: wp/packet.yaml, policy: wp/policy.yaml}\n  - {id: after, type: shell, run: 'echo {{steps.fix.outputs.status}}'}\n";
        let wf = parse(src).unwrap();
        let want = MicroTasksStep { packet: "wp/packet.yaml".into(), policy: Some("wp/policy.yaml".into()) };
        assert_eq!(wf.steps[0].kind, StepKind::MicroTasks(want));
        assert_eq!(
            errors("id: m\nversion: 1\nsteps:\n  - {id: fix, type: micro_tasks, run: make}\n"),
            [
                "line 4, step `fix`, field `steps[0].packet`: micro_tasks steps need `packet` (a work packet file)",
                "line 4, step `fix`, field `steps[0].run`: `run` is only valid on shell steps",
            ]
        );
        assert_eq!(
            errors(
                "id: m\nversion: 1\nsteps:\n  - {id: fix, type: micro_tasks, packet: p.yaml, timeout_seconds: 60}\n"
            ),
            [
                "line 4, step `fix`, field `steps[0].timeout_seconds`: a micro_tasks step is bounded by its execution policy (`max_duration_ms`, then the hard gate), not `timeout_seconds`"
            ]
        );
        assert_eq!(
            errors("id: m\nversion: 1\nsteps:\n  - {id: a, type: noop, packet: p.yaml}\n"),
            ["line 4, step `a`, field `steps[0].packet`: `packet` is only valid on micro_tasks steps"]
        );
    }

    #[test]
    fn cycles_unreachable_steps_and_ordering_are_refused() {
        let cycle = "id: c\nversion: 1\nsteps:\n  - {id: a, type: noop}\n  - {id: b, type: noop, needs: [a, c]}\n  - {id: c, type: noop, needs: [b]}\n";
        assert_eq!(
            errors(cycle),
            [
                "line 5, step `b`, field `steps[1]`: cycle: b -> c -> b (steps can only loop through the decisions of reviews and approvals)"
            ]
        );

        let unreachable = "id: u\nversion: 1\nsteps:\n  - {id: a, type: noop, next: c}\n  - {id: b, type: noop}\n  - {id: c, type: noop}\n";
        assert_eq!(
            errors(unreachable),
            [
                "line 5, step `b`, field `steps[1]`: step is never reached: no step routes to it and it has no `needs` that can all run"
            ]
        );

        let order = "id: o\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'echo \"{{steps.b.outputs.stdout}}\"'}\n  - {id: b, type: shell, run: echo}\n";
        assert_eq!(
            errors(order),
            [
                "line 4, step `a`, field `steps[0].run`: template `{{steps.b.outputs.stdout}}`: step `b` does not run before `a`; add it to `needs`"
            ]
        );

        let quoted = "id: q\nversion: 1\ninputs: [x]\nsteps:\n  - {id: a, type: shell, run: \"echo '{{inputs.x}}'\"}\n";
        assert_eq!(
            errors(quoted),
            [
                "line 5, step `a`, field `steps[0].run`: placeholder `{{inputs.x}}` is inside single quotes (or a quoted here-document or a comment) and would not expand; use double quotes"
            ]
        );
    }

    /// Issue 11, point 3: a placeholder never chooses the program or code, and a
    /// step's `cwd` cannot leave the workspace (HSK-TERM-003), both found by validation.
    #[test]
    fn templates_never_choose_the_program_and_cwd_stays_inside() {
        let wf = |step: &str| format!("id: t\nversion: 1\ninputs: [x]\nsteps:\n  - {step}\n");
        assert_eq!(
            errors(&wf("{id: a, type: shell, run: '{{inputs.x}} --help'}")),
            [
                "line 5, step `a`, field `steps[0].run`: placeholder `{{inputs.x}}` would be the program: templates never choose the program or the code a step runs; pass the value as an argument"
            ]
        );
        for run in ["eval {{inputs.x}}", "sh -c \\\"{{inputs.x}}\\\"", "echo ok | $({{inputs.x}})"] {
            let e = errors(&wf(&format!("{{id: a, type: shell, run: \"{run}\"}}")));
            assert!(
                e.len() == 1 && e[0].contains("field `steps[0].run`") && e[0].contains("never choose"),
                "{run}: {e:?}"
            );
        }
        for cwd in ["/tmp", "..", "src/../..", "../{{inputs.x}}", "{{inputs.x}}/../.."] {
            let e = errors(&wf(&format!("{{id: a, type: shell, cwd: '{cwd}', run: ls}}")));
            assert!(e.len() == 1 && e[0].contains("field `steps[0].cwd`: HSK-TERM-003"), "{cwd}: {e:?}");
        }
        for cwd in ["src", "src/..", "{{inputs.x}}", "a/{{inputs.x}}/.."] {
            assert!(parse(&wf(&format!("{{id: a, type: shell, cwd: '{cwd}', run: ls}}"))).is_ok(), "{cwd}");
        }
    }

    #[test]
    fn malformed_yaml_and_missing_keys_are_located() {
        assert_eq!(errors("id: [x\n").len(), 1);
        assert!(errors("id: [x\n")[0].contains("invalid YAML"));
        assert_eq!(
            errors("version: 1\nsteps: []\n"),
            [
                "line 1, field `id`: missing required key `id`",
                "line 2, field `steps`: a workflow needs at least one step"
            ]
        );
        let too_many = "id: t\nversion: 1\nlimits: {max_total_iterations: 1}\nsteps:\n  - {id: a, type: noop}\n  - {id: b, type: noop}\n";
        assert_eq!(
            errors(too_many),
            [
                "line 5, field `limits.max_total_iterations`: the workflow has 2 steps but limits.max_total_iterations is 1; raise the limit"
            ]
        );
        assert_eq!(
            errors("id: x\nversion: 1\ninputs:\n  n: {type: number, default: abc}\nsteps:\n  - {id: a, type: noop}\n"),
            ["line 4, field `inputs.n.default`: expected a number, found string `abc`"]
        );
    }

    /// Agents and agent steps: unknown agents, output keys without files,
    /// review routing, and templates naming unknown things are caught.
    #[test]
    fn agent_steps_are_validated() {
        let ok = r#"id: review-loop
version: 1
agents:
  writer: {provider: openai, base_url: "http://127.0.0.1:8081/v1", model: small, api_key_env: OPENAI_API_KEY, options: {temperature: 0}}
  critic: {provider: scripted, script: answers.yaml}
steps:
  - id: plan
    type: agent_task
    agent: writer
    prompt: "Plan {{inputs.topic}}. Feedback: {{state.review_feedback}}"
    outputs: [plan]
    output_files: {plan: "plan/{{workflow.run_id}}-{{workflow.attempt}}.md"}
    limits: {max_retries: 1}
  - id: review
    type: agent_review
    agent: critic
    prompt: "Review {{steps.plan.outputs.plan}} (saved at {{workflow.output_paths.plan}})"
    on_reject: plan
  - id: done
    type: shell
    run: echo "{{steps.review.outputs.decision}}"
inputs:
  topic: {type: string, required: true}
"#;
        let wf = parse(ok).unwrap();
        assert_eq!(wf.agents.len(), 2);
        assert_eq!(wf.agents[0].provider, Provider::OpenAi);
        assert_eq!(wf.steps[0].retry.max_attempts, 2);
        assert!(matches!(&wf.steps[1].kind, StepKind::Agent(a) if a.review && a.on_reject.as_deref() == Some("plan")));
        assert_eq!(wf.graph.routes[1], vec![2, 0]);

        let bad = r#"id: bad
version: 1
agents:
  a: {provider: openia, model: m}
  b: {provider: command}
steps:
  - id: t
    type: agent_task
    agent: nobody
    prompt: "{{inputs.nope}}"
    outputs: [plan, notes]
    output_files: {plan: "/etc/passwd", extra: "x.md"}
  - id: r
    type: agent_review
    agent: a
    prompt: ok
    next: t
    on_reject: ghost
  - {id: s, type: shell, run: "true", prompt: x}
"#;
        let errs = errors(bad);
        let want = [
            "line 4, field `agents.a.provider`: unknown provider `openia` (did you mean `openai`?) (expected one of: openai, ollama, command, scripted)",
            "line 5, field `agents.b.cli`: command agents need `cli`",
            "line 7, step `t`, field `steps[0].output_files`: output `plan` has no file in `output_files`",
            "line 7, step `t`, field `steps[0].output_files`: output `notes` has no file in `output_files`",
            "line 7, step `t`, field `steps[0].output_files`: `extra` is not a declared output",
            "line 9, step `t`, field `steps[0].agent`: unknown agent `nobody` (declare it under `agents:`)",
            "line 10, step `t`, field `steps[0].prompt`: template `{{inputs.nope}}` names unknown input `nope`",
            "line 12, step `t`, field `steps[0].output_files.plan`: `/etc/passwd` must be a relative path inside the attempt's output directory",
            "line 17, step `r`, field `steps[1].next`: a review or an approval routes by its decision: use `on_approve` and `on_reject`",
            "line 18, step `r`, field `steps[1].on_reject`: unknown step `ghost`",
            "line 19, step `s`, field `steps[2].prompt`: `prompt` is only valid on agent_task, agent_review and approval steps",
        ];
        for w in want {
            assert!(errs.iter().any(|e| e == w), "missing {w:?} in {errs:#?}");
        }
    }

    #[test]
    fn retry_policy_and_backoff() {
        let src = "id: r\nversion: 1\nsteps:\n  - id: a\n    type: noop\n    retry: {max_attempts: 4, backoff: {initial_seconds: 0.5, multiplier: 3, max_seconds: 2}}\n";
        let wf = parse(src).unwrap();
        let r = wf.steps[0].retry;
        assert_eq!(r.max_attempts, 4);
        assert_eq!([r.delay_before(2), r.delay_before(3), r.delay_before(4)], [500, 1500, 2000]);
    }

    /// `type: approval`: a prompt, a typed form whose fields are the step's outputs, approvers,
    /// a timeout with its route, and decision routes.
    #[test]
    fn approval_steps_are_read_and_validated() {
        let src = r#"id: release
version: 1
steps:
  - {id: build, type: noop}
  - id: sign_off
    type: approval
    prompt: "Ship build {{workflow.run_id}}?"
    form:
      reason: {type: string, required: true}
      budget: number
    approvers: [ada, grace]
    timeout_seconds: 3600
    on_timeout: escalate
    on_reject: escalate
  - id: ship
    type: shell
    run: echo "{{steps.sign_off.outputs.reason}} by {{steps.sign_off.outputs.decided_by}}"
  - {id: escalate, type: noop}
"#;
        let wf = parse(src).unwrap();
        let StepKind::Approval(a) = &wf.steps[1].kind else { panic!("{:?}", wf.steps[1].kind) };
        assert_eq!(
            a.form.iter().map(|f| (f.name.as_str(), f.ty, f.required)).collect::<Vec<_>>(),
            [("reason", InputType::String, true), ("budget", InputType::Number, false)]
        );
        assert_eq!((a.approvers.clone(), a.timeout_seconds), (vec!["ada".into(), "grace".into()], Some(3600)));
        assert_eq!(
            wf.steps[1].outputs,
            [OutputDecl { key: "reason".into(), optional: false }, OutputDecl { key: "budget".into(), optional: true }]
        );
        assert_eq!(wf.steps[1].route, Route::Decision { approve: None, reject: Some(3), timeout: Some(3) });
        assert_eq!(wf.graph.routes[1], vec![2, 3]);

        let bad = r#"id: bad
version: 1
steps:
  - id: ask
    type: approval
    form:
      decision: string
      key: {type: string, secret: true}
    approvers: []
    on_timeout: ask
    next: other
    outputs: [x]
    retry: {max_attempts: 2}
  - {id: other, type: noop, on_timeout: ask, form: {a: string}}
"#;
        assert_eq!(
            errors(bad),
            [
                "line 4, step `ask`, field `steps[0].prompt`: approval steps need `prompt` (the question a person answers)",
                "line 7, step `ask`, field `steps[0].form.decision`: `decision` is an output every approval records; name the field otherwise",
                "line 8, step `ask`, field `steps[0].form.key.secret`: a form field cannot be secret: its value becomes an output that later steps and people read",
                "line 9, step `ask`, field `steps[0].approvers`: an empty list of approvers lets nobody decide; leave it out to let anyone",
                "line 10, step `ask`, field `steps[0].on_timeout`: `on_timeout` needs `timeout_seconds` (without it the approval waits for ever)",
                "line 11, step `ask`, field `steps[0].next`: a review or an approval routes by its decision: use `on_approve` and `on_reject`",
                "line 12, step `ask`, field `steps[0].outputs`: `outputs` is not valid on approval steps: an approval's outputs are the fields of its `form`",
                "line 13, step `ask`, field `steps[0].retry`: `retry` is not valid on approval steps: an approval is decided once, never retried",
                "line 14, step `other`, field `steps[1].form`: `form` is only valid on approval steps",
                "line 14, step `other`, field `steps[1].on_timeout`: `on_timeout` is only valid on approval steps",
            ]
        );
    }
}
