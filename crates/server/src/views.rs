//! The JSON shapes of runs, attempts and events: what the API answers and what the CLI's
//! `--json` prints, one definition for both. Everything a person could read passes the
//! redactor.

use serde_json::{Value, json};
use steward_artifacts::ArtifactStore;
use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::progress;
use steward_micro_task::caps;
use steward_micro_task::state::{MicroTaskMetrics, ProgressArtifact, metrics};
use steward_store::{Attempt, Run, Store};
use steward_tools::redact::Redactor;

fn ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// The progress snapshot of a run (spec §4.3).
pub fn progress_of(run: &Run) -> progress::Progress {
    progress::snapshot(
        &run.run_id,
        &run.workflow_id,
        run.state,
        run.input_keys(),
        run.current_step_id.clone(),
        run.current_attempt,
        run.started_at.unwrap_or(run.created_at),
        run.updated_at,
        run.last_progress_at,
        &run.summary,
    )
}

fn attempt_json(a: &Attempt, redactor: &Redactor) -> Value {
    json!({
        "attempt": a.attempt,
        "visit": a.visit,
        "status": a.status,
        "idempotency_key": a.idempotency_key,
        "input": redactor.redact_json(&a.input),
        "output": a.output.as_ref().map(|o| redactor.redact_json(o)),
        "error": a.error.as_deref().map(|e| redactor.redact(e).0),
        "retryable": a.retryable,
        "with_issues": a.with_issues,
        "answer": a.answer,
        "reused_from": a.reused_from,
        "next_steps": a.routes,
        "started_at": a.started_at.to_rfc3339(),
        "finished_at": ts(a.finished_at),
    })
}

/// Step ids in the order they first started, with their attempts.
pub fn by_step(attempts: &[Attempt]) -> Vec<(&str, Vec<&Attempt>)> {
    let mut out: Vec<(&str, Vec<&Attempt>)> = Vec::new();
    // Each step's place in `out`, by id: a scan per attempt would cost a long run's page the
    // square of its size.
    let mut place: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for a in attempts {
        let i = *place.entry(a.step_id.as_str()).or_insert_with(|| {
            out.push((&a.step_id, Vec::new()));
            out.len() - 1
        });
        out[i].1.push(a);
    }
    out
}

/// A run's inputs as they are shown: a secret one (sealed) as `***REDACTED***`, and every
/// other one with the token shapes and configured secrets in it redacted, whole when its name
/// says secret (issue 11).
pub fn shown_inputs(run: &Run, redactor: &Redactor) -> serde_json::Map<String, Value> {
    match redactor.redact_json(&Value::Object(run.inputs.clone())) {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// A run with its steps and attempts (`steward status --json`, `GET /api/v1/runs/{id}`).
pub fn run_json(run: &Run, attempts: &[Attempt], redactor: &Redactor) -> Value {
    let steps: Vec<Value> = by_step(attempts)
        .into_iter()
        .map(|(step, list)| {
            let list: Vec<Value> = list.into_iter().map(|a| attempt_json(a, redactor)).collect();
            json!({"step_id": step, "attempts": list})
        })
        .collect();
    json!({
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "workflow_version": run.workflow_version,
        "definition_hash": run.definition_hash,
        "state": run.state,
        "summary": redactor.redact(&run.summary).0,
        "terminal_reason": run.terminal_reason.as_deref().map(|r| redactor.redact(r).0),
        "inputs": shown_inputs(run, redactor),
        "input_count": run.inputs.len(),
        "input_keys": run.input_keys(),
        "current_step_id": run.current_step_id,
        "current_attempt": run.current_attempt,
        "total_iterations": run.total_iterations,
        "job": {
            "job_id": run.job_id,
            "trace_id": run.trace_id,
            "job_kind": run.contract.job_kind,
            "profile_id": run.contract.profile_id,
            "protocol_id": run.contract.protocol_id,
        },
        "workdir": run.workdir,
        "parent_run_id": run.parent_run_id,
        "owner": run.owner,
        "lease": {
            "epoch": run.lease_epoch,
            "expires_at": ts(run.lease_expires_at),
            "ready_at": ts(run.ready_at),
        },
        "recoveries": run.recoveries,
        "created_at": run.created_at.to_rfc3339(),
        "started_at": ts(run.started_at),
        "updated_at": run.updated_at.to_rfc3339(),
        "heartbeat_at": ts(run.heartbeat_at),
        "finished_at": ts(run.finished_at),
        "steps": steps,
    })
}

/// A run as a line of a list (`steward list --json`, `GET /api/v1/runs`).
pub fn run_summary_json(run: &Run, redactor: &Redactor) -> Value {
    json!({
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "state": run.state,
        "summary": redactor.redact(&run.summary).0,
        "created_at": run.created_at.to_rfc3339(),
        "updated_at": run.updated_at.to_rfc3339(),
    })
}

/// A finished run with each step's last output (`steward run --json`).
pub fn finished_json(run: &Run, attempts: &[Attempt], redactor: &Redactor) -> Value {
    let mut v = run_json(run, attempts, redactor);
    let outputs: serde_json::Map<String, Value> = by_step(attempts)
        .into_iter()
        .filter_map(|(step, list)| {
            list.last().and_then(|a| a.output.as_ref()).map(|o| (step.to_owned(), redactor.redact_json(o)))
        })
        .collect();
    v["outputs"] = Value::Object(outputs);
    v
}

/// An event as the recorder keeps it (`steward events --json`, `GET /api/v1/runs/{id}/events`).
pub fn event_json(event: &Event, redactor: &Redactor) -> Value {
    redactor.redact_json(&event.to_json())
}

/// A located validation problem (`steward validate --json`, a 422 for a broken definition).
pub fn diagnostic_json(d: &steward_core::workflow::Diagnostic) -> Value {
    json!({"severity": d.severity.as_str(), "line": d.line, "step": d.step, "field": d.field, "message": d.message})
}

/// A micro-task job of a run, as its state in the artifact store has it now.
#[derive(Debug)]
pub struct JobView {
    /// The step that runs it.
    pub step_id: String,
    /// Its id (the scope of its documents in the artifact store).
    pub job_id: String,
    /// Where its state is, for people (a directory on the embedded default).
    pub state: String,
    /// Its progress artifact, once one was written.
    pub progress: Option<ProgressArtifact>,
}

impl JobView {
    /// Its figures, from its progress.
    pub fn metrics(&self) -> Option<MicroTaskMetrics> {
        self.progress.as_ref().map(metrics)
    }
}

/// The micro-task jobs of a run's attempts (the latest of each job), with their progress read
/// from the artifact store: live while the job runs.
pub async fn micro_task_jobs(attempts: &[Attempt], artifacts: &dyn ArtifactStore) -> Vec<JobView> {
    let mut out: Vec<JobView> = Vec::new();
    for a in attempts.iter().filter(|a| a.input["type"] == "micro_tasks") {
        let Some(job_id) = a.input["job_id"].as_str() else { continue };
        if out.iter().any(|j| j.job_id == job_id) {
            continue;
        }
        // A progress artifact that cannot be read yet (none written, or a store that cannot be
        // reached) shows as no progress: this is a view, never a reason to fail a request.
        let progress = artifacts
            .read_document(job_id, "progress_artifact.json")
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<ProgressArtifact>(&b).ok());
        let state = artifacts.location(job_id);
        out.push(JobView { step_id: a.step_id.clone(), job_id: job_id.to_owned(), state, progress });
    }
    out
}

/// The `micro_task_jobs` of a run's JSON.
pub fn micro_task_jobs_json(jobs: &[JobView]) -> Value {
    jobs.iter()
        .map(|j| {
            json!({
                "step_id": j.step_id,
                "job_id": j.job_id,
                "state_dir": j.state,
                "status": j.progress.as_ref().map(|p| p.status),
                "pause": j.progress.as_ref().and_then(|p| p.current_state.pause.clone()),
                "metrics": j.metrics(),
                "limits": j.progress.as_ref().map(job_limits),
                "caps_reached": j.progress.as_ref().map(|p| p.caps_reached.clone()).unwrap_or_default(),
            })
        })
        .collect()
}

/// What a micro-task job has spent against the limits in force (§2.6.6.8.17), for `status`.
pub fn job_limits(p: &ProgressArtifact) -> Value {
    let cs = &p.current_state;
    json!({
        "iterations": {"used": cs.total_iterations, "limit": cs.iteration_allowance},
        "tokens": {"used": caps::job_tokens(p), "limit": caps::job_token_limit(&p.policy, cs)},
        "executing_ms": {"used": cs.elapsed_ms, "limit": cs.duration_allowance_ms},
        "poisoned_past_ms": p.policy.max_duration_ms.saturating_mul(caps::POISON_DURATION_FACTOR),
    })
}

/// A run as `steward status --json` and `GET /api/v1/runs/{id}` show it: [`run_json`] with its
/// micro-task jobs and, for a run of a DireClaw orchestrator file, which file and workflow it
/// came from (`origin`, else null).
pub async fn run_with_jobs_json<S: Store>(
    store: &S,
    run: &Run,
    attempts: &[Attempt],
    redactor: &Redactor,
    artifacts: &dyn ArtifactStore,
) -> Value {
    let mut v = run_json(run, attempts, redactor);
    v["micro_task_jobs"] = micro_task_jobs_json(&micro_task_jobs(attempts, artifacts).await);
    v["origin"] = json!(origin_of(store, run).await);
    v
}

/// Which orchestrator file and workflow a run came from (`FILE: orchestrator O, workflow W`);
/// `None` for a run of a Steward workflow file.
pub async fn origin_of<S: Store>(store: &S, run: &Run) -> Option<String> {
    let source = store.get_definition(&run.definition_hash).await.ok()?;
    steward_core::workflow::parse(&source).ok().and_then(|wf| wf.origin)
}
