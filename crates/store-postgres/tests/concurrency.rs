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
use steward_core::state::AttemptStatus;
use steward_store::{AttemptFinish, AttemptStart, Claim, Commit, Error, Expect, NewRun, Release, Store};
use steward_store_postgres::{PgOptions, PgStore, Wake};
use steward_store_testkit::{claim_by, new_run, running_run};
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
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    assert_eq!(versions, (1..=files as i32).collect::<Vec<_>>(), "each migration applied once, in order");
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
async fn claimers_in_two_processes_never_take_the_same_run() {
    let Some(cluster) = PgCluster::shared() else { return };
    let url = cluster.create_database();
    let (a, b) = (store(&url, PgOptions::default()).await, store(&url, PgOptions::default()).await);
    for i in 0..40 {
        a.create_run(NewRun { now: T0, ..new_run(&format!("r{i:02}")) }).await.unwrap();
    }
    // Both claim in small bites at once until nothing is left; SKIP LOCKED lets each pass over
    // what the other holds locked instead of waiting for it.
    let take = |s: PgStore, owner: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim(Claim { limit: 3, ..claim_by(owner, None, 3_600_000, T0) }).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| (c.run.run_id, c.run.lease_epoch)));
            }
        })
    };
    let (ta, tb) = (take(a.clone(), "a"), take(b.clone(), "b"));
    let (ga, gb) = (ta.await.unwrap(), tb.await.unwrap());
    let mut all: Vec<&str> = ga.iter().chain(&gb).map(|(id, _)| id.as_str()).collect();
    all.sort();
    let expected: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    assert_eq!(all, expected, "each run claimed exactly once");
    assert!(ga.iter().chain(&gb).all(|(_, epoch)| *epoch == 1));
    // The loser of a race for one run's write is fenced by its epoch.
    let (run_id, epoch) = ga.first().or(gb.first()).cloned().unwrap();
    let theirs = a.claim(Claim { run_id: Some(run_id.clone()), ..claim_by("c", None, 3_600_000, T0) }).await.unwrap();
    assert!(theirs.is_empty(), "a held lease is not claimable");
    let mut late = Commit::new(&run_id, Expect::held(epoch + 1), T0, Actor::System, "x");
    late.summary = Some("late".into());
    assert!(matches!(b.commit(late).await, Err(Error::Conflict { .. })));
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
                let epoch = running_run(&s, &run_id, "me", T0).await;
                for n in 0..15u32 {
                    let mut c = Commit::new(&run_id, Expect::held(epoch), T0, Actor::System, "me");
                    if n > 0 {
                        c.finished = vec![AttemptFinish {
                            step_id: format!("s{}", n - 1),
                            attempt: 1,
                            status: AttemptStatus::Completed,
                            output: None,
                            error: None,
                            retryable: false,
                            with_issues: false,
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
    assert_eq!(all.len(), 12 * (3 + 15 + 14));
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

    // Writes that make nothing claimable notify nobody: a claim, the holder's own progress.
    let epoch = other.claim(claim_by("w", Some("r1"), 3_600_000, T0)).await.unwrap()[0].run.lease_epoch;
    let mut c = Commit::new("r1", Expect::held(epoch), T0, Actor::System, "w");
    c.summary = Some("busy".into());
    other.commit(c).await.unwrap();
    assert_eq!(heard.wait_for_work(short).await, Wake::TimedOut);
    // A release makes the run claimable again.
    let mut c = Commit::new("r1", Expect::held(epoch), T0, Actor::System, "w");
    c.release = Some(Release { after_ms: 0, reason: "shutting down".into() });
    other.commit(c).await.unwrap();
    assert_eq!(heard.wait_for_work(Duration::from_secs(10)).await, Wake::Notified, "a release");

    // Poll-only still wakes on its own process's writes, and still notifies listeners.
    polling.create_run(new_run("r4")).await.unwrap();
    assert_eq!(polled.wait_for_work(Duration::from_secs(10)).await, Wake::Notified);
    assert_eq!(heard.wait_for_work(Duration::from_secs(10)).await, Wake::Notified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_leaves_its_neighbours_alone() {
    let Some(cluster) = PgCluster::shared() else { return };
    let url = cluster.create_database();
    let s = store(&url, PgOptions::default()).await;
    let mut epochs = Vec::new();
    for i in 0..16 {
        epochs.push(running_run(&s, &format!("r{i}"), "me", T0).await);
    }
    // Commits to distinct runs at once, so that they share transactions; PostgreSQL refuses
    // one of them (text cannot hold a NUL), which the store's own checks let through.
    let writes: Vec<_> = epochs
        .iter()
        .enumerate()
        .map(|(i, epoch)| {
            let s = s.clone();
            let mut c = Commit::new(&format!("r{i}"), Expect::held(*epoch), T0, Actor::System, "me");
            c.summary = Some(if i == 7 { "bad\0summary".into() } else { "ok".into() });
            c.started = vec![AttemptStart { step_id: "a".into(), attempt: 1, visit: 1, input: json!({}) }];
            tokio::spawn(async move { s.commit(c).await })
        })
        .collect();
    for (i, w) in writes.into_iter().enumerate() {
        let result = w.await.unwrap();
        let run = s.get_run(&format!("r{i}")).await.unwrap();
        if i == 7 {
            assert!(matches!(&result, Err(Error::Invalid(m)) if m.contains("0x00")), "{result:?}");
            assert_eq!((run.summary.as_str(), run.last_event_seq), ("started by me", 3), "nothing of it landed");
            assert!(s.list_attempts("r7").await.unwrap().is_empty());
        } else {
            assert_eq!(result.unwrap().last_event_seq, 4);
            assert_eq!(run.summary, "ok");
        }
    }
}
