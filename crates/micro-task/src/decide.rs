//! The micro-task loop's per-iteration decision (§2.6.6.8.7.2) and the drop-back rule (§2.6.6.8.7.3).
//!
//! The executor gathers what one iteration established ([`IterationFacts`]) and records what
//! [`decide_next_action`] answers; walking the escalation chain, and stopping at its hard gate,
//! stays with the caller.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a micro-task escalated (§2.6.6.8.7.2's failure taxonomy, plus the executor's own causes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// A syntax error confined to the edited region.
    SyntaxErrorIsolated,
    /// Syntax errors spread across the change: the model misreads the language or file.
    SyntaxErrorSystemic,
    /// The change broke behaviour that previously worked.
    LogicErrorRegression,
    /// The model touched files or regions outside the micro-task's scope.
    ScopeViolation,
    /// Validation passes and fails without the change being at fault.
    ValidationFlaky,
    /// The iteration ran past its time budget.
    TimeoutExceeded,
    /// The compiled context did not fit the model's window.
    ContextOverflow,
    /// The model called APIs that do not exist.
    HallucinationApi,
    /// The work stopped short of the micro-task's definition of done.
    IncompleteImplementation,
    /// No category fits.
    Unknown,
    /// The model signalled it cannot proceed.
    Blocked,
    /// The micro-task used up its iterations without claiming completion.
    MaxIterations,
    /// The model repeatedly claimed completion that validation or evidence refuted.
    FalseCompletion,
}

impl FailureCategory {
    /// Every category, in declaration order.
    pub const ALL: [FailureCategory; 13] = [
        FailureCategory::SyntaxErrorIsolated,
        FailureCategory::SyntaxErrorSystemic,
        FailureCategory::LogicErrorRegression,
        FailureCategory::ScopeViolation,
        FailureCategory::ValidationFlaky,
        FailureCategory::TimeoutExceeded,
        FailureCategory::ContextOverflow,
        FailureCategory::HallucinationApi,
        FailureCategory::IncompleteImplementation,
        FailureCategory::Unknown,
        FailureCategory::Blocked,
        FailureCategory::MaxIterations,
        FailureCategory::FalseCompletion,
    ];

    /// The canonical snake_case string, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCategory::SyntaxErrorIsolated => "syntax_error_isolated",
            FailureCategory::SyntaxErrorSystemic => "syntax_error_systemic",
            FailureCategory::LogicErrorRegression => "logic_error_regression",
            FailureCategory::ScopeViolation => "scope_violation",
            FailureCategory::ValidationFlaky => "validation_flaky",
            FailureCategory::TimeoutExceeded => "timeout_exceeded",
            FailureCategory::ContextOverflow => "context_overflow",
            FailureCategory::HallucinationApi => "hallucination_api",
            FailureCategory::IncompleteImplementation => "incomplete_implementation",
            FailureCategory::Unknown => "unknown",
            FailureCategory::Blocked => "blocked",
            FailureCategory::MaxIterations => "max_iterations",
            FailureCategory::FalseCompletion => "false_completion",
        }
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the loop does after an iteration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum LoopDecision {
    /// The micro-task is done; `drop_back` says whether the next one returns to the base model.
    Complete {
        /// Whether the next micro-task starts back at level 0 ([`should_drop_back`]).
        drop_back: bool,
    },
    /// Run another iteration at the same level.
    Retry,
    /// Move one step up the escalation chain.
    Escalate {
        /// Why.
        category: FailureCategory,
    },
    /// Leave the micro-task undone because the user asked to.
    Skip,
    /// Stop the whole run. Only the executor produces this, when a human aborts at a hard gate;
    /// [`decide_next_action`] never does.
    Abort {
        /// The human's stated reason.
        reason: String,
    },
}

impl LoopDecision {
    /// The decision's tag, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            LoopDecision::Complete { .. } => "complete",
            LoopDecision::Retry => "retry",
            LoopDecision::Escalate { .. } => "escalate",
            LoopDecision::Skip => "skip",
            LoopDecision::Abort { .. } => "abort",
        }
    }
}

impl fmt::Display for LoopDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome recorded against the iteration itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IterationOutcome {
    /// The micro-task completed.
    Success,
    /// Another iteration follows at the same level.
    Retry,
    /// The micro-task escalated for a reason other than a blocked signal.
    Escalate,
    /// The model signalled it is blocked, or the tool bus refused a verify command (a
    /// `capability_violation`, which ends the job: the catalogue's closed list of outcomes has
    /// no other word for it).
    Blocked,
    /// The user skipped the micro-task.
    Skipped,
}

impl IterationOutcome {
    /// The canonical SCREAMING_SNAKE_CASE string, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            IterationOutcome::Success => "SUCCESS",
            IterationOutcome::Retry => "RETRY",
            IterationOutcome::Escalate => "ESCALATE",
            IterationOutcome::Blocked => "BLOCKED",
            IterationOutcome::Skipped => "SKIPPED",
        }
    }
}

impl fmt::Display for IterationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one finished iteration established, as the executor observed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterationFacts {
    /// The model claimed the micro-task complete.
    pub claimed_complete: bool,
    /// The micro-task's validation passed.
    pub validation_passed: bool,
    /// The evidence the completion requires was present and checked out.
    pub evidence_ok: bool,
    /// The model signalled it is blocked.
    pub blocked: bool,
    /// The user asked to skip this micro-task.
    pub user_requested_skip: bool,
    /// The 1-based number of the iteration just finished, at the current level.
    pub iteration: u32,
    /// Iterations allowed per micro-task at one level.
    pub max_iterations_per_mt: u32,
    /// The current level in the escalation chain (0 = base model).
    pub escalation_level: u32,
    /// The highest level below the hard gate; escalating beyond it reaches the hard gate.
    /// Not consulted here: the chain walk belongs to the caller.
    pub max_escalation_level: u32,
    /// Consecutive false completions at this level, counting this iteration if it is one.
    pub consecutive_false_completions: u32,
    /// Consecutive failed iterations at this level whose category is this one's
    /// (`classify::classify`), counting this one: poison prevention's streak.
    pub same_failures_in_a_row: u32,
    /// This iteration's failure category, when it failed (`classify::classify`).
    pub failure: Option<FailureCategory>,
    /// What [`should_drop_back`] needs, consulted only when the micro-task completes. Used as given:
    /// its `escalation_level` should be the same as the field above.
    pub drop_back: DropBackInputs,
    /// A verify command the tool bus refused, and why: a `capability_violation`, which no
    /// retry or model can fix (§2.6.6.8.16: the micro-task and its job fail).
    pub refused_verify: Option<String>,
    /// A blocking verify command timed out, and again with twice the time (`validation_timeout`
    /// then `validation_error`: escalate).
    pub validation_timed_out: bool,
}

/// The verdict on one iteration: what to do next and what to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What the loop does next.
    pub action: LoopDecision,
    /// The outcome recorded for the iteration.
    pub outcome: IterationOutcome,
    /// The iteration was judged a false completion: a claim refuted by validation or evidence,
    /// with no skip or blocked signal taking precedence. The caller's streak resets when false.
    pub false_completion: bool,
}

/// Decides what follows an iteration (§2.6.6.8.7.2), first matching rule wins:
///
/// 0. a verify command the tool bus refused fails the micro-task and its job; a claim whose
///    validation timed out twice escalates (`validation_timeout`, then `validation_error`);
/// 1. a claim backed by passing validation and evidence completes;
/// 2. a user's skip;
/// 3. a blocked signal escalates at once, claim or not;
/// 4. poison prevention (§2.6.6.8.16): the second failure in a row of the same category at one
///    level escalates with that category, whatever the category;
/// 5. a false completion escalates on its second in a row (`false_completion`: the two failed
///    differently);
/// 6. at the iteration limit a claim escalates with its category (`incomplete_implementation`
///    when it has none), no claim with `max_iterations`; else the loop retries.
///
/// Rule 4 counts failures of one category, not every failure: counted over every failure it
/// would cap each level at two iterations and make `max_iterations_per_mt` mean nothing above
/// 2. A model that fails the same way twice is stuck; one that fails differently is moving.
///
/// An escalation here is always one step up; whether that step lands on the hard gate, and so
/// possibly ends in [`LoopDecision::Abort`], is the caller's to work out from the chain.
pub fn decide_next_action(f: &IterationFacts) -> Decision {
    let validated = f.validation_passed && f.evidence_ok;
    let out_of_iterations = f.iteration >= f.max_iterations_per_mt;

    if let Some(why) = &f.refused_verify {
        let reason = format!("capability_violation: {why}");
        return decision(LoopDecision::Abort { reason }, IterationOutcome::Blocked, false);
    }
    if f.claimed_complete && f.validation_timed_out && !validated {
        return decision(
            LoopDecision::Escalate { category: FailureCategory::TimeoutExceeded },
            IterationOutcome::Escalate,
            true,
        );
    }

    if f.claimed_complete && validated {
        return decision(
            LoopDecision::Complete { drop_back: should_drop_back(&f.drop_back) },
            IterationOutcome::Success,
            false,
        );
    }
    if f.user_requested_skip {
        return decision(LoopDecision::Skip, IterationOutcome::Skipped, false);
    }
    if f.blocked {
        // Retrying cannot unblock a model that says it lacks something, so the project escalates
        // straight away instead of burning the remaining iterations.
        return decision(
            LoopDecision::Escalate { category: FailureCategory::Blocked },
            IterationOutcome::Blocked,
            false,
        );
    }
    let stuck = f.failure.filter(|_| f.same_failures_in_a_row >= 2);
    let action = if let Some(category) = stuck {
        LoopDecision::Escalate { category }
    } else if f.claimed_complete && f.consecutive_false_completions >= 2 {
        LoopDecision::Escalate { category: FailureCategory::FalseCompletion }
    } else if out_of_iterations && f.claimed_complete {
        LoopDecision::Escalate { category: f.failure.unwrap_or(FailureCategory::IncompleteImplementation) }
    } else if out_of_iterations {
        LoopDecision::Escalate { category: FailureCategory::MaxIterations }
    } else {
        LoopDecision::Retry
    };
    let outcome = outcome_of(&action);
    decision(action, outcome, f.claimed_complete)
}

fn decision(action: LoopDecision, outcome: IterationOutcome, false_completion: bool) -> Decision {
    Decision { action, outcome, false_completion }
}

fn outcome_of(action: &LoopDecision) -> IterationOutcome {
    match action {
        LoopDecision::Retry => IterationOutcome::Retry,
        _ => IterationOutcome::Escalate,
    }
}

/// When a completed micro-task lets the next one return to the base model (§2.6.6.8.7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropBackStrategy {
    /// Always return to level 0 after an escalated completion.
    Always,
    /// Stay at the escalated level for the rest of the packet.
    Never,
    /// Decide from why the micro-task escalated and what remains.
    #[default]
    Smart,
}

/// What the drop-back rule looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DropBackInputs {
    /// The configured strategy.
    pub strategy: DropBackStrategy,
    /// The level the micro-task completed at (0 = base model).
    pub escalation_level: u32,
    /// Why the micro-task last escalated, if it did.
    pub last_escalation_category: Option<FailureCategory>,
    /// The remaining micro-tasks are simpler than this one.
    pub remaining_mts_simpler: bool,
}

/// Whether to drop back or stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DropBackAction {
    /// Return to the base model for the next micro-task.
    DropBack,
    /// Keep the escalated model.
    StayEscalated,
}

/// How sure the rule that fired is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DropBackConfidence {
    /// A configured strategy, the base level, or a category-based rule.
    High,
    /// Inferred from the remaining micro-tasks being simpler.
    Medium,
    /// No rule applied; staying is the default.
    Low,
}

/// The drop-back verdict with its justification, for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropBackDecision {
    /// Drop back or stay.
    pub action: DropBackAction,
    /// The level the next micro-task starts at when dropping back; `None` when staying.
    pub target_level: Option<u32>,
    /// The rule that fired.
    pub reason: String,
    /// How sure that rule is.
    pub confidence: DropBackConfidence,
}

/// Whether the next micro-task returns to the base model; the same answer as
/// [`drop_back_decision`], without the justification.
pub fn should_drop_back(i: &DropBackInputs) -> bool {
    drop_back_decision(i).action == DropBackAction::DropBack
}

/// ShouldDropBack (§2.6.6.8.7.3) with the rule that fired.
///
/// The spec's smart strategy also weighs LoRA retraining; no LoRAs are trained here, so that
/// input does not exist and the rule falls through to what remains.
pub fn drop_back_decision(i: &DropBackInputs) -> DropBackDecision {
    use DropBackConfidence::{High, Low, Medium};
    use FailureCategory as C;

    match i.strategy {
        DropBackStrategy::Never => return stay_escalated("strategy_never".to_owned(), High),
        DropBackStrategy::Always if i.escalation_level > 0 => return drop_to_base("strategy_always".to_owned(), High),
        DropBackStrategy::Always | DropBackStrategy::Smart => {}
    }
    if i.escalation_level == 0 {
        return stay_escalated("at_base_level".to_owned(), High);
    }
    match i.last_escalation_category {
        // These failures showed the base model lacks the capability, not that it slipped once.
        Some(c @ (C::LogicErrorRegression | C::HallucinationApi | C::ContextOverflow)) => {
            stay_escalated(format!("category_needs_escalated_model:{c}"), High)
        }
        // One-off slips the base model is likely to avoid on the next micro-task.
        Some(c @ (C::SyntaxErrorIsolated | C::ValidationFlaky | C::ScopeViolation)) => {
            drop_to_base(format!("category_transient:{c}"), High)
        }
        _ if i.remaining_mts_simpler => drop_to_base("remaining_mts_simpler".to_owned(), Medium),
        _ => stay_escalated("default_stay_escalated".to_owned(), Low),
    }
}

fn drop_to_base(reason: String, confidence: DropBackConfidence) -> DropBackDecision {
    DropBackDecision { action: DropBackAction::DropBack, target_level: Some(0), reason, confidence }
}

fn stay_escalated(reason: String, confidence: DropBackConfidence) -> DropBackDecision {
    DropBackDecision { action: DropBackAction::StayEscalated, target_level: None, reason, confidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    use DropBackAction::{DropBack, StayEscalated};
    use DropBackConfidence::{High, Low, Medium};
    use FailureCategory as C;
    use IterationOutcome as O;
    use LoopDecision as D;

    /// One row of the §2.6.6.8.7.2 decision table.
    struct Row {
        name: &'static str,
        claimed: bool,
        passed: bool,
        evidence: bool,
        blocked: bool,
        skip: bool,
        iteration: u32,
        max: u32,
        level: u32,
        false_streak: u32,
        same_failures: u32,
        failure: Option<FailureCategory>,
        action: LoopDecision,
        outcome: IterationOutcome,
        false_completion: bool,
    }

    const BASE: Row = Row {
        name: "",
        claimed: false,
        passed: false,
        evidence: false,
        blocked: false,
        skip: false,
        iteration: 1,
        max: 5,
        level: 0,
        false_streak: 0,
        same_failures: 1,
        failure: None,
        action: D::Retry,
        outcome: O::Retry,
        false_completion: false,
    };

    impl Row {
        fn facts(&self) -> IterationFacts {
            IterationFacts {
                claimed_complete: self.claimed,
                validation_passed: self.passed,
                evidence_ok: self.evidence,
                blocked: self.blocked,
                user_requested_skip: self.skip,
                iteration: self.iteration,
                max_iterations_per_mt: self.max,
                escalation_level: self.level,
                max_escalation_level: 3,
                consecutive_false_completions: self.false_streak,
                same_failures_in_a_row: self.same_failures,
                failure: self.failure,
                // `always` makes drop_back a visible function of the level in the table.
                drop_back: DropBackInputs {
                    strategy: DropBackStrategy::Always,
                    escalation_level: self.level,
                    last_escalation_category: None,
                    remaining_mts_simpler: false,
                },
                refused_verify: None,
                validation_timed_out: false,
            }
        }
    }

    /// §2.6.6.8.16: a refused verify command fails the task and its job, whatever else the
    /// iteration says; a validation that timed out twice escalates at once, not another try.
    #[test]
    fn a_refused_verify_command_aborts_and_a_second_validation_timeout_escalates() {
        let done = Row { claimed: true, passed: true, evidence: true, ..BASE };
        let mut f = done.facts();
        f.refused_verify = Some("`curl x`: denied by G-CAP".into());
        let d = decide_next_action(&f);
        assert_eq!(d.action, D::Abort { reason: "capability_violation: `curl x`: denied by G-CAP".into() });
        assert_eq!(d.outcome, O::Blocked);

        let mut f = Row { claimed: true, passed: false, evidence: true, ..BASE }.facts();
        f.validation_timed_out = true;
        let d = decide_next_action(&f);
        assert_eq!((d.action, d.outcome), (D::Escalate { category: FailureCategory::TimeoutExceeded }, O::Escalate));
    }

    fn decision_table() -> Vec<Row> {
        let done = Row { claimed: true, passed: true, evidence: true, ..BASE };
        let false_claim = Row { claimed: true, passed: false, evidence: true, ..BASE };
        vec![
            // Rule 1: complete.
            Row {
                name: "complete_at_base_level",
                action: D::Complete { drop_back: false },
                outcome: O::Success,
                ..done
            },
            Row {
                name: "complete_escalated_drops_back",
                level: 2,
                action: D::Complete { drop_back: true },
                outcome: O::Success,
                ..done
            },
            Row {
                name: "complete_at_iteration_limit",
                iteration: 5,
                action: D::Complete { drop_back: false },
                outcome: O::Success,
                ..done
            },
            Row {
                name: "complete_beats_skip",
                skip: true,
                action: D::Complete { drop_back: false },
                outcome: O::Success,
                ..done
            },
            Row {
                name: "complete_beats_blocked",
                blocked: true,
                action: D::Complete { drop_back: false },
                outcome: O::Success,
                ..done
            },
            Row {
                name: "complete_beats_false_streak_counter",
                false_streak: 2,
                action: D::Complete { drop_back: false },
                outcome: O::Success,
                ..done
            },
            // Rule 2: skip.
            Row { name: "skip_without_claim", skip: true, action: D::Skip, outcome: O::Skipped, ..BASE },
            Row { name: "skip_beats_blocked", skip: true, blocked: true, action: D::Skip, outcome: O::Skipped, ..BASE },
            Row {
                name: "skip_beats_false_completion",
                skip: true,
                false_streak: 2,
                action: D::Skip,
                outcome: O::Skipped,
                ..false_claim
            },
            Row {
                name: "skip_beats_iteration_limit",
                skip: true,
                iteration: 5,
                action: D::Skip,
                outcome: O::Skipped,
                ..BASE
            },
            // Rule 3: blocked.
            Row {
                name: "blocked_without_claim",
                blocked: true,
                action: D::Escalate { category: C::Blocked },
                outcome: O::Blocked,
                ..BASE
            },
            Row {
                name: "blocked_with_refuted_claim",
                blocked: true,
                false_streak: 2,
                action: D::Escalate { category: C::Blocked },
                outcome: O::Blocked,
                ..false_claim
            },
            Row {
                name: "blocked_at_iteration_limit",
                blocked: true,
                iteration: 5,
                action: D::Escalate { category: C::Blocked },
                outcome: O::Blocked,
                ..BASE
            },
            // Rule 4: false completion.
            Row {
                name: "false_completion_first_retries",
                false_streak: 1,
                action: D::Retry,
                outcome: O::Retry,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_evidence_missing_retries",
                passed: true,
                evidence: false,
                false_streak: 1,
                action: D::Retry,
                outcome: O::Retry,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_both_failed_retries",
                evidence: false,
                false_streak: 1,
                action: D::Retry,
                outcome: O::Retry,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_second_in_a_row_escalates",
                iteration: 2,
                false_streak: 2,
                action: D::Escalate { category: C::FalseCompletion },
                outcome: O::Escalate,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_third_in_a_row_escalates",
                iteration: 3,
                false_streak: 3,
                action: D::Escalate { category: C::FalseCompletion },
                outcome: O::Escalate,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_below_limit_retries",
                iteration: 4,
                false_streak: 1,
                action: D::Retry,
                outcome: O::Retry,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_at_limit_incomplete",
                iteration: 5,
                false_streak: 1,
                action: D::Escalate { category: C::IncompleteImplementation },
                outcome: O::Escalate,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_at_limit_uses_hint",
                iteration: 5,
                false_streak: 1,
                failure: Some(C::ScopeViolation),
                action: D::Escalate { category: C::ScopeViolation },
                outcome: O::Escalate,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "false_completion_streak_beats_limit",
                iteration: 5,
                false_streak: 2,
                failure: Some(C::ScopeViolation),
                action: D::Escalate { category: C::FalseCompletion },
                outcome: O::Escalate,
                false_completion: true,
                ..false_claim
            },
            // Rule 5: no claim.
            Row { name: "no_claim_retries", ..BASE },
            Row { name: "no_claim_below_limit_retries", iteration: 4, ..BASE },
            Row {
                name: "no_claim_at_limit_escalates",
                iteration: 5,
                action: D::Escalate { category: C::MaxIterations },
                outcome: O::Escalate,
                ..BASE
            },
            Row {
                name: "no_claim_past_limit_escalates",
                iteration: 6,
                action: D::Escalate { category: C::MaxIterations },
                outcome: O::Escalate,
                ..BASE
            },
            Row {
                name: "no_claim_at_limit_ignores_hint",
                iteration: 5,
                failure: Some(C::ScopeViolation),
                action: D::Escalate { category: C::MaxIterations },
                outcome: O::Escalate,
                ..BASE
            },
            Row { name: "no_claim_without_a_category_is_never_poison", iteration: 4, same_failures: 4, ..BASE },
            // Rule 4: poison prevention, any category.
            Row {
                name: "the_same_failure_twice_escalates_with_it",
                iteration: 2,
                same_failures: 2,
                failure: Some(C::IncompleteImplementation),
                action: D::Escalate { category: C::IncompleteImplementation },
                outcome: O::Escalate,
                ..BASE
            },
            Row {
                name: "a_claim_failing_the_same_way_twice_escalates_with_it",
                iteration: 2,
                false_streak: 1,
                same_failures: 2,
                failure: Some(C::SyntaxErrorIsolated),
                action: D::Escalate { category: C::SyntaxErrorIsolated },
                outcome: O::Escalate,
                false_completion: true,
                ..false_claim
            },
            Row {
                name: "a_different_failure_retries",
                iteration: 2,
                same_failures: 1,
                failure: Some(C::HallucinationApi),
                ..BASE
            },
            Row { name: "no_claim_validation_passing_is_not_completion", passed: true, evidence: true, ..BASE },
            Row {
                name: "no_claim_zero_iteration_budget_escalates",
                max: 0,
                action: D::Escalate { category: C::MaxIterations },
                outcome: O::Escalate,
                ..BASE
            },
        ]
    }

    #[test]
    fn decide_next_action_table_2_6_6_8_7_2() {
        for row in decision_table() {
            let got = decide_next_action(&row.facts());
            let want =
                Decision { action: row.action.clone(), outcome: row.outcome, false_completion: row.false_completion };
            assert_eq!(got, want, "row {}", row.name);
        }
    }

    /// §2.6.6.8.7.2: abort is a human's call at the hard gate, and the outcome always matches the action.
    #[test]
    fn decide_never_aborts_and_outcome_matches_action_2_6_6_8_7_2() {
        let bools = [false, true];
        for claimed in bools {
            for passed in bools {
                for evidence in bools {
                    for blocked in bools {
                        for skip in bools {
                            for iteration in 0..=4 {
                                for false_streak in 0..=3 {
                                    let row = Row {
                                        claimed,
                                        passed,
                                        evidence,
                                        blocked,
                                        skip,
                                        iteration,
                                        max: 3,
                                        false_streak,
                                        ..BASE
                                    };
                                    let d = decide_next_action(&row.facts());
                                    let expected_outcome = match d.action {
                                        D::Complete { .. } => O::Success,
                                        D::Retry => O::Retry,
                                        D::Skip => O::Skipped,
                                        D::Escalate { category: C::Blocked } => O::Blocked,
                                        D::Escalate { .. } => O::Escalate,
                                        D::Abort { .. } => panic!("decide_next_action returned abort"),
                                    };
                                    assert_eq!(d.outcome, expected_outcome, "{:?}", row.facts());
                                    let validated = passed && evidence;
                                    let refuted = claimed && !validated && !skip && !blocked;
                                    assert_eq!(d.false_completion, refuted, "{:?}", row.facts());
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn smart(level: u32, category: Option<FailureCategory>, remaining_simpler: bool) -> DropBackInputs {
        DropBackInputs {
            strategy: DropBackStrategy::Smart,
            escalation_level: level,
            last_escalation_category: category,
            remaining_mts_simpler: remaining_simpler,
        }
    }

    fn assert_drop_back(i: &DropBackInputs, action: DropBackAction, confidence: DropBackConfidence, reason: &str) {
        let d = drop_back_decision(i);
        assert_eq!(d.action, action, "{i:?}");
        assert_eq!(d.confidence, confidence, "{i:?}");
        assert_eq!(d.reason, reason, "{i:?}");
        let target = if action == DropBackAction::DropBack { Some(0) } else { None };
        assert_eq!(d.target_level, target, "{i:?}");
        assert_eq!(should_drop_back(i), action == DropBackAction::DropBack, "{i:?}");
    }

    /// Smart strategy, one test per category (§2.6.6.8.7.3). Each checks the category outranks
    /// `remaining_mts_simpler` where it decides, and defers to it where it does not.
    macro_rules! smart_category {
        ($name:ident, $cat:expr, stays: $reason:expr) => {
            #[test]
            fn $name() {
                assert_drop_back(&smart(2, Some($cat), false), StayEscalated, High, $reason);
                assert_drop_back(&smart(2, Some($cat), true), StayEscalated, High, $reason);
            }
        };
        ($name:ident, $cat:expr, drops: $reason:expr) => {
            #[test]
            fn $name() {
                assert_drop_back(&smart(2, Some($cat), false), DropBack, High, $reason);
                assert_drop_back(&smart(2, Some($cat), true), DropBack, High, $reason);
            }
        };
        ($name:ident, $cat:expr, falls_through) => {
            #[test]
            fn $name() {
                assert_drop_back(&smart(2, $cat, false), StayEscalated, Low, "default_stay_escalated");
                assert_drop_back(&smart(2, $cat, true), DropBack, Medium, "remaining_mts_simpler");
            }
        };
    }

    smart_category!(
        smart_logic_error_regression_stays_2_6_6_8_7_3,
        C::LogicErrorRegression,
        stays: "category_needs_escalated_model:logic_error_regression"
    );
    smart_category!(
        smart_hallucination_api_stays_2_6_6_8_7_3,
        C::HallucinationApi,
        stays: "category_needs_escalated_model:hallucination_api"
    );
    smart_category!(
        smart_context_overflow_stays_2_6_6_8_7_3,
        C::ContextOverflow,
        stays: "category_needs_escalated_model:context_overflow"
    );
    smart_category!(
        smart_syntax_error_isolated_drops_2_6_6_8_7_3,
        C::SyntaxErrorIsolated,
        drops: "category_transient:syntax_error_isolated"
    );
    smart_category!(
        smart_validation_flaky_drops_2_6_6_8_7_3,
        C::ValidationFlaky,
        drops: "category_transient:validation_flaky"
    );
    smart_category!(
        smart_scope_violation_drops_2_6_6_8_7_3,
        C::ScopeViolation,
        drops: "category_transient:scope_violation"
    );
    smart_category!(smart_syntax_error_systemic_falls_through_2_6_6_8_7_3, Some(C::SyntaxErrorSystemic), falls_through);
    smart_category!(smart_timeout_exceeded_falls_through_2_6_6_8_7_3, Some(C::TimeoutExceeded), falls_through);
    smart_category!(
        smart_incomplete_implementation_falls_through_2_6_6_8_7_3,
        Some(C::IncompleteImplementation),
        falls_through
    );
    smart_category!(smart_unknown_falls_through_2_6_6_8_7_3, Some(C::Unknown), falls_through);
    smart_category!(smart_blocked_falls_through_2_6_6_8_7_3, Some(C::Blocked), falls_through);
    smart_category!(smart_max_iterations_falls_through_2_6_6_8_7_3, Some(C::MaxIterations), falls_through);
    smart_category!(smart_false_completion_falls_through_2_6_6_8_7_3, Some(C::FalseCompletion), falls_through);
    smart_category!(smart_no_category_falls_through_2_6_6_8_7_3, None, falls_through);

    #[test]
    fn smart_at_base_level_stays_whatever_the_category_2_6_6_8_7_3() {
        for cat in FailureCategory::ALL.into_iter().map(Some).chain([None]) {
            for simpler in [false, true] {
                assert_drop_back(&smart(0, cat, simpler), StayEscalated, High, "at_base_level");
            }
        }
    }

    #[test]
    fn always_drops_back_only_when_escalated_2_6_6_8_7_3() {
        let at = |level| DropBackInputs {
            strategy: DropBackStrategy::Always,
            escalation_level: level,
            last_escalation_category: Some(C::LogicErrorRegression),
            remaining_mts_simpler: false,
        };
        assert_drop_back(&at(0), StayEscalated, High, "at_base_level");
        assert_drop_back(&at(1), DropBack, High, "strategy_always");
        assert_drop_back(&at(3), DropBack, High, "strategy_always");
    }

    #[test]
    fn never_stays_at_every_level_2_6_6_8_7_3() {
        for level in [0, 1, 3] {
            let i = DropBackInputs {
                strategy: DropBackStrategy::Never,
                escalation_level: level,
                last_escalation_category: Some(C::SyntaxErrorIsolated),
                remaining_mts_simpler: true,
            };
            assert_drop_back(&i, StayEscalated, High, "strategy_never");
        }
    }

    #[test]
    fn completion_uses_drop_back_rule_2_6_6_8_7_3() {
        let mut facts = Row { claimed: true, passed: true, evidence: true, level: 2, ..BASE }.facts();
        facts.drop_back = smart(2, Some(C::ValidationFlaky), false);
        assert_eq!(decide_next_action(&facts).action, D::Complete { drop_back: true });
        facts.drop_back = smart(2, Some(C::HallucinationApi), true);
        assert_eq!(decide_next_action(&facts).action, D::Complete { drop_back: false });
    }

    #[test]
    fn failure_category_strings_match_serde() {
        for c in FailureCategory::ALL {
            assert_eq!(serde_json::to_value(c).ok(), Some(serde_json::Value::from(c.as_str())));
            assert_eq!(c.to_string(), c.as_str());
            let back: Option<FailureCategory> = serde_json::from_value(serde_json::Value::from(c.as_str())).ok();
            assert_eq!(back, Some(c));
        }
    }

    #[test]
    fn iteration_outcome_strings_match_serde() {
        for o in [O::Success, O::Retry, O::Escalate, O::Blocked, O::Skipped] {
            assert_eq!(serde_json::to_value(o).ok(), Some(serde_json::Value::from(o.as_str())));
            assert_eq!(o.to_string(), o.as_str());
        }
    }

    #[test]
    fn loop_decision_serializes_tagged() {
        let cases = [
            (D::Complete { drop_back: true }, serde_json::json!({"decision": "complete", "drop_back": true})),
            (D::Retry, serde_json::json!({"decision": "retry"})),
            (
                D::Escalate { category: C::FalseCompletion },
                serde_json::json!({"decision": "escalate", "category": "false_completion"}),
            ),
            (D::Skip, serde_json::json!({"decision": "skip"})),
            (D::Abort { reason: "stop".into() }, serde_json::json!({"decision": "abort", "reason": "stop"})),
        ];
        for (d, json) in cases {
            assert_eq!(json["decision"], d.as_str());
            assert_eq!(serde_json::to_value(&d).ok(), Some(json));
        }
    }

    #[test]
    fn drop_back_types_serialize() {
        assert_eq!(DropBackStrategy::default(), DropBackStrategy::Smart);
        let strategy: Option<DropBackStrategy> = serde_json::from_str("\"always\"").ok();
        assert_eq!(strategy, Some(DropBackStrategy::Always));
        let d = drop_back_decision(&smart(1, None, true));
        assert_eq!(
            serde_json::to_value(&d).ok(),
            Some(serde_json::json!({
                "action": "DROP_BACK",
                "target_level": 0,
                "reason": "remaining_mts_simpler",
                "confidence": "MEDIUM",
            }))
        );
        let s = serde_json::to_value(drop_back_decision(&smart(1, None, false))).ok();
        assert_eq!(s.as_ref().map(|v| v["action"].clone()), Some(serde_json::json!("STAY_ESCALATED")));
        assert_eq!(s.map(|v| v["confidence"].clone()), Some(serde_json::json!("LOW")));
    }
}
