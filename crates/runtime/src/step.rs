//! Executing one step attempt: rendering its templates into a planned operation, running it
//! through the tool bus, and reading its result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use steward_core::event::Payload;
use steward_core::job::JobKind;
use steward_core::liveness::ProcessRef;
use steward_core::result_block;
use steward_core::state::AttemptStatus;
use steward_core::template::{Ref, RenderError, Template, WorkflowVar, lookup_path};
use steward_core::workflow::{AgentStep, MicroTasksStep, Step, StepKind, Workflow};
use steward_store::{Attempt, AttemptFinish, AttemptProcess, Run};
use steward_tools::bus::{CallContext, ToolBus};
use steward_tools::exec::{BoxFuture, Ending, ProcessRecorder};
use steward_tools::op::{MAX_INLINE_BYTES, PlannedOperation};
use steward_tools::redact::Redactor;
use steward_tools::terminal::SessionKind;

use crate::agent::{self, AgentWork};
use crate::approval::{self, ApprovalWork};
use crate::halt::Halt;
use crate::micro_task::job::{self, MicroTaskWork, RunSink, RunWriter};
use steward_core::state::HumanDecision;

/// Exit codes `sh` uses when it cannot run the command at all.
const NOT_FOUND: i32 = 127;
const NOT_EXECUTABLE: i32 = 126;

/// A step attempt ready to execute, with the input payload to record.
pub(crate) struct Prepared {
    pub(crate) input: Value,
    pub(crate) work: Work,
}

pub(crate) enum Work {
    /// An `engine.shell`/`exec` operation for the tool bus.
    Shell(Box<PlannedOperation>, Box<CallContext>),
    /// A question for an agent.
    Agent(Box<AgentWork>),
    /// A micro-task job to run or continue.
    MicroTasks(Box<MicroTaskWork>),
    /// A question for a person, or the reading of their decision.
    Approval(ApprovalWork),
    Noop,
    /// Rendering failed: the attempt is recorded, then fails without running.
    Unrunnable(String),
}

/// An ended attempt and the events that happened during it.
pub(crate) struct StepDone {
    pub(crate) finish: AttemptFinish,
    pub(crate) events: Vec<Payload>,
}

/// What templates can see while a run executes.
pub(crate) struct Scope<'a> {
    pub(crate) run: &'a Run,
    /// The run's inputs, secret ones opened.
    pub(crate) inputs: &'a Map<String, Value>,
    pub(crate) wf: &'a Workflow,
    pub(crate) attempts: &'a [Attempt],
    pub(crate) bus: &'a ToolBus,
    /// This engine's data directory, absolute: where the files an attempt hands to a process
    /// live (an agent CLI's prompt file, an agent's output files). Nothing a later attempt
    /// needs is kept there; that goes to the artifact store, which every worker reaches.
    pub(crate) data_dir: &'a Path,
    pub(crate) actor_id: &'a str,
    pub(crate) env: Arc<std::collections::BTreeMap<String, String>>,
    pub(crate) writer: &'a RunWriter,
}

/// Large outputs of earlier steps that a step's templates read, fetched from the artifact store
/// before rendering (which cannot wait): artifact hash → its text, or why it could not be read.
type Fetched = HashMap<String, Result<String, String>>;

/// Every template of a step: what it renders before it runs.
fn templates(step: &Step) -> Vec<&Template> {
    match &step.kind {
        StepKind::Shell(s) => {
            std::iter::once(&s.run).chain(s.env.iter().map(|(_, t)| t)).chain(s.cwd.as_ref()).collect()
        }
        StepKind::Agent(a) => std::iter::once(&a.prompt).chain(a.output_files.iter().map(|(_, t)| t)).collect(),
        StepKind::Approval(a) => vec![&a.prompt],
        StepKind::Noop | StepKind::MicroTasks(_) => Vec::new(),
    }
}

impl Scope<'_> {
    /// The output of the latest completed attempt of `step`.
    fn completed_output(&self, step: &str) -> Option<&Value> {
        self.attempts
            .iter()
            .filter(|a| a.step_id == step && a.status == AttemptStatus::Completed)
            .max_by_key(|a| a.attempt)
            .and_then(|a| a.output.as_ref())
    }

    /// Reads the large outputs (`stdout`/`stderr` kept as artifacts) that `step`'s templates use.
    async fn fetch(&self, step: &Step) -> Fetched {
        let mut fetched = Fetched::new();
        for r in templates(step).into_iter().flat_map(Template::refs) {
            let Ref::StepOutput { step, key } = r else { continue };
            if !matches!(key.as_str(), "stdout" | "stderr") {
                continue;
            }
            let Some(hash) =
                self.completed_output(step).and_then(|o| o.get(format!("{key}_ref"))).and_then(Value::as_str)
            else {
                continue;
            };
            if fetched.contains_key(hash) {
                continue;
            }
            let text = match self.bus.artifacts().get(hash).await {
                Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) => Err(e.to_string()),
            };
            fetched.insert(hash.to_owned(), text);
        }
        fetched
    }

    fn resolve(
        &self,
        r: &Ref,
        step_id: &str,
        attempt: u32,
        paths: &[(String, PathBuf)],
        fetched: &Fetched,
    ) -> Result<Value, RenderError> {
        let err = |reason: String| RenderError { reference: r.to_string(), reason };
        match r {
            Ref::Input { name, path } => {
                let v = self
                    .inputs
                    .get(name)
                    .ok_or_else(|| err(format!("input `{name}` was not given and has no default")))?;
                lookup_path(v, path).cloned().ok_or_else(|| err(format!("input `{name}` has no `{}`", path.join("."))))
            }
            Ref::StepOutput { step, key } => {
                let done = self
                    .attempts
                    .iter()
                    .filter(|a| &a.step_id == step && a.status == AttemptStatus::Completed)
                    .max_by_key(|a| a.attempt)
                    .ok_or_else(|| err(format!("step `{step}` has not completed")))?;
                let out = done.output.as_ref().ok_or_else(|| err(format!("step `{step}` recorded no output")))?;
                if matches!(key.as_str(), "stdout" | "stderr") {
                    // Large output travels as an artifact, read back before rendering.
                    if let Some(hash) = out.get(format!("{key}_ref")).and_then(Value::as_str) {
                        let text = match fetched.get(hash) {
                            Some(Ok(text)) => text,
                            Some(Err(e)) => return Err(err(format!("cannot read {key} of step `{step}`: {e}"))),
                            None => return Err(err(format!("cannot read {key} of step `{step}`: not fetched"))),
                        };
                        return Ok(Value::String(trim_output(text)));
                    }
                }
                let builtin = self.wf.step(step).is_some_and(|s| s.kind.builtin_outputs().contains(&key.as_str()));
                out.get(key)
                    .filter(|_| builtin)
                    .or_else(|| out.get("outputs").and_then(|o| o.get(key)))
                    .cloned()
                    .ok_or_else(|| err(format!("step `{step}` did not produce `{key}`")))
            }
            Ref::Workflow(WorkflowVar::RunId) => Ok(json!(self.run.run_id)),
            Ref::Workflow(WorkflowVar::StepId) => Ok(json!(step_id)),
            Ref::Workflow(WorkflowVar::Attempt) => Ok(json!(attempt)),
            Ref::Workflow(WorkflowVar::WorkflowId) => Ok(json!(self.wf.id)),
            Ref::Workflow(WorkflowVar::RunWorkspace) => Ok(json!(self.run_workspace().display().to_string())),
            Ref::Workflow(WorkflowVar::OutputSchemaJson) => {
                let declared = self.wf.step(step_id).map_or(&[][..], |s| s.outputs.as_slice());
                let properties: Map<String, Value> =
                    declared.iter().map(|o| (o.key.clone(), json!({"type": "string"}))).collect();
                let required: Vec<&str> = declared.iter().filter(|o| !o.optional).map(|o| o.key.as_str()).collect();
                Ok(json!({"type": "object", "properties": properties, "required": required}).to_string().into())
            }
            Ref::Workflow(WorkflowVar::OutputPathsJson) => {
                let paths: Map<String, Value> =
                    paths.iter().map(|(k, p)| (k.clone(), json!(p.display().to_string()))).collect();
                Ok(Value::Object(paths).to_string().into())
            }
            Ref::Workflow(WorkflowVar::FromInput(name)) => self
                .inputs
                .get(*name)
                .cloned()
                .ok_or_else(|| err(format!("it reads the run's `{name}` input, which the run was not given"))),
            Ref::State(key) => Ok(self.state(key)),
            Ref::OutputPath(key) => paths
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, p)| json!(p.display().to_string()))
                .ok_or_else(|| err(format!("step `{step_id}` has no output file `{key}`"))),
        }
    }

    fn render(&self, t: &Template, step_id: &str, attempt: u32, fetched: &Fetched) -> Result<String, RenderError> {
        t.render(|r| self.resolve(r, step_id, attempt, &[], fetched))
    }

    /// `state.<key>`: run facts, a key a step's `write_state` sets (as its latest completion
    /// wrote it), and the latest outputs of completed steps as `<step>_<key>` (DireClaw
    /// §8.3); a key nobody set is empty.
    fn state(&self, key: &str) -> Value {
        match key {
            "run_state" => return json!(self.run.state.as_str()),
            "total_iterations" => return json!(self.attempts.len()),
            "started_at" => return json!(self.run.started_at.map(|t| t.to_rfc3339())),
            _ => {}
        }
        let setter = |step_id: &str| match self.wf.step(step_id).map(|s| &s.kind) {
            Some(StepKind::Agent(a)) => a.write_state.iter().find(|(k, _)| k == key).map(|(_, t)| t),
            _ => None,
        };
        let completed = self.attempts.iter().rev().filter(|a| a.status == AttemptStatus::Completed);
        if let Some((a, t)) = completed.clone().find_map(|a| setter(&a.step_id).map(|t| (a, t))) {
            // Its template reads that step's outputs, inputs and workflow values, never state
            // (the parser refuses it), so this does not recurse.
            return self.render(t, &a.step_id, a.attempt, &Fetched::default()).map_or(Value::Null, Value::String);
        }
        for a in completed {
            let Some(rest) = key.strip_prefix(&format!("{}_", a.step_id)) else { continue };
            let Some(out) = &a.output else { continue };
            if let Some(v) = out.get("outputs").and_then(|o| o.get(rest)).or_else(|| out.get(rest)) {
                return v.clone();
            }
        }
        Value::Null
    }

    /// The run's own work area, `<workdir>/work/runs/<run id>` (DireClaw HEAD's): outside the
    /// data directory, so that the sandbox lets an agent write there.
    fn run_workspace(&self) -> PathBuf {
        Path::new(&self.run.workdir).join(RUN_WORKSPACE[0]).join(RUN_WORKSPACE[1]).join(&self.run.run_id)
    }

    /// Where a step attempt's files live: `<data dir>/runs/<run>/steps/<step>/attempts/<n>`.
    fn attempt_dir(&self, step_id: &str, attempt: u32) -> PathBuf {
        self.data_dir
            .join("runs")
            .join(&self.run.run_id)
            .join("steps")
            .join(step_id)
            .join("attempts")
            .join(attempt.to_string())
    }

    fn context(&self, key: &str) -> CallContext {
        CallContext {
            job_id: self.run.job_id.clone(),
            trace_id: self.run.trace_id.clone(),
            actor_id: self.actor_id.to_owned(),
            ai_actor: true,
            session: SessionKind::AiJob,
            session_id: key.to_owned(),
            workflow_id: self.wf.id.clone(),
            workspace_root: self.run.workdir.clone().into(),
            idempotency_key: key.to_owned(),
        }
    }

    /// Renders an agent step's prompt, output paths and contract.
    async fn prepare_agent(
        &self,
        step: &Step,
        a: &AgentStep,
        attempt: u32,
        key: &str,
        fetched: &Fetched,
    ) -> Result<Prepared, RenderError> {
        let agent_decl = self
            .wf
            .agent(&a.agent)
            .cloned()
            .ok_or_else(|| RenderError { reference: a.agent.clone(), reason: "unknown agent".into() })?;
        let dir = self.attempt_dir(&step.id, attempt);
        let mut paths = Vec::new();
        for (k, t) in &a.output_files {
            let rel = t.render(|r| self.resolve(r, &step.id, attempt, &[], fetched))?;
            paths.push((k.clone(), dir.join("outputs").join(rel)));
        }
        if a.prompt.refs().any(|r| matches!(r, Ref::Workflow(WorkflowVar::RunWorkspace))) {
            // An earlier step may have left a link where the work area goes: never followed.
            let parts = [RUN_WORKSPACE[0], RUN_WORKSPACE[1], self.run.run_id.as_str()];
            crate::files::dirs_within(Path::new(&self.run.workdir), &parts).map_err(|e| RenderError {
                reference: "workflow.run_workspace".into(),
                reason: format!("cannot make {}: {e}", self.run_workspace().display()),
            })?;
        }
        let body = a.prompt.render(|r| self.resolve(r, &step.id, attempt, &paths, fetched))?;
        let prompt = format!("{body}{}", agent::contract(a.review, &step.outputs, &paths));
        let evidence = self.bus.redactor().redact(&prompt).0;
        let prompt_ref = self
            .bus
            .artifacts()
            .put(evidence.as_bytes(), "text/markdown; charset=utf-8")
            .await
            .map_err(|e| RenderError { reference: "prompt".into(), reason: format!("cannot store the prompt: {e}") })?
            .hash;
        let input = json!({
            "type": step.kind.type_name(),
            "agent": agent_decl.id,
            "provider": agent_decl.provider.as_str(),
            "model": agent_decl.model,
            "prompt_ref": prompt_ref,
            "output_files": paths.iter().map(|(k, p)| (k.clone(), json!(p.display().to_string()))).collect::<Map<String, Value>>(),
        });
        let work = AgentWork {
            agent: agent_decl,
            review: a.review,
            prompt,
            prompt_ref,
            output_files: paths,
            attempt_dir: dir,
            workdir: self.run.workdir.clone().into(),
            ctx: self.context(key),
            env: self.env.clone(),
            profile: self.wf.profile().to_owned(),
        };
        Ok(Prepared { input, work: Work::Agent(Box::new(work)) })
    }

    /// Resolves a `micro_tasks` visit to its job, continuing it with a person's answer if its
    /// last attempt stopped for one.
    fn prepare_micro_tasks(&self, step: &Step, m: &MicroTasksStep, visit: u32) -> Prepared {
        let whole_run = self.run.contract.job_kind == JobKind::MicroTaskExecution;
        let job_id = job::job_of(&self.run.job_id, whole_run, &step.id, visit);
        let workdir = Path::new(&self.run.workdir);
        // The answer to the step's last attempt, if it stopped for a person: the one attempt
        // that follows it reads it.
        let decision = self
            .attempts
            .iter()
            .filter(|a| a.step_id == step.id)
            .max_by_key(|a| a.attempt)
            .filter(|a| a.status == AttemptStatus::AwaitingUser)
            .and_then(|a| a.answer);
        let input = json!({
            "type": "micro_tasks",
            "packet": m.packet,
            "policy": m.policy,
            "job_id": job_id,
            // Where the job's state is, for people: its documents in the artifact store.
            "state_dir": self.bus.artifacts().location(&job_id),
            "decision": decision.map(HumanDecision::as_str),
        });
        let sink = RunSink { writer: self.writer.clone(), step_id: step.id.clone() };
        let work = MicroTaskWork {
            packet: workdir.join(&m.packet),
            policy: m.policy.as_ref().map(|p| workdir.join(p)),
            job_id,
            run_id: self.run.run_id.clone(),
            trace_id: self.run.trace_id.clone(),
            profile: self.wf.profile().to_owned(),
            workflow_id: self.wf.id.clone(),
            decision,
            data_dir: self.data_dir.to_path_buf(),
            env: self.env.clone(),
            sink: Arc::new(sink),
            clock: self.writer.clock.clone(),
        };
        Prepared { input, work: Work::MicroTasks(Box::new(work)) }
    }

    /// Renders a step's templates into something to run, and the input to record. The prompt
    /// of an agent and large values are stored as artifacts on the way.
    pub(crate) async fn prepare(&self, step: &Step, attempt: u32, visit: u32) -> Prepared {
        let key = steward_core::idempotency_key(&self.run.run_id, &step.id, attempt);
        let fetched = self.fetch(step).await;
        let shell = match &step.kind {
            StepKind::Shell(shell) => shell,
            StepKind::Noop => return Prepared { input: json!({"type": "noop"}), work: Work::Noop },
            StepKind::MicroTasks(m) => return self.prepare_micro_tasks(step, m, visit),
            StepKind::Approval(a) => {
                let waited = approval::waited(self.attempts, &step.id, visit);
                let input = json!({"type": "approval", "prompt": a.prompt_source, "waited": waited});
                let work = match self.render(&a.prompt, &step.id, attempt, &fetched) {
                    Ok(text) => Work::Approval(ApprovalWork { waited, prompt: self.bus.redactor().redact(&text).0 }),
                    Err(e) => Work::Unrunnable(self.bus.redactor().redact(&e.to_string()).0),
                };
                return Prepared { input, work };
            }
            StepKind::Agent(a) => {
                return self.prepare_agent(step, a, attempt, &key, &fetched).await.unwrap_or_else(|e| Prepared {
                    input: json!({"type": step.kind.type_name(), "agent": a.agent}),
                    work: Work::Unrunnable(self.bus.redactor().redact(&e.to_string()).0),
                });
            }
        };
        let rendered = async {
            let (command, mut env) = shell.run.render_shell(|r| self.resolve(r, &step.id, attempt, &[], &fetched))?;
            for (k, t) in &shell.env {
                env.push((k.clone(), self.render(t, &step.id, attempt, &fetched)?));
            }
            let cwd = shell.cwd.as_ref().map(|t| self.render(t, &step.id, attempt, &fetched)).transpose()?;
            env.extend([
                ("STEWARD_RUN_ID".to_owned(), self.run.run_id.clone()),
                ("STEWARD_WORKFLOW_ID".to_owned(), self.wf.id.clone()),
                ("STEWARD_STEP_ID".to_owned(), step.id.clone()),
                ("STEWARD_ATTEMPT".to_owned(), attempt.to_string()),
            ]);
            let timeout = Duration::from_secs(step.timeout_seconds);
            let mut op = self.bus.shell_op(&key, &command, cwd.as_deref(), &env, timeout, self.wf.profile());
            self.bus.externalize_large_env(&mut op).await.map_err(|e| RenderError {
                reference: "env".into(),
                reason: format!("cannot store a large value as an artifact: {e}"),
            })?;
            let mut input = serde_json::to_value(&op).unwrap_or(Value::Null);
            input["run"] = json!(shell.run_source);
            let input = self.bus.recorded_op(&input).await.map_err(|e| RenderError {
                reference: "env".into(),
                reason: format!("cannot store a large value as an artifact: {e}"),
            })?;
            Ok::<_, RenderError>((op, input))
        }
        .await;
        match rendered {
            Ok((op, input)) => Prepared { input, work: Work::Shell(Box::new(op), Box::new(self.context(&key))) },
            Err(e) => Prepared {
                input: json!({"type": "shell", "run": shell.run_source}),
                work: Work::Unrunnable(self.bus.redactor().redact(&e.to_string()).0),
            },
        }
    }
}

/// How an attempt ended; the driver adds the routes of a completed one.
pub(crate) fn finish(
    step_id: &str,
    attempt: u32,
    status: AttemptStatus,
    error: Option<String>,
    retryable: bool,
    output: Option<Value>,
) -> AttemptFinish {
    AttemptFinish {
        step_id: step_id.to_owned(),
        attempt,
        status,
        output,
        error,
        retryable,
        with_issues: false,
        routes: Vec::new(),
    }
}

/// Output text as the `stdout` output: trailing newlines removed, as `$(...)` does.
fn trim_output(text: &str) -> String {
    text.trim_end_matches(['\n', '\r']).to_owned()
}

/// Keeps a `[workflow_result]` envelope's summary, redacted, in `output`; when the envelope says
/// it failed, returns why (its summary, or that the `who` reported failure).
pub(crate) fn record_summary(
    env: &result_block::Envelope,
    redactor: &Redactor,
    output: &mut Value,
    who: &str,
) -> Option<String> {
    let summary = env.summary.as_deref().map(|s| redactor.redact(s).0);
    if let Some(s) = &summary {
        output["summary"] = json!(s);
    }
    env.failed.then(|| summary.unwrap_or_else(|| format!("the {who} reported status failed")))
}

pub(crate) fn last_line(text: &str) -> String {
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if line.len() > 300 { format!("{}...", &line[..line.floor_char_boundary(300)]) } else { line.to_owned() }
}

/// Records the process group of an attempt's command in the run before the command may run,
/// fenced like every write of the driver: a process that no longer holds the run cannot start
/// a command (the command is killed unstarted).
pub(crate) struct AttemptRecorder {
    pub(crate) writer: RunWriter,
    pub(crate) step_id: String,
    pub(crate) attempt: u32,
}

impl ProcessRecorder for AttemptRecorder {
    fn record(&self, process: ProcessRef) -> BoxFuture<'_, Result<(), String>> {
        let mut c = self.writer.fenced(self.writer.clock.now());
        c.processes = vec![AttemptProcess { step_id: self.step_id.clone(), attempt: self.attempt, process }];
        self.writer.send(c)
    }
}

/// Where a run's work area is under the directory it works in: `work/runs/<run id>`.
const RUN_WORKSPACE: [&str; 2] = ["work", "runs"];

/// Runs a prepared attempt to its end. Never fails: every outcome is an attempt ending.
pub(crate) async fn execute(
    step: &Step,
    attempt: u32,
    work: Work,
    bus: &ToolBus,
    halt: &Halt,
    recorder: &AttemptRecorder,
) -> StepDone {
    let mut done = execute_work(step, attempt, work, bus, halt, recorder).await;
    // DireClaw's TransitionValidation: the step did its work, but where it leads is no step.
    let approved =
        done.finish.output.as_ref().and_then(|o| o.get("decision")).and_then(Value::as_str).map(|d| d == "approve");
    if done.finish.status == AttemptStatus::Completed
        && let Some(target) = step.missing_target(approved)
    {
        done.finish.status = AttemptStatus::Failed;
        done.finish.retryable = false;
        done.finish.error = Some(format!(
            "transition target `{target}` of step `{}` is not a step of the workflow (TransitionValidation)",
            step.id
        ));
    }
    done
}

async fn execute_work(
    step: &Step,
    attempt: u32,
    work: Work,
    bus: &ToolBus,
    halt: &Halt,
    recorder: &AttemptRecorder,
) -> StepDone {
    let cancel = halt.token();
    let done = |finish| StepDone { finish, events: Vec::new() };
    let (op, ctx) = match work {
        Work::Noop => {
            return done(self::finish(&step.id, attempt, AttemptStatus::Completed, None, false, Some(json!({}))));
        }
        Work::Unrunnable(reason) => {
            return done(self::finish(
                &step.id,
                attempt,
                AttemptStatus::Failed,
                Some(format!("cannot start: {reason}")),
                false,
                None,
            ));
        }
        Work::Shell(op, ctx) => (op, ctx),
        Work::Agent(work) => return agent::execute(step, attempt, *work, bus, cancel, recorder).await,
        Work::MicroTasks(work) => return job::execute(step, attempt, *work, bus, halt, recorder).await,
        Work::Approval(work) => return approval::execute(step, attempt, work, &recorder.writer).await,
    };
    let executed = bus.execute(&op, &ctx, cancel, recorder).await;
    let events = executed.events;
    let with = |finish| StepDone { finish, events: events.clone() };
    let Some(out) = executed.output else {
        // Refused by a gate or guard, or could not be spawned: retrying cannot change that.
        let why = executed.refusal.map_or_else(|| "refused by the tool bus".to_owned(), |r| r.to_string());
        return with(self::finish(&step.id, attempt, AttemptStatus::Failed, Some(why), false, None));
    };
    let exit_code = match out.ending {
        Ending::Exited(c) => json!(c),
        _ => Value::Null,
    };
    let mut output = json!({
        "exit_code": exit_code,
        "duration_ms": u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX),
        "op_id": op.op_id,
        "evidence": executed.result.evidence.iter().map(|a| a.hash.clone()).collect::<Vec<_>>(),
    });
    // DG-MEX-03: what is larger than 32 KB is referenced, never inlined.
    for (key, text, evidence) in [("stdout", &out.stdout, 0), ("stderr", &out.stderr, 1)] {
        if text.len() > MAX_INLINE_BYTES
            && let Some(a) = executed.result.evidence.get(evidence)
        {
            output[format!("{key}_ref")] = json!(a.hash);
            output[format!("{key}_bytes")] = json!(a.bytes);
        } else {
            output[key] = json!(trim_output(text));
        }
    }
    if out.truncated_bytes > 0 {
        output["truncated_bytes"] = json!(out.truncated_bytes);
    }
    let why = || last_line(&out.stderr);
    let failure = match out.ending {
        Ending::Exited(0) => None,
        Ending::TimedOut => Some((AttemptStatus::TimedOut, format!("timed out after {}s", step.timeout_seconds), true)),
        Ending::Cancelled => Some((AttemptStatus::Cancelled, "cancelled".to_owned(), false)),
        Ending::Signalled(sig) => Some((AttemptStatus::Failed, format!("killed by signal {sig}"), true)),
        // The shell could not run the command at all: retrying will not help.
        Ending::Exited(NOT_FOUND) => {
            Some((AttemptStatus::Failed, format!("command not found (exit 127): {}", why()), false))
        }
        Ending::Exited(NOT_EXECUTABLE) => {
            Some((AttemptStatus::Failed, format!("command not executable (exit 126): {}", why()), false))
        }
        Ending::Exited(code) => {
            let why = why();
            let msg = if why.is_empty() { format!("exit code {code}") } else { format!("exit code {code}: {why}") };
            Some((AttemptStatus::Failed, msg, true))
        }
    };
    if let Some((status, error, retryable)) = failure {
        return with(self::finish(&step.id, attempt, status, Some(error), retryable, Some(output)));
    }
    // The envelope is read from the raw output; what is kept of it is redacted.
    let envelope = match result_block::parse(&out.raw_stdout) {
        Ok(e) => e,
        Err(e) => {
            return with(self::finish(&step.id, attempt, AttemptStatus::Failed, Some(e), true, Some(output)));
        }
    };
    // The operation's redactor: the run's, plus its secret-named variables.
    let redactor = &executed.redactor;
    if let Some(env) = &envelope {
        output["outputs"] = redactor.redact_json(&Value::Object(env.outputs.clone()));
        if let Some(why) = record_summary(env, redactor, &mut output, "step") {
            return with(self::finish(
                &step.id,
                attempt,
                AttemptStatus::Failed,
                Some(format!("step reported failure: {why}")),
                true,
                Some(output),
            ));
        }
    }
    let declared = envelope.map(|e| e.outputs).unwrap_or_else(Map::new);
    let missing = result_block::missing_outputs(&step.outputs, &declared);
    if !missing.is_empty() {
        let msg = format!("missing required outputs in the [workflow_result] block: {}", missing.join(", "));
        return with(self::finish(&step.id, attempt, AttemptStatus::Failed, Some(msg), true, Some(output)));
    }
    with(self::finish(&step.id, attempt, AttemptStatus::Completed, None, false, Some(output)))
}
