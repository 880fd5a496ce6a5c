//! The differential driver: seeded random operation sequences applied to a backend and to the
//! in-memory reference store must give the same answers and the same histories.
//!
//! A backend's test makes a fresh store per seed, both stores reading their leases from one
//! clock the driver moves ([`clock`]), and calls [`same_history`]; the seeds come from
//! [`seeds`], so every backend replays the same sequences.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde_json::json;

use steward_core::Timestamp;
use steward_core::event::{Actor, Event};
use steward_core::liveness::ProcessRef;
use steward_core::state::{AttemptStatus, RunState, TransitionCause};
use steward_store::{
    AttemptFinish, AttemptProcess, AttemptStart, Claim, Commit, DbClock, Expect, Lease, Owner, Release, RunFilter,
    Scan, Store, Transition,
};

use crate::new_run;

const RUNS: [&str; 3] = ["r0", "r1", "r2"];
const STEPS: [&str; 3] = ["a", "b", "c"];
const OWNERS: [&str; 2] = ["w1", "w2"];

fn pick_run(rng: &mut StdRng) -> &'static str {
    RUNS[rng.random_range(0..RUNS.len())]
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn process(rng: &mut StdRng) -> ProcessRef {
    let pid = rng.random_range(1..5);
    ProcessRef { host: "h".into(), boot_id: "b".into(), pid_ns: "ns".into(), pid, start_ticks: pid as u64 * 10 }
}

/// A random commit; most expect what the store holds, so that most of them apply.
fn random_commit(
    rng: &mut StdRng,
    run: &str,
    held: Option<(RunState, u64)>,
    running: &[(String, u32)],
    now: Timestamp,
) -> Commit {
    let (state, epoch) = match held {
        Some((state, epoch)) if rng.random_bool(0.8) => (state, Some(epoch).filter(|_| rng.random_bool(0.5))),
        _ => (*pick(rng, &RunState::ALL), rng.random_bool(0.3).then(|| rng.random_range(0..4))),
    };
    let mut c = Commit::new(run, Expect { state, epoch }, now, Actor::System, "diff");
    if rng.random_bool(0.3) {
        // A small pool of ids, so that some commits repeat one already applied.
        c.id = Some(format!("c{}", rng.random_range(0..4)));
    }
    if rng.random_bool(0.2) {
        let (step_id, attempt) = match running.first() {
            Some(r) if rng.random_bool(0.8) => r.clone(),
            _ => (pick(rng, &STEPS).to_string(), rng.random_range(1..3)),
        };
        c.processes.push(AttemptProcess { step_id, attempt, process: process(rng) });
    }
    if rng.random_bool(0.25) {
        let cause = *pick(rng, &[TransitionCause::Engine, TransitionCause::Operator, TransitionCause::Recovery]);
        c.transition =
            Some(Transition { to: *pick(rng, &RunState::ALL), cause, reason: format!("r{}", rng.random_range(0..9)) });
    }
    for _ in 0..rng.random_range(0..3) {
        c.started.push(AttemptStart {
            step_id: pick(rng, &STEPS).to_string(),
            attempt: rng.random_range(1..3),
            visit: 1,
            input: json!({"n": 1}),
        });
    }
    for _ in 0..rng.random_range(0..2) {
        let status = *pick(rng, &AttemptStatus::ALL);
        let (step_id, attempt) = match running.first() {
            Some(r) if rng.random_bool(0.8) => r.clone(),
            _ => (pick(rng, &STEPS).to_string(), rng.random_range(1..3)),
        };
        c.finished.push(AttemptFinish {
            step_id,
            attempt,
            status,
            output: Some(json!({"ok": true})),
            error: None,
            retryable: rng.random_bool(0.5),
            with_issues: rng.random_bool(0.2),
            routes: vec!["b".into()],
        });
    }
    if rng.random_bool(0.1) {
        c.finish_running_as = Some(*pick(rng, &[AttemptStatus::Cancelled, AttemptStatus::Interrupted]));
    }
    if rng.random_bool(0.5) {
        c.summary = Some(format!("s{}", rng.random_range(0..9)));
    }
    if rng.random_bool(0.1) {
        c.release = Some(Release { after_ms: *pick(rng, &[0, 5_000]), reason: "diff".into() });
    }
    c
}

/// A lease length: none, short, or longer than the test.
fn lease_ms(rng: &mut StdRng) -> u64 {
    *pick(rng, &[0, 10_000, 3_600_000])
}

fn random_claim(rng: &mut StdRng, now: Timestamp) -> Claim {
    let id = pick(rng, &OWNERS).to_string();
    Claim {
        owner: Owner { id, process: rng.random_bool(0.5).then(|| process(rng)) },
        lease_ms: lease_ms(rng),
        limit: rng.random_range(1..4),
        run_id: rng.random_bool(0.3).then(|| pick_run(rng).to_owned()),
        workdirs: Vec::new(),
        resume_stalled: rng.random_bool(0.3),
        spare_owners: OWNERS.iter().filter(|_| rng.random_bool(0.2)).map(|o| o.to_string()).collect(),
        now,
    }
}

/// Events without the fields that depend on how a backend draws ids.
fn comparable(events: Vec<Event>) -> Vec<Event> {
    events.into_iter().map(|e| Event { id: 0, event_id: String::new(), ..e }).collect()
}

/// `n` seeds, the same for every backend.
pub fn seeds(n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(0x5745_5741_5244);
    (0..n).map(|_| rng.next_u64()).collect()
}

/// A database clock the driver moves, for both stores: the time, and the clock reading it.
pub fn clock() -> (Arc<AtomicI64>, Arc<DbClock>) {
    let db_time = Arc::new(AtomicI64::new(0));
    let reading = db_time.clone();
    (db_time, Arc::new(move || Timestamp(reading.load(Ordering::SeqCst))))
}

/// Applies 300 seeded random operations to `subject` and to `reference` (both fresh and empty,
/// both measuring leases on the clock `db_time` sets, see [`clock`]) and asserts that every
/// answer and, at the end, every run, attempt and event agree.
pub async fn same_history<A: Store, B: Store>(seed: u64, subject: &A, reference: &B, db_time: &AtomicI64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now = Timestamp(1_700_000_000_000);
    let mut applied = 0;
    for step in 0..300 {
        now = now.plus_millis(rng.random_range(0..20_000));
        // The database's clock is near the callers', never the same.
        db_time.store(now.plus_millis(rng.random_range(-3_000..3_000)).millis(), Ordering::SeqCst);
        let what = rng.random_range(0..11);
        let same = match what {
            0 | 1 => {
                let run = steward_store::NewRun { now, ..new_run(pick_run(&mut rng)) };
                subject.create_run(run.clone()).await == reference.create_run(run).await
            }
            2 => {
                let mut leases = Vec::new();
                for run in RUNS {
                    let epoch = reference.get_run(run).await.map_or(1, |r| r.lease_epoch);
                    leases.push(Lease { run_id: run.to_owned(), epoch: epoch.saturating_sub(rng.random_range(0..2)) });
                }
                let ms = lease_ms(&mut rng);
                subject.renew(&leases, ms, now).await == reference.renew(&leases, ms, now).await
            }
            10 => {
                let claim = random_claim(&mut rng, now);
                let (a, b) = (subject.claim(claim.clone()).await, reference.claim(claim.clone()).await);
                applied += a.as_ref().map_or(0, Vec::len);
                assert_eq!(a, b, "seed {seed} op {step}: {claim:?}");
                true
            }
            3 => {
                let dead_owners = OWNERS.iter().filter(|_| rng.random_bool(0.3)).map(|o| o.to_string()).collect();
                let killed_owners = OWNERS.iter().filter(|_| rng.random_bool(0.2)).map(|o| o.to_string()).collect();
                let hand_over = rng.random_bool(0.3);
                let spare_owners = OWNERS.iter().filter(|_| rng.random_bool(0.2)).map(|o| o.to_string()).collect();
                let threshold_secs = rng.random_range(0..40);
                let scan = Scan { threshold_secs, dead_owners, killed_owners, spare_owners, hand_over };
                subject.recover_stalled(now, &scan).await == reference.recover_stalled(now, &scan).await
            }
            _ => {
                let run = pick_run(&mut rng);
                let held = reference.get_run(run).await.ok().map(|r| (r.state, r.lease_epoch));
                let running: Vec<(String, u32)> = reference
                    .list_attempts(run)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|a| a.status == AttemptStatus::Running)
                    .map(|a| (a.step_id, a.attempt))
                    .collect();
                let c = random_commit(&mut rng, run, held, &running, now);
                let (a, b) = (subject.commit(c.clone()).await, reference.commit(c.clone()).await);
                applied += usize::from(a.is_ok());
                assert_eq!(a, b, "seed {seed} op {step}: {c:?}");
                true
            }
        };
        assert!(same, "seed {seed} op {step} ({what}) answered differently");
    }
    assert!(applied > 20, "seed {seed}: only {applied} commits applied; the test is not exercising writes");
    assert_eq!(
        subject.list_runs(RunFilter::default()).await.unwrap(),
        reference.list_runs(RunFilter::default()).await.unwrap(),
        "seed {seed}"
    );
    for run in RUNS {
        assert_eq!(
            subject.list_attempts(run).await.unwrap(),
            reference.list_attempts(run).await.unwrap(),
            "seed {seed} run {run}"
        );
        let (a, b) = (subject.list_events(run, 0).await.unwrap(), reference.list_events(run, 0).await.unwrap());
        assert_eq!(comparable(a), comparable(b), "seed {seed} run {run}");
    }
    // Store-wide, events are in the order their writes applied.
    let order = |events: Vec<Event>| events.into_iter().map(|e| (e.workflow_run_id, e.seq)).collect::<Vec<_>>();
    assert_eq!(
        order(subject.list_events_since(0, u32::MAX).await.unwrap()),
        order(reference.list_events_since(0, u32::MAX).await.unwrap()),
        "seed {seed}: store-wide order"
    );
}
