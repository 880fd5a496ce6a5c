//! Several stores on one database, as several worker processes would be: migrations run once,
//! writers of one run are fenced against each other, a reader of the store-wide event feed
//! never skips an event that commits late, and LISTEN/NOTIFY wakes idle waiters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use steward_core::Timestamp;
use steward_core::event::Actor;
use steward_core::ids::SeqIds;
use steward_core::state::{AttemptStatus, RunState, TransitionCause};
use steward_store::{AttemptFinish, AttemptStart, Commit, Error, Expect, NewRun, Store, Transition};
use steward_store_postgres::{PgOptions, PgStore, Wake};
use steward_store_testkit::{new_run, running_run};
use steward_test_support::PgCluster;

const T0: Timestamp = Timestamp(1_700_000_000_000);

async fn store(url: &str, opts: PgOptions) -> PgStore {
    PgStore::connect(url, opts, Arc::new(SeqIds::new("ev"))).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_openers_apply_each_migration_once() {
    let Some(cluster) = PgCluster::shared() else { return };
    let url = cluster.create_database();
    let opening: Vec<_> = (0..4).map(|_| tokio::spawn(store_at(url.clone()))).collect();
    for o in opening {
        o.await.unwrap();
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1]);
    // Events are append-only, whoever tries.
    let s = store(&url, PgOptions::default()).await;
    s.create_run(new_run("r1")).await.unwrap();
    let err = client.execute("UPDATE events SET actor_id = 'x'", &[]).await.unwrap_err();
    assert!(err.as_db_error().is_some_and(|e| e.message().contains("append-only")), "{err}");
}

async fn store_at(url: String) {
    store(&url, PgOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_for_one_run_are_fenced() {
    let Some(cluster) = PgCluster::shared() else { return };
    let url = cluster.create_database();
    let (a, b) = (store(&url, PgOptions::default()).await, store(&url, PgOptions::default()).await);
    for i in 0..20 {
        let run_id = format!("r{i}");
        a.create_run(NewRun { now: T0, ..new_run(&run_id) }).await.unwrap();
        let take = |s: PgStore, owner: &'static str| {
            let run_id = run_id.clone();
            tokio::spawn(async move {
                let mut c =
                    Commit::new(&run_id, Expect { state: RunState::Queued, owner: None }, T0, Actor::System, owner);
                c.transition =
                    Some(Transition { to: RunState::Running, cause: TransitionCause::Engine, reason: "take".into() });
                c.set_owner = Some(owner.into());
                s.commit(c).await
            })
        };
        let (ra, rb) = (take(a.clone(), "a"), take(b.clone(), "b"));
        let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
        assert!(ra.is_ok() != rb.is_ok(), "exactly one wins: {ra:?} {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(matches!(loser, Err(Error::Conflict { .. })), "{loser:?}");
        let run = b.get_run(&run_id).await.unwrap();
        assert_eq!((run.state, run.last_event_seq), (RunState::Running, 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_wide_feed_never_skips_an_event_that_commits_late() {
    let Some(cluster) = PgCluster::shared() else { return };
    let url = cluster.create_database();
    // Three "processes", each with its own writer connection, writing at once.
    let stores = [
        store(&url, PgOptions::default()).await,
        store(&url, PgOptions::default()).await,
        store(&url, PgOptions::default()).await,
    ];
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, done) = (stores[0].clone(), done.clone());
        tokio::spawn(async move {
            // The mirror's loop: everything after the last id seen.
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = s.list_events_since(seen.last().copied().unwrap_or(0), 1000).await.unwrap();
                seen.extend(page.iter().map(|e| e.id));
                if finished && page.is_empty() {
                    return seen;
                }
            }
        })
    };
    let mut writers = Vec::new();
    for (p, s) in stores.iter().enumerate() {
        for w in 0..4 {
            let s = s.clone();
            writers.push(tokio::spawn(async move {
                let run_id = format!("p{p}-w{w}");
                running_run(&s, &run_id, "me", T0).await;
                for n in 0..15u32 {
                    let expect = Expect { state: RunState::Running, owner: None };
                    let mut c = Commit::new(&run_id, expect, T0, Actor::System, "me");
                    if n > 0 {
                        c.finished = vec![AttemptFinish {
                            step_id: format!("s{}", n - 1),
                            attempt: 1,
                            status: AttemptStatus::Completed,
                            output: None,
                            error: None,
                            retryable: false,
                            routes: vec![],
                        }];
                    }
                    c.started = vec![AttemptStart { step_id: format!("s{n}"), attempt: 1, visit: 1, input: json!({}) }];
                    s.commit(c).await.unwrap();
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: Vec<i64> = stores[1].list_events_since(0, u32::MAX).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(all.len(), 12 * (2 + 15 + 14));
    let skipped: Vec<&i64> = all.iter().filter(|id| !seen.contains(id)).collect();
    assert!(skipped.is_empty(), "the feed skipped events {skipped:?}, which committed after a later id");
    assert_eq!(seen, all, "the feed saw every event, in order");
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>(), "ids are handed out without gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_wakes_idle_waiters_and_poll_only_does_not_listen() {
    let Some(cluster) = PgCluster::shared() else { return };
    let url = cluster.create_database();
    let listening = store(&url, PgOptions::default()).await;
    let polling = store(&url, PgOptions { poll_only: true, ..PgOptions::default() }).await;
    let other = store(&url, PgOptions::default()).await;
    let short = Duration::from_millis(300);

    let (mut heard, mut polled) = (listening.work_signal(), polling.work_signal());
    other.create_run(new_run("r1")).await.unwrap();
    assert_eq!(heard.wait_for_work(Duration::from_secs(10)).await, Wake::Notified, "another process's new run");
    assert_eq!(polled.wait_for_work(short).await, Wake::TimedOut, "poll-only hears nothing");
    // Several signals while the waiter was busy wake it once.
    other.create_run(new_run("r2")).await.unwrap();
    other.create_run(new_run("r3")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(heard.wait_for_work(Duration::from_secs(10)).await, Wake::Notified);
    assert_eq!(heard.wait_for_work(short).await, Wake::TimedOut);

    // A write that makes nothing claimable notifies nobody.
    let mut c = Commit::new("r1", Expect { state: RunState::Queued, owner: None }, T0, Actor::System, "w");
    c.transition = Some(Transition { to: RunState::Running, cause: TransitionCause::Engine, reason: "take".into() });
    other.commit(c).await.unwrap();
    assert_eq!(heard.wait_for_work(short).await, Wake::TimedOut);

    // Poll-only still wakes on its own process's writes, and still notifies listeners.
    polling.create_run(new_run("r4")).await.unwrap();
    assert_eq!(polled.wait_for_work(Duration::from_secs(10)).await, Wake::Notified);
    assert_eq!(heard.wait_for_work(Duration::from_secs(10)).await, Wake::Notified);
}
