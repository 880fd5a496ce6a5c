//! Distillation candidates (DG-MT-18, §2.6.6.8.13): what a student's failed attempt and a
//! teacher's success say, and how far the pair can be trusted as training data. Computed from
//! the task's recorded iterations, never set by hand.

use serde::{Deserialize, Serialize};

use super::decide::IterationOutcome;
use super::state::IterationRecord;

/// How a student attempt ended (the catalogue's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StudentOutcome {
    /// It claimed completion and validation refuted it.
    ValidationFailed,
    /// It stopped short without a claim.
    Incomplete,
    /// The model call itself failed.
    Error,
}

impl StudentOutcome {
    /// The outcome of the iteration that escalated.
    pub fn of(record: &IterationRecord) -> StudentOutcome {
        let model_error = record.error_summary.as_deref().is_some_and(|e| e.starts_with("model_error"));
        if model_error {
            StudentOutcome::Error
        } else if record.claimed_complete {
            StudentOutcome::ValidationFailed
        } else {
            StudentOutcome::Incomplete
        }
    }
}

/// How far a candidate can be trusted, and whether it may be used for training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trust {
    /// 0 to 1.
    pub data_trust_score: f64,
    /// Whether the pair is fit to train on.
    pub distillation_eligible: bool,
}

/// The least trust an eligible candidate has.
pub const ELIGIBLE_TRUST: f64 = 0.6;

/// The trust of a pair from the task's history:
///
/// - no teacher success (the task ended at the hard gate, was aborted or skipped): 0, never
///   eligible;
/// - else 1, less 0.15 for each false completion among the task's iterations (a model that
///   claimed success it did not have makes the record noisy), less 0.1 for each iteration the
///   teacher needed beyond its first at its level, less 0.3 when the student's call failed (an
///   error says nothing about the student's skill);
/// - eligible when the teacher's success was validated and the score is at least
///   [`ELIGIBLE_TRUST`].
pub fn trust(history: &[IterationRecord], student: &IterationRecord, teacher: Option<&IterationRecord>) -> Trust {
    let Some(teacher) = teacher.filter(|t| t.outcome == IterationOutcome::Success && t.validation_passed == Some(true))
    else {
        return Trust { data_trust_score: 0.0, distillation_eligible: false };
    };
    let false_completions = history
        .iter()
        .filter(|r| r.claimed_complete && r.outcome != IterationOutcome::Success && r.validation_passed == Some(false))
        .count() as f64;
    let teacher_extra =
        history.iter().filter(|r| r.escalation_level == teacher.escalation_level).count().saturating_sub(1) as f64;
    let error = if StudentOutcome::of(student) == StudentOutcome::Error { 0.3 } else { 0.0 };
    let score = (1.0 - 0.15 * false_completions - 0.1 * teacher_extra - error).clamp(0.0, 1.0);
    let score = (score * 100.0).round() / 100.0;
    Trust { data_trust_score: score, distillation_eligible: score >= ELIGIBLE_TRUST }
}

/// The candidate's `skill_log_entry_id`: a UUID (name-based, version 5's layout over SHA-256) of
/// the job, the task and the student's iteration, so the same escalation written again after a
/// crash is the same entry.
pub fn candidate_id(job_id: &str, mt_id: &str, student_iteration: u32) -> String {
    let hex = steward_core::sha256_hex(format!("{job_id}\u{0}{mt_id}\u{0}{student_iteration}").as_bytes());
    let mut b: Vec<char> = hex.chars().take(32).collect();
    b[12] = '5';
    b[16] = match b[16] {
        '0' | '4' | '8' | 'c' => '8',
        '1' | '5' | '9' | 'd' => '9',
        '2' | '6' | 'a' | 'e' => 'a',
        _ => 'b',
    };
    let s: String = b.into_iter().collect();
    format!("{}-{}-{}-{}-{}", &s[..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        iteration: u32,
        level: u32,
        claimed: bool,
        passed: Option<bool>,
        outcome: IterationOutcome,
    ) -> IterationRecord {
        IterationRecord {
            iteration,
            model_id: format!("m{level}"),
            lora_id: None,
            escalation_level: level,
            started_at: String::new(),
            completed_at: String::new(),
            duration_ms: 0,
            tokens_prompt: 0,
            tokens_completion: 0,
            claimed_complete: claimed,
            validation_passed: passed,
            validation_evidence_ref: None,
            outcome,
            error_summary: None,
            failure_category: None,
            context_snapshot_id: String::new(),
        }
    }

    #[test]
    fn trust_comes_from_the_history() {
        use IterationOutcome::*;
        let student = record(1, 0, true, Some(false), Escalate);
        let teacher = record(2, 1, true, Some(true), Success);
        let clean = trust(&[student.clone(), teacher.clone()], &student, Some(&teacher));
        assert_eq!(clean, Trust { data_trust_score: 0.85, distillation_eligible: true });

        // No teacher: the task ended at the gate.
        assert_eq!(
            trust(std::slice::from_ref(&student), &student, None),
            Trust { data_trust_score: 0.0, distillation_eligible: false }
        );

        // A noisy history: three false completions and a teacher that needed three tries.
        let history = vec![
            record(1, 0, true, Some(false), Retry),
            record(2, 0, true, Some(false), Escalate),
            record(3, 1, true, Some(false), Retry),
            record(4, 1, false, None, Retry),
            record(5, 1, true, Some(true), Success),
        ];
        let t = trust(&history, &history[1], Some(&history[4]));
        assert_eq!(t, Trust { data_trust_score: 0.35, distillation_eligible: false });
        assert_eq!(StudentOutcome::of(&history[3]), StudentOutcome::Incomplete);
    }

    #[test]
    fn a_candidate_id_is_a_stable_uuid() {
        let id = candidate_id("job-1", "MT-001", 2);
        assert_eq!(id, candidate_id("job-1", "MT-001", 2));
        assert_ne!(id, candidate_id("job-1", "MT-001", 3));
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('5') && "89ab".contains(&parts[3][..1]), "{id}");
    }
}
