//! HSK-WF-002/003: interrupted runs are found and stalled before new work is accepted, then resumed.

use serde_json::json;
use steward_core::event::Actor;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::Error;
use steward_store::{AttemptStart, Claim, Commit, Expect, Owner, Store};

use crate::support::*;

const TWO_STEPS: &str = r#"id: two
version: 1
inputs:
  name: {type: string, required: true}
steps:
  - id: greet
    type: shell
    run: echo "hello {{inputs.name}}" >> effects.log; echo "hello {{inputs.name}}"
  - id: shout
    type: shell
    run: echo "{{steps.greet.outputs.stdout}}" | tr a-z A-Z
"#;

/// A lease that has run out by the time anyone looks: a killed process's.
const EXPIRED: u64 = 0;

/// Leaves a run as a killed process would: `running`, held by a process that no longer renews
/// its lease of `lease_ms`, its first attempt recorded as started.
async fn seed_crashed_run(store: &steward_store_sqlite::SqliteStore, dir: &std::path::Path, lease_ms: u64) -> String {
    let dead = engine(store.clone(), SimClock::new(T0), "dead");
    dead.boot().await.unwrap();
    let run = dead.create_run(create(TWO_STEPS, dir, json!({"name": "ada"}))).await.unwrap();
    let claim = Claim {
        owner: Owner::from("dead"),
        lease_ms,
        limit: 1,
        run_id: Some(run.run_id.clone()),
        workdirs: Vec::new(),
        resume_stalled: false,
        spare_owners: Vec::new(),
        now: T0,
    };
    let epoch = store.claim(claim).await.unwrap()[0].run.lease_epoch;
    let mut c = Commit::new(&run.run_id, Expect::held(epoch), T0, Actor::System, "dead");
    c.started = vec![AttemptStart { step_id: "greet".into(), attempt: 1, visit: 1, input: json!({}) }];
    store.commit(c).await.unwrap();
    run.run_id
}

/// HSK-WF-003 (b): no work is accepted until the recovery scan has committed.
#[tokio::test]
async fn acceptance_waits_for_the_recovery_scan() {
    let dir = tempfile::tempdir().unwrap();
    let sq = sqlite(dir.path());
    let crashed = seed_crashed_run(&sq, dir.path(), EXPIRED).await;

    let gated = GatedStore::new(sq.clone());
    let log = gated.log.clone();
    let clock = SimClock::new(T0);
    clock.advance_secs(60);
    let eng = engine(gated.clone(), clock, "me");

    let boot = tokio::spawn({
        let eng = eng.clone();
        async move { eng.boot().await }
    });
    let accept = tokio::spawn({
        let eng = eng.clone();
        let req = create(TWO_STEPS, dir.path(), json!({"name": "bo"}));
        async move { eng.create_run(req).await }
    });
    // The scan has begun (and waits for the test); on this single-threaded runtime the
    // spawned tasks run only when we yield: without the gate, `create_run` would reach the
    // store here.
    gated.reached.notified().await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!accept.is_finished());
    assert_eq!(*log.lock().unwrap(), ["recover_stalled"]);
    gated.release.notify_one();
    let recovered = boot.await.unwrap().unwrap();
    let new_run = accept.await.unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), ["recover_stalled", "create_run"]);
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].run_id, crashed);

    // The recovery event was committed before the new run's first event.
    let rec =
        sq.list_events(&crashed, 0).await.unwrap().into_iter().find(|e| e.event_type == "workflow_recovery").unwrap();
    let created = &sq.list_events(&new_run.run_id, 0).await.unwrap()[0];
    assert!(rec.id < created.id);
}

/// HSK-WF-003 (a) and design decision 6: a stalled run resumes, its
/// interrupted attempt is recorded and retried, and nothing completed reruns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_run_is_stalled_on_boot_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let sq = sqlite(dir.path());
    let crashed = seed_crashed_run(&sq, dir.path(), EXPIRED).await;

    let clock = SimClock::new(T0);
    clock.advance_secs(60);
    let eng = engine(sq.clone(), clock, "me");
    let recovered = eng.boot().await.unwrap();
    assert_eq!(recovered.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [crashed.as_str()]);
    let run = sq.get_run(&crashed).await.unwrap();
    assert_eq!(run.state, RunState::Stalled);
    let rec: Vec<_> = sq
        .list_events(&crashed, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "workflow_recovery")
        .collect();
    assert_eq!(rec.len(), 1);
    assert_eq!((rec[0].actor, rec[0].payload["threshold_secs"].as_u64()), (Actor::System, Some(30)));

    let done = eng.resume(&crashed, "tester").await.unwrap();
    assert_eq!((done.state, done.summary.as_str()), (RunState::Completed, "workflow completed"));
    let attempts = sq.list_attempts(&crashed).await.unwrap();
    let seen: Vec<(String, u32, AttemptStatus)> =
        attempts.iter().map(|a| (a.step_id.clone(), a.attempt, a.status)).collect();
    assert_eq!(
        seen,
        [
            ("greet".into(), 1, AttemptStatus::Interrupted),
            ("greet".into(), 2, AttemptStatus::Completed),
            ("shout".into(), 1, AttemptStatus::Completed),
        ]
    );
    assert_eq!(attempts[2].output.as_ref().unwrap()["stdout"], "HELLO ADA");
    let events = sq.list_events(&crashed, 0).await.unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1));

    // A finished run cannot be resumed; nothing is written by trying.
    let before = sq.list_events(&crashed, 0).await.unwrap().len();
    assert!(matches!(eng.resume(&crashed, "tester").await, Err(Error::WrongState { .. })));
    assert_eq!(sq.list_events(&crashed, 0).await.unwrap().len(), before);
}

/// A run another live process holds is not taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_fresh_heartbeat_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let sq = sqlite(dir.path());
    let crashed = seed_crashed_run(&sq, dir.path(), 3_600_000).await;
    let clock = SimClock::new(T0);
    clock.advance_secs(10);
    let eng = engine(sq.clone(), clock, "me");
    assert!(eng.boot().await.unwrap().is_empty());
    let err = eng.resume(&crashed, "tester").await.unwrap_err();
    assert!(matches!(&err, Error::RunningElsewhere { owner, .. } if owner == "dead"), "{err}");
    assert_eq!(sq.get_run(&crashed).await.unwrap().state, RunState::Running);
}
