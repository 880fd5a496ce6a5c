//! The server goes away and comes back: calls answer `Unavailable` naming the server (never a
//! panic), the same store works again once it is back, a commit repeated with its id lands once,
//! and every run's log stays gapless, also when the server restarts under load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use steward_core::Timestamp;
use steward_core::event::Actor;
use steward_core::ids::SeqIds;
use steward_core::state::AttemptStatus;
use steward_store::{AttemptFinish, AttemptStart, Commit, CommitOutcome, Error, Expect, Store};
use steward_store_postgres::{PgOptions, PgStore, Wake};
use steward_store_testkit::running_run;
use steward_test_support::{CutProxy, PgCluster};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn ids() -> Arc<SeqIds> {
    Arc::new(SeqIds::new("ev"))
}

/// Commit `n` of a run held under `epoch`: finishes step `n - 1` and starts step `n`, with a
/// stable id.
fn step(run_id: &str, epoch: u64, n: u32) -> Commit {
    let mut c = Commit::new(run_id, Expect::held(epoch), T0.plus_millis(i64::from(n) + 1), Actor::System, "me");
    c.id = Some(format!("{run_id}-{n}"));
    if n > 0 {
        c.finished = vec![AttemptFinish {
            step_id: format!("s{}", n - 1),
            attempt: 1,
            status: AttemptStatus::Completed,
            output: Some(json!({"n": n - 1})),
            error: None,
            retryable: false,
            with_issues: false,
            routes: vec![],
        }];
    }
    c.started = vec![AttemptStart { step_id: format!("s{n}"), attempt: 1, visit: 1, input: json!({"n": n}) }];
    c
}

/// Sends a commit until it lands, as the engine's retry does: only `Unavailable` is retried.
async fn until_it_lands(store: &PgStore, c: &Commit, unavailable: &AtomicUsize) -> CommitOutcome {
    for _ in 0..50 {
        match store.commit(c.clone()).await {
            Ok(outcome) => return outcome,
            Err(Error::Unavailable { .. }) => {
                unavailable.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("commit {:?} failed: {e}", c.id),
        }
    }
    panic!("commit {:?} never landed", c.id)
}

/// A run's log is 1..n, and it holds exactly `started` attempt starts, each once.
async fn assert_intact(store: &PgStore, run_id: &str, started: u32) {
    let events = store.list_events(run_id, 0).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>(), "{run_id}: gapless");
    let starts = events.iter().filter(|e| e.event_type == "step_attempt_started").count();
    assert_eq!(starts, started as usize, "{run_id}: each start once");
    let attempts = store.list_attempts(run_id).await.unwrap();
    assert_eq!(attempts.len(), started as usize, "{run_id}: attempts");
    assert_eq!(store.get_run(run_id).await.unwrap().last_event_seq, events.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_unavailable_and_a_retried_commit_lands_once() {
    let Some(cluster) = PgCluster::start() else { return };
    let opts = PgOptions { reconnect_patience: Duration::from_millis(500), ..PgOptions::default() };
    let store = PgStore::connect(&cluster.url(), opts, ids()).await.expect("connect");
    let epoch = running_run(&store, "r1", "me", T0).await;
    let mut signal = store.work_signal();
    let where_ = format!("127.0.0.1:{}", cluster.port());

    // Down: writes and reads answer Unavailable, naming the server.
    cluster.stop();
    let first = step("r1", epoch, 0);
    let err = store.commit(first.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::Unavailable { detail } if detail.contains(&where_)), "{err}");
    let err = store.get_run("r1").await.unwrap_err();
    assert!(matches!(&err, Error::Unavailable { detail } if detail.contains(&where_)), "{err}");

    // Back: the same store, not reopened, writes again; the repeated commit lands once.
    cluster.start_again();
    let unavailable = AtomicUsize::new(0);
    let outcome = until_it_lands(&store, &first, &unavailable).await;
    assert_eq!(store.commit(first.clone()).await.unwrap(), outcome, "a repeat answers, changes nothing");
    assert_intact(&store, "r1", 1).await;
    // The LISTEN connection came back too, and woke its waiters once (they poll).
    assert_eq!(signal.wait_for_work(Duration::from_secs(10)).await, Wake::Notified);

    // A restart between two writes: the next one lands after the store reconnects (or is
    // Unavailable and lands when repeated), once.
    cluster.restart();
    let second = step("r1", epoch, 1);
    until_it_lands(&store, &second, &unavailable).await;
    until_it_lands(&store, &second, &unavailable).await;
    assert_intact(&store, "r1", 2).await;
    let attempts = store.list_attempts("r1").await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.step_id.as_str(), a.status)).collect::<Vec<_>>(),
        [("s0", AttemptStatus::Completed), ("s1", AttemptStatus::Running)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_load_loses_and_repeats_nothing() {
    let Some(cluster) = PgCluster::start() else { return };
    let cluster = Arc::new(cluster);
    let store = PgStore::connect(&cluster.url(), PgOptions::default(), ids()).await.expect("connect");
    const RUNS: usize = 8;
    const STEPS: u32 = 30;
    let landed = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for r in 0..RUNS {
        let (store, landed, unavailable) = (store.clone(), landed.clone(), unavailable.clone());
        writers.push(tokio::spawn(async move {
            let run_id = format!("r{r}");
            let epoch = running_run(&store, &run_id, "me", T0).await;
            for n in 0..STEPS {
                until_it_lands(&store, &step(&run_id, epoch, n), &unavailable).await;
                landed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Two restarts while the writers are busy.
    for at in [RUNS * STEPS as usize / 4, RUNS * STEPS as usize / 2] {
        while landed.load(Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.restart()).await.unwrap();
    }
    for w in writers {
        w.await.unwrap();
    }
    for r in 0..RUNS {
        assert_intact(&store, &format!("r{r}"), STEPS).await;
    }
    // Store-wide, the log is complete and in order.
    let all = store.list_events_since(0, u32::MAX).await.unwrap();
    // Per run: created, started and claimed, then a start per step and an end for all but the last.
    assert_eq!(all.len(), RUNS * (3 + STEPS as usize * 2 - 1));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_any_moment_lose_and_repeat_nothing() {
    let Some(cluster) = PgCluster::shared() else { return };
    let direct = cluster.create_database();
    let db = direct.rsplit('/').next().unwrap_or_default().to_owned();
    // Every connection of the store goes through a proxy that cuts them all, mid-query,
    // mid-COMMIT or idle, as the writers make progress.
    let proxy = CutProxy::start(format!("127.0.0.1:{}", cluster.port())).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let store = PgStore::connect(&url, PgOptions::default(), ids()).await.expect("connect");
    const RUNS: usize = 8;
    const STEPS: u32 = 40;
    let landed = Arc::new(tokio::sync::watch::Sender::new(0usize));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for r in 0..RUNS {
        let (store, landed, unavailable) = (store.clone(), landed.clone(), unavailable.clone());
        writers.push(tokio::spawn(async move {
            let run_id = format!("r{r}");
            let epoch = loop {
                // Creating and claiming are repeated like any write: both are safe to repeat.
                let created =
                    store.create_run(steward_store::NewRun { now: T0, ..steward_store_testkit::new_run(&run_id) });
                if created.await.is_err() {
                    unavailable.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let claim = steward_store_testkit::claim_by("me", Some(&run_id), 3_600_000, T0);
                match store.claim(claim).await {
                    Ok(got) if !got.is_empty() => break got[0].run.lease_epoch,
                    Ok(_) => break store.get_run(&run_id).await.unwrap().lease_epoch,
                    Err(_) => {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            for n in 0..STEPS {
                until_it_lands(&store, &step(&run_id, epoch, n), &unavailable).await;
                landed.send_modify(|n| *n += 1);
            }
        }));
    }
    // Cut every connection each time the writers have landed a few more commits.
    let mut progress = landed.subscribe();
    let mut next = 5;
    while progress.changed().await.is_ok() && *progress.borrow_and_update() < RUNS * STEPS as usize {
        if *progress.borrow() >= next {
            proxy.cut_all();
            next += 9;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(proxy.cut_count() > 10, "the proxy cut only {} connections", proxy.cut_count());
    for r in 0..RUNS {
        assert_intact(&store, &format!("r{r}"), STEPS).await;
    }
    let all = store.list_events_since(0, u32::MAX).await.unwrap();
    assert_eq!(all.len(), RUNS * (3 + STEPS as usize * 2 - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_given_up_on_and_the_write_lands_once_later() {
    let Some(cluster) = PgCluster::shared() else { return };
    let direct = cluster.create_database();
    let db = direct.rsplit('/').next().unwrap_or_default().to_owned();
    let proxy = CutProxy::start(format!("127.0.0.1:{}", cluster.port())).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let opts = PgOptions {
        request_timeout: Duration::from_secs(1),
        reconnect_patience: Duration::from_secs(1),
        ..PgOptions::default()
    };
    let store = PgStore::connect(&url, opts, ids()).await.expect("connect");
    let epoch = running_run(&store, "r1", "me", T0).await;
    store.get_run("r1").await.unwrap();
    // Nothing comes back on any open connection, and nothing is closed: as a partition that
    // the kernel has not noticed, or a stopped server.
    proxy.stall_all();
    let first = step("r1", epoch, 0);
    let started = std::time::Instant::now();
    let err = store.commit(first.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::Unavailable { detail } if detail.contains("no answer within")), "{err}");
    let err = store.get_run("r1").await.unwrap_err();
    assert!(matches!(&err, Error::Unavailable { detail } if detail.contains("no answer within")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "given up on after {:?}", started.elapsed());
    // New connections get through. The abandoned session may still hold the run's row lock
    // (it never heard that its client left): the server ends it once it has idled in its
    // transaction for twice the request timeout, and the repeated commit then lands, once.
    let unavailable = AtomicUsize::new(0);
    until_it_lands(&store, &first, &unavailable).await;
    assert_intact(&store, "r1", 1).await;
    proxy.cut_all();
}

#[tokio::test]
async fn connecting_to_nothing_or_with_a_bad_url_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://steward:hunter2@127.0.0.1:{port}/steward");
    let err = PgStore::connect(&url, PgOptions::default(), ids()).await.err().expect("nothing listens there");
    let msg = err.to_string();
    assert!(matches!(err, Error::Unavailable { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("steward:***@"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    let err = PgStore::connect("postgres://steward:hunter2@host:port/db", PgOptions::default(), ids()).await.err();
    let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(err, Some(Error::Invalid(_))), "{msg}");
    assert!(msg.contains("steward:***@host:port/db") && !msg.contains("hunter2"), "{msg}");
}
