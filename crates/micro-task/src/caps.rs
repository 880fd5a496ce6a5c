//! What a micro-task job may spend (§2.6.6.8.17 resource caps, §2.6.6.8.16 poison prevention):
//! the limits checked before each iteration and after each model call, what reaching each one
//! does, and what a person's `continue` at a limit's hard gate grants.
//!
//! | cap | limit | reaching it |
//! |---|---|---|
//! | `iteration_tokens` | 2 × the task's token budget per model call | recorded (the request already caps the answer at the budget) |
//! | `task_tokens_warning` | 10 × the task's budget | recorded once per task |
//! | `task_tokens` | 20 × the task's budget | hard gate; `continue` grants 10 × more |
//! | `max_total_tokens` | the policy's `max_total_tokens` for the job | hard gate; `continue` grants as much again |
//! | `max_total_iterations` | the policy's, for the job | hard gate; `continue` grants as many again |
//! | `max_duration` | the policy's `max_duration_ms` of executing time | hard gate; `continue` grants as much again |
//! | `poison_duration` | 2 × `max_duration_ms` of executing time | the job ends `poisoned`, never retried |
//!
//! Executing time leaves out time spent waiting for a person at a gate.

use serde::{Deserialize, Serialize};

use super::policy::ExecutionPolicy;
use super::state::{CurrentState, MtProgress, ProgressArtifact};

/// A task's tokens past this many times its budget are a warning.
pub const TASK_TOKENS_WARNING_FACTOR: u64 = 10;
/// A task's tokens past this many times its budget stop the job at a hard gate.
pub const TASK_TOKENS_GATE_FACTOR: u64 = 20;
/// One model call may spend this many times the task's budget, prompt and answer together.
pub const ITERATION_TOKENS_FACTOR: u64 = 2;
/// A job executing longer than this many times `max_duration_ms` is poisoned.
pub const POISON_DURATION_FACTOR: u64 = 2;

/// One of the job's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cap {
    /// One model call's tokens.
    #[serde(rename = "iteration_tokens")]
    IterationTokens,
    /// A task's tokens, the warning threshold.
    #[serde(rename = "task_tokens_warning")]
    TaskTokensWarning,
    /// A task's tokens, the hard gate.
    #[serde(rename = "task_tokens")]
    TaskTokens,
    /// The job's tokens.
    #[serde(rename = "max_total_tokens")]
    JobTokens,
    /// The job's iterations.
    #[serde(rename = "max_total_iterations")]
    TotalIterations,
    /// The job's executing time.
    #[serde(rename = "max_duration")]
    Duration,
    /// Twice the job's executing time.
    #[serde(rename = "poison_duration")]
    PoisonDuration,
}

impl Cap {
    /// Every cap.
    pub const ALL: [Cap; 7] = [
        Cap::IterationTokens,
        Cap::TaskTokensWarning,
        Cap::TaskTokens,
        Cap::JobTokens,
        Cap::TotalIterations,
        Cap::Duration,
        Cap::PoisonDuration,
    ];

    /// The serialized spelling; for a cap that stops at a hard gate, also the gate's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Cap::IterationTokens => "iteration_tokens",
            Cap::TaskTokensWarning => "task_tokens_warning",
            Cap::TaskTokens => "task_tokens",
            Cap::JobTokens => "max_total_tokens",
            Cap::TotalIterations => "max_total_iterations",
            Cap::Duration => "max_duration",
            Cap::PoisonDuration => "poison_duration",
        }
    }

    /// The cap whose hard gate has this reason.
    pub fn of_gate(reason: &str) -> Option<Cap> {
        Cap::ALL.into_iter().find(|c| c.as_str() == reason && c.effect() == Effect::HardGate)
    }

    /// What reaching the cap does.
    pub fn effect(self) -> Effect {
        match self {
            Cap::IterationTokens | Cap::TaskTokensWarning => Effect::Recorded,
            Cap::TaskTokens | Cap::JobTokens | Cap::TotalIterations | Cap::Duration => Effect::HardGate,
            Cap::PoisonDuration => Effect::Poisoned,
        }
    }

    /// Whether the cap counts tokens (else iterations or milliseconds).
    pub fn unit(self) -> &'static str {
        match self {
            Cap::IterationTokens | Cap::TaskTokensWarning | Cap::TaskTokens | Cap::JobTokens => "tokens",
            Cap::TotalIterations => "iterations",
            Cap::Duration | Cap::PoisonDuration => "ms",
        }
    }
}

/// What reaching a cap does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Written down; the job goes on.
    Recorded,
    /// The job stops for a person.
    HardGate,
    /// The job ends `poisoned` and is never retried (DG-WF-12).
    Poisoned,
}

/// A cap the job reached, as the progress artifact keeps it (and `steward status` shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapReached {
    /// Which.
    pub cap: Cap,
    /// The task the job was working on.
    pub mt_id: String,
    /// What had been spent, in the cap's unit.
    pub used: u64,
    /// The limit in force, in the cap's unit.
    pub limit: u64,
    /// What it did.
    pub effect: Effect,
    /// For a per-call cap: the task's iteration whose call it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u32>,
}

impl CapReached {
    fn new(cap: Cap, mt_id: &str, used: u64, limit: u64) -> CapReached {
        CapReached { cap, mt_id: mt_id.to_owned(), used, limit, effect: cap.effect(), iteration: None }
    }

    /// Whether `self` records the same reaching as `earlier`, so a session that starts again
    /// after a crash between writing a cap down and acting on it does not write it twice: a gate
    /// or a poisoning is the same while its limit is (only a person's answer moves the limit, and
    /// time goes on counting); a per-call cap is the same for the same iteration's call (its
    /// answer replayed); a task's warning comes once anyway.
    pub fn same_as(&self, earlier: &CapReached) -> bool {
        self.cap == earlier.cap
            && self.mt_id == earlier.mt_id
            && self.limit == earlier.limit
            && self.iteration == earlier.iteration
    }
}

/// The tokens (prompt and answer) a task's iterations spent.
pub fn task_tokens(task: &MtProgress) -> u64 {
    task.iterations.iter().map(|r| r.tokens_prompt + r.tokens_completion).sum()
}

/// The tokens the whole job spent.
pub fn job_tokens(progress: &ProgressArtifact) -> u64 {
    progress.micro_tasks.iter().map(task_tokens).sum()
}

/// The job's token limit now: the policy's, plus what people granted at its gate.
pub fn job_token_limit(policy: &ExecutionPolicy, cs: &CurrentState) -> u64 {
    policy.max_total_tokens.saturating_add(cs.job_token_grants)
}

/// The active task's token limit now: 20 × its budget, plus what people granted at its gate.
pub fn task_token_limit(budget: u32, cs: &CurrentState) -> u64 {
    (TASK_TOKENS_GATE_FACTOR * u64::from(budget)).saturating_add(cs.task_token_grants)
}

/// What the job has reached before its next iteration of task `idx`, whose token budget is
/// `budget`: at most one cap that stops it (poisoning first, then the hard gates in the order
/// of the table above), and the task's token warning when it passed that threshold and the job
/// has not recorded it yet. `progress.current_state.elapsed_ms` must be up to date.
pub fn before_iteration(progress: &ProgressArtifact, idx: usize, budget: u32) -> Checked {
    let cs = &progress.current_state;
    let policy = &progress.policy;
    let Some(task) = progress.micro_tasks.get(idx) else { return Checked::default() };
    let mt = task.mt_id.as_str();
    let spent = task_tokens(task);
    let poison_at = policy.max_duration_ms.saturating_mul(POISON_DURATION_FACTOR);
    let job_spent = job_tokens(progress);
    let stop = if cs.elapsed_ms > poison_at {
        Some(CapReached::new(Cap::PoisonDuration, mt, cs.elapsed_ms, poison_at))
    } else if cs.total_iterations >= cs.iteration_allowance {
        Some(CapReached::new(
            Cap::TotalIterations,
            mt,
            u64::from(cs.total_iterations),
            u64::from(cs.iteration_allowance),
        ))
    } else if cs.elapsed_ms >= cs.duration_allowance_ms {
        Some(CapReached::new(Cap::Duration, mt, cs.elapsed_ms, cs.duration_allowance_ms))
    } else if job_spent >= job_token_limit(policy, cs) {
        Some(CapReached::new(Cap::JobTokens, mt, job_spent, job_token_limit(policy, cs)))
    } else if spent > task_token_limit(budget, cs) {
        Some(CapReached::new(Cap::TaskTokens, mt, spent, task_token_limit(budget, cs)))
    } else {
        None
    };
    let warn_at = TASK_TOKENS_WARNING_FACTOR * u64::from(budget);
    let warned = progress.caps_reached.iter().any(|c| c.cap == Cap::TaskTokensWarning && c.mt_id == mt);
    let warning = (spent > warn_at && !warned).then(|| CapReached::new(Cap::TaskTokensWarning, mt, spent, warn_at));
    Checked { stop, warning }
}

/// What [`before_iteration`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// A cap that stops the job (a hard gate, or poisoning).
    pub stop: Option<CapReached>,
    /// The task's token warning, to record.
    pub warning: Option<CapReached>,
}

/// The per-call cap, checked after the model call of task `mt_id`'s `iteration` spent `tokens`:
/// `Some` when the call spent more than twice the task's budget (a server that ignored the
/// request's answer cap, or counts the prompt differently).
pub fn after_call(mt_id: &str, iteration: u32, tokens: u64, budget: u32) -> Option<CapReached> {
    let limit = ITERATION_TOKENS_FACTOR * u64::from(budget);
    (tokens > limit).then(|| CapReached {
        iteration: Some(iteration),
        ..CapReached::new(Cap::IterationTokens, mt_id, tokens, limit)
    })
}

/// What a person's `continue` at the hard gate of `cap` grants: one more policy's worth of the
/// job's iterations, time or tokens, or 10 × the task's budget for a task's tokens. Other gates
/// grant nothing here (the escalation gate's extra pass is the loop's to give).
pub fn grant(cap: Cap, policy: &ExecutionPolicy, cs: &mut CurrentState, budget: u32) {
    match cap {
        Cap::TotalIterations => {
            cs.iteration_allowance = cs.iteration_allowance.saturating_add(policy.max_total_iterations)
        }
        Cap::Duration => cs.duration_allowance_ms = cs.duration_allowance_ms.saturating_add(policy.max_duration_ms),
        Cap::JobTokens => cs.job_token_grants = cs.job_token_grants.saturating_add(policy.max_total_tokens),
        Cap::TaskTokens => {
            cs.task_token_grants = cs.task_token_grants.saturating_add(TASK_TOKENS_WARNING_FACTOR * u64::from(budget));
        }
        Cap::IterationTokens | Cap::TaskTokensWarning | Cap::PoisonDuration => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::IterationOutcome;
    use crate::state::{IterationRecord, MtStatus};

    fn record(tokens: u64) -> IterationRecord {
        IterationRecord {
            iteration: 1,
            model_id: "m".into(),
            lora_id: None,
            escalation_level: 0,
            started_at: String::new(),
            completed_at: String::new(),
            duration_ms: 0,
            tokens_prompt: tokens / 2,
            tokens_completion: tokens - tokens / 2,
            claimed_complete: false,
            validation_passed: None,
            validation_evidence_ref: None,
            outcome: IterationOutcome::Retry,
            error_summary: None,
            failure_category: None,
            context_snapshot_id: String::new(),
        }
    }

    fn progress(spent: &[u64]) -> ProgressArtifact {
        let policy =
            ExecutionPolicy { max_total_tokens: 100_000, max_duration_ms: 1_000, ..ExecutionPolicy::default() };
        let mut p = ProgressArtifact::start("WP", "j", "", policy, &[("MT-001", "t")]);
        p.micro_tasks[0].status = MtStatus::InProgress;
        p.micro_tasks[0].iterations = spent.iter().map(|t| record(*t)).collect();
        p
    }

    #[test]
    fn a_task_past_ten_budgets_is_warned_once_and_past_twenty_stops_at_a_gate() {
        let mut p = progress(&[5_000, 6_000]);
        let c = before_iteration(&p, 0, 1_000);
        assert_eq!(c.stop, None);
        let w = c.warning.unwrap();
        assert_eq!((w.cap, w.used, w.limit, w.effect), (Cap::TaskTokensWarning, 11_000, 10_000, Effect::Recorded));
        p.caps_reached.push(w);
        assert_eq!(before_iteration(&p, 0, 1_000).warning, None, "once per task");

        p.micro_tasks[0].iterations.push(record(10_000));
        let stop = before_iteration(&p, 0, 1_000).stop.unwrap();
        assert_eq!((stop.cap, stop.used, stop.limit, stop.effect), (Cap::TaskTokens, 21_000, 20_000, Effect::HardGate));
        // `continue` grants ten budgets more.
        let policy = p.policy.clone();
        grant(Cap::of_gate(stop.cap.as_str()).unwrap(), &policy, &mut p.current_state, 1_000);
        assert_eq!(before_iteration(&p, 0, 1_000).stop, None);
    }

    #[test]
    fn the_job_stops_at_its_token_limit_and_continue_grants_as_much_again() {
        let mut p = progress(&[60_000, 40_000]);
        let stop = before_iteration(&p, 0, 100_000).stop.unwrap();
        assert_eq!((stop.cap, stop.limit), (Cap::JobTokens, 100_000));
        let policy = p.policy.clone();
        grant(Cap::JobTokens, &policy, &mut p.current_state, 100_000);
        assert_eq!(job_token_limit(&p.policy, &p.current_state), 200_000);
        assert_eq!(before_iteration(&p, 0, 100_000).stop, None);
    }

    /// §2.6.6.8.16: past twice `max_duration_ms` the job is poisoned, whatever was granted.
    #[test]
    fn past_twice_the_duration_the_job_is_poisoned() {
        let mut p = progress(&[]);
        p.current_state.elapsed_ms = 1_000;
        assert_eq!(before_iteration(&p, 0, 1_000).stop.unwrap().cap, Cap::Duration);
        let policy = p.policy.clone();
        grant(Cap::Duration, &policy, &mut p.current_state, 1_000);
        assert_eq!(before_iteration(&p, 0, 1_000).stop, None);
        p.current_state.elapsed_ms = 2_000;
        assert_eq!(
            before_iteration(&p, 0, 1_000).stop.unwrap().cap,
            Cap::Duration,
            "at twice: the gate, not yet poison"
        );
        p.current_state.elapsed_ms = 2_001;
        let stop = before_iteration(&p, 0, 1_000).stop.unwrap();
        assert_eq!((stop.cap, stop.effect, stop.limit), (Cap::PoisonDuration, Effect::Poisoned, 2_000));
    }

    #[test]
    fn iterations_stop_at_their_allowance() {
        let mut p = progress(&[]);
        p.current_state.total_iterations = p.current_state.iteration_allowance;
        assert_eq!(before_iteration(&p, 0, 1_000).stop.unwrap().cap, Cap::TotalIterations);
    }

    #[test]
    fn a_cap_reached_again_after_a_restart_is_the_same_one() {
        let gate = CapReached::new(Cap::Duration, "MT-001", 60_000, 60_000);
        assert!(CapReached::new(Cap::Duration, "MT-001", 60_004, 60_000).same_as(&gate), "time went on");
        assert!(!CapReached::new(Cap::Duration, "MT-001", 120_000, 120_000).same_as(&gate), "after a grant");
        let call = after_call("MT-001", 1, 9_000, 4_096).unwrap();
        assert!(after_call("MT-001", 1, 9_000, 4_096).unwrap().same_as(&call), "its answer replayed");
        assert!(!after_call("MT-001", 2, 9_000, 4_096).unwrap().same_as(&call), "the next call, as costly");
    }

    #[test]
    fn a_call_over_twice_the_budget_is_recorded() {
        assert_eq!(after_call("MT-001", 1, 2_000, 1_000), None);
        let c = after_call("MT-001", 1, 2_001, 1_000).unwrap();
        assert_eq!((c.cap, c.effect), (Cap::IterationTokens, Effect::Recorded));
    }

    /// The event registry (in the core, which knows no caps) spells them the same.
    #[test]
    fn the_event_registry_spells_the_caps_alike() {
        use steward_core::event_registry::{FieldType, spec_of};
        let spec = spec_of("micro_task_cap_reached").unwrap();
        let field = spec.fields.iter().find(|f| f.name == "cap").unwrap();
        let FieldType::OneOf(spellings) = field.ty else { panic!("{:?}", field.ty) };
        let caps: Vec<&str> = Cap::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(caps, spellings);
    }

    #[test]
    fn gate_reasons_name_their_caps() {
        for c in Cap::ALL {
            assert_eq!(Cap::of_gate(c.as_str()).is_some(), c.effect() == Effect::HardGate);
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert_eq!(Cap::of_gate("escalation_exhausted"), None);
    }
}
