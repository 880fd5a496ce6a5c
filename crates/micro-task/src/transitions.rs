//! How the loop's recorded state changes (§2.6.6.8.7.1): a task starts, an iteration settles,
//! a task escalates or drops back, and a person answers the loop where it waits. Each is a change
//! to the progress artifact alone; the executor saves it and records the events.

use steward_core::state::HumanDecision;

use super::caps::{self, Cap};
use super::decide::{FailureCategory, LoopDecision};
use super::definition::MicroTaskDefinition;
use super::policy::ExecutionPolicy;
use super::state::{
    CurrentState, IterationRecord, MtProgress, MtStatus, PROGRESS_SCHEMA_VERSION, Pause, PauseKind, ProgressArtifact,
    ProgressStatus,
};

/// What a person's answer to a waiting loop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Abort (or an approval's reject): the job fails with this reason.
    Abort {
        /// Why, for the job's failure.
        reason: String,
    },
    /// The waiting task was set aside (MT-016); the loop goes on with the next.
    Skipped {
        /// The task.
        mt_id: String,
    },
    /// The loop goes on where it waited, with what the answer granted.
    Continued {
        /// The task it waited at.
        mt_id: String,
    },
}

impl ProgressArtifact {
    /// A job's progress when it starts (at `now`, RFC 3339): every task pending, the policy's
    /// iteration and time allowances, nothing spent.
    /// `tasks` are the job's (id, name) pairs in execution order.
    pub fn start(wp_id: &str, job_id: &str, now: &str, policy: ExecutionPolicy, tasks: &[(&str, &str)]) -> Self {
        ProgressArtifact {
            schema_version: PROGRESS_SCHEMA_VERSION.into(),
            wp_id: wp_id.to_owned(),
            job_id: job_id.to_owned(),
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            completed_at: None,
            status: ProgressStatus::InProgress,
            current_state: CurrentState {
                iteration_allowance: policy.max_total_iterations,
                duration_allowance_ms: policy.max_duration_ms,
                ..CurrentState::default()
            },
            policy,
            micro_tasks: tasks
                .iter()
                .map(|(id, name)| MtProgress {
                    mt_id: (*id).to_owned(),
                    name: (*name).to_owned(),
                    status: MtStatus::Pending,
                    iterations: Vec::new(),
                    final_iteration: None,
                    final_model_level: None,
                    escalation_record_ref: None,
                    summary_ref: None,
                    evidence_refs: Vec::new(),
                })
                .collect(),
            caps_reached: Vec::new(),
        }
    }

    /// The ids of the job's completed tasks.
    pub fn completed_ids(&self) -> Vec<String> {
        self.micro_tasks.iter().filter(|e| e.status == MtStatus::Completed).map(|e| e.mt_id.clone()).collect()
    }

    /// Task `idx` starts (or starts again after a pause): a fresh iteration count, streak and
    /// token grant.
    pub fn start_task(&mut self, idx: usize) {
        if let Some(e) = self.micro_tasks.get_mut(idx) {
            e.status = MtStatus::InProgress;
        }
        let cs = &mut self.current_state;
        cs.iteration = 1;
        cs.false_completion_streak = 0;
        cs.task_token_grants = 0;
    }

    /// Records an iteration of task `idx` and the state its decision leaves the task in, so that
    /// one save holds both: a crash after it never runs a completed task again. (An
    /// escalation's level change is [`ProgressArtifact::escalated`].)
    pub fn settle(&mut self, idx: usize, record: IterationRecord, decision: &LoopDecision) {
        let level = self.current_state.active_model_level;
        self.current_state.total_iterations += 1;
        let Some(entry) = self.micro_tasks.get_mut(idx) else { return };
        match decision {
            LoopDecision::Complete { .. } => {
                entry.status = MtStatus::Completed;
                entry.final_iteration = Some(record.iteration);
                entry.final_model_level = Some(level);
                entry.evidence_refs.extend(record.validation_evidence_ref.clone());
            }
            LoopDecision::Retry => self.current_state.iteration += 1,
            LoopDecision::Escalate { .. } | LoopDecision::Skip | LoopDecision::Abort { .. } => {}
        }
        entry.iterations.push(record);
    }

    /// Task `idx` escalates for `category` to level `next` (`None`: the next rung is the hard
    /// gate, and the level stays); its escalation record is `record_ref`.
    pub fn escalated(&mut self, idx: usize, category: FailureCategory, next: Option<u32>, record_ref: String) {
        let cs = &mut self.current_state;
        cs.total_escalations += 1;
        cs.last_escalation_category = Some(category);
        cs.iteration = 1;
        cs.false_completion_streak = 0;
        if let Some(level) = next {
            cs.active_model_level = level;
        }
        if let Some(e) = self.micro_tasks.get_mut(idx) {
            e.escalation_record_ref = Some(record_ref);
        }
    }

    /// After a completion that lets the next task return to the base model: the level it
    /// dropped back from, or `None` when it was already there.
    pub fn drop_back(&mut self) -> Option<u32> {
        let cs = &mut self.current_state;
        let from = cs.active_model_level;
        if from == 0 {
            return None;
        }
        cs.active_model_level = 0;
        cs.total_drop_backs += 1;
        cs.last_escalation_category = None;
        Some(from)
    }

    /// The loop stops for a person.
    pub fn pause(&mut self, pause: Pause) {
        self.status = ProgressStatus::Paused;
        self.current_state.pause = Some(pause);
    }

    /// A person's answer to the loop waiting at `pause`, applied: `continue` grants what the
    /// gate's cap allows (`caps::grant`), one more pass at the top local level with a fresh
    /// iteration budget at an exhausted chain (design decision 10), or starts the task a pause
    /// point held; `skip` sets the task aside without raising any limit (a limit that stopped
    /// it stops the next one too); `abort` changes nothing here. `budget` is the waiting task's
    /// token budget.
    pub fn answer(&mut self, pause: &Pause, decision: HumanDecision, budget: u32) -> Answered {
        let mt_id = pause.mt_id.clone();
        let idx = self.micro_tasks.iter().position(|e| e.mt_id == mt_id);
        let answered = match decision {
            // A gate takes continue, abort or skip (`record_gate` refuses the rest); an
            // approval's words mean the same here.
            HumanDecision::Abort | HumanDecision::Reject => {
                return Answered::Abort { reason: format!("aborted by a person at {mt_id} ({})", pause.reason) };
            }
            HumanDecision::Skip => {
                if let Some(e) = idx.and_then(|i| self.micro_tasks.get_mut(i)) {
                    e.status = MtStatus::Skipped;
                }
                if pause.reason == "escalation_exhausted" {
                    self.current_state.active_model_level = self.policy.min_model_level();
                }
                let cs = &mut self.current_state;
                cs.task_token_grants = 0;
                cs.iteration = 1;
                cs.false_completion_streak = 0;
                Answered::Skipped { mt_id }
            }
            HumanDecision::Continue | HumanDecision::Approve => {
                if let Some(cap) = Cap::of_gate(&pause.reason) {
                    caps::grant(cap, &self.policy, &mut self.current_state, budget);
                } else if pause.reason == "escalation_exhausted" {
                    let cs = &mut self.current_state;
                    cs.active_model_level = self.policy.max_model_level();
                    cs.iteration = 1;
                    cs.false_completion_streak = 0;
                }
                if pause.kind == PauseKind::PausePoint
                    && let Some(i) = idx
                {
                    self.start_task(i);
                }
                Answered::Continued { mt_id }
            }
        };
        self.current_state.pause = None;
        self.status = ProgressStatus::InProgress;
        answered
    }

    /// Whether every task still to run after `mt` is simpler than it (none left: no), for
    /// drop-back's `remaining_mts_simpler`. `mts` are the job's definitions.
    pub fn remaining_simpler(&self, mts: &[MicroTaskDefinition], mt: &MicroTaskDefinition) -> bool {
        let remaining: Vec<&MicroTaskDefinition> = self
            .micro_tasks
            .iter()
            .filter(|e| {
                e.mt_id != mt.mt_id && matches!(e.status, MtStatus::Pending | MtStatus::InProgress | MtStatus::Blocked)
            })
            .filter_map(|e| mts.iter().find(|m| m.mt_id == e.mt_id))
            .collect();
        !remaining.is_empty() && remaining.iter().all(|r| r.simpler_than(mt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> ProgressArtifact {
        ProgressArtifact::start("WP", "j", "t", ExecutionPolicy::default(), &[("MT-001", "a"), ("MT-002", "b")])
    }

    fn gate(reason: &str) -> Pause {
        Pause { kind: PauseKind::HardGate, reason: reason.into(), mt_id: "MT-001".into() }
    }

    #[test]
    fn continue_at_an_exhausted_chain_gives_one_more_pass_at_the_top_local_level() {
        let mut p = progress();
        p.start_task(0);
        p.current_state.iteration = 5;
        p.pause(gate("escalation_exhausted"));
        assert_eq!(
            p.answer(&gate("escalation_exhausted"), HumanDecision::Continue, 4096),
            Answered::Continued { mt_id: "MT-001".into() }
        );
        assert_eq!(p.current_state.active_model_level, p.policy.max_model_level());
        assert_eq!(
            (p.current_state.iteration, p.status, p.current_state.pause.clone()),
            (1, ProgressStatus::InProgress, None)
        );
    }

    #[test]
    fn continue_at_a_limit_grants_a_policys_worth_and_skip_grants_nothing() {
        let mut p = progress();
        let before = p.current_state.iteration_allowance;
        p.answer(&gate("max_total_iterations"), HumanDecision::Continue, 4096);
        assert_eq!(p.current_state.iteration_allowance, before + p.policy.max_total_iterations);
        p.start_task(0);
        p.answer(&gate("max_total_iterations"), HumanDecision::Skip, 4096);
        assert_eq!(p.current_state.iteration_allowance, before + p.policy.max_total_iterations);
        assert_eq!(p.micro_tasks[0].status, MtStatus::Skipped);
    }

    #[test]
    fn abort_and_reject_fail_the_job_with_the_place_and_the_reason() {
        let mut p = progress();
        for d in [HumanDecision::Abort, HumanDecision::Reject] {
            let Answered::Abort { reason } = p.answer(&gate("max_duration"), d, 4096) else { panic!() };
            assert_eq!(reason, "aborted by a person at MT-001 (max_duration)");
        }
    }

    #[test]
    fn a_pause_point_continued_starts_its_task() {
        let mut p = progress();
        let point = Pause { kind: PauseKind::PausePoint, reason: "pause_point".into(), mt_id: "MT-002".into() };
        p.pause(point.clone());
        p.answer(&point, HumanDecision::Continue, 4096);
        assert_eq!(p.micro_tasks[1].status, MtStatus::InProgress);
    }

    #[test]
    fn an_escalation_and_a_drop_back_move_the_level() {
        let mut p = progress();
        p.start_task(0);
        p.current_state.iteration = 3;
        p.escalated(0, FailureCategory::ScopeViolation, Some(1), "escalations/MT-001-3.json".into());
        assert_eq!((p.current_state.active_model_level, p.current_state.iteration), (1, 1));
        assert_eq!(p.drop_back(), Some(1));
        assert_eq!((p.current_state.active_model_level, p.current_state.total_drop_backs), (0, 1));
        assert_eq!(p.drop_back(), None);
    }
}
