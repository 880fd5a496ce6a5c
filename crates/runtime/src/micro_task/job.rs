//! A `micro_tasks` step as an engine attempt: the executor runs from wherever its job's state
//! (documents under the job's id in the artifact store) says it is, its events are committed to
//! the run as they happen, and its ending becomes the attempt's (a pause ends the attempt
//! `awaiting_user` and the run waits for a person).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use steward_core::event::{Actor, NewEvent, Payload};
use steward_core::event_registry::spec_of;
use steward_core::state::AttemptStatus;
use steward_core::workflow::{Provider, Step};
use steward_micro_task::policy::EscalationLevel;
use steward_micro_task::state::{ProgressArtifact, ProgressStatus};
use steward_models::ModelClient;
use steward_models::http::HttpConfig;
use steward_store::{Commit, Expect};
use steward_tools::bus::ToolBus;
use steward_tools::exec::ProcessRecorder;
use steward_tools::redact::Redactor;

use super::executor::{BoxFuture, EventSink, ExecError, Executor, Outcome};
use super::plan::plan;
use crate::agent::{connect, env_var};
use crate::clock::Clock;
use crate::halt::Halt;
use crate::step::StepDone;
use steward_core::state::HumanDecision;

/// Who the executor's events name as their actor id.
const EXECUTOR_ACTOR: &str = "micro-task-executor";

/// Writes one commit to the run's store; the engine supplies it.
pub(crate) type CommitFn = dyn Fn(Commit) -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// Says whether this process still holds the run (`Err` with why, if not); the engine supplies it.
pub(crate) type FenceFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// Reads the run's attempts as the store has them now; the engine supplies it.
pub(crate) type ReadFn = dyn Fn() -> BoxFuture<'static, Result<Vec<steward_store::Attempt>, String>> + Send + Sync;

/// A `micro_tasks` attempt, resolved and ready to run.
pub(crate) struct MicroTaskWork {
    /// The work packet file.
    pub(crate) packet: PathBuf,
    /// A policy file that wins over the packet's own.
    pub(crate) policy: Option<PathBuf>,
    /// The micro-task job: the run's own job for a `micro_task_execution` run, else one per
    /// visit of the step.
    pub(crate) job_id: String,
    pub(crate) run_id: String,
    pub(crate) trace_id: String,
    /// The capability profile the verify commands run under.
    pub(crate) profile: String,
    /// The run's workflow, for the operator's per-workflow grants.
    pub(crate) workflow_id: String,
    /// A person's answer to the pause the previous attempt stopped at.
    pub(crate) decision: Option<HumanDecision>,
    /// The engine's data directory, left out of the tasks' stages.
    pub(crate) data_dir: PathBuf,
    /// Variables seen before the process environment (API keys).
    pub(crate) env: Arc<BTreeMap<String, String>>,
    /// Where the job's events go.
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Where a job's tasks are staged: under the system's temporary directory (where the sandbox
/// binds a command's workspace back, and outside the data directory it hides), one directory
/// per user (made mode 0700) and job.
pub fn stage_base(job_id: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    std::env::temp_dir().join(format!("steward-stage-{uid}")).join(job_id)
}

/// Removes this machine's stages of jobs that have ended: a stage outlives its job only when the
/// job's process was killed and the job then ended elsewhere (or was cancelled while nobody ran
/// it here). A job this artifact store does not know, or one still going, keeps its stage.
pub async fn sweep_stages(artifacts: &dyn steward_artifacts::ArtifactStore) {
    let Some(root) = stage_base("x").parent().map(Path::to_path_buf) else { return };
    let Ok(entries) = std::fs::read_dir(&root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let job = name.strip_suffix(".building").unwrap_or(&name);
        let Ok(Some(bytes)) = artifacts.read_document(job, "progress_artifact.json").await else { continue };
        let Ok(progress) = serde_json::from_slice::<ProgressArtifact>(&bytes) else { continue };
        if !matches!(progress.status, ProgressStatus::InProgress | ProgressStatus::Paused) {
            super::stage::remove(&root.join(job));
        }
    }
}

/// The job of a visit of a `micro_tasks` step: its id is the scope of its state documents.
pub(crate) fn job_of(run_job_id: &str, whole_run: bool, step_id: &str, visit: u32) -> String {
    if whole_run { run_job_id.to_owned() } else { format!("{run_job_id}-{step_id}-{visit}") }
}

/// How the work of a run's attempts writes to the run while it runs (the executor's events, a
/// command's process): every write is fenced like the driver's, on the lease epoch it holds, so
/// once the run is cancelled or taken over, they are refused.
#[derive(Clone)]
pub(crate) struct RunWriter {
    pub(crate) commit: Arc<CommitFn>,
    pub(crate) fence: Arc<FenceFn>,
    /// What the store holds of the run's attempts (an approval reads its decision there).
    pub(crate) read: Arc<ReadFn>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) run_id: String,
    /// The process driving the run.
    pub(crate) owner: String,
    /// The lease epoch it drives the run under: the fencing token of every write.
    pub(crate) epoch: u64,
}

impl RunWriter {
    /// An empty commit, made at `now`, that lands only while this process still drives the run.
    pub(crate) fn fenced(&self, now: steward_core::Timestamp) -> Commit {
        Commit::new(&self.run_id, Expect::held(self.epoch), now, Actor::System, &self.owner)
    }

    /// Sends a commit.
    pub(crate) fn send(&self, c: Commit) -> BoxFuture<'static, Result<(), String>> {
        (self.commit)(c)
    }
}

/// Commits the executor's events to the run while the attempt runs: once the run is cancelled
/// or taken over, the events are refused and the loop stops.
pub(crate) struct RunSink {
    pub(crate) writer: RunWriter,
    pub(crate) step_id: String,
}

impl EventSink for RunSink {
    fn emit(&self, events: Vec<Payload>) -> BoxFuture<'_, Result<(), String>> {
        let mut c = self.writer.fenced(self.writer.clock.now());
        c.events = events
            .into_iter()
            .map(|payload| NewEvent {
                // The registry fixes the actor of some types (a recovery is the system's).
                actor: spec_of(payload.event_type()).and_then(|s| s.actor).unwrap_or(Actor::System),
                actor_id: EXECUTOR_ACTOR.to_owned(),
                step_id: Some(self.step_id.clone()),
                payload,
            })
            .collect();
        self.writer.send(c)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        (self.writer.fence)()
    }
}

/// The client for a chain level (the provider defaults to a local Ollama) and its API key.
fn client(
    level: &EscalationLevel,
    root: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(Arc<dyn ModelClient>, Option<String>), String> {
    let provider = match level.provider.as_deref().unwrap_or("ollama") {
        "openai" => Provider::OpenAi,
        "ollama" => Provider::Ollama,
        "scripted" => Provider::Scripted,
        other => return Err(format!("level {}: `{other}` is not a provider", level.level)),
    };
    let key = match &level.api_key_env {
        Some(var) => Some(env_var(env, var).ok_or_else(|| {
            format!("level {}: the environment variable {var} (api_key_env) is not set", level.level)
        })?),
        None => None,
    };
    let script = level.script.as_deref().map(|s| root.join(s));
    let c = connect(provider, level.base_url.as_deref(), script.as_deref(), key.clone(), HttpConfig::default())?;
    Ok((c, key))
}

/// How the job's attempt ended. `label` is the job's own word for it, kept in the output for
/// people; what the engine acts on travels typed in the attempt's fields.
fn end(step: &Step, attempt: u32, ending: Ending, error: Option<String>, mut output: Value) -> StepDone {
    output["status"] = json!(ending.label);
    let mut finish = crate::step::finish(&step.id, attempt, ending.status, error, ending.retryable, Some(output));
    finish.with_issues = ending.with_issues;
    StepDone { finish, events: Vec::new() }
}

/// How a job's attempt ends, as the engine reads it.
struct Ending {
    status: AttemptStatus,
    /// A micro-task job keeps its own iteration budget; the engine retries it on top only
    /// when the executor itself stopped or its engine was interrupted.
    retryable: bool,
    /// Completed, but tasks were skipped: the run ends `completed_with_issues`.
    with_issues: bool,
    label: &'static str,
}

impl Ending {
    fn of(status: AttemptStatus, label: &'static str) -> Ending {
        Ending { status, retryable: status == AttemptStatus::Interrupted, with_issues: false, label }
    }

    const FAILED: Ending =
        Ending { status: AttemptStatus::Failed, retryable: false, with_issues: false, label: "failed" };
}

/// Runs the job to its end or to a pause. Never fails: every outcome is an attempt ending.
pub(crate) async fn execute(
    step: &Step,
    attempt: u32,
    work: MicroTaskWork,
    bus: &ToolBus,
    halt: &Halt,
    recorder: &dyn ProcessRecorder,
) -> StepDone {
    let artifacts = bus.artifacts().as_ref();
    sweep_stages(artifacts).await;
    let mut output = json!({
        "job_id": work.job_id,
        // Where the job's state is, for people: its documents in the artifact store.
        "state_dir": artifacts.location(&work.job_id),
    });
    let mut plan = match plan(&work.packet, work.policy.as_deref(), None, bus, &work.profile) {
        Ok(p) => p,
        Err(e) => return end(step, attempt, Ending::FAILED, Some(format!("cannot plan the job: {e}")), output),
    };
    if plan.report.has_errors() {
        output["report"] = serde_json::to_value(&plan.report).unwrap_or_default();
        let errors: Vec<String> = plan.report.errors.iter().map(ToString::to_string).collect();
        let why = format!("MT-VAL blocked the job: {}", errors.join("; "));
        return end(step, attempt, Ending::FAILED, Some(why), output);
    }
    if plan.policy.escalation_chain.iter().any(|l| l.provider.as_deref() == Some("scripted")) {
        // Replayed answers are never passed off as a model's.
        output["scripted"] = json!(true);
    }
    // One client per level, built before the loop: a connection pool (or a parsed script) is
    // reused across iterations, and every API key is known to the redactor from the start.
    let mut keys = Vec::new();
    let mut clients = BTreeMap::new();
    for level in plan.policy.escalation_chain.iter().filter(|l| !l.stops_for_human()) {
        let built = client(level, &plan.root, &work.env).map(|(c, key)| {
            keys.extend(key);
            c
        });
        clients.insert(level.level, built);
    }
    let redactor = keys.into_iter().fold(bus.redactor().clone(), Redactor::with_secret);
    let models = move |level: &EscalationLevel| {
        clients.get(&level.level).cloned().unwrap_or_else(|| Err(format!("level {} has no model", level.level)))
    };
    // What the servers say of themselves: the real context windows (MT-VAL-006 again with
    // them) and the LoRA adapters they offer.
    let servers = super::probe_servers(&plan.policy, &models, halt.token()).await;
    plan.apply_server_windows(&servers);
    if plan.report.has_errors() {
        output["report"] = serde_json::to_value(&plan.report).unwrap_or_default();
        let errors: Vec<String> = plan.report.errors.iter().map(ToString::to_string).collect();
        let why =
            format!("MT-VAL blocked the job with the context windows its model servers report: {}", errors.join("; "));
        return end(step, attempt, Ending::FAILED, Some(why), output);
    }
    let exec = Executor {
        plan: &plan,
        job_id: &work.job_id,
        run_id: &work.run_id,
        trace_id: &work.trace_id,
        artifacts,
        bus,
        models: &models,
        sink: work.sink.as_ref(),
        clock: work.clock.as_ref(),
        profile: &work.profile,
        workflow_id: &work.workflow_id,
        halt: halt.clone(),
        recorder,
        redactor: &redactor,
        stage: &stage_base(&work.job_id),
        engine_dirs: std::slice::from_ref(&work.data_dir),
        servers: &servers,
    };
    let outcome = exec.run(work.decision).await;
    if let Ok(Some(metrics)) = artifacts.read_document(&work.job_id, "metrics.json").await
        && let Ok(metrics) = serde_json::from_slice::<Value>(&metrics)
    {
        output["metrics"] = metrics;
    }
    let (ending, error) = match outcome {
        Ok(Outcome::Completed) => (Ending::of(AttemptStatus::Completed, "completed"), None),
        Ok(Outcome::CompletedWithIssues) => {
            let ending = Ending { with_issues: true, ..Ending::of(AttemptStatus::Completed, "completed_with_issues") };
            (ending, None)
        }
        Ok(Outcome::Failed { reason }) => (Ending::FAILED, Some(reason)),
        // DG-WF-12: never retried, by the engine or by a person's resume.
        Ok(Outcome::Poisoned { reason }) => (Ending::of(AttemptStatus::Poisoned, "poisoned"), Some(reason)),
        Ok(Outcome::Cancelled) => (Ending::of(AttemptStatus::Cancelled, "cancelled"), Some("cancelled".to_owned())),
        Ok(Outcome::Paused(pause)) => {
            let why = format!("waiting for a person at {}: {}", pause.mt_id, pause.reason.replace('_', " "));
            output["pause"] = serde_json::to_value(&pause).unwrap_or_default();
            (Ending::of(AttemptStatus::AwaitingUser, "awaiting_user"), Some(why))
        }
        // Retrying cannot make an edited packet match the job again.
        Err(e @ ExecError::PlanChanged { .. }) => (Ending::FAILED, Some(e.to_string())),
        // The engine is stopping: the job's state is as the last completed save left it.
        Err(e @ ExecError::Interrupted(_)) => {
            (Ending::of(AttemptStatus::Interrupted, "interrupted"), Some(e.to_string()))
        }
        // The job's state or the run's log refused a write: nothing was lost, and the next
        // attempt resumes from the job's state.
        Err(e) => {
            let ending = Ending { retryable: true, ..Ending::of(AttemptStatus::Failed, "interrupted") };
            (ending, Some(format!("the micro-task executor stopped: {e}")))
        }
    };
    end(step, attempt, ending, error, output)
}
