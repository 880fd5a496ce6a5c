//! The micro-task loop (§2.6.6.8.7.1): one fresh prompt per iteration, changes applied only inside
//! the task's files, every claim checked by running its verify commands through the tool bus,
//! escalation up the chain to a hard gate, and every step written down before and after.
//!
//! State lives in the artifact store, as documents of the job's scope (its id):
//! `progress_artifact.json`, `run_ledger.json`, `step_outputs/<idempotency key>/...`, each
//! written whole and atomically. Any worker that reaches the same artifact store continues the
//! job where it stopped, whatever its own data directory. Events go to an [`EventSink`] (the
//! store, in the engine). A model response is saved before anything is done with it, and a
//! saved response is never asked for again. Only the project's files, the ones the tasks edit,
//! are read and written on the file system (the run's workspace).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Value, json};

use steward_artifacts::{ArtifactStore, hash};
use steward_core::Timestamp;
use steward_core::event::Payload;
use steward_core::state::HumanDecision;
use steward_micro_task::caps::{self, Cap, CapReached, Effect};
use steward_micro_task::context::{self, CompileInput, FileSource, PreviousIteration};
use steward_micro_task::decide::{
    DropBackInputs, FailureCategory, IterationFacts, IterationOutcome, LoopDecision, decide_next_action,
};
use steward_micro_task::definition::MicroTaskDefinition;
use steward_micro_task::edits::{self, FORMAT_HELP};
use steward_micro_task::learning;
use steward_micro_task::policy::{EscalationLevel, ExecutionPolicy};
use steward_micro_task::signal::{self, CompletionSignal};
use steward_micro_task::state::{
    CurrentState, IterationRecord, LedgerStep, MtProgress, MtStatus, PROGRESS_SCHEMA_VERSION, Pause, PauseKind,
    ProgressArtifact, ProgressStatus, RunLedger, StepStatus, idempotency_key, ledger_step_id, metrics, recover,
};
use steward_models::{ChatRequest, Message, ModelClient, Role};
use steward_tools::bus::{CallContext, ToolBus};
use steward_tools::exec::{Ending, ProcessRecorder};
use steward_tools::redact::Redactor;
use steward_tools::terminal::SessionKind;

use super::plan::Plan;
use super::stage::{self, StageError};
use crate::agent::{Inference, inference_event};
use crate::clock::Clock;
use crate::halt::{Halt, Stop};

/// Evidence files larger than this are not read to check a cited line.
const MAX_EVIDENCE_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// The job's documents (names kept from when they were files of its state directory).
const PROGRESS: &str = "progress_artifact.json";
const LEDGER: &str = "run_ledger.json";
const METRICS: &str = "metrics.json";
const DEFINITIONS: &str = "mt_definitions.json";

/// A document of one ledger step: `step_outputs/<idempotency key>/<file>`.
fn step_doc(key: &str, file: &str) -> String {
    format!("step_outputs/{key}/{file}")
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the loop's events go; the engine commits them to the run's log.
pub trait EventSink: Send + Sync {
    /// Records `events` in order, durably, before returning.
    fn emit(&self, events: Vec<Payload>) -> BoxFuture<'_, Result<(), String>>;

    /// Whether the loop may still write: `Err` once its run was taken over or cancelled. Checked
    /// before every write of the job's state and of the project's files, so that a loop that
    /// was stopped (SIGSTOP) past the stall threshold and continued after another process took
    /// the job over does not overwrite that process's work.
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Builds the client for a chain level.
pub type ModelFactory = dyn Fn(&EscalationLevel) -> Result<Arc<dyn ModelClient>, String> + Send + Sync;

/// How a session of the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every task completed.
    Completed,
    /// Finished with skipped tasks.
    CompletedWithIssues,
    /// Failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Waiting for a person.
    Paused(Pause),
    /// Cancelled.
    Cancelled,
    /// Ran past twice its `max_duration_ms` (§2.6.6.8.16): unsafe to retry, and never retried.
    Poisoned {
        /// Why.
        reason: String,
    },
}

/// Why the loop could not go on (not a task failing: that is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The job's state could not be read or written in the artifact store.
    #[error("the job's state: {0}")]
    State(#[from] steward_artifacts::Error),
    /// A project file the loop changes could not be written.
    #[error("{path}: {source}")]
    Workspace {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A state document is not what this executor wrote.
    #[error("{document}: corrupt state: {message}")]
    Corrupt {
        /// The document, where its store keeps it.
        document: String,
        /// What is wrong.
        message: String,
    },
    /// Events could not be recorded.
    #[error("recording events: {0}")]
    Sink(String),
    /// The run is no longer this loop's (cancelled, or taken over): it writes nothing more.
    #[error("stopped writing: {0}")]
    Fenced(String),
    /// The engine is stopping on a signal; the job's state is left resumable.
    #[error("interrupted: its engine stopped on {0}")]
    Interrupted(&'static str),
    /// The plan's tasks are not the ones the job started with (the packet was edited): the
    /// recorded progress would no longer describe them.
    #[error(
        "the work packet changed since this job started (its micro-tasks differ from {definitions}); start a new job"
    )]
    PlanChanged {
        /// The document of the tasks the job started with.
        definitions: String,
    },
}

type Result<T, E = ExecError> = std::result::Result<T, E>;

/// One job's loop.
pub struct Executor<'a> {
    /// The checked plan.
    pub plan: &'a Plan,
    /// The job.
    pub job_id: &'a str,
    /// The workflow run the job belongs to.
    pub run_id: &'a str,
    /// Correlates the job's events.
    pub trace_id: &'a str,
    /// Where the progress artifact, ledger and step outputs live: documents of the job's scope.
    pub artifacts: &'a dyn ArtifactStore,
    /// Runs the verify commands.
    pub bus: &'a ToolBus,
    /// Clients per chain level.
    pub models: &'a ModelFactory,
    /// Where events go.
    pub sink: &'a dyn EventSink,
    /// Time.
    pub clock: &'a dyn Clock,
    /// The capability profile verify commands run under.
    pub profile: &'a str,
    /// The workflow of the run, for the operator's per-workflow grants.
    pub workflow_id: &'a str,
    /// Stops the loop between iterations and kills running commands. A cancel ends the job
    /// `cancelled`; an interrupt (the engine stopping on a signal) leaves its state as it
    /// was, so that the next attempt resumes it from the ledger.
    pub halt: Halt,
    /// Records each verify command's process group before it runs.
    pub recorder: &'a dyn ProcessRecorder,
    /// What is scrubbed from everything the loop records: the bus's secrets plus the chain's
    /// API keys, which a provider's error text may echo.
    pub redactor: &'a Redactor,
    /// Where this job's tasks are staged, one directory each (see `stage`): this machine's own
    /// disk, made again from the job's documents when missing.
    pub stage: &'a Path,
    /// The engine's own directories under the workspace (its data directory), left out of stages.
    pub engine_dirs: &'a [PathBuf],
}

impl From<StageError> for ExecError {
    fn from(e: StageError) -> ExecError {
        ExecError::Workspace { path: e.path, source: e.source }
    }
}

/// The promotion document of a task: what its completion writes into the workspace.
fn promotion_doc(mt_id: &str) -> String {
    format!("promotions/{mt_id}.json")
}

/// What the task's declared files were in the workspace when its stage was first made (their
/// SHA-256, or null for a file that did not exist): a promotion over a file someone changed
/// since would lose their change.
fn base_doc(mt_id: &str) -> String {
    format!("promotions/{mt_id}.base.json")
}

/// The SHA-256 of a workspace file's content, or `None` when there is none.
fn content_hash(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| steward_core::sha256_hex(&b))
}

struct State {
    progress: ProgressArtifact,
    ledger: RunLedger,
}

/// What a task's verify commands said.
struct Validation {
    passed: bool,
    report: Value,
    events: Vec<Payload>,
    /// A command the tool bus refused, and why.
    refused: Option<String>,
    /// A blocking command timed out, and again with twice the time.
    timed_out_twice: bool,
    /// A command was stopped because the job's `max_duration_ms` ran out.
    out_of_time: bool,
}

struct Iteration {
    record: IterationRecord,
    signal: CompletionSignal,
    decision: LoopDecision,
}

impl Executor<'_> {
    /// A document of the job, named as its store shows it (for errors).
    fn shown(&self, name: &str) -> String {
        format!("{}/{name}", self.artifacts.location(self.job_id))
    }

    async fn read_doc(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.artifacts.read_document(self.job_id, name).await?)
    }

    /// A text document (a saved prompt or answer, written from a `String`).
    async fn read_text(&self, name: &str) -> Result<Option<String>> {
        Ok(self.read_doc(name).await?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, name: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| ExecError::Corrupt { document: self.shown(name), message: e.to_string() })
    }

    async fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.read_doc(name).await? {
            Some(bytes) => self.parse(name, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn persist(&self, name: &str, bytes: &[u8]) -> Result<()> {
        Ok(self.artifacts.write_document(self.job_id, name, bytes).await?)
    }

    /// Writes JSON and returns its SHA-256.
    async fn write_json(&self, name: &str, value: &Value) -> Result<String> {
        let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        self.persist(name, &bytes).await?;
        Ok(hash(&bytes))
    }

    fn wp(&self) -> &str {
        &self.plan.packet.wp_id
    }

    async fn emit(&self, events: Vec<Payload>) -> Result<()> {
        self.sink.emit(events).await.map_err(ExecError::Sink)
    }

    async fn mt_event(&self, event_type: &str, body: Value) -> Result<()> {
        self.emit(vec![Payload::recorded(event_type, body)]).await
    }

    /// Runs the loop from wherever the job's state says it is, applying `decision` if it waits
    /// for one, until it finishes or stops for a person.
    pub async fn run(&self, decision: Option<HumanDecision>) -> Result<Outcome> {
        let outcome = self.session(decision).await;
        if matches!(self.halt.why(), Some(Stop::Cancelled | Stop::RunEnded)) {
            // The run is over and nobody will continue this job: wherever the loop stopped, the
            // job is recorded cancelled. (A loop whose run was taken over writes nothing.)
            return self.record_cancelled().await;
        }
        outcome
    }

    /// Marks the job cancelled in its documents, past the fence: its run has ended. (MT-011 is
    /// recorded by the write that cancelled the run, `Engine::cancel`.)
    async fn record_cancelled(&self) -> Result<Outcome> {
        cancel_documents(self.artifacts, self.job_id, &self.clock.now().to_rfc3339()).await?;
        // Nothing of an unfinished task ever reached the workspace; its stage goes too.
        stage::remove(self.stage);
        Ok(Outcome::Cancelled)
    }

    async fn session(&self, decision: Option<HumanDecision>) -> Result<Outcome> {
        let mut st = self.load_or_init().await?;
        match st.progress.status {
            ProgressStatus::Completed => return Ok(Outcome::Completed),
            ProgressStatus::CompletedWithIssues => return Ok(Outcome::CompletedWithIssues),
            ProgressStatus::Cancelled => return Ok(Outcome::Cancelled),
            ProgressStatus::Failed => return Ok(Outcome::Failed { reason: "the job has already failed".into() }),
            ProgressStatus::Poisoned => return Ok(Outcome::Poisoned { reason: "the job is poisoned".into() }),
            ProgressStatus::InProgress | ProgressStatus::Paused => {}
        }
        // A completion whose promotion a crash cut short is finished before anything else.
        for mt_id in completed_ids(&st.progress) {
            if let Some(conflict) = self.promote(&mt_id).await? {
                st.progress.current_state.active_mt = Some(mt_id);
                return self.fail(&mut st, conflict).await;
            }
        }
        let session_start = self.clock.now();
        let elapsed_base = st.progress.current_state.elapsed_ms;
        if let Some(pause) = st.progress.current_state.pause.clone() {
            match decision {
                None => return Ok(Outcome::Paused(pause)),
                // A gate takes continue or abort (`record_gate` refuses the rest); an approval's
                // words mean the same here.
                Some(HumanDecision::Abort | HumanDecision::Reject) => {
                    return self
                        .fail(&mut st, format!("aborted by a person at {} ({})", pause.mt_id, pause.reason))
                        .await;
                }
                Some(HumanDecision::Skip) => {
                    // MT-016: the waiting task is set aside; the job goes on with the next one
                    // and ends completed with issues. Budgets are not extended: a limit that
                    // stopped this task stops the next one too.
                    if let Some(e) = st.progress.micro_tasks.iter_mut().find(|e| e.mt_id == pause.mt_id) {
                        e.status = MtStatus::Skipped;
                    }
                    stage::remove(&self.stage.join(&pause.mt_id));
                    let cs = &mut st.progress.current_state;
                    if pause.reason == "escalation_exhausted" {
                        cs.active_model_level = st.progress.policy.min_model_level();
                    }
                    cs.task_token_grants = 0;
                    cs.iteration = 1;
                    cs.false_completion_streak = 0;
                    cs.pause = None;
                    st.progress.status = ProgressStatus::InProgress;
                    st.ledger.resume_reason = None;
                    self.save(&mut st).await?;
                    self.mt_event("micro_task_skipped", json!({"wp_id": self.wp(), "mt_id": pause.mt_id})).await?;
                }
                Some(HumanDecision::Continue | HumanDecision::Approve) => {
                    let policy = &st.progress.policy;
                    let cs = &mut st.progress.current_state;
                    let budget = self.plan.mts.iter().find(|m| m.mt_id == pause.mt_id).map_or(0, |m| m.token_budget);
                    if let Some(cap) = Cap::of_gate(&pause.reason) {
                        caps::grant(cap, policy, cs, budget);
                    } else if pause.reason == "escalation_exhausted" {
                        // One more pass at the top local level with a fresh iteration budget
                        // (design decision 10).
                        cs.active_model_level = policy.max_model_level();
                        cs.iteration = 1;
                        cs.false_completion_streak = 0;
                    }
                    if pause.kind == PauseKind::PausePoint
                        && let Some(e) = st.progress.micro_tasks.iter_mut().find(|e| e.mt_id == pause.mt_id)
                    {
                        e.status = MtStatus::InProgress;
                        st.progress.current_state.iteration = 1;
                    }
                    st.progress.current_state.pause = None;
                    st.progress.status = ProgressStatus::InProgress;
                    st.ledger.resume_reason = None;
                    self.save(&mut st).await?;
                    self.mt_event("micro_task_resumed", json!({"wp_id": self.wp(), "mt_id": pause.mt_id})).await?;
                }
            }
        }
        let order: Vec<String> = self.plan.waves.iter().flatten().cloned().collect();
        for mt_id in &order {
            let Some(mt) = self.plan.mts.iter().find(|m| &m.mt_id == mt_id) else { continue };
            let idx = match st.progress.micro_tasks.iter().position(|e| &e.mt_id == mt_id) {
                Some(i) => i,
                None => continue,
            };
            match st.progress.micro_tasks[idx].status {
                MtStatus::Completed | MtStatus::Skipped | MtStatus::Failed => continue,
                MtStatus::Pending if st.progress.policy.pause_points.contains(mt_id) => {
                    let pause =
                        Pause { kind: PauseKind::PausePoint, reason: "pause_point".into(), mt_id: mt_id.clone() };
                    self.mt_event("micro_task_pause_requested", json!({"wp_id": self.wp(), "mt_id": mt_id})).await?;
                    return self.pause(&mut st, pause).await;
                }
                MtStatus::Pending | MtStatus::Blocked => {
                    st.progress.micro_tasks[idx].status = MtStatus::InProgress;
                    let cs = &mut st.progress.current_state;
                    cs.iteration = 1;
                    cs.false_completion_streak = 0;
                    cs.task_token_grants = 0;
                }
                MtStatus::InProgress => {}
            }
            st.progress.current_state.active_mt = Some(mt_id.clone());
            loop {
                self.check_interrupt()?;
                if self.halt.token().is_cancelled() {
                    return Ok(Outcome::Cancelled);
                }
                let cs = &mut st.progress.current_state;
                // (Never less than recorded: a verify command cut short by the job's time used it up.)
                let since = u64::try_from(self.clock.now().since(session_start)).unwrap_or(0);
                cs.elapsed_ms = cs.elapsed_ms.max(elapsed_base + since);
                let checked = caps::before_iteration(&st.progress, idx, mt.token_budget);
                if let Some(warning) = checked.warning {
                    self.cap_reached(&mut st, warning).await?;
                }
                if let Some(stop) = checked.stop {
                    let cap = stop.cap;
                    self.cap_reached(&mut st, stop).await?;
                    return match cap.effect() {
                        Effect::Poisoned => self.poison(&mut st).await,
                        _ => self.hard_gate(&mut st, mt_id, cap.as_str()).await,
                    };
                }
                let it = self.iterate(&mut st, mt, idx, (elapsed_base, session_start)).await?;
                match it.decision {
                    LoopDecision::Complete { drop_back } => {
                        if let Some(conflict) = self.complete(&mut st, mt, idx, &it, drop_back).await? {
                            return self.fail(&mut st, conflict).await;
                        }
                        break;
                    }
                    LoopDecision::Retry => {}
                    LoopDecision::Escalate { category } => {
                        if it.record.outcome == IterationOutcome::Blocked {
                            let reason = it.signal.blocked_reason.clone().unwrap_or_else(|| "blocked".into());
                            self.mt_event(
                                "micro_task_blocked",
                                json!({"wp_id": self.wp(), "mt_id": mt_id, "reason": reason}),
                            )
                            .await?;
                        }
                        if self.escalate(&mut st, mt, idx, category, &it).await? {
                            return self.hard_gate(&mut st, mt_id, "escalation_exhausted").await;
                        }
                    }
                    LoopDecision::Skip => {
                        st.progress.micro_tasks[idx].status = MtStatus::Skipped;
                        stage::remove(&self.stage.join(mt_id));
                        self.save(&mut st).await?;
                        self.mt_event("micro_task_skipped", json!({"wp_id": self.wp(), "mt_id": mt_id})).await?;
                        break;
                    }
                    LoopDecision::Abort { reason } => return self.fail(&mut st, reason).await,
                }
            }
        }
        self.finalize(&mut st).await
    }

    /// One iteration: steps c to h of §2.6.6.8.7.1, then the decision.
    async fn iterate(
        &self,
        st: &mut State,
        mt: &MicroTaskDefinition,
        idx: usize,
        (elapsed_base, session_start): (u64, Timestamp),
    ) -> Result<Iteration> {
        let policy = st.progress.policy.clone();
        let level = st.progress.current_state.active_model_level;
        let chain_level = policy.level(level).or(policy.escalation_chain.first()).cloned().ok_or_else(|| {
            ExecError::Corrupt { document: self.shown(PROGRESS), message: "the policy has no escalation chain".into() }
        })?;
        let model_id = chain_level.model().to_owned();
        let lora = chain_level.lora_id.clone();
        let iteration = st.progress.current_state.iteration;
        let n = st.progress.micro_tasks[idx].iterations.len() as u32 + 1;
        let wp = self.wp().to_owned();
        self.mt_event(
            "micro_task_lora_selection",
            json!({"wp_id": wp, "mt_id": mt.mt_id, "iteration": iteration, "model_id": model_id, "lora_id": lora, "escalation_level": level}),
        )
        .await?;
        // The task works in its stage; context is fresh every iteration, from the files as the
        // stage has them now.
        let root = self.staged(st, mt).await?;
        let files: Vec<FileSource> = mt
            .context_files()
            .into_iter()
            .map(str::to_owned)
            .chain(mt.files.create.iter().cloned())
            .map(|p| FileSource { content: std::fs::read_to_string(root.join(&p)).ok(), path: p })
            .collect();
        let completed = completed_ids(&st.progress);
        let last = st.progress.micro_tasks[idx].iterations.last().cloned();
        let prev_outcome = last.as_ref().map(|r| format!("FAIL: {}", r.outcome.as_str()));
        // GenerateMTSummary: what the previous answer did, read from where it was saved.
        let mut prev_summary = String::new();
        if let Some(r) = &last {
            let prev_step = ledger_step_id(&mt.mt_id, r.iteration);
            if let Some(s) = st.ledger.steps.iter().find(|s| s.step_id == prev_step)
                && let Some(answer) = self.read_text(&step_doc(&s.idempotency_key, "response.txt")).await?
            {
                prev_summary = self.redactor.redact(&context::summarize_answer(&answer)).0;
            }
        }
        let previous = last.as_ref().zip(prev_outcome.as_deref()).map(|(r, outcome)| PreviousIteration {
            outcome,
            error: r.error_summary.as_deref(),
            output_summary: &prev_summary,
        });
        let envelope = context::compile(&CompileInput {
            mt,
            wp_id: &wp,
            iteration,
            max_iterations: policy.max_iterations_per_mt,
            escalation_level: level,
            max_escalation_level: policy.max_model_level(),
            model_id: &model_id,
            lora_id: lora.as_deref(),
            previous,
            completed_mts: &completed,
            total_mts: st.progress.micro_tasks.len(),
            files: &files,
            out_of_scope: &self.plan.packet.out_of_scope,
            format_help: FORMAT_HELP,
        });
        let snapshot_id = envelope.snapshot.context_snapshot_id.clone();
        let step_id = ledger_step_id(&mt.mt_id, n);
        // A step interrupted after its answer was saved but before its output was (recovered as
        // pending) keeps its key and that answer, even though its files, and so its prompt, have
        // changed since: the answer is never asked for again.
        let mut saved = None;
        if let Some(s) = st.ledger.steps.iter().find(|s| s.step_id == step_id) {
            saved = self.read_text(&step_doc(&s.idempotency_key, "response.txt")).await?.map(|r| (s, r));
        }
        let replay = saved.is_some();
        let (key, saved) = match saved {
            Some((s, response)) => (s.idempotency_key.clone(), Some(response)),
            None => {
                let key =
                    idempotency_key(&mt.mt_id, n, &model_id, lora.as_deref(), &envelope.snapshot.full_prompt_hash);
                (key, None)
            }
        };
        let doc = |file: &str| step_doc(&key, file);
        if !replay {
            self.persist(&doc("prompt.txt"), envelope.prompt.as_bytes()).await?;
            self.write_json(
                &doc("context_snapshot.json"),
                &serde_json::to_value(&envelope.snapshot).unwrap_or_default(),
            )
            .await?;
        }
        let started = self.clock.now();
        match st.ledger.steps.iter_mut().find(|s| s.step_id == step_id) {
            Some(s) => {
                s.idempotency_key = key.clone();
                s.status = StepStatus::InProgress;
            }
            None => st.ledger.steps.push(LedgerStep {
                step_id: step_id.clone(),
                idempotency_key: key.clone(),
                status: StepStatus::InProgress,
                started_at: Some(started.to_rfc3339()),
                completed_at: None,
                output_artifact_ref: None,
                error: None,
                recoverable: true,
            }),
        }
        self.save(st).await?;
        self.mt_event(
            "micro_task_iteration_started",
            json!({"wp_id": wp, "mt_id": mt.mt_id, "iteration": iteration, "step_id": step_id, "model_id": model_id}),
        )
        .await?;
        // The response is saved before it is used; a saved one is never asked for again.
        let response_doc = doc("response.txt");
        // A model call may take the iteration's cap, and never more than the job has left.
        let cs = &st.progress.current_state;
        let left_ms = cs.duration_allowance_ms.saturating_sub(cs.elapsed_ms).max(1);
        let time_cap = std::time::Duration::from_millis(policy.max_iteration_ms.min(left_ms));
        let saved = match saved {
            Some(response) => Some(response),
            None => self.read_text(&response_doc).await?,
        };
        let (content, tokens, model_error) = match saved {
            // A replayed answer cost what its call cost: its usage was saved before it.
            Some(saved) => {
                let usage: Option<Value> = self.read_json(&doc("usage.json")).await?;
                let used = |k: &str| usage.as_ref().and_then(|u| u[k].as_u64()).unwrap_or(0);
                (saved, (used("prompt_tokens"), used("completion_tokens")), None)
            }
            None => {
                match self.ask(&chain_level, &model_id, &envelope.prompt, mt, n, &key, &response_doc, time_cap).await? {
                    Ok((content, tokens)) => (content, tokens, None),
                    Err(e) => (String::new(), (0, 0), Some(e)),
                }
            }
        };
        if let Some(over) = caps::after_call(&mt.mt_id, tokens.0 + tokens.1, mt.token_budget) {
            self.cap_reached(st, over).await?;
        }
        let signal = signal::parse_completion_signal(&content);
        // Changes first, so the evidence and the verify commands see them.
        let mut hint = None;
        let mut error_summary = model_error.clone();
        let applied_marker = doc("applied");
        // The complete contents the answer's changes give are saved before any file is replaced:
        // a crash in the middle of applying them re-applies exactly these, instead of planning
        // the answer's edits again against files it already changed.
        let planned_doc = doc("planned_writes.json");
        // A file the task created is the task's to rewrite on a later iteration.
        let modifiable: Vec<String> = mt.writable().cloned().collect();
        let changes_ok = if self.read_doc(&applied_marker).await?.is_some() {
            true
        } else {
            let saved = self
                .read_doc(&planned_doc)
                .await?
                .and_then(|bytes| serde_json::from_slice::<Vec<edits::FileWrite>>(&bytes).ok());
            let planned = match saved {
                Some(writes) => Ok(writes),
                None => match edits::parse_changes(&content) {
                    Err(e) => Err((false, format!("unreadable change block: {e}"))),
                    Ok(changes) => edits::plan_changes(&changes, &modifiable, &mt.files.create, |p| {
                        std::fs::read_to_string(root.join(p)).ok()
                    })
                    .map_err(|e| (e.is_scope_violation(), format!("{}: {e}", e.category()))),
                },
            };
            let applied = match planned {
                Ok(writes) => {
                    self.fence().await?;
                    self.write_json(&planned_doc, &json!(writes)).await?;
                    stage::write_files(&root, &writes)?.map_err(|why| (true, format!("scope_violation: {why}")))
                }
                Err(e) => Err(e),
            };
            match applied {
                Ok(()) => {
                    self.persist(&applied_marker, b"").await?;
                    true
                }
                Err((scope, why)) => {
                    if scope {
                        hint = Some(FailureCategory::ScopeViolation);
                    }
                    error_summary = Some(why);
                    false
                }
            }
        };
        let mut evidence_ok = true;
        let mut validation_passed = None;
        let (mut refused_verify, mut validation_timed_out) = (None, false);
        let mut evidence_ref = None;
        if signal.claimed_complete {
            let task_files: Vec<&str> =
                mt.context_files().into_iter().chain(mt.files.create.iter().map(String::as_str)).collect();
            let problems = signal::check_evidence(&signal.evidence, |p| {
                if !task_files.contains(&p) {
                    return None;
                }
                let path = root.join(p);
                let meta = std::fs::symlink_metadata(&path).ok()?;
                if !meta.file_type().is_file() || meta.len() > MAX_EVIDENCE_FILE_BYTES {
                    return None;
                }
                std::fs::read_to_string(path).ok().map(|t| t.lines().count() as u32)
            });
            let required = mt
                .done
                .iter()
                .any(|d| d.verification == steward_micro_task::definition::Verification::EvidenceRequired);
            let other_task = signal.mt_id.as_deref().is_some_and(|id| id != mt.mt_id);
            // A claim on top of refused changes, or naming another task, is not this task done.
            evidence_ok = problems.is_empty() && !(required && signal.evidence.is_empty()) && changes_ok && !other_task;
            if other_task {
                error_summary =
                    Some(format!("false completion: the claim names {}", signal.mt_id.as_deref().unwrap_or_default()));
            }
            if !problems.is_empty() {
                error_summary = Some(format!(
                    "false completion: {}",
                    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                ));
            }
            // The verify commands get what is left of the job's time, too: `max_duration_ms`
            // holds during an iteration, not only between them.
            let cs = &st.progress.current_state;
            let elapsed = elapsed_base + u64::try_from(self.clock.now().since(session_start)).unwrap_or(0);
            let left_ms = cs.duration_allowance_ms.saturating_sub(elapsed).max(1);
            let Validation { passed, report, events, refused, timed_out_twice, out_of_time } =
                self.validate(mt, &key, &root, left_ms).await?;
            if out_of_time {
                // The job's time is spent: the loop stops at the `max_duration` gate next.
                let cs = &mut st.progress.current_state;
                cs.elapsed_ms = cs.elapsed_ms.max(elapsed).max(cs.duration_allowance_ms);
            }
            refused_verify = refused;
            validation_timed_out = timed_out_twice;
            self.emit(events).await?;
            let evidence = self.write_json(&doc("validation.json"), &report).await?;
            evidence_ref = Some(evidence);
            validation_passed = Some(passed);
            if !passed && error_summary.is_none() {
                error_summary = Some(format!("validation failed: {}", failing_summary(&report)));
            }
            self.mt_event(
                "micro_task_validation",
                json!({"wp_id": wp, "mt_id": mt.mt_id, "iteration": iteration, "passed": passed, "evidence_artifact_ref": evidence_ref}),
            )
            .await?;
        } else if error_summary.is_none() {
            error_summary = Some(if signal.blocked { "blocked".into() } else { "no_completion_claimed".into() });
        }
        let cs = &st.progress.current_state;
        let false_streak = if signal.claimed_complete && !(validation_passed == Some(true) && evidence_ok) {
            cs.false_completion_streak + 1
        } else {
            0
        };
        let facts = IterationFacts {
            claimed_complete: signal.claimed_complete,
            validation_passed: validation_passed == Some(true),
            evidence_ok,
            blocked: signal.blocked,
            user_requested_skip: false,
            iteration,
            max_iterations_per_mt: policy.max_iterations_per_mt,
            escalation_level: level,
            max_escalation_level: policy.max_model_level(),
            consecutive_false_completions: false_streak,
            consecutive_failures_at_level: iteration,
            failure_hint: hint,
            drop_back: DropBackInputs {
                strategy: policy.drop_back_strategy,
                escalation_level: level,
                last_escalation_category: cs.last_escalation_category,
                remaining_mts_simpler: self.remaining_simpler(st, mt),
            },
            refused_verify,
            validation_timed_out,
        };
        let decision = decide_next_action(&facts);
        let finished = self.clock.now();
        let record = IterationRecord {
            iteration: n,
            model_id: model_id.clone(),
            lora_id: lora.clone(),
            escalation_level: level,
            started_at: started.to_rfc3339(),
            completed_at: finished.to_rfc3339(),
            duration_ms: u64::try_from(finished.since(started)).unwrap_or(0),
            tokens_prompt: tokens.0,
            tokens_completion: tokens.1,
            claimed_complete: signal.claimed_complete,
            validation_passed,
            validation_evidence_ref: evidence_ref.clone(),
            outcome: decision.outcome,
            error_summary: if decision.outcome == IterationOutcome::Success { None } else { error_summary },
            context_snapshot_id: snapshot_id.clone(),
        };
        if matches!(decision.action, LoopDecision::Complete { .. }) {
            // What the completion promotes is written down before the task is settled completed,
            // so a crash in between is finished at the next start (`promote`).
            let writes = stage::net_writes(&self.plan.root, &self.applied_writes(st, mt).await?);
            self.write_json(&promotion_doc(&mt.mt_id), &json!(writes)).await?;
        }
        let output = json!({"record": record, "decision": decision.action, "signal": signal});
        let output_ref = self.write_json(&doc("output.json"), &output).await?;
        if let Some(s) = st.ledger.steps.iter_mut().find(|s| s.step_id == step_id) {
            s.status = StepStatus::Completed;
            s.completed_at = Some(finished.to_rfc3339());
            s.output_artifact_ref = Some(output_ref);
        }
        st.progress.current_state.false_completion_streak = false_streak;
        settle(&mut st.progress, idx, record.clone(), &decision.action);
        self.save(st).await?;
        let category = match &decision.action {
            LoopDecision::Escalate { category } => Some(category.as_str()),
            _ => hint.map(FailureCategory::as_str),
        };
        self.mt_event(
            "micro_task_iteration_complete",
            json!({
                "wp_id": wp, "mt_id": mt.mt_id, "iteration": iteration,
                "model": {"base": model_id, "lora": lora, "context_window": chain_level.context_window.unwrap_or(steward_micro_task::validate::DEFAULT_MODEL_CONTEXT_TOKENS)},
                "execution": {"tokens_prompt": tokens.0, "tokens_completion": tokens.1, "duration_ms": record.duration_ms, "escalation_level": level},
                "outcome": {"claimed_complete": signal.claimed_complete, "validation_passed": validation_passed, "status": decision.outcome.as_str(), "failure_category": category, "error_summary": record.error_summary},
                "context_snapshot_id": snapshot_id,
                "evidence_artifact_ref": evidence_ref,
                "decision": decision.action.as_str(),
            }),
        )
        .await?;
        Ok(Iteration { record, signal, decision: decision.action })
    }

    /// Calls the model and saves its answer in the document `save_to` before anything else (the
    /// event included), so a crash after the call never costs a second one. A model error is an
    /// iteration outcome, not an executor error.
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        level: &EscalationLevel,
        model_id: &str,
        prompt: &str,
        mt: &MicroTaskDefinition,
        n: u32,
        key: &str,
        save_to: &str,
        time_cap: std::time::Duration,
    ) -> Result<Result<(String, (u64, u64)), String>> {
        let model_error =
            |e: &dyn std::fmt::Display| format!("model_error: {}", self.redactor.redact(&e.to_string()).0);
        let client = match (self.models)(level) {
            Ok(c) => c,
            Err(e) => return Ok(Err(model_error(&e))),
        };
        // Every request is capped: an answer as long as the task's prompt budget, unless the
        // level says otherwise (§2.6.6.8.17: an iteration spends at most twice the budget).
        let mut options = level.options.clone();
        let cap_key = match client.provider() {
            "openai" => Some("max_tokens"),
            "ollama" => Some("num_predict"),
            _ => None,
        };
        if let Some(k) = cap_key.filter(|k| !options.contains_key(*k) && !options.contains_key("max_tokens")) {
            options.insert(k.to_owned(), json!(mt.token_budget));
        }
        let req = ChatRequest {
            model: model_id.to_owned(),
            messages: vec![Message { role: Role::User, content: prompt.to_owned() }],
            options,
            // A scripted provider answers by task and iteration (`MT-001: {1: ...}`).
            step_id: mt.mt_id.clone(),
            attempt: n,
            idempotency_key: key.to_owned(),
        };
        let started = std::time::Instant::now();
        // The iteration's time cap cancels the call (the request is dropped with its future).
        let answer = match tokio::time::timeout(time_cap, client.chat(&req, self.halt.token())).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => {
                Err(format!("model_timeout: no answer within the iteration's {:.1}s cap", time_cap.as_secs_f64()))
            }
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Ok(r) = &answer {
            // Its usage first: an answer replayed after a crash reports what it cost.
            let usage = json!({"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens});
            self.write_json(&step_doc(key, "usage.json"), &usage).await?;
            self.persist(save_to, r.content.as_bytes()).await?;
        }
        if answer.is_err() {
            // A call cut short by an interrupt is no answer to record; the iteration resumes.
            self.check_interrupt()?;
        }
        let call = Inference {
            trace_id: self.trace_id,
            model_id,
            provider: client.provider(),
            prompt_hash: hash(prompt.as_bytes()),
            response_hash: answer.as_ref().ok().map(|r| hash(r.content.as_bytes())),
            latency_ms,
            scripted: client.provider() == "scripted",
        };
        let why = answer.as_ref().err().cloned().unwrap_or_default();
        let answered = answer.as_ref().map_err(|_| why.as_str());
        self.emit(vec![inference_event(call, answered, self.redactor)]).await?;
        Ok(answer.map(|r| (r.content, (r.usage.prompt_tokens, r.usage.completion_tokens))).map_err(|e| model_error(&e)))
    }

    /// Records a move to another model (FR-EVT-MODEL-001/002, DG-MT-09): nothing when the two
    /// levels use the same model.
    async fn model_switch(
        &self,
        policy: &ExecutionPolicy,
        mt_id: Option<&str>,
        from: u32,
        to: u32,
        reason: &str,
    ) -> Result<()> {
        let model = |l: u32| policy.level(l).map(EscalationLevel::model).unwrap_or_default().to_owned();
        let (from_model, to_model) = (model(from), model(to));
        if from_model == to_model || policy.level(to).is_none_or(EscalationLevel::stops_for_human) {
            return Ok(());
        }
        let body = json!({
            "wp_id": self.wp(), "mt_id": mt_id, "from_model": from_model, "to_model": to_model,
            "from_level": from, "to_level": to, "reason": reason,
        });
        let events =
            ["model_swap_requested", "model_swap_completed"].map(|t| Payload::recorded(t, body.clone())).to_vec();
        self.emit(events).await
    }

    /// Whether every task still to run is simpler than `mt` (none left: no).
    fn remaining_simpler(&self, st: &State, mt: &MicroTaskDefinition) -> bool {
        let remaining: Vec<&MicroTaskDefinition> = st
            .progress
            .micro_tasks
            .iter()
            .filter(|e| {
                e.mt_id != mt.mt_id && matches!(e.status, MtStatus::Pending | MtStatus::InProgress | MtStatus::Blocked)
            })
            .filter_map(|e| self.plan.mts.iter().find(|m| m.mt_id == e.mt_id))
            .collect();
        !remaining.is_empty() && remaining.iter().all(|r| r.simpler_than(mt))
    }

    /// Each applied iteration's writes of the task, in order: the complete contents it gave each
    /// file, as recorded before they were written.
    async fn applied_writes(&self, st: &State, mt: &MicroTaskDefinition) -> Result<Vec<Vec<edits::FileWrite>>> {
        let mut batches = Vec::new();
        for s in st.ledger.steps.iter().filter(|s| s.step_id.starts_with(&format!("{}_", mt.mt_id))) {
            if self.read_doc(&step_doc(&s.idempotency_key, "applied")).await?.is_none() {
                continue;
            }
            let planned = step_doc(&s.idempotency_key, "planned_writes.json");
            if let Some(writes) = self.read_json::<Vec<edits::FileWrite>>(&planned).await? {
                batches.push(writes);
            }
        }
        Ok(batches)
    }

    /// The task's stage, made (from the workspace and the changes its iterations applied so
    /// far) if this machine does not have it.
    async fn staged(&self, st: &State, mt: &MicroTaskDefinition) -> Result<PathBuf> {
        let dir = self.stage.join(&mt.mt_id);
        if dir.join(stage::READY).is_file() {
            return Ok(dir);
        }
        let batches = self.applied_writes(st, mt).await?;
        // What the task's files were when it began, for the promotion's lost-update check.
        if self.read_doc(&base_doc(&mt.mt_id)).await?.is_none() {
            let base: serde_json::Map<String, Value> =
                mt.writable().map(|p| (p.clone(), json!(content_hash(&self.plan.root.join(p))))).collect();
            self.write_json(&base_doc(&mt.mt_id), &Value::Object(base)).await?;
        }
        // Every stage is left out too (this job's and other jobs'), should the workspace hold
        // the temporary directory they are made in.
        let stages = self.stage.parent().unwrap_or(self.stage).to_path_buf();
        let skip: Vec<PathBuf> = self.engine_dirs.iter().cloned().chain([self.stage.to_path_buf(), stages]).collect();
        stage::ensure(&self.plan.root, &dir, &skip, || batches)?;
        Ok(dir)
    }

    /// Writes a completed task's changes into the workspace, once: the promotion document says
    /// what, the `.done` mark that it happened. The task's stage goes with it. A declared file
    /// someone changed in the workspace since the task began is not overwritten: the promotion is
    /// refused whole (`Some(why)`), their change stays, and the task's result stays in its
    /// promotion document.
    async fn promote(&self, mt_id: &str) -> Result<Option<String>> {
        let doc = promotion_doc(mt_id);
        let done = format!("{doc}.done");
        if self.read_doc(&done).await?.is_some() {
            return Ok(None);
        }
        let Some(writes) = self.read_json::<Vec<edits::FileWrite>>(&doc).await? else { return Ok(None) };
        let base: serde_json::Map<String, Value> = self.read_json(&base_doc(mt_id)).await?.unwrap_or_default();
        // A file is someone else's change when it is neither what the task began with nor what
        // this promotion writes (a crash in the middle of the renames leaves some of those).
        let changed: Vec<&str> = writes
            .iter()
            .filter(|w| {
                let now = content_hash(&self.plan.root.join(&w.path));
                let ours = Some(steward_core::sha256_hex(w.content.as_bytes()));
                now != ours && base.get(&w.path).is_some_and(|b| *b != json!(now))
            })
            .map(|w| w.path.as_str())
            .collect();
        if !changed.is_empty() {
            return Ok(Some(format!(
                "{} changed in the workspace while {mt_id} worked on it; the workspace was left as it is and the task's result is in {}",
                changed.join(", "),
                self.shown(&doc)
            )));
        }
        self.fence().await?;
        if let Err(why) = stage::write_files(&self.plan.root, &writes)? {
            // The workspace changed under the task (a symlink where its file was): nothing of
            // it was written, and the person is told.
            return Err(ExecError::Workspace {
                path: self.plan.root.clone(),
                source: std::io::Error::other(format!("cannot promote {mt_id}: {why}")),
            });
        }
        self.persist(&done, b"").await?;
        stage::remove(&self.stage.join(mt_id));
        Ok(None)
    }

    /// Runs the task's verify commands through the tool bus (DG-MT-14): one `engine.shell`/`exec`
    /// each; the validation fails only when a blocking one fails.
    /// Commands share the job's `left_ms`: one cut short by it is not run again, and the loop
    /// stops at the `max_duration` gate before the next iteration.
    async fn validate(&self, mt: &MicroTaskDefinition, key: &str, root: &Path, left_ms: u64) -> Result<Validation> {
        let ctx = CallContext {
            job_id: self.job_id.to_owned(),
            trace_id: self.trace_id.to_owned(),
            actor_id: "micro_task_executor".into(),
            ai_actor: true,
            session: SessionKind::AiJob,
            session_id: key.to_owned(),
            workflow_id: self.workflow_id.to_owned(),
            workspace_root: root.to_path_buf(),
            idempotency_key: key.to_owned(),
        };
        let mut passed = true;
        let mut results = Vec::new();
        let mut events = Vec::new();
        let (mut refused, mut timed_out_twice, mut out_of_time) = (None, false, false);
        let started = std::time::Instant::now();
        for (i, v) in mt.verify.iter().enumerate() {
            let left = left_ms.saturating_sub(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            let cut_by_job = left < v.timeout_ms;
            let timeout_ms = v.timeout_ms.min(left.max(1));
            let run = |id: String, timeout_ms: u64| {
                let op = self.bus.shell_op(
                    &id,
                    &v.command,
                    None,
                    &[],
                    std::time::Duration::from_millis(timeout_ms),
                    self.profile,
                );
                let ctx = &ctx;
                async move { self.bus.execute(&op, ctx, self.halt.token(), self.recorder).await }
            };
            let mut executed = run(format!("{key}-verify-{i}"), timeout_ms).await;
            // A command stopped by an interrupt says nothing about the task.
            self.check_interrupt()?;
            let stopped_by_job = cut_by_job && executed.output.as_ref().is_some_and(|o| o.ending == Ending::TimedOut);
            out_of_time |= stopped_by_job;
            if !cut_by_job && executed.output.as_ref().is_some_and(|o| o.ending == Ending::TimedOut) {
                // `validation_timeout`: run again, once, with twice the time (§2.6.6.8.16).
                events.extend(std::mem::take(&mut executed.events));
                executed = run(format!("{key}-verify-{i}-again"), v.timeout_ms.saturating_mul(2)).await;
                self.check_interrupt()?;
                timed_out_twice |= v.blocking && executed.output.as_ref().is_some_and(|o| o.ending == Ending::TimedOut);
            }
            if executed.output.is_none() {
                // Refused before it ran: a `capability_violation`, which fails the job.
                let why =
                    executed.refusal.as_ref().map_or_else(|| "refused by the tool bus".to_owned(), |r| r.to_string());
                refused = Some(format!("`{}`: {why}", self.redactor.redact(&v.command).0));
            }
            events.extend(std::mem::take(&mut executed.events));
            let (spec_passed, exit_code, error, duration_ms, stdout_tail) = match &executed.output {
                Some(out) => {
                    let (code, timed_out) = match out.ending {
                        Ending::Exited(c) => (Some(c), false),
                        Ending::TimedOut => (None, true),
                        _ => (None, false),
                    };
                    let ok = v.expect.passed(code, timed_out, &out.raw_stdout, v.pattern.as_deref());
                    let tail: String =
                        out.stdout.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
                    let err_tail: String =
                        out.stderr.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
                    (
                        ok,
                        code,
                        timed_out.then(|| {
                            if stopped_by_job {
                                format!("stopped after {timeout_ms} ms: the job's max_duration_ms ran out")
                            } else {
                                "timed out".to_owned()
                            }
                        }),
                        out.duration.as_millis() as u64,
                        format!("{tail}{err_tail}"),
                    )
                }
                None => (
                    false,
                    None,
                    Some(executed.refusal.map_or_else(|| "refused by the tool bus".to_owned(), |r| r.to_string())),
                    0,
                    String::new(),
                ),
            };
            if !spec_passed && v.blocking {
                passed = false;
            }
            results.push(json!({
                "spec_index": i, "command": self.redactor.redact(&v.command).0, "expected": v.expect.as_str(),
                "actual_exit_code": exit_code, "passed": spec_passed, "blocking": v.blocking, "duration_ms": duration_ms,
                "error": error, "output_tail": stdout_tail,
                "evidence": executed.result.evidence.iter().map(|a| a.hash.clone()).collect::<Vec<_>>(),
            }));
        }
        let report = json!({"passed": passed, "spec_results": results});
        Ok(Validation { passed, report, events, refused, timed_out_twice, out_of_time })
    }

    /// Stops the loop, leaving its state as it is, if the engine is stopping on a signal.
    fn check_interrupt(&self) -> Result<()> {
        match self.halt.interrupted() {
            Some(signal) => Err(ExecError::Interrupted(signal)),
            None => Ok(()),
        }
    }

    async fn complete(
        &self,
        st: &mut State,
        mt: &MicroTaskDefinition,
        idx: usize,
        it: &Iteration,
        drop_back: bool,
    ) -> Result<Option<String>> {
        if let Some(conflict) = self.promote(&mt.mt_id).await? {
            return Ok(Some(conflict));
        }
        let level = st.progress.current_state.active_model_level;
        if st.progress.policy.enable_distillation {
            // DG-MT-18: each escalation's candidate, written when it happened with no teacher,
            // now pairs its student with the success that followed.
            let history = st.progress.micro_tasks[idx].iterations.clone();
            let students =
                history.iter().filter(|r| matches!(r.outcome, IterationOutcome::Escalate | IterationOutcome::Blocked));
            for student in students {
                self.distillation_candidate(st, mt, student, Some(&it.record), &history).await?;
            }
        }
        self.mt_event("micro_task_complete", json!({"wp_id": self.wp(), "mt_id": mt.mt_id})).await?;
        if drop_back && level > 0 {
            let cs = &mut st.progress.current_state;
            cs.active_model_level = 0;
            cs.total_drop_backs += 1;
            cs.last_escalation_category = None;
            self.save(st).await?;
            self.mt_event("micro_task_drop_back", json!({"wp_id": self.wp(), "from_level": level, "to_level": 0}))
                .await?;
            let policy = st.progress.policy.clone();
            self.model_switch(&policy, None, level, 0, "drop_back").await?;
        }
        Ok(None)
    }

    /// Writes (or rewrites) the distillation candidate of the escalation that `student` made,
    /// with its teacher's success once there is one, and emits MT-015. Trust and eligibility are
    /// computed from the task's `history` (`learning::trust`), never set.
    async fn distillation_candidate(
        &self,
        st: &State,
        mt: &MicroTaskDefinition,
        student: &IterationRecord,
        teacher: Option<&IterationRecord>,
        history: &[IterationRecord],
    ) -> Result<()> {
        let at = |level: u32| history.iter().filter(|r| r.escalation_level == level).count();
        // The saved answer of an iteration: its output, where the job's documents keep it.
        let output_ref = |r: &IterationRecord| {
            let step = ledger_step_id(&mt.mt_id, r.iteration);
            st.ledger
                .steps
                .iter()
                .find(|s| s.step_id == step)
                .map(|s| self.shown(&step_doc(&s.idempotency_key, "response.txt")))
        };
        let trust = learning::trust(history, student, teacher);
        let candidate = json!({
            "skill_log_entry_id": learning::candidate_id(self.job_id, &mt.mt_id, student.iteration),
            "mt_id": mt.mt_id, "wp_id": self.wp(),
            "student_attempt": {
                "model_id": student.model_id, "lora_id": student.lora_id,
                "prompt_snapshot_ref": student.context_snapshot_id, "output_snapshot_ref": output_ref(student),
                "outcome": learning::StudentOutcome::of(student),
                "iterations": at(student.escalation_level),
            },
            "teacher_success": teacher.map(|t| json!({
                "model_id": t.model_id, "lora_id": t.lora_id,
                "prompt_snapshot_ref": t.context_snapshot_id, "output_snapshot_ref": output_ref(t),
                "outcome": "VALIDATION_PASSED", "iterations": at(t.escalation_level),
            })),
            "task_type_tags": mt.task_tags,
            "contributing_factors": [student.error_summary],
            "data_trust_score": trust.data_trust_score,
            "distillation_eligible": trust.distillation_eligible,
            "status": "LOGGING_ONLY_PHASE_1",
        });
        let name = format!("distillation/{}-{}.json", mt.mt_id, student.iteration);
        let hash = self.write_json(&name, &candidate).await?;
        self.mt_event(
            "micro_task_distillation_candidate",
            json!({"wp_id": self.wp(), "mt_id": mt.mt_id, "candidate_ref": {"path": name, "sha256": hash}}),
        )
        .await
    }

    /// Records the escalation (record file and MT-005); true when the next rung is the hard gate.
    async fn escalate(
        &self,
        st: &mut State,
        mt: &MicroTaskDefinition,
        idx: usize,
        category: FailureCategory,
        it: &Iteration,
    ) -> Result<bool> {
        let policy = st.progress.policy.clone();
        let from = st.progress.current_state.active_model_level;
        let next = policy.next_model_level(from);
        let from_model = policy.level(from).map(EscalationLevel::model).unwrap_or_default().to_owned();
        let to_level = next.unwrap_or_else(|| {
            policy.escalation_chain.iter().find(|l| l.stops_for_human()).map_or(from + 1, |l| l.level)
        });
        let to_model = policy.level(to_level).map(EscalationLevel::model).unwrap_or("HARD_GATE").to_owned();
        let at_level = st.progress.micro_tasks[idx].iterations.iter().filter(|r| r.escalation_level == from).count();
        let record = json!({
            "mt_id": mt.mt_id, "wp_id": self.wp(), "created_at": self.clock.now().to_rfc3339(),
            "escalation_chain": [{
                "level": from, "model_id": from_model, "iterations": at_level,
                "failure_pattern": category.as_str(), "last_error": it.record.error_summary,
                "tokens_used": it.record.tokens_prompt + it.record.tokens_completion,
                "outcome": if next.is_some() { "ESCALATE" } else { "HARD_GATE" },
            }],
            "remediation": {"failure_category": category.as_str(), "contributing_factors": [it.record.error_summary]},
        });
        let name = format!("{}-{}.json", mt.mt_id, it.record.iteration);
        let sha = self.write_json(&format!("escalations/{name}"), &record).await?;
        if policy.enable_distillation {
            // Every escalation has its candidate, whether a success ever follows (the teacher is
            // added then) or the task ends at the hard gate or in an abort.
            let history = st.progress.micro_tasks[idx].iterations.clone();
            self.distillation_candidate(st, mt, &it.record, None, &history).await?;
        }
        let cs = &mut st.progress.current_state;
        cs.total_escalations += 1;
        cs.last_escalation_category = Some(category);
        cs.iteration = 1;
        cs.false_completion_streak = 0;
        if let Some(level) = next {
            cs.active_model_level = level;
        }
        st.progress.micro_tasks[idx].escalation_record_ref = Some(format!("escalations/{name}"));
        self.save(st).await?;
        self.mt_event(
            "micro_task_escalated",
            json!({
                "wp_id": self.wp(), "mt_id": mt.mt_id, "from_model": from_model, "from_level": from,
                "to_model": to_model, "to_level": to_level, "reason": it.record.error_summary.clone().unwrap_or_else(|| category.as_str().to_owned()),
                "failure_category": category.as_str(), "iterations_at_previous_level": at_level,
                "escalation_record_ref": {"path": format!("escalations/{name}"), "sha256": sha},
            }),
        )
        .await?;
        if let Some(level) = next {
            self.model_switch(&policy, Some(&mt.mt_id), from, level, "escalation").await?;
        }
        Ok(next.is_none())
    }

    /// Writes down a cap the job reached (progress artifact and event).
    async fn cap_reached(&self, st: &mut State, reached: CapReached) -> Result<()> {
        let body = json!({
            "wp_id": self.wp(), "mt_id": reached.mt_id, "cap": reached.cap.as_str(), "used": reached.used,
            "limit": reached.limit, "unit": reached.cap.unit(), "effect": reached.effect,
        });
        st.progress.caps_reached.push(reached);
        self.save(st).await?;
        self.mt_event("micro_task_cap_reached", body).await
    }

    /// Ends the job `poisoned` (§2.6.6.8.16): nothing of the unfinished task is promoted, and the
    /// job is never resumed.
    async fn poison(&self, st: &mut State) -> Result<Outcome> {
        let reason = format!(
            "ran {} ms, past {} × max_duration_ms ({} ms): poisoned, not retried",
            st.progress.current_state.elapsed_ms,
            caps::POISON_DURATION_FACTOR,
            st.progress.policy.max_duration_ms
        );
        st.progress.status = ProgressStatus::Poisoned;
        st.progress.current_state.pause = None;
        st.progress.completed_at = Some(self.clock.now().to_rfc3339());
        self.save(st).await?;
        stage::remove(self.stage);
        self.mt_event("micro_task_loop_poisoned", json!({"wp_id": self.wp(), "reason": reason})).await?;
        Ok(Outcome::Poisoned { reason })
    }

    async fn hard_gate(&self, st: &mut State, mt_id: &str, reason: &str) -> Result<Outcome> {
        let level = st.progress.current_state.active_model_level;
        self.mt_event(
            "micro_task_hard_gate",
            json!({"wp_id": self.wp(), "reason": reason, "mt_id": mt_id, "from_level": level}),
        )
        .await?;
        self.pause(st, Pause { kind: PauseKind::HardGate, reason: reason.to_owned(), mt_id: mt_id.to_owned() }).await
    }

    async fn pause(&self, st: &mut State, pause: Pause) -> Result<Outcome> {
        st.ledger.resume_reason = Some(match pause.kind {
            PauseKind::PausePoint => format!("pause_point:{}", pause.mt_id),
            PauseKind::HardGate => format!("hard_gate:{}", pause.reason),
        });
        st.progress.status = ProgressStatus::Paused;
        st.progress.current_state.pause = Some(pause.clone());
        self.save(st).await?;
        Ok(Outcome::Paused(pause))
    }

    async fn fail(&self, st: &mut State, reason: String) -> Result<Outcome> {
        st.progress.status = ProgressStatus::Failed;
        st.progress.current_state.pause = None;
        st.progress.completed_at = Some(self.clock.now().to_rfc3339());
        if let Some(active) = st.progress.current_state.active_mt.clone()
            && let Some(e) = st.progress.micro_tasks.iter_mut().find(|e| e.mt_id == active)
        {
            e.status = MtStatus::Failed;
        }
        self.save(st).await?;
        stage::remove(self.stage);
        self.mt_event("micro_task_loop_failed", json!({"wp_id": self.wp(), "reason": reason})).await?;
        Ok(Outcome::Failed { reason })
    }

    async fn finalize(&self, st: &mut State) -> Result<Outcome> {
        let skipped = st.progress.micro_tasks.iter().any(|e| e.status == MtStatus::Skipped);
        st.progress.status = if skipped { ProgressStatus::CompletedWithIssues } else { ProgressStatus::Completed };
        st.progress.current_state.active_mt = None;
        st.progress.completed_at = Some(self.clock.now().to_rfc3339());
        self.save(st).await?;
        stage::remove(self.stage);
        self.mt_event(
            "micro_task_loop_completed",
            json!({"wp_id": self.wp(), "status": if skipped { "completed_with_issues" } else { "completed" }}),
        )
        .await?;
        Ok(if skipped { Outcome::CompletedWithIssues } else { Outcome::Completed })
    }

    /// Loads the job's state, running the crash recovery procedure over its ledger, or creates it
    /// and emits MT-001.
    async fn load_or_init(&self) -> Result<State> {
        if let (Some(pp), Some(lp)) = (self.read_doc(PROGRESS).await?, self.read_doc(LEDGER).await?) {
            if let Some(definitions) = self.read_json::<Value>(DEFINITIONS).await?
                && definitions != json!(self.plan.mts)
            {
                return Err(ExecError::PlanChanged { definitions: self.shown(DEFINITIONS) });
            }
            let mut progress: ProgressArtifact = self.parse(PROGRESS, &pp)?;
            let mut ledger: RunLedger = self.parse(LEDGER, &lp)?;
            let interrupted = ledger.steps.iter().any(|s| s.status == StepStatus::InProgress);
            if interrupted {
                // The outputs the interrupted steps got to save, read first: the recovery
                // procedure itself is pure.
                let mut outputs = HashMap::new();
                for s in ledger.steps.iter().filter(|s| s.status == StepStatus::InProgress) {
                    let name = step_doc(&s.idempotency_key, "output.json");
                    if let Some(bytes) = self.read_doc(&name).await? {
                        outputs.insert(s.idempotency_key.clone(), (name, bytes));
                    }
                }
                let recovery = recover(&mut ledger, |key| outputs.get(key).map(|(name, _)| name.clone()));
                // A recovered step's iteration is put back from its output, never re-asked.
                for step_id in &recovery.steps_recovered {
                    let Some(step) = ledger.steps.iter().find(|s| &s.step_id == step_id) else { continue };
                    let Some((name, bytes)) = outputs.get(&step.idempotency_key) else { continue };
                    let out: Value = self.parse(name, bytes)?;
                    let record = serde_json::from_value::<IterationRecord>(out["record"].clone());
                    let decision = serde_json::from_value::<LoopDecision>(out["decision"].clone());
                    if let (Ok(record), Ok(decision)) = (record, decision) {
                        let mt = step_id.rsplit_once("_iter-").map_or("", |(mt, _)| mt);
                        if let Some(idx) = progress.micro_tasks.iter().position(|e| e.mt_id == mt)
                            && !progress.micro_tasks[idx].iterations.iter().any(|r| r.iteration == record.iteration)
                        {
                            settle(&mut progress, idx, record, &decision);
                        }
                    }
                }
                let st = State { progress, ledger };
                self.fence().await?;
                self.save_parts(&st).await?;
                self.emit(vec![Payload::recorded(
                    "workflow_recovery",
                    json!({
                        "workflow_run_id": self.run_id, "job_id": self.job_id, "wp_id": self.wp(), "reason": "crash",
                        "resume_point": recovery.resume_point, "steps_recovered": recovery.steps_recovered,
                        "steps_to_retry": recovery.steps_to_retry,
                    }),
                )])
                .await?;
                return Ok(st);
            }
            return Ok(State { progress, ledger });
        }
        let now = self.clock.now().to_rfc3339();
        let policy = self.plan.policy.clone();
        let progress = ProgressArtifact {
            schema_version: PROGRESS_SCHEMA_VERSION.into(),
            wp_id: self.wp().to_owned(),
            job_id: self.job_id.to_owned(),
            created_at: now.clone(),
            updated_at: now.clone(),
            completed_at: None,
            status: ProgressStatus::InProgress,
            current_state: CurrentState {
                iteration_allowance: policy.max_total_iterations,
                duration_allowance_ms: policy.max_duration_ms,
                ..CurrentState::default()
            },
            policy,
            caps_reached: Vec::new(),
            micro_tasks: self
                .plan
                .mts
                .iter()
                .map(|m| MtProgress {
                    mt_id: m.mt_id.clone(),
                    name: m.name.clone(),
                    status: MtStatus::Pending,
                    iterations: Vec::new(),
                    final_iteration: None,
                    final_model_level: None,
                    escalation_record_ref: None,
                    summary_ref: None,
                    evidence_refs: Vec::new(),
                })
                .collect(),
        };
        let ledger = RunLedger {
            ledger_id: format!("{}-ledger", self.job_id),
            wp_id: self.wp().to_owned(),
            job_id: self.job_id.to_owned(),
            created_at: now,
            steps: Vec::new(),
            resume_point: None,
            resume_reason: None,
        };
        self.write_json(DEFINITIONS, &json!(self.plan.mts)).await?;
        let mut st = State { progress, ledger };
        self.save(&mut st).await?;
        self.mt_event(
            "micro_task_loop_started",
            json!({
                "wp_id": self.wp(), "total_mts": self.plan.mts.len(),
                "execution_policy": st.progress.policy, "mt_ids": self.plan.mts.iter().map(|m| &m.mt_id).collect::<Vec<_>>(),
                "execution_waves": self.plan.waves,
            }),
        )
        .await?;
        Ok(st)
    }

    /// Persists the progress artifact and the ledger (DG-MT-07: counters after every iteration).
    async fn save(&self, st: &mut State) -> Result<()> {
        self.fence().await?;
        st.progress.updated_at = self.clock.now().to_rfc3339();
        self.save_parts(st).await
    }

    /// Refuses to go on writing once the run is no longer this loop's.
    async fn fence(&self) -> Result<()> {
        self.sink.check().await.map_err(ExecError::Fenced)
    }

    async fn save_parts(&self, st: &State) -> Result<()> {
        let progress = serde_json::to_vec_pretty(&st.progress).unwrap_or_default();
        let ledger = serde_json::to_vec_pretty(&st.ledger).unwrap_or_default();
        for (name, bytes, cap) in [
            (PROGRESS, &progress, steward_micro_task::state::MAX_PROGRESS_BYTES),
            (LEDGER, &ledger, steward_micro_task::state::MAX_LEDGER_BYTES),
        ] {
            if bytes.len() > cap {
                return Err(ExecError::Corrupt {
                    document: self.shown(name),
                    message: format!("{} bytes is over the {cap}-byte cap", bytes.len()),
                });
            }
            self.persist(name, bytes).await?;
        }
        let metrics = serde_json::to_value(metrics(&st.progress)).unwrap_or_default();
        self.write_json(METRICS, &metrics).await?;
        Ok(())
    }
}

/// The ids of the job's completed tasks.
fn completed_ids(progress: &ProgressArtifact) -> Vec<String> {
    progress.micro_tasks.iter().filter(|e| e.status == MtStatus::Completed).map(|e| e.mt_id.clone()).collect()
}

/// Marks a job cancelled in its documents (progress artifact and metrics), whether or not its
/// loop runs: a run cancelled while it waits at a gate has none. Returns the job's work packet
/// id, for MT-011; `None` for a job with no progress yet, or one that had already ended.
pub(crate) async fn cancel_documents(
    artifacts: &dyn ArtifactStore,
    job_id: &str,
    now: &str,
) -> std::result::Result<Option<String>, steward_artifacts::Error> {
    let Some(bytes) = artifacts.read_document(job_id, PROGRESS).await? else { return Ok(None) };
    let Ok(mut progress) = serde_json::from_slice::<ProgressArtifact>(&bytes) else { return Ok(None) };
    if !matches!(progress.status, ProgressStatus::InProgress | ProgressStatus::Paused) {
        return Ok(None);
    }
    progress.status = ProgressStatus::Cancelled;
    progress.current_state.pause = None;
    progress.updated_at = now.to_owned();
    let body = serde_json::to_vec_pretty(&progress).unwrap_or_default();
    artifacts.write_document(job_id, PROGRESS, &body).await?;
    let m = serde_json::to_vec_pretty(&metrics(&progress)).unwrap_or_default();
    artifacts.write_document(job_id, METRICS, &m).await?;
    Ok(Some(progress.wp_id))
}

/// Records an iteration and the state its decision leaves the task in, in one save with it, so a
/// crash after the save never runs a completed task again. (An escalation's level change is made
/// with its record, in `escalate`.)
fn settle(progress: &mut ProgressArtifact, idx: usize, record: IterationRecord, decision: &LoopDecision) {
    let level = progress.current_state.active_model_level;
    progress.current_state.total_iterations += 1;
    let entry = &mut progress.micro_tasks[idx];
    match decision {
        LoopDecision::Complete { .. } => {
            entry.status = MtStatus::Completed;
            entry.final_iteration = Some(record.iteration);
            entry.final_model_level = Some(level);
            entry.evidence_refs.extend(record.validation_evidence_ref.clone());
        }
        LoopDecision::Retry => progress.current_state.iteration += 1,
        LoopDecision::Escalate { .. } | LoopDecision::Skip | LoopDecision::Abort { .. } => {}
    }
    progress.micro_tasks[idx].iterations.push(record);
}

fn failing_summary(report: &Value) -> String {
    report["spec_results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["passed"] == false && r["blocking"] == true)
                .map(|r| {
                    let tail = r["output_tail"].as_str().unwrap_or_default();
                    let tail: String = tail.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
                    let ended = match (r["actual_exit_code"].as_i64(), r["error"].as_str()) {
                        (Some(code), _) => format!("exit {code}"),
                        (None, Some(error)) => error.to_owned(),
                        (None, None) => "no exit code".to_owned(),
                    };
                    format!("`{}` {ended}: {}", r["command"].as_str().unwrap_or_default(), tail.trim())
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}
