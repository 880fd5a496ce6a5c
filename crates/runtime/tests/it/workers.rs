//! Workers in one process on a real SQLite file: a run that only waits for a retry's backoff is
//! parked for any worker to claim when it is due, not held in a worker's slot.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use steward_core::ids::SeqIds;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::{Engine, EngineConfig, Handoff, SystemClock, WorkerOptions};
use steward_store::Store;
use tokio_util::sync::CancellationToken;

use crate::support::{bus, create, sqlite};

/// Issue 12 point 1: a worker claims "a retry whose backoff is due". The run is handed back
/// (`run_released`, claimable once the backoff has passed) while it waits, and claimed again
/// when it is due; the worker that exits when idle still waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_a_retry_is_parked_and_claimed_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let mut config = EngineConfig::new("worker-1".into());
    config.handoff = Handoff::Workers;
    config.heartbeat_interval = Duration::from_secs(1);
    config.watch_interval = Duration::from_millis(50);
    let worker = Engine::new(store.clone(), Arc::new(bus()), Arc::new(SystemClock), Arc::new(SeqIds::new("w")), config);
    worker.boot().await.unwrap();
    let src = "id: parked\nversion: 1\nsteps:\n  - id: flaky\n    type: shell\n    retry: {max_attempts: 2, backoff: {initial_seconds: 2}}\n    run: 'test -f marker || { touch marker; exit 1; }'\n";
    let run = worker.create_run(create(src, dir.path(), json!({}))).await.unwrap();

    let opts = WorkerOptions {
        concurrency: 2,
        workdirs: Vec::new(),
        resume_stalled: false,
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(5),
        exit_when_idle: true,
    };
    let report = worker.work(opts, CancellationToken::new()).await.unwrap();
    assert_eq!((report.claimed, report.driven, report.errors.len()), (2, 2, 0), "{report:?}");

    let done = store.get_run(&run.run_id).await.unwrap();
    assert_eq!(done.state, RunState::Completed, "{}", done.summary);
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    let statuses: Vec<AttemptStatus> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [AttemptStatus::Failed, AttemptStatus::Completed]);
    let waited = attempts[1].started_at.since(attempts[0].finished_at.unwrap());
    assert!(waited >= 2_000, "the retry started {waited} ms after the failure, before its backoff");

    let events = store.list_events(&run.run_id, 0).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let at = |t: &str, from: usize| from + types[from..].iter().position(|x| *x == t).unwrap();
    let first_end = at("step_attempt_finished", 0);
    let released = at("run_released", first_end);
    assert!(at("run_claimed", released) < at("step_attempt_started", released), "{types:?}");
    let parked = &events[released].payload;
    assert!(parked["reason"].as_str().unwrap().contains("until a retry is due"), "{parked}");
    assert!(parked["ready_in_ms"].as_u64().unwrap() >= 1_000, "{parked}");
}
