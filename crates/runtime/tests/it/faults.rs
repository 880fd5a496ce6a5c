//! Issue 10 point 6: the engine over a store that fails on purpose (before a write lands, after
//! it committed, or for a whole outage), over many seeds, on both backends: no run is lost,
//! none is left `running` without a driver, no step's effect happens twice, and every event
//! log stays gapless with nothing recorded twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use steward_core::ids::SeqIds;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::{Engine, EngineConfig, RetryPolicy, SystemClock};
use steward_store::mem::MemStore;
use steward_store::{RunFilter, Store};
use steward_store_testkit::fault::{FaultPlan, FaultStats, FaultStore};

use crate::support::*;

/// A DAG whose steps append `run step attempt` to the effect log; `flaky` fails its first
/// attempt and is retried after a backoff.
const WF: &str = r#"id: faults
version: 1
limits: {max_concurrent_steps: 3}
steps:
  - id: a
    type: shell
    run: printf '%s %s %s\n' "{{workflow.run_id}}" "{{workflow.step_id}}" "{{workflow.attempt}}" >> effects.log
  - id: b
    type: shell
    needs: [a]
    run: printf '%s %s %s\n' "{{workflow.run_id}}" "{{workflow.step_id}}" "{{workflow.attempt}}" >> effects.log
  - id: flaky
    type: shell
    needs: [a]
    retry: {max_attempts: 3, backoff: {initial_seconds: 0.05}}
    run: |
      if [ ! -e "flaky-{{workflow.run_id}}" ]; then touch "flaky-{{workflow.run_id}}"; exit 1; fi
      printf '%s %s %s\n' "{{workflow.run_id}}" "{{workflow.step_id}}" "{{workflow.attempt}}" >> effects.log
  - id: gate
    type: noop
    needs: [a]
  - id: d
    type: shell
    needs: [b, flaky, gate]
    run: printf '%s %s %s\n' "{{workflow.run_id}}" "{{workflow.step_id}}" "{{workflow.attempt}}" >> effects.log
"#;

const RUNS: usize = 3;

fn engine_over<S: Store + Clone>(store: S) -> Engine<S> {
    let mut config = EngineConfig::new("faulty-engine".into());
    config.watch_interval = Duration::from_millis(50);
    config.store_retry = RetryPolicy {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(10),
        patience: Duration::from_secs(30),
    };
    Engine::new(store, Arc::new(bus()), Arc::new(SystemClock), Arc::new(SeqIds::new("f")), config)
}

/// Runs `RUNS` runs of the workflow at once through faults, then checks what the store holds.
async fn survive<S: Store + Clone>(store: FaultStore<S>, dir: &std::path::Path, seed: u64) -> FaultStats {
    let eng = engine_over(store.clone());
    eng.boot().await.unwrap_or_else(|e| panic!("seed {seed}: boot: {e}"));
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        let run = eng
            .create_run(create(WF, dir, serde_json::json!({})))
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: create: {e}"));
        ids.push(run.run_id);
    }
    let driven = futures_join(ids.iter().map(|id| {
        let eng = eng.clone();
        let id = id.clone();
        async move { eng.start(&id).await }
    }))
    .await;
    let stats = store.stats();
    store.heal();
    let inner = store.inner();
    for (id, done) in ids.iter().zip(driven) {
        let done = done.unwrap_or_else(|e| panic!("seed {seed}: run {id} was not driven to its end: {e}"));
        assert_eq!(done.state, RunState::Completed, "seed {seed}: {done:?}");
    }
    let running =
        inner.list_runs(RunFilter { state: Some(RunState::Running), limit: None, ..Default::default() }).await.unwrap();
    assert!(running.is_empty(), "seed {seed}: left running without a driver: {running:?}");

    let log = std::fs::read_to_string(dir.join("effects.log")).unwrap();
    let mut effects: BTreeMap<(String, String, u32), u32> = BTreeMap::new();
    for line in log.lines() {
        let p: Vec<&str> = line.split(' ').collect();
        *effects.entry((p[0].to_owned(), p[1].to_owned(), p[2].parse().unwrap())).or_default() += 1;
    }
    for id in &ids {
        let attempts = inner.list_attempts(id).await.unwrap();
        let events = inner.list_events(id, 0).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>(), "seed {seed}: {id}: a gap");
        let count = |t: &str| events.iter().filter(|e| e.event_type == t).count();
        assert_eq!(count("step_attempt_started"), attempts.len(), "seed {seed}: {id}: a start recorded twice");
        assert_eq!(count("step_attempt_finished"), attempts.len(), "seed {seed}: {id}: an end recorded twice");
        let shell = attempts.iter().filter(|a| a.step_id != "gate").count();
        assert_eq!(count("attempt_process_started"), shell, "seed {seed}: {id}: a process recorded twice");
        assert_eq!(count("run_state_changed"), 2, "seed {seed}: {id}: queued -> running -> completed");
        for step in ["a", "b", "flaky", "gate", "d"] {
            let done: Vec<_> =
                attempts.iter().filter(|a| a.step_id == step && a.status == AttemptStatus::Completed).collect();
            assert_eq!(done.len(), 1, "seed {seed}: {id}: step {step} completed {} times", done.len());
            if step != "gate" {
                assert_eq!(effects.get(&(id.clone(), step.into(), done[0].attempt)), Some(&1), "seed {seed}: {step}");
            }
        }
        assert!(
            effects.iter().filter(|((r, ..), _)| r == id).all(|(_, n)| *n == 1),
            "seed {seed}: {id}: an attempt's effect happened twice"
        );
    }
    stats
}

/// Awaits futures concurrently (the engine drives each run on this runtime's workers).
async fn futures_join<F: Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn plan() -> FaultPlan {
    FaultPlan { fail_before: 0.08, fail_after: 0.08, outage: 0.02, outage_calls: 15 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_loses_nothing_over_a_failing_reference_store() {
    let mut total = FaultStats::default();
    for seed in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let store = FaultStore::new(MemStore::new(Arc::new(SeqIds::new("ev"))), seed, plan());
        let s = survive(store, dir.path(), seed).await;
        total.failed_before += s.failed_before;
        total.failed_after += s.failed_after;
        total.outages += s.outages;
    }
    eprintln!("memstore, 30 seeds: {total:?}");
    assert!(total.failed_after > 0 && total.outages > 0 && total.failed_before > 0, "{total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_loses_nothing_over_a_failing_sqlite_store() {
    let mut total = FaultStats::default();
    for seed in 100..110 {
        let dir = tempfile::tempdir().unwrap();
        let store = FaultStore::new(sqlite(dir.path()), seed, plan());
        let s = survive(store, dir.path(), seed).await;
        total.failed_after += s.failed_after;
    }
    eprintln!("sqlite, 10 seeds: {total:?}");
    assert!(total.failed_after > 0, "{total:?}");
}
