//! Mapping rows to records; a value that does not parse is corruption, not a panic.

use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

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

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Corrupt { path: String::new(), detail: format!("{what}: {detail}") }
}

/// One column, typed; a type mismatch is corruption.
fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize, what: &str) -> Result<T> {
    r.try_get(i).map_err(|e| corrupt(what, format!("column {i}: {e}")))
}

/// A BIGINT column holding a `u32`.
fn get_u32(r: &Row, i: usize, what: &str) -> Result<u32> {
    let v: i64 = get(r, i, what)?;
    u32::try_from(v).map_err(|e| corrupt(what, format!("column {i}: {v}: {e}")))
}

/// A BIGINT column holding a `u64` that never goes negative (an epoch).
fn get_u64(r: &Row, i: usize, what: &str) -> Result<u64> {
    let v: i64 = get(r, i, what)?;
    u64::try_from(v).map_err(|e| corrupt(what, format!("column {i}: {v}: {e}")))
}

fn get_opt_u32(r: &Row, i: usize, what: &str) -> Result<Option<u32>> {
    let v: Option<i64> = get(r, i, what)?;
    v.map(|v| u32::try_from(v).map_err(|e| corrupt(what, format!("column {i}: {v}: {e}")))).transpose()
}

fn get_ts(r: &Row, i: usize, what: &str) -> Result<Timestamp> {
    get::<i64>(r, i, what).map(Timestamp)
}

fn get_opt_ts(r: &Row, i: usize, what: &str) -> Result<Option<Timestamp>> {
    Ok(get::<Option<i64>>(r, i, what)?.map(Timestamp))
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

pub(crate) fn run_from_row(r: &Row) -> Result<Run> {
    let run_id: String = get(r, 0, "run")?;
    let what = format!("run `{run_id}`");
    let what = what.as_str();
    let Value::Object(inputs) = json(what, get(r, 4, what)?)? else {
        return Err(corrupt(what, "inputs are not a JSON object"));
    };
    let state: &str = get(r, 5, what)?;
    let job_kind: &str = get(r, 12, what)?;
    Ok(Run {
        workflow_id: get(r, 1, what)?,
        workflow_version: get_u32(r, 2, what)?,
        definition_hash: get(r, 3, what)?,
        inputs,
        state: state.parse().map_err(|e| corrupt(what, e))?,
        current_step_id: get(r, 6, what)?,
        current_attempt: get_opt_u32(r, 7, what)?,
        summary: get(r, 8, what)?,
        terminal_reason: get(r, 9, what)?,
        job_id: get(r, 10, what)?,
        trace_id: get(r, 11, what)?,
        contract: JobContract {
            job_kind: job_kind.parse().map_err(|e| corrupt(what, e))?,
            profile_id: get(r, 13, what)?,
            protocol_id: get(r, 14, what)?,
        },
        total_iterations: get_u32(r, 15, what)?,
        owner: get(r, 16, what)?,
        created_at: get_ts(r, 17, what)?,
        started_at: get_opt_ts(r, 18, what)?,
        updated_at: get_ts(r, 19, what)?,
        heartbeat_at: get_opt_ts(r, 20, what)?,
        last_progress_at: get_ts(r, 21, what)?,
        finished_at: get_opt_ts(r, 22, what)?,
        last_event_seq: get(r, 23, what)?,
        workdir: get(r, 24, what)?,
        owner_process: process(what, get(r, 25, what)?)?,
        recoveries: get_u32(r, 26, what)?,
        lease_epoch: get_u64(r, 27, what)?,
        lease_expires_at: get_opt_ts(r, 28, what)?,
        ready_at: get_opt_ts(r, 29, what)?,
        parent_run_id: get(r, 30, what)?,
        run_id,
    })
}

pub(crate) const ATTEMPT_COLUMNS: &str =
    "run_id, step_id, attempt, visit, status, idempotency_key, input, output, error,
    retryable, routes, started_at, finished_at, process, with_issues, answer, reused_from, answer_detail";

pub(crate) fn attempt_from_row(r: &Row) -> Result<Attempt> {
    let idempotency_key: String = get(r, 5, "attempt")?;
    let what = format!("attempt `{idempotency_key}`");
    let what = what.as_str();
    let status: &str = get(r, 4, what)?;
    let output: Option<&str> = get(r, 7, what)?;
    Ok(Attempt {
        run_id: get(r, 0, what)?,
        step_id: get(r, 1, what)?,
        attempt: get_u32(r, 2, what)?,
        visit: get_u32(r, 3, what)?,
        status: status.parse().map_err(|e| corrupt(what, e))?,
        input: json(what, get(r, 6, what)?)?,
        output: output.map(|o| json(what, o)).transpose()?,
        error: get(r, 8, what)?,
        retryable: get(r, 9, what)?,
        routes: serde_json::from_str(get(r, 10, what)?).map_err(|e| corrupt(what, e))?,
        started_at: get_ts(r, 11, what)?,
        finished_at: get_opt_ts(r, 12, what)?,
        process: process(what, get(r, 13, what)?)?,
        with_issues: get(r, 14, what)?,
        reused_from: get(r, 16, what)?,
        answer: get::<Option<&str>>(r, 15, what)?.map(str::parse).transpose().map_err(|e| corrupt(what, e))?,
        answer_detail: get::<Option<&str>>(r, 17, what)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(what, e))?,
        idempotency_key,
    })
}

pub(crate) const EVENT_COLUMNS: &str = "id, run_id, seq, event_id, ts, event_type, actor, actor_id, trace_id, job_id,
    step_id, mt_id, model_id, capability_id, payload";

pub(crate) fn event_from_row(r: &Row) -> Result<Event> {
    let event_id: String = get(r, 3, "event")?;
    let what = format!("event {event_id}");
    let what = what.as_str();
    let actor: &str = get(r, 6, what)?;
    Ok(Event {
        id: get(r, 0, what)?,
        workflow_run_id: get(r, 1, what)?,
        seq: get(r, 2, what)?,
        ts: get_ts(r, 4, what)?,
        event_type: get(r, 5, what)?,
        actor: actor.parse().map_err(|e| corrupt(what, e))?,
        actor_id: get(r, 7, what)?,
        trace_id: get(r, 8, what)?,
        job_id: get(r, 9, what)?,
        step_id: get(r, 10, what)?,
        mt_id: get(r, 11, what)?,
        model_id: get(r, 12, what)?,
        capability_id: get(r, 13, what)?,
        payload: json(what, get(r, 14, what)?)?,
        event_id,
    })
}
