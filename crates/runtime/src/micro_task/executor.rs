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
use steward_micro_task::caps::{self, CapReached, Effect};
use steward_micro_task::classify::{FailureEvidence, classify};
use steward_micro_task::context::{self, CompileInput, FileSource, PreviousIteration};
use steward_micro_task::decide::{
    DropBackInputs, FailureCategory, IterationFacts, IterationOutcome, LoopDecision, decide_next_action,
};
use steward_micro_task::definition::MicroTaskDefinition;
use steward_micro_task::edits::{self, FORMAT_HELP};
use steward_micro_task::learning;
use steward_micro_task::lora::{self, Offered};
use steward_micro_task::policy::{EscalationLevel, ExecutionPolicy};
use steward_micro_task::signal::{self, CompletionSignal};
use steward_micro_task::state::{
    IterationRecord, LedgerStep, MtStatus, Pause, PauseKind, ProgressArtifact, ProgressStatus, RunLedger, StepStatus,
    idempotency_key, ledger_step_id, metrics, recover,
};
use steward_micro_task::transitions::Answered;
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

mod documents;
mod escalation;
mod files;
mod model_call;
mod resume;
mod verify;

pub(crate) use documents::cancel_documents;
use documents::{DEFINITIONS, LEDGER, PROGRESS, step_doc};
use files::promotion_doc;
use verify::{Validation, failing_summary};

/// Evidence files larger than this are not read to check a cited line.
const MAX_EVIDENCE_FILE_BYTES: u64 = 10 * 1024 * 1024;

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
    /// What each level's server said about itself at the job's start (`probe_servers`): the
    /// LoRA adapters it offers.
    pub servers: &'a std::collections::BTreeMap<u32, steward_models::ServerInfo>,
}

impl From<StageError> for ExecError {
    fn from(e: StageError) -> ExecError {
        ExecError::Workspace { path: e.path, source: e.source }
    }
}

struct State {
    progress: ProgressArtifact,
    ledger: RunLedger,
}

struct Iteration {
    record: IterationRecord,
    signal: CompletionSignal,
    decision: LoopDecision,
}

impl Executor<'_> {
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
        if !matches!(outcome, Err(ExecError::Fenced(_))) && self.fence().await.is_ok() {
            self.save_metrics().await?;
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
        for mt_id in st.progress.completed_ids() {
            if let Some(conflict) = self.promote(&mt_id).await? {
                st.progress.current_state.active_mt = Some(mt_id);
                return self.fail(&mut st, conflict).await;
            }
        }
        let session_start = self.clock.now();
        let elapsed_base = st.progress.current_state.elapsed_ms;
        if let Some(pause) = st.progress.current_state.pause.clone() {
            let Some(decision) = decision else { return Ok(Outcome::Paused(pause)) };
            let budget = self.plan.mts.iter().find(|m| m.mt_id == pause.mt_id).map_or(0, |m| m.token_budget);
            match st.progress.answer(&pause, decision, budget) {
                Answered::Abort { reason } => return self.fail(&mut st, reason).await,
                Answered::Skipped { mt_id } => {
                    // Nothing of the skipped task reaches the workspace.
                    stage::remove(&self.stage.join(&mt_id));
                    st.ledger.resume_reason = None;
                    self.save(&mut st).await?;
                    self.mt_event("micro_task_skipped", json!({"wp_id": self.wp(), "mt_id": mt_id})).await?;
                }
                Answered::Continued { mt_id } => {
                    st.ledger.resume_reason = None;
                    self.save(&mut st).await?;
                    self.mt_event("micro_task_resumed", json!({"wp_id": self.wp(), "mt_id": mt_id})).await?;
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
                MtStatus::Pending | MtStatus::Blocked => st.progress.start_task(idx),
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
        let mut chain_level = policy.level(level).or(policy.escalation_chain.first()).cloned().ok_or_else(|| {
            ExecError::Corrupt { document: self.shown(PROGRESS), message: "the policy has no escalation chain".into() }
        })?;
        let model_id = chain_level.model().to_owned();
        // §2.6.6.8.9.2: an adapter the level's server offers, chosen by the task's tags (the
        // alternate rung takes another than the task's last), applied to this request alone.
        let offered: Vec<Offered> = self
            .servers
            .get(&chain_level.level)
            .map(|info| {
                info.lora_adapters
                    .iter()
                    .map(|a| Offered {
                        server_id: a.id,
                        name: Path::new(&a.path)
                            .file_name()
                            .map_or(a.path.clone(), |n| n.to_string_lossy().into_owned()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let previous = st.progress.micro_tasks[idx].iterations.last().and_then(|r| r.lora_id.clone());
        let chosen =
            lora::select(&policy, &chain_level, &offered, &mt.task_tags, previous.as_deref(), self.clock.now());
        if let Some(adapter) = chosen
            && !chain_level.options.contains_key("lora")
        {
            chain_level.options.insert("lora".into(), json!([{"id": adapter.server_id, "scale": 1.0}]));
        }
        let lora = chosen.map(|a| a.name.clone()).or_else(|| chain_level.lora_id.clone());
        let iteration = st.progress.current_state.iteration;
        let n = st.progress.micro_tasks[idx].iterations.len() as u32 + 1;
        let wp = self.wp().to_owned();
        // Recorded with the iteration's start, in one commit, before the model is asked.
        let lora_selection = Payload::recorded(
            "micro_task_lora_selection",
            json!({"wp_id": wp, "mt_id": mt.mt_id, "iteration": iteration, "model_id": model_id, "lora_id": lora, "escalation_level": level}),
        );
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
        let completed = st.progress.completed_ids();
        let last = st.progress.micro_tasks[idx].iterations.last().cloned();
        // The previous failure by its category (`FAIL: syntax_error_isolated`), else its outcome.
        let prev_outcome = last
            .as_ref()
            .map(|r| format!("FAIL: {}", r.failure_category.map_or(r.outcome.as_str(), FailureCategory::as_str)));
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
            let snapshot = serde_json::to_vec_pretty(&envelope.snapshot).unwrap_or_default();
            self.persist_all(&[
                (&doc("prompt.txt"), envelope.prompt.as_bytes()),
                (&doc("context_snapshot.json"), &snapshot),
            ])
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
        let started_event = Payload::recorded(
            "micro_task_iteration_started",
            json!({"wp_id": wp, "mt_id": mt.mt_id, "iteration": iteration, "step_id": step_id, "model_id": model_id}),
        );
        self.emit(vec![lora_selection, started_event]).await?;
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
        if let Some(over) = caps::after_call(&mt.mt_id, n, tokens.0 + tokens.1, mt.token_budget) {
            self.cap_reached(st, over).await?;
        }
        let signal = signal::parse_completion_signal(&content);
        // Changes first, so the evidence and the verify commands see them.
        let mut hint = None;
        let mut error_summary = model_error.clone();
        let mut change_error = None;
        let changes_ok = match self.apply(&key, &content, mt, &root).await? {
            Ok(()) => true,
            Err((category, why)) => {
                hint = category;
                change_error = Some(why.clone());
                error_summary = Some(why);
                false
            }
        };
        let mut evidence_ok = true;
        let mut validation_passed = None;
        let (mut refused_verify, mut validation_timed_out) = (None, false);
        let mut evidence_ref = None;
        let mut validation_output = String::new();
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
            let evidence = self.write_json(&doc("validation.json"), &report).await?;
            evidence_ref = Some(evidence);
            validation_passed = Some(passed);
            if !passed {
                validation_output = failing_summary(&report);
                if error_summary.is_none() {
                    error_summary = Some(format!("validation failed: {validation_output}"));
                }
            }
            // The commands' own events (each one's start was committed before it ran) and the
            // verdict on them, in one commit once the evidence they name is saved.
            let mut events = events;
            events.push(Payload::recorded(
                "micro_task_validation",
                json!({"wp_id": wp, "mt_id": mt.mt_id, "iteration": iteration, "passed": passed, "evidence_artifact_ref": evidence_ref}),
            ));
            self.emit(events).await?;
        } else if error_summary.is_none() {
            error_summary = Some(if signal.blocked { "blocked".into() } else { "no_completion_claimed".into() });
        }
        let cs = &st.progress.current_state;
        let false_streak = if signal.claimed_complete && !(validation_passed == Some(true) && evidence_ok) {
            cs.false_completion_streak + 1
        } else {
            0
        };
        let validated = validation_passed == Some(true) && evidence_ok;
        let failure = (!(signal.claimed_complete && validated)).then(|| {
            classify(&FailureEvidence {
                model_error: model_error.as_deref(),
                change_error: change_error.as_deref(),
                scope_violation: hint == Some(FailureCategory::ScopeViolation),
                blocked: signal.blocked,
                claimed_complete: signal.claimed_complete,
                validation_failed: validation_passed == Some(false),
                validation_timed_out,
                evidence_refuted: !evidence_ok,
                validation_output: &validation_output,
            })
        });
        // Poison prevention's streak: this task's failures of this category in a row at this level.
        let same_failures = failure.map_or(0, |f| {
            let earlier = st.progress.micro_tasks[idx].iterations.iter().rev();
            1 + earlier.take_while(|r| r.escalation_level == level && r.failure_category == Some(f)).count() as u32
        });
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
            same_failures_in_a_row: same_failures,
            failure,
            drop_back: DropBackInputs {
                strategy: policy.drop_back_strategy,
                escalation_level: level,
                last_escalation_category: cs.last_escalation_category,
                remaining_mts_simpler: st.progress.remaining_simpler(&self.plan.mts, mt),
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
            failure_category: if decision.outcome == IterationOutcome::Success { None } else { failure },
            context_snapshot_id: snapshot_id.clone(),
        };
        let output = json!({"record": record, "decision": decision.action, "signal": signal});
        let output = serde_json::to_vec_pretty(&output).unwrap_or_default();
        let output_ref = hash(&output);
        let output_doc = doc("output.json");
        if matches!(decision.action, LoopDecision::Complete { .. }) {
            // What the completion promotes is written down (with the output) before the task is
            // settled completed, so a crash in between is finished at the next start (`promote`).
            let writes = stage::net_writes(&self.plan.root, &self.applied_writes(st, mt).await?);
            let writes = serde_json::to_vec_pretty(&json!(writes)).unwrap_or_default();
            self.persist_all(&[(&promotion_doc(&mt.mt_id), &writes), (&output_doc, &output)]).await?;
        } else {
            self.persist(&output_doc, &output).await?;
        }
        if let Some(s) = st.ledger.steps.iter_mut().find(|s| s.step_id == step_id) {
            s.status = StepStatus::Completed;
            s.completed_at = Some(finished.to_rfc3339());
            s.output_artifact_ref = Some(output_ref);
        }
        st.progress.current_state.false_completion_streak = false_streak;
        st.progress.settle(idx, record.clone(), &decision.action);
        self.save(st).await?;
        let category = match &decision.action {
            LoopDecision::Escalate { category } => Some(category.as_str()),
            _ => record.failure_category.map(FailureCategory::as_str),
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
        if drop_back && let Some(from) = st.progress.drop_back() {
            self.save(st).await?;
            self.mt_event("micro_task_drop_back", json!({"wp_id": self.wp(), "from_level": from, "to_level": 0}))
                .await?;
            let policy = st.progress.policy.clone();
            self.model_switch(&policy, None, from, 0, "drop_back").await?;
        }
        Ok(None)
    }

    /// Writes down a cap the job reached (progress artifact and event).
    /// A cap already written down (the session started again after a crash in between) is not
    /// written twice.
    async fn cap_reached(&self, st: &mut State, reached: CapReached) -> Result<()> {
        if st.progress.caps_reached.iter().any(|c| reached.same_as(c)) {
            return Ok(());
        }
        let body = json!({
            "wp_id": self.wp(), "mt_id": reached.mt_id, "cap": reached.cap.as_str(), "used": reached.used,
            "limit": reached.limit, "unit": reached.cap.unit(), "effect": reached.effect,
            "iteration": reached.iteration,
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
        st.progress.pause(pause.clone());
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
}
