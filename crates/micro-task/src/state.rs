//! Loop state (§2.6.6.8.11): the progress artifact (the single source of truth of a job's loop),
//! the append-only run ledger with its idempotency keys, and the crash recovery procedure over it.
//!
//! The runtime reads and writes these as files (atomically, size-capped); what a crash leaves
//! behind is decided here, from the ledger and a predicate saying which step outputs exist.

use serde::{Deserialize, Serialize};

use super::decide::IterationOutcome;
use super::policy::ExecutionPolicy;

/// The progress artifact's schema version.
pub const PROGRESS_SCHEMA_VERSION: &str = "1.0";
/// Largest progress artifact written (§2.6.6.8.17.2).
pub const MAX_PROGRESS_BYTES: usize = 10 * 1024 * 1024;
/// Largest run ledger written (§2.6.6.8.17.2).
pub const MAX_LEDGER_BYTES: usize = 50 * 1024 * 1024;

/// The state of one micro-task (`MTStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtStatus {
    /// Not started.
    Pending,
    /// Being worked on.
    InProgress,
    /// Validated.
    Completed,
    /// Given up.
    Failed,
    /// Skipped.
    Skipped,
    /// Waiting for input it asked for.
    Blocked,
}

impl MtStatus {
    /// The serialized spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MtStatus::Pending => "pending",
            MtStatus::InProgress => "in_progress",
            MtStatus::Completed => "completed",
            MtStatus::Failed => "failed",
            MtStatus::Skipped => "skipped",
            MtStatus::Blocked => "blocked",
        }
    }
}

/// The loop's overall status in the progress artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressStatus {
    /// Running or interrupted.
    InProgress,
    /// Every task completed.
    Completed,
    /// Finished, some tasks skipped.
    CompletedWithIssues,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Waiting at a gate or pause point.
    Paused,
    /// Ran past twice its `max_duration_ms`: unsafe to retry, never resumed (DG-WF-12).
    Poisoned,
}

impl ProgressStatus {
    /// The serialized spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressStatus::InProgress => "in_progress",
            ProgressStatus::Completed => "completed",
            ProgressStatus::CompletedWithIssues => "completed_with_issues",
            ProgressStatus::Failed => "failed",
            ProgressStatus::Cancelled => "cancelled",
            ProgressStatus::Paused => "paused",
            ProgressStatus::Poisoned => "poisoned",
        }
    }
}

/// One iteration as recorded (`IterationRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// 1-based within the task and level.
    pub iteration: u32,
    /// The model asked.
    pub model_id: String,
    /// Its adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_id: Option<String>,
    /// The chain level.
    pub escalation_level: u32,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub completed_at: String,
    /// Wall-clock time.
    pub duration_ms: u64,
    /// Prompt tokens.
    pub tokens_prompt: u64,
    /// Completion tokens.
    pub tokens_completion: u64,
    /// Whether the model claimed completion.
    pub claimed_complete: bool,
    /// The validation verdict, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_passed: Option<bool>,
    /// The validation evidence artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_evidence_ref: Option<String>,
    /// What the iteration led to.
    pub outcome: IterationOutcome,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_summary: Option<String>,
    /// Its failure category (`classify::classify`), when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_category: Option<super::decide::FailureCategory>,
    /// The context snapshot the prompt was compiled from.
    pub context_snapshot_id: String,
}

/// One task's progress (`MTProgressEntry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtProgress {
    /// The task.
    pub mt_id: String,
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub status: MtStatus,
    /// Every iteration, in order.
    pub iterations: Vec<IterationRecord>,
    /// The iteration that completed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_iteration: Option<u32>,
    /// The level it completed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_model_level: Option<u32>,
    /// Its escalation record, once escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_record_ref: Option<String>,
    /// Its summary artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_ref: Option<String>,
    /// Evidence artifacts.
    #[serde(default)]
    pub evidence_refs: Vec<String>,
}

/// The loop's counters (`current_state`), persisted after every iteration (DG-MT-07).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentState {
    /// The task being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_mt: Option<String>,
    /// The chain level in use.
    pub active_model_level: u32,
    /// Iterations in the job.
    pub total_iterations: u32,
    /// Escalations in the job.
    pub total_escalations: u32,
    /// Drop-backs in the job.
    pub total_drop_backs: u32,
    /// The loop's `iteration` for the active task at its current level (§2.6.6.8.7.1 2.1.4).
    #[serde(default)]
    pub iteration: u32,
    /// Consecutive refuted completion claims of the active task.
    #[serde(default)]
    pub false_completion_streak: u32,
    /// The failure category of the active task's last escalation, for drop-back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_escalation_category: Option<super::decide::FailureCategory>,
    /// Time spent executing, summed over the job's sessions (gate waits excluded).
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Iterations allowed before the `max_total_iterations` gate; `continue` there adds a policy's worth.
    #[serde(default)]
    pub iteration_allowance: u32,
    /// Executing time allowed before the `max_duration` gate; `continue` there adds a policy's worth.
    #[serde(default)]
    pub duration_allowance_ms: u64,
    /// Tokens people granted the job at its `max_total_tokens` gate, on top of the policy's.
    #[serde(default)]
    pub job_token_grants: u64,
    /// Tokens people granted the active task at its `task_tokens` gate, on top of 20 × its
    /// budget; back to 0 when the next task starts.
    #[serde(default)]
    pub task_token_grants: u64,
    /// Where the loop waits for a person, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

/// Why the loop waits for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// `hard_gate` or `pause_point`.
    pub kind: PauseKind,
    /// `max_total_iterations`, `max_duration`, `escalation_exhausted`, or `pause_point`.
    pub reason: String,
    /// The task it stopped at.
    pub mt_id: String,
}

/// The two ways the loop stops for a person (§2.6.6.8 HARD_GATE and pause points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    /// A mandatory human decision: continue or abort.
    HardGate,
    /// A user pause point: continue.
    PausePoint,
}

impl PauseKind {
    /// The serialized spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::HardGate => "hard_gate",
            PauseKind::PausePoint => "pause_point",
        }
    }
}

/// The progress artifact (`ProgressArtifact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressArtifact {
    /// Always [`PROGRESS_SCHEMA_VERSION`].
    pub schema_version: String,
    /// The work packet.
    pub wp_id: String,
    /// The job.
    pub job_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// The loop's status.
    pub status: ProgressStatus,
    /// The policy as it was at start.
    pub policy: ExecutionPolicy,
    /// Counters.
    pub current_state: CurrentState,
    /// One entry per task, in execution order.
    pub micro_tasks: Vec<MtProgress>,
    /// Every cap the job reached, in order (§2.6.6.8.17).
    #[serde(default)]
    pub caps_reached: Vec<super::caps::CapReached>,
}

/// A ledger step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// To run.
    Pending,
    /// Started, not known to have finished.
    InProgress,
    /// Its output is recorded.
    Completed,
    /// Failed.
    Failed,
}

/// One ledger step: one iteration of one task (`LedgerStep`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerStep {
    /// `{mt_id}_iter-{NNN}`.
    pub step_id: String,
    /// [`idempotency_key`] of the iteration.
    pub idempotency_key: String,
    /// Where it stands.
    pub status: StepStatus,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// The step's output artifact (the model response and what came of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_artifact_ref: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a crash here can be resumed.
    pub recoverable: bool,
}

/// The run ledger (`RunLedger`): append-only within a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLedger {
    /// The ledger.
    pub ledger_id: String,
    /// The work packet.
    pub wp_id: String,
    /// The job.
    pub job_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// Steps in the order they started.
    pub steps: Vec<LedgerStep>,
    /// Where a recovered job resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_point: Option<String>,
    /// Why it stopped there (`pause_point:MT-002`, `hard_gate:max_total_iterations`, `crash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_reason: Option<String>,
}

/// `{mt_id}_iter-{NNN}`, the iteration counted across levels of the task.
pub fn ledger_step_id(mt_id: &str, iteration: u32) -> String {
    format!("{mt_id}_iter-{iteration:03}")
}

/// SHA-256 of (mt_id, iteration, model, lora, prompt hash), in the reference implementation's
/// layout, lowercase hex.
pub fn idempotency_key(
    mt_id: &str,
    iteration: u32,
    model_id: &str,
    lora_id: Option<&str>,
    prompt_hash: &str,
) -> String {
    let text = format!(
        "mt_id={mt_id}\niteration={iteration}\nmodel_id={model_id}\nlora_id={}\nprompt_hash={prompt_hash}\n",
        lora_id.unwrap_or_default()
    );
    steward_core::sha256_hex(text.as_bytes())
}

/// What the recovery procedure found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// `in_progress` steps whose output exists: now `completed`.
    pub steps_recovered: Vec<String>,
    /// `in_progress` steps without output: now `pending`, to run again.
    pub steps_to_retry: Vec<String>,
    /// The first pending or failed step, if any.
    pub resume_point: Option<String>,
}

/// The crash recovery procedure (§2.6.6.8.11.3) over one ledger: every `in_progress` step whose
/// output exists for its idempotency key becomes `completed` (so it is never sent to a model
/// again, DG-MT-15), every other one `pending`; `resume_point` is the first pending or failed
/// step. `output_of(key)` returns the output artifact's reference when it exists.
pub fn recover(ledger: &mut RunLedger, output_of: impl Fn(&str) -> Option<String>) -> Recovery {
    let mut r = Recovery::default();
    for step in ledger.steps.iter_mut().filter(|s| s.status == StepStatus::InProgress) {
        match output_of(&step.idempotency_key) {
            Some(output) => {
                step.status = StepStatus::Completed;
                step.output_artifact_ref = Some(output);
                r.steps_recovered.push(step.step_id.clone());
            }
            None => {
                step.status = StepStatus::Pending;
                r.steps_to_retry.push(step.step_id.clone());
            }
        }
    }
    r.resume_point = ledger
        .steps
        .iter()
        .find(|s| matches!(s.status, StepStatus::Pending | StepStatus::Failed))
        .map(|s| s.step_id.clone());
    ledger.resume_point = r.resume_point.clone();
    if !r.steps_recovered.is_empty() || !r.steps_to_retry.is_empty() {
        ledger.resume_reason = Some("crash".to_owned());
    }
    r
}

/// One task's figures (`MTMetrics`, §2.6.6.8.5.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MtMetrics {
    /// The task.
    pub mt_id: String,
    /// Where it stands.
    pub status: MtStatus,
    /// Iterations, all levels.
    pub iterations: u32,
    /// The level it finished at.
    pub final_escalation_level: Option<u32>,
    /// Prompt tokens.
    pub tokens_prompt: u64,
    /// Completion tokens.
    pub tokens_completion: u64,
    /// Time in iterations.
    pub duration_ms: u64,
    /// Iterations whose claim was validated.
    pub validation_attempts: u32,
    /// Its escalation record.
    pub escalation_record_ref: Option<String>,
}

/// The job's figures (`MicroTaskMetrics`, §2.6.6.8.5.4), derived from the progress artifact so
/// they can never disagree with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MicroTaskMetrics {
    /// Per task.
    pub mt_metrics: std::collections::BTreeMap<String, MtMetrics>,
    /// Tasks.
    pub total_mts: u32,
    /// Completed.
    pub completed_mts: u32,
    /// Failed.
    pub failed_mts: u32,
    /// Skipped.
    pub skipped_mts: u32,
    /// Iterations.
    pub total_iterations: u32,
    /// Iterations per chain level.
    pub iterations_at_level: std::collections::BTreeMap<u32, u32>,
    /// Prompt tokens.
    pub total_tokens_prompt: u64,
    /// Completion tokens.
    pub total_tokens_completion: u64,
    /// Time in iterations.
    pub total_duration_ms: u64,
    /// Escalations.
    pub escalation_count: u32,
    /// Drop-backs.
    pub drop_back_count: u32,
    /// Distillation candidates written (DG-MT-18), when enabled: one per escalation, whether a
    /// success followed it or not.
    pub distillation_candidates_generated: u32,
    /// Percentage of completed tasks that completed at level 0.
    pub success_rate_level_0: f64,
}

/// Computes the metrics of a job from its progress artifact.
pub fn metrics(p: &ProgressArtifact) -> MicroTaskMetrics {
    let mut m = MicroTaskMetrics {
        mt_metrics: Default::default(),
        total_mts: p.micro_tasks.len() as u32,
        completed_mts: 0,
        failed_mts: 0,
        skipped_mts: 0,
        total_iterations: 0,
        iterations_at_level: Default::default(),
        total_tokens_prompt: 0,
        total_tokens_completion: 0,
        total_duration_ms: 0,
        escalation_count: p.current_state.total_escalations,
        drop_back_count: p.current_state.total_drop_backs,
        distillation_candidates_generated: if p.policy.enable_distillation {
            p.current_state.total_escalations
        } else {
            0
        },
        success_rate_level_0: 0.0,
    };
    let mut at_level_0 = 0u32;
    for e in &p.micro_tasks {
        match e.status {
            MtStatus::Completed => m.completed_mts += 1,
            MtStatus::Failed => m.failed_mts += 1,
            MtStatus::Skipped => m.skipped_mts += 1,
            _ => {}
        }
        if e.status == MtStatus::Completed && e.final_model_level == Some(0) {
            at_level_0 += 1;
        }
        let mut t = MtMetrics {
            mt_id: e.mt_id.clone(),
            status: e.status,
            iterations: e.iterations.len() as u32,
            final_escalation_level: e.final_model_level,
            tokens_prompt: 0,
            tokens_completion: 0,
            duration_ms: 0,
            validation_attempts: 0,
            escalation_record_ref: e.escalation_record_ref.clone(),
        };
        for r in &e.iterations {
            t.tokens_prompt += r.tokens_prompt;
            t.tokens_completion += r.tokens_completion;
            t.duration_ms += r.duration_ms;
            t.validation_attempts += u32::from(r.validation_passed.is_some());
            *m.iterations_at_level.entry(r.escalation_level).or_default() += 1;
        }
        m.total_iterations += t.iterations;
        m.total_tokens_prompt += t.tokens_prompt;
        m.total_tokens_completion += t.tokens_completion;
        m.total_duration_ms += t.duration_ms;
        m.mt_metrics.insert(e.mt_id.clone(), t);
    }
    if m.completed_mts > 0 {
        m.success_rate_level_0 = f64::from(at_level_0) * 100.0 / f64::from(m.completed_mts);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, key: &str, status: StepStatus) -> LedgerStep {
        LedgerStep {
            step_id: id.into(),
            idempotency_key: key.into(),
            status,
            started_at: None,
            completed_at: None,
            output_artifact_ref: None,
            error: None,
            recoverable: true,
        }
    }

    #[test]
    fn step_ids_and_keys_are_stable() {
        assert_eq!(ledger_step_id("MT-001", 7), "MT-001_iter-007");
        let a = idempotency_key("MT-001", 1, "small", None, "abc");
        assert_eq!(a, idempotency_key("MT-001", 1, "small", Some(""), "abc"));
        assert_ne!(a, idempotency_key("MT-001", 2, "small", None, "abc"));
        assert_ne!(a, idempotency_key("MT-001", 1, "large", None, "abc"));
        assert_eq!(a.len(), 64);
        // sha256("mt_id=MT-001\niteration=1\nmodel_id=small\nlora_id=\nprompt_hash=abc\n")
        assert_eq!(a, "eb0805c8df91c30cc6169f66133c70e278cd0081f6103bfaab0c7c34da1d83e9");
    }

    fn record(iteration: u32, level: u32, validated: Option<bool>, outcome: IterationOutcome) -> IterationRecord {
        IterationRecord {
            iteration,
            model_id: "m".into(),
            lora_id: None,
            escalation_level: level,
            started_at: "t".into(),
            completed_at: "t".into(),
            duration_ms: 10,
            tokens_prompt: 100,
            tokens_completion: 20,
            claimed_complete: validated.is_some(),
            validation_passed: validated,
            validation_evidence_ref: None,
            outcome,
            error_summary: None,
            failure_category: None,
            context_snapshot_id: "c".into(),
        }
    }

    /// §2.6.6.8.5.4: the figures follow from the recorded iterations.
    #[test]
    fn metrics_add_up_from_the_progress_artifact() {
        let entry = |id: &str, status, level, iterations| MtProgress {
            mt_id: id.into(),
            name: id.into(),
            status,
            iterations,
            final_iteration: None,
            final_model_level: level,
            escalation_record_ref: None,
            summary_ref: None,
            evidence_refs: vec![],
        };
        let p = ProgressArtifact {
            schema_version: PROGRESS_SCHEMA_VERSION.into(),
            wp_id: "WP".into(),
            job_id: "j".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
            completed_at: None,
            status: ProgressStatus::Completed,
            policy: ExecutionPolicy::default(),
            current_state: CurrentState { total_escalations: 1, ..CurrentState::default() },
            caps_reached: Vec::new(),
            micro_tasks: vec![
                entry(
                    "MT-001",
                    MtStatus::Completed,
                    Some(0),
                    vec![record(1, 0, Some(true), IterationOutcome::Success)],
                ),
                entry(
                    "MT-002",
                    MtStatus::Completed,
                    Some(1),
                    vec![
                        record(1, 0, None, IterationOutcome::Retry),
                        record(2, 0, Some(false), IterationOutcome::Escalate),
                        record(3, 1, Some(true), IterationOutcome::Success),
                    ],
                ),
            ],
        };
        let m = metrics(&p);
        assert_eq!((m.total_mts, m.completed_mts, m.total_iterations), (2, 2, 4));
        assert_eq!(m.iterations_at_level.get(&0), Some(&3));
        assert_eq!(m.iterations_at_level.get(&1), Some(&1));
        assert_eq!((m.total_tokens_prompt, m.total_tokens_completion, m.total_duration_ms), (400, 80, 40));
        assert_eq!(m.mt_metrics["MT-002"].validation_attempts, 2);
        assert_eq!(m.distillation_candidates_generated, 1);
        assert_eq!(m.escalation_count, 1);
        assert!((m.success_rate_level_0 - 50.0).abs() < f64::EPSILON);
    }

    /// DG-MT-15: an in-progress step with output is completed, not re-run; one without is
    /// retried; the resume point is the first step left to do.
    #[test]
    fn recovery_completes_what_has_output_and_retries_the_rest() {
        let mut ledger = RunLedger {
            ledger_id: "l".into(),
            wp_id: "WP".into(),
            job_id: "j".into(),
            created_at: "t".into(),
            steps: vec![
                step("MT-001_iter-001", "k1", StepStatus::Completed),
                step("MT-001_iter-002", "k2", StepStatus::InProgress),
                step("MT-002_iter-001", "k3", StepStatus::InProgress),
            ],
            resume_point: None,
            resume_reason: None,
        };
        let r = recover(&mut ledger, |k| (k == "k2").then(|| "outputs/k2".to_owned()));
        assert_eq!(r.steps_recovered, ["MT-001_iter-002"]);
        assert_eq!(r.steps_to_retry, ["MT-002_iter-001"]);
        assert_eq!(r.resume_point.as_deref(), Some("MT-002_iter-001"));
        assert_eq!(ledger.steps[1].status, StepStatus::Completed);
        assert_eq!(ledger.steps[1].output_artifact_ref.as_deref(), Some("outputs/k2"));
        assert_eq!(ledger.steps[2].status, StepStatus::Pending);
        assert_eq!(ledger.resume_reason.as_deref(), Some("crash"));
        let again = recover(&mut ledger, |_| None);
        assert!(again.steps_recovered.is_empty() && again.steps_to_retry.is_empty(), "recovery is idempotent");
    }

    #[test]
    fn status_spellings_match_their_serialized_form() {
        let json = |v: serde_json::Value| v.as_str().map(str::to_owned);
        for st in [
            MtStatus::Pending,
            MtStatus::InProgress,
            MtStatus::Completed,
            MtStatus::Failed,
            MtStatus::Skipped,
            MtStatus::Blocked,
        ] {
            assert_eq!(json(serde_json::to_value(st).unwrap()).as_deref(), Some(st.as_str()));
        }
        for st in [
            ProgressStatus::InProgress,
            ProgressStatus::Completed,
            ProgressStatus::CompletedWithIssues,
            ProgressStatus::Failed,
            ProgressStatus::Cancelled,
            ProgressStatus::Paused,
            ProgressStatus::Poisoned,
        ] {
            assert_eq!(json(serde_json::to_value(st).unwrap()).as_deref(), Some(st.as_str()));
        }
        for k in [PauseKind::HardGate, PauseKind::PausePoint] {
            assert_eq!(json(serde_json::to_value(k).unwrap()).as_deref(), Some(k.as_str()));
        }
    }
}
