//! Mapping rows to records; a value that does not parse is corruption, not a panic.

use rusqlite::Row;
use serde_json::Value;

use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::job::JobContract;
use steward_core::liveness::ProcessRef;
use steward_store::{Attempt, Error, Result, Run};

pub(crate) const RUN_COLUMNS: &str = "run_id, workflow_id, workflow_version, definition_hash, inputs, state,
    current_step_id, current_attempt, summary, terminal_reason, job_id, trace_id, job_kind, profile_id,
    protocol_id, total_iterations, owner, created_at, started_at, updated_at, heartbeat_at, last_progress_at,
    finished_at, last_event_seq, workdir, owner_process, recoveries, lease_epoch, lease_expires_at, ready_at,
    parent_run_id";

fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Corrupt { path: String::new(), detail: format!("{what}: {detail}") }
}

fn json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

fn process(what: &str, text: Option<&str>) -> Result<Option<ProcessRef>> {
    text.map(|t| serde_json::from_str(t).map_err(|e| corrupt(what, e))).transpose()
}

/// A process as stored: JSON.
pub(crate) fn process_json(p: &ProcessRef) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

/// Reads a run row; the outer result is SQLite's, the inner one ours.
pub(crate) fn run_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Run>> {
    let run_id: String = r.get(0)?;
    let inputs: String = r.get(4)?;
    let state: String = r.get(5)?;
    let job_kind: String = r.get(12)?;
    let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> { Ok(r.get::<_, Option<i64>>(i)?.map(Timestamp)) };
    let parts = (
        r.get::<_, String>(1)?,
        r.get::<_, u32>(2)?,
        r.get::<_, String>(3)?,
        r.get::<_, Option<String>>(6)?,
        r.get::<_, Option<u32>>(7)?,
        r.get::<_, String>(8)?,
        r.get::<_, Option<String>>(9)?,
        r.get::<_, String>(10)?,
        r.get::<_, String>(11)?,
        r.get::<_, String>(13)?,
        r.get::<_, String>(14)?,
        r.get::<_, u32>(15)?,
        r.get::<_, Option<String>>(16)?,
    );
    let times = (r.get::<_, i64>(17)?, ts(18)?, r.get::<_, i64>(19)?, ts(20)?, r.get::<_, i64>(21)?, ts(22)?);
    let last_event_seq: i64 = r.get(23)?;
    let workdir: String = r.get(24)?;
    let owner_process: Option<String> = r.get(25)?;
    let recoveries: u32 = r.get(26)?;
    let lease_epoch: i64 = r.get(27)?;
    let (lease_expires_at, ready_at) = (ts(28)?, ts(29)?);
    let parent_run_id: Option<String> = r.get(30)?;
    Ok((|| {
        let what = format!("run `{run_id}`");
        let Value::Object(inputs) = json(&what, &inputs)? else {
            return Err(corrupt(&what, "inputs are not a JSON object"));
        };
        let (
            workflow_id,
            workflow_version,
            definition_hash,
            current_step_id,
            current_attempt,
            summary,
            terminal_reason,
            job_id,
            trace_id,
            profile_id,
            protocol_id,
            total_iterations,
            owner,
        ) = parts;
        let (created_at, started_at, updated_at, heartbeat_at, last_progress_at, finished_at) = times;
        Ok(Run {
            run_id: run_id.clone(),
            workflow_id,
            workflow_version,
            definition_hash,
            inputs,
            workdir,
            state: state.parse().map_err(|e| corrupt(&what, e))?,
            current_step_id,
            current_attempt,
            summary,
            terminal_reason,
            job_id,
            trace_id,
            contract: JobContract {
                job_kind: job_kind.parse().map_err(|e| corrupt(&what, e))?,
                profile_id,
                protocol_id,
            },
            total_iterations,
            owner,
            owner_process: process(&what, owner_process.as_deref())?,
            lease_epoch: u64::try_from(lease_epoch).map_err(|e| corrupt(&what, e))?,
            lease_expires_at,
            ready_at,
            recoveries,
            created_at: Timestamp(created_at),
            started_at,
            updated_at: Timestamp(updated_at),
            heartbeat_at,
            last_progress_at: Timestamp(last_progress_at),
            finished_at,
            last_event_seq,
            parent_run_id,
        })
    })())
}

pub(crate) const ATTEMPT_COLUMNS: &str = "run_id, step_id, attempt, visit, status, idempotency_key, input, output, error, retryable, routes, started_at, finished_at, process, with_issues, answer, reused_from, answer_detail";

pub(crate) fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Attempt>> {
    let run_id: String = r.get(0)?;
    let step_id: String = r.get(1)?;
    let attempt: u32 = r.get(2)?;
    let visit: u32 = r.get(3)?;
    let status: String = r.get(4)?;
    let idempotency_key: String = r.get(5)?;
    let input: String = r.get(6)?;
    let output: Option<String> = r.get(7)?;
    let error: Option<String> = r.get(8)?;
    let retryable: bool = r.get(9)?;
    let routes: String = r.get(10)?;
    let started_at: i64 = r.get(11)?;
    let finished_at: Option<i64> = r.get(12)?;
    let process_json: Option<String> = r.get(13)?;
    let with_issues: bool = r.get(14)?;
    let answer: Option<String> = r.get(15)?;
    let reused_from: Option<String> = r.get(16)?;
    let answer_detail: Option<String> = r.get(17)?;
    Ok((|| {
        let what = format!("attempt `{idempotency_key}`");
        Ok(Attempt {
            status: status.parse().map_err(|e| corrupt(&what, e))?,
            input: json(&what, &input)?,
            output: output.as_deref().map(|o| json(&what, o)).transpose()?,
            routes: serde_json::from_str(&routes).map_err(|e| corrupt(&what, e))?,
            process: process(&what, process_json.as_deref())?,
            answer: answer.map(|a| a.parse()).transpose().map_err(|e| corrupt(&what, e))?,
            answer_detail: answer_detail
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(&what, e))?,
            with_issues,
            reused_from,
            run_id,
            step_id,
            attempt,
            visit,
            idempotency_key,
            error,
            retryable,
            started_at: Timestamp(started_at),
            finished_at: finished_at.map(Timestamp),
        })
    })())
}

pub(crate) const EVENT_COLUMNS: &str = "id, run_id, seq, event_id, ts, event_type, actor, actor_id, trace_id, job_id,
    step_id, mt_id, model_id, capability_id, payload";

pub(crate) fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Event>> {
    let id: i64 = r.get(0)?;
    let run_id: String = r.get(1)?;
    let seq: i64 = r.get(2)?;
    let event_id: String = r.get(3)?;
    let ts: i64 = r.get(4)?;
    let event_type: String = r.get(5)?;
    let actor: String = r.get(6)?;
    let actor_id: String = r.get(7)?;
    let trace_id: String = r.get(8)?;
    let job_id: String = r.get(9)?;
    let step_id: Option<String> = r.get(10)?;
    let mt_id: Option<String> = r.get(11)?;
    let model_id: Option<String> = r.get(12)?;
    let capability_id: Option<String> = r.get(13)?;
    let payload: String = r.get(14)?;
    Ok((|| {
        let what = format!("event {event_id}");
        Ok(Event {
            id,
            seq,
            ts: Timestamp(ts),
            event_type,
            actor: actor.parse().map_err(|e| corrupt(&what, e))?,
            actor_id,
            trace_id,
            job_id,
            workflow_run_id: run_id,
            step_id,
            mt_id,
            model_id,
            capability_id,
            payload: json(&what, &payload)?,
            event_id,
        })
    })())
}
