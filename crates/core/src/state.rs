//! Run and step-attempt state machines: one transition table each, checked on every write.
//!
//! Run states use the Handshake spelling (design decision 4). DireClaw's
//! `waiting` is `awaiting_user`, `succeeded` is `completed`, `canceled` is
//! `cancelled`. The table is the only authority on which edges exist; the
//! store calls [`check_run_transition`] before it writes a new state
//! (HSK-WF-002).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The lifecycle state of a workflow run (and of its job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created and checked; not started.
    Queued,
    /// Steps are executing; a live process renews the heartbeat.
    Running,
    /// No process drives it: set only on the recovery path (DG-WF-10), by the scan that finds
    /// its heartbeat lost or its process dead, or by its own engine releasing it on shutdown.
    Stalled,
    /// Waiting for a human decision.
    AwaitingUser,
    /// Every step finished.
    Completed,
    /// Finished with non-fatal issues.
    CompletedWithIssues,
    /// A step or the engine failed; the reason is recorded.
    Failed,
    /// Stopped by an operator.
    Cancelled,
    /// Unsafe to retry (DG-WF-12).
    Poisoned,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 9] = [
        RunState::Queued,
        RunState::Running,
        RunState::Stalled,
        RunState::AwaitingUser,
        RunState::Completed,
        RunState::CompletedWithIssues,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Poisoned,
    ];

    /// The canonical snake_case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Stalled => "stalled",
            RunState::AwaitingUser => "awaiting_user",
            RunState::Completed => "completed",
            RunState::CompletedWithIssues => "completed_with_issues",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Poisoned => "poisoned",
        }
    }

    /// Terminal states have no outgoing edges.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed
                | RunState::CompletedWithIssues
                | RunState::Failed
                | RunState::Cancelled
                | RunState::Poisoned
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state string (HSK-JOB-100: stored enums parse strictly).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownValue {
    /// What kind of value it was meant to be.
    pub what: &'static str,
    /// The value found.
    pub value: String,
}

impl FromStr for RunState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownValue { what: "run state", value: s.to_owned() })
    }
}

/// Who or what causes a transition; some edges are reserved to one cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionCause {
    /// The engine driving the run.
    Engine,
    /// The startup or peer recovery scan (the only cause allowed to write `stalled`).
    Recovery,
    /// An operator command (`cancel`, `resume`).
    Operator,
}

/// A rejected transition, as a value the caller can report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run state transition `{from}` -> `{to}` is not allowed{}", cause_note(*.cause, *.from, *.to))]
pub struct InvalidTransition {
    /// The current state.
    pub from: RunState,
    /// The requested state.
    pub to: RunState,
    /// Who asked.
    pub cause: TransitionCause,
}

fn cause_note(cause: TransitionCause, from: RunState, to: RunState) -> &'static str {
    if from == RunState::Running && to == RunState::Stalled && cause != TransitionCause::Recovery {
        " (only the recovery scan may stall a run)"
    } else if from.is_terminal() {
        " (the run is finished)"
    } else {
        ""
    }
}

/// The run transition table. Returns `Ok` only for an edge that exists and
/// that `cause` may take.
pub fn check_run_transition(from: RunState, to: RunState, cause: TransitionCause) -> Result<(), InvalidTransition> {
    use RunState::*;
    let allowed = match (from, to) {
        (Queued, Running | Failed | Cancelled) => true,
        // DG-WF-10: only recovery moves Running -> Stalled.
        (Running, Stalled) => cause == TransitionCause::Recovery,
        (Running, AwaitingUser | Completed | CompletedWithIssues | Failed | Cancelled | Poisoned) => true,
        // DG-WF-11: a stalled run leaves only by operator action or policy; a run recovered
        // more often than `limits.max_recoveries` is poisoned instead of resumed (DG-WF-12).
        (Stalled, Running | Failed | Cancelled | Poisoned) => cause != TransitionCause::Recovery,
        (AwaitingUser, Running | Failed | Cancelled | Poisoned) => true,
        _ => false,
    };
    if allowed { Ok(()) } else { Err(InvalidTransition { from, to, cause }) }
}

/// The status of one step attempt (HSK-WF-001 node execution status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Recorded before the step starts; in flight.
    Running,
    /// Finished successfully; its outputs are reused and it never runs again.
    Completed,
    /// Finished unsuccessfully.
    Failed,
    /// Killed by its timeout.
    TimedOut,
    /// Stopped because the run was cancelled.
    Cancelled,
    /// The process running it died (found by recovery or resume).
    Interrupted,
    /// Stopped to wait for a person (a hard gate, a pause point): not a failed try. The run
    /// moves to `awaiting_user` in the same write, and the answer starts a fresh attempt.
    AwaitingUser,
    /// Known unsafe to retry (a micro-task job that ran past twice its `max_duration_ms`): the
    /// run ends `poisoned` and is never retried (DG-WF-12).
    Poisoned,
}

impl AttemptStatus {
    /// Every status.
    pub const ALL: [AttemptStatus; 8] = [
        AttemptStatus::Running,
        AttemptStatus::Completed,
        AttemptStatus::Failed,
        AttemptStatus::TimedOut,
        AttemptStatus::Cancelled,
        AttemptStatus::Interrupted,
        AttemptStatus::AwaitingUser,
        AttemptStatus::Poisoned,
    ];

    /// The canonical snake_case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Running => "running",
            AttemptStatus::Completed => "completed",
            AttemptStatus::Failed => "failed",
            AttemptStatus::TimedOut => "timed_out",
            AttemptStatus::Cancelled => "cancelled",
            AttemptStatus::Interrupted => "interrupted",
            AttemptStatus::AwaitingUser => "awaiting_user",
            AttemptStatus::Poisoned => "poisoned",
        }
    }

    /// Whether the attempt has ended.
    pub fn is_finished(self) -> bool {
        self != AttemptStatus::Running
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttemptStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownValue { what: "attempt status", value: s.to_owned() })
    }
}

/// A person's answer to an attempt that stopped for them (a hard gate, a pause point). It is
/// stored on that attempt, so the attempt that follows reads it from the attempt log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanDecision {
    /// Go on: at a hard gate, one more pass with a fresh budget.
    Continue,
    /// Stop: the step fails.
    Abort,
    /// At a micro-task gate or pause point: skip the waiting task (MT-016) and go on with the
    /// next; the job then completes with issues.
    Skip,
    /// At an approval step: go on by `on_approve`.
    Approve,
    /// At an approval step: go by `on_reject`, or fail the step.
    Reject,
}

impl HumanDecision {
    /// Every decision.
    pub const ALL: [HumanDecision; 5] = [
        HumanDecision::Continue,
        HumanDecision::Abort,
        HumanDecision::Skip,
        HumanDecision::Approve,
        HumanDecision::Reject,
    ];

    /// The spelling of `steward gate RUN continue|abort|skip`, `steward approve|reject`, and of
    /// the `human_decision` event.
    pub fn as_str(self) -> &'static str {
        match self {
            HumanDecision::Continue => "continue",
            HumanDecision::Abort => "abort",
            HumanDecision::Skip => "skip",
            HumanDecision::Approve => "approve",
            HumanDecision::Reject => "reject",
        }
    }

    /// Whether this decides an approval step (`approve`, `reject`) rather than a gate.
    pub fn decides_approval(self) -> bool {
        matches!(self, HumanDecision::Approve | HumanDecision::Reject)
    }
}

impl fmt::Display for HumanDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HumanDecision {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HumanDecision::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownValue { what: "human decision", value: s.to_owned() })
    }
}

/// An attempt may only leave `running`, and only once.
pub fn check_attempt_transition(from: AttemptStatus, to: AttemptStatus) -> bool {
    from == AttemptStatus::Running && to != AttemptStatus::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunState::*;
    use TransitionCause::*;

    /// HSK-WF-002: every edge outside the table is rejected.
    #[test]
    fn transition_table_is_exactly_this() {
        let mut allowed = Vec::new();
        for from in RunState::ALL {
            for to in RunState::ALL {
                for cause in [Engine, Recovery, Operator] {
                    if check_run_transition(from, to, cause).is_ok() {
                        allowed.push(format!("{from}->{to} by {cause:?}"));
                    }
                }
            }
        }
        let expected = [
            "queued->running by Engine",
            "queued->running by Recovery",
            "queued->running by Operator",
            "queued->failed by Engine",
            "queued->failed by Recovery",
            "queued->failed by Operator",
            "queued->cancelled by Engine",
            "queued->cancelled by Recovery",
            "queued->cancelled by Operator",
            "running->stalled by Recovery",
            "running->awaiting_user by Engine",
            "running->awaiting_user by Recovery",
            "running->awaiting_user by Operator",
            "running->completed by Engine",
            "running->completed by Recovery",
            "running->completed by Operator",
            "running->completed_with_issues by Engine",
            "running->completed_with_issues by Recovery",
            "running->completed_with_issues by Operator",
            "running->failed by Engine",
            "running->failed by Recovery",
            "running->failed by Operator",
            "running->cancelled by Engine",
            "running->cancelled by Recovery",
            "running->cancelled by Operator",
            "running->poisoned by Engine",
            "running->poisoned by Recovery",
            "running->poisoned by Operator",
            "stalled->running by Engine",
            "stalled->running by Operator",
            "stalled->failed by Engine",
            "stalled->failed by Operator",
            "stalled->cancelled by Engine",
            "stalled->cancelled by Operator",
            "stalled->poisoned by Engine",
            "stalled->poisoned by Operator",
            "awaiting_user->running by Engine",
            "awaiting_user->running by Recovery",
            "awaiting_user->running by Operator",
            "awaiting_user->failed by Engine",
            "awaiting_user->failed by Recovery",
            "awaiting_user->failed by Operator",
            "awaiting_user->cancelled by Engine",
            "awaiting_user->cancelled by Recovery",
            "awaiting_user->cancelled by Operator",
            "awaiting_user->poisoned by Engine",
            "awaiting_user->poisoned by Recovery",
            "awaiting_user->poisoned by Operator",
        ];
        assert_eq!(allowed, expected);
    }

    #[test]
    fn terminal_states_have_no_exits_and_errors_say_why() {
        for from in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RunState::ALL {
                assert!(check_run_transition(from, to, Operator).is_err());
            }
        }
        let err = check_run_transition(Running, Stalled, Engine).unwrap_err();
        assert_eq!(
            err.to_string(),
            "run state transition `running` -> `stalled` is not allowed (only the recovery scan may stall a run)"
        );
        let err = check_run_transition(Completed, Running, Operator).unwrap_err();
        assert!(err.to_string().ends_with("(the run is finished)"));
    }

    #[test]
    fn states_parse_strictly() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>(), Ok(s));
        }
        assert!("waiting".parse::<RunState>().is_err());
        for s in AttemptStatus::ALL {
            assert_eq!(s.as_str().parse::<AttemptStatus>(), Ok(s));
        }
        assert!(check_attempt_transition(AttemptStatus::Running, AttemptStatus::Completed));
        assert!(!check_attempt_transition(AttemptStatus::Completed, AttemptStatus::Failed));
    }
}
