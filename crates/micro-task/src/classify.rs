//! Why an iteration failed, in the catalogue's failure categories (§2.6.6.8.7.2): read from what
//! the iteration established (the model's error, the change that did not apply, the claim and
//! what the verify commands printed). Escalation records carry the category, drop-back decides
//! from it, and two failures of the same category in a row at one level force escalation.

use super::decide::FailureCategory;

/// What a failed iteration left to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureEvidence<'a> {
    /// The model call's error (`model_error: ...`, `model_timeout: ...`), if it failed.
    pub model_error: Option<&'a str>,
    /// Why the answer's changes were not applied, if they were not.
    pub change_error: Option<&'a str>,
    /// The refused change touched a file outside the task's scope.
    pub scope_violation: bool,
    /// The model said it is blocked.
    pub blocked: bool,
    /// The model claimed the task complete.
    pub claimed_complete: bool,
    /// The verify commands ran and a blocking one failed.
    pub validation_failed: bool,
    /// A blocking verify command timed out, and again with twice the time.
    pub validation_timed_out: bool,
    /// The claim's evidence (or the task it named) did not check out.
    pub evidence_refuted: bool,
    /// What the failing verify commands printed (their output tails).
    pub validation_output: &'a str,
}

/// Markers of a name, function or module that does not exist (Python, C compilers and linkers,
/// rustc, shells).
const HALLUCINATED: &[&str] = &[
    "NameError",
    "ModuleNotFoundError",
    "ImportError",
    "has no attribute",
    "implicit declaration of function",
    "undefined reference to",
    "cannot find function",
    "cannot find value",
    "cannot find type",
    "no method named",
    "unresolved import",
    "command not found",
];

/// Markers of text the language cannot read.
const SYNTAX: &[&str] = &[
    "SyntaxError",
    "IndentationError",
    "TabError",
    "error: expected",
    "unclosed delimiter",
    "mismatched closing delimiter",
    "syntax error",
    "unexpected end of file",
];

/// Model errors that say the prompt did not fit.
const CONTEXT: &[&str] = &["context length", "context_length", "n_ctx", "context window", "too many tokens"];

/// The category of a failed iteration; the first rule that matches wins:
///
/// 1. a model call past its time, or verify commands that timed out twice: `timeout_exceeded`;
/// 2. a model error saying the prompt did not fit: `context_overflow`;
/// 3. a change to a file outside the task's scope: `scope_violation`;
/// 4. a blocked signal: `blocked`;
/// 5. verify output naming a name, function or module that does not exist: `hallucination_api`;
/// 6. verify output showing text the language cannot read: `syntax_error_isolated`, or
///    `syntax_error_systemic` when three or more lines say so;
/// 7. any other claim the verify commands or the evidence check refuted: `false_completion`;
/// 8. any other model error: `unknown`;
/// 9. the rest (no claim, or a claim on top of a change that did not apply):
///    `incomplete_implementation`.
pub fn classify(e: &FailureEvidence<'_>) -> FailureCategory {
    let model_error = e.model_error.unwrap_or_default();
    if model_error.starts_with("model_timeout") || e.validation_timed_out {
        return FailureCategory::TimeoutExceeded;
    }
    let lower = model_error.to_ascii_lowercase();
    if CONTEXT.iter().any(|m| lower.contains(m)) {
        return FailureCategory::ContextOverflow;
    }
    if e.scope_violation {
        return FailureCategory::ScopeViolation;
    }
    if e.blocked {
        return FailureCategory::Blocked;
    }
    if e.validation_failed {
        if HALLUCINATED.iter().any(|m| e.validation_output.contains(m)) {
            return FailureCategory::HallucinationApi;
        }
        let syntax_lines = e.validation_output.lines().filter(|l| SYNTAX.iter().any(|m| l.contains(m))).count();
        if syntax_lines >= 3 {
            return FailureCategory::SyntaxErrorSystemic;
        }
        if syntax_lines > 0 {
            return FailureCategory::SyntaxErrorIsolated;
        }
    }
    if e.claimed_complete && (e.validation_failed || e.evidence_refuted) && e.change_error.is_none() {
        return FailureCategory::FalseCompletion;
    }
    if e.model_error.is_some() {
        return FailureCategory::Unknown;
    }
    FailureCategory::IncompleteImplementation
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureCategory as C;

    fn failed(output: &str) -> FailureEvidence<'_> {
        FailureEvidence {
            claimed_complete: true,
            validation_failed: true,
            validation_output: output,
            ..Default::default()
        }
    }

    #[test]
    fn verify_output_names_the_category() {
        assert_eq!(classify(&failed("NameError: name 'sumx' is not defined")), C::HallucinationApi);
        assert_eq!(classify(&failed("prog.c:3: undefined reference to `ring_push'")), C::HallucinationApi);
        assert_eq!(classify(&failed("error[E0425]: cannot find function `clamp2` in this scope")), C::HallucinationApi);
        assert_eq!(
            classify(&failed("  File \"calc.py\", line 2\n    return a +\nSyntaxError: invalid syntax")),
            C::SyntaxErrorIsolated
        );
        let many = "a.c:1: error: expected ';'\na.c:4: error: expected ')'\na.c:9: error: expected '}'";
        assert_eq!(classify(&failed(many)), C::SyntaxErrorSystemic);
        assert_eq!(classify(&failed("AssertionError: 4 != 5\nFAILED (failures=1)")), C::FalseCompletion);
        let unapplied = FailureEvidence { change_error: Some("edit_search_not_found: ..."), ..failed("FAILED") };
        assert_eq!(classify(&unapplied), C::IncompleteImplementation);
    }

    #[test]
    fn what_happened_before_validation_comes_first() {
        let timeout =
            FailureEvidence { model_error: Some("model_timeout: no answer within 300.0s"), ..Default::default() };
        assert_eq!(classify(&timeout), C::TimeoutExceeded);
        let overflow = FailureEvidence {
            model_error: Some("model_error: HTTP 400: the request exceeds the available context size (n_ctx 2048)"),
            ..Default::default()
        };
        assert_eq!(classify(&overflow), C::ContextOverflow);
        let other = FailureEvidence { model_error: Some("model_error: HTTP 503"), ..Default::default() };
        assert_eq!(classify(&other), C::Unknown);
        let scope = FailureEvidence {
            scope_violation: true,
            change_error: Some("scope_violation: test_calc.py is outside"),
            ..failed("NameError")
        };
        assert_eq!(classify(&scope), C::ScopeViolation);
        assert_eq!(classify(&FailureEvidence { blocked: true, ..Default::default() }), C::Blocked);
        assert_eq!(classify(&FailureEvidence { validation_timed_out: true, ..failed("") }), C::TimeoutExceeded);
    }

    #[test]
    fn a_claim_the_evidence_refutes_is_a_false_completion() {
        let e = FailureEvidence { claimed_complete: true, evidence_refuted: true, ..Default::default() };
        assert_eq!(classify(&e), C::FalseCompletion);
        assert_eq!(classify(&FailureEvidence::default()), C::IncompleteImplementation, "no claim, no change");
    }
}
