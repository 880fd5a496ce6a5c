//! The progress snapshot (DireClaw §4.3): a read model computed from a run record.

use serde::Serialize;

use crate::state::RunState;
use crate::time::Timestamp;

/// DireClaw's progress fields, camelCase on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The run.
    pub run_id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// Its state.
    pub state: RunState,
    /// How many inputs it was given.
    pub input_count: usize,
    /// Their names, sorted.
    pub input_keys: Vec<String>,
    /// The step most recently started, while active.
    pub current_step_id: Option<String>,
    /// Its attempt number.
    pub current_attempt: Option<u32>,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When the record last changed.
    pub updated_at: String,
    /// The last heartbeat or progress.
    pub last_progress_at: String,
    /// One line.
    pub summary: String,
    /// Whether a human must act.
    pub pending_human_input: bool,
    /// What happens next, in words.
    pub next_expected_action: String,
}

/// What a run in `state` waits for next, in words.
pub fn next_expected_action(state: RunState, current_step: Option<&str>) -> String {
    match (state, current_step) {
        (RunState::Queued, _) => "workflow start".into(),
        (RunState::Running, Some(s)) => format!("await step {s} output"),
        (RunState::Running, None) => "execute next step".into(),
        (RunState::Stalled, _) => "resume with `steward resume`".into(),
        (RunState::AwaitingUser, _) => "await human response".into(),
        (RunState::Failed, _) => "inspect the run with `steward status` and `steward events`".into(),
        _ => "none".into(),
    }
}

/// Builds the snapshot from the fields a run record carries.
#[allow(clippy::too_many_arguments)]
pub fn snapshot(
    run_id: &str,
    workflow_id: &str,
    state: RunState,
    input_keys: Vec<String>,
    current_step_id: Option<String>,
    current_attempt: Option<u32>,
    started_at: Timestamp,
    updated_at: Timestamp,
    last_progress_at: Timestamp,
    summary: &str,
) -> Progress {
    let active = !state.is_terminal();
    let next = next_expected_action(state, current_step_id.as_deref().filter(|_| active));
    Progress {
        run_id: run_id.to_owned(),
        workflow_id: workflow_id.to_owned(),
        state,
        input_count: input_keys.len(),
        input_keys,
        current_step_id: current_step_id.filter(|_| active),
        current_attempt: current_attempt.filter(|_| active),
        started_at: started_at.to_rfc3339(),
        updated_at: updated_at.to_rfc3339(),
        last_progress_at: last_progress_at.to_rfc3339(),
        summary: summary.to_owned(),
        pending_human_input: state == RunState::AwaitingUser,
        next_expected_action: next,
    }
}
