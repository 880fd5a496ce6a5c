//! How runs, attempts and events look on the terminal and in `--json`.

use std::fmt::Write as _;

use serde_json::Value;
use steward_core::event::Event;
use steward_core::progress;
use steward_core::state::RunState;
use steward_server::views::{self, by_step, shown_inputs};
use steward_store::{Attempt, Run};
use steward_tools::redact::Redactor;

// The JSON shapes are the API's: one definition for `--json` and `/api/v1`.
pub(crate) use steward_server::views::{finished_json, progress_of};

fn duration(a: &Attempt) -> String {
    match a.finished_at {
        Some(f) => format!("{:.2}s", f.since(a.started_at) as f64 / 1000.0),
        None => "running".into(),
    }
}

pub(crate) fn status_text(run: &Run, attempts: &[Attempt], origin: Option<&str>, redactor: &Redactor) -> String {
    let mut s = String::new();
    let shown = shown_inputs(run, redactor);
    let inputs: Vec<String> = run.input_keys().iter().map(|k| format!("{k}={}", shown[k])).collect();
    let _ = writeln!(s, "run_id:      {}", run.run_id);
    let _ = writeln!(
        s,
        "workflow:    {} v{} (definition {})",
        run.workflow_id,
        run.workflow_version,
        &run.definition_hash[..12.min(run.definition_hash.len())]
    );
    if let Some(origin) = origin {
        let _ = writeln!(s, "from:        {origin}");
    }
    let _ = writeln!(s, "state:       {}", run.state);
    let _ = writeln!(s, "summary:     {}", run.summary);
    if let Some(r) = &run.terminal_reason {
        let _ = writeln!(s, "reason:      {r}");
    }
    let _ = writeln!(s, "inputs:      {}", if inputs.is_empty() { "(none)".into() } else { inputs.join(" ") });
    let _ = writeln!(s, "input_count: {}", run.inputs.len());
    let _ = writeln!(s, "input_keys:  {}", run.input_keys().join(","));
    let _ = writeln!(s, "job:         {} ({}, trace {})", run.job_id, run.contract.job_kind, run.trace_id);
    let _ = writeln!(s, "created:     {}", run.created_at);
    if let Some(t) = run.started_at {
        let _ = writeln!(s, "started:     {t}");
    }
    if let Some(t) = run.finished_at {
        let _ = writeln!(s, "finished:    {t}");
    } else if run.state == RunState::Running {
        match (&run.owner, run.lease_expires_at) {
            (Some(owner), Some(until)) => {
                let _ = writeln!(s, "held by:     {owner} (lease epoch {}, until {until})", run.lease_epoch);
            }
            (Some(owner), None) => {
                let _ = writeln!(s, "held by:     {owner} (lease epoch {})", run.lease_epoch);
            }
            (None, _) => {
                let when = run.ready_at.map_or("now".to_owned(), |t| format!("from {t}"));
                let _ = writeln!(s, "held by:     nobody; the next worker (or `steward resume`) takes it {when}");
            }
        }
    }
    let _ = writeln!(s, "steps:");
    if attempts.is_empty() {
        let _ = writeln!(s, "  (none started)");
    }
    let width = attempts.iter().map(|a| a.step_id.len()).max().unwrap_or(0);
    for a in attempts {
        let _ =
            write!(s, "  {:width$}  attempt {}  {:<11} {:>8}", a.step_id, a.attempt, a.status.as_str(), duration(a));
        if let Some(e) = &a.error {
            let _ = write!(s, "  {e}");
        }
        s.push('\n');
    }
    s
}

pub(crate) fn progress_text(p: &progress::Progress) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "runId:              {}", p.run_id);
    let _ = writeln!(s, "workflowId:         {}", p.workflow_id);
    let _ = writeln!(s, "state:              {}", p.state);
    let _ = writeln!(s, "inputCount:         {}", p.input_count);
    let _ = writeln!(s, "inputKeys:          {}", p.input_keys.join(","));
    let _ = writeln!(s, "currentStepId:      {}", p.current_step_id.as_deref().unwrap_or("-"));
    let _ = writeln!(s, "currentAttempt:     {}", p.current_attempt.map_or("-".into(), |a| a.to_string()));
    let _ = writeln!(s, "startedAt:          {}", p.started_at);
    let _ = writeln!(s, "updatedAt:          {}", p.updated_at);
    let _ = writeln!(s, "lastProgressAt:     {}", p.last_progress_at);
    let _ = writeln!(s, "summary:            {}", p.summary);
    let _ = writeln!(s, "pendingHumanInput:  {}", p.pending_human_input);
    let _ = writeln!(s, "nextExpectedAction: {}", p.next_expected_action);
    s
}

pub(crate) fn list_json(runs: &[Run], redactor: &Redactor) -> Value {
    runs.iter().map(|r| views::run_summary_json(r, redactor)).collect()
}

pub(crate) fn list_text(runs: &[Run]) -> String {
    if runs.is_empty() {
        return "no runs\n".into();
    }
    let w_id = runs.iter().map(|r| r.run_id.len()).max().unwrap_or(6).max(6);
    let w_wf = runs.iter().map(|r| r.workflow_id.len()).max().unwrap_or(8).max(8);
    let mut s = format!("{:w_id$}  {:w_wf$}  {:<21}  {:<24}  SUMMARY\n", "RUN ID", "WORKFLOW", "STATE", "UPDATED");
    for r in runs {
        let _ = writeln!(
            s,
            "{:w_id$}  {:w_wf$}  {:<21}  {:<24}  {}",
            r.run_id,
            r.workflow_id,
            r.state.as_str(),
            r.updated_at.to_rfc3339(),
            r.summary
        );
    }
    s
}

pub(crate) fn events_text(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events {
        let step = e.step_id.as_deref().map(|x| format!(" [{x}]")).unwrap_or_default();
        let _ =
            writeln!(s, "{:>4}  {}  {:<6}  {:<22}{}  {}", e.seq, e.ts, e.actor.as_str(), e.event_type, step, e.payload);
    }
    s
}

/// What `run`/`resume` print when the run stops.
pub(crate) fn finished_text(run: &Run, attempts: &[Attempt]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "run {} {}", run.run_id, run.state);
    for (step, list) in by_step(attempts) {
        let Some(last) = list.last() else { continue };
        let tries = if list.len() > 1 { format!(" ({} attempts)", list.len()) } else { String::new() };
        // Scripted answers are never passed off as a model's.
        let scripted = last.output.as_ref().is_some_and(|o| o["scripted"] == true);
        let tries = if scripted { format!("{tries} [scripted answers]") } else { tries };
        let _ = writeln!(s, "  {step}: {}{tries}", last.status);
        let out = last.output.as_ref().and_then(|o| o.get("stdout")).and_then(Value::as_str).unwrap_or("");
        for line in out.lines().take(10) {
            let _ = writeln!(s, "    | {line}");
        }
        if let Some(e) = &last.error {
            let _ = writeln!(s, "    ! {e}");
        }
    }
    let _ = writeln!(s, "summary: {}", run.summary);
    if let Some(r) = run.terminal_reason.as_ref().filter(|_| run.state != RunState::Completed) {
        let _ = writeln!(s, "reason:  {r}");
    }
    match run.state {
        RunState::Completed => {}
        RunState::Running | RunState::Stalled => {
            let _ = writeln!(s, "the run is recorded; continue it with `steward resume {}`", run.run_id);
        }
        RunState::AwaitingUser => {
            // The summary names each waiting step and the command that answers it.
            let _ = writeln!(s, "the run waits for you: answer as the summary says");
        }
        _ => {
            let _ = writeln!(s, "inspect it with `steward status {}` and `steward events {}`", run.run_id, run.run_id);
        }
    }
    s
}
