//! `FaultStore`: a wrapper around any backend that fails on purpose, seeded.
//!
//! It injects the failures a durable engine must survive, as Temporal's persistence fault
//! injection does: a call that fails before it reaches the store (nothing happened), a write
//! that commits and then fails ("committed, but the caller saw a timeout"), and an outage in
//! which every call fails for a while. Each is reported as [`Error::Unavailable`], the error a
//! caller may retry. Decisions are drawn from one seeded generator in call order; with
//! concurrent callers that order, and so the exact faults, can differ between runs of a seed.

use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::state::RunState;
use steward_store::{
    Attempt, Commit, CommitOutcome, Error, NewRun, PruneReport, Recovered, Result, RetentionPolicy, Run, RunFilter,
    Scan, Store,
};

/// How often each fault is injected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// Chance that a call fails before reaching the store.
    pub fail_before: f64,
    /// Chance that a write fails after it committed.
    pub fail_after: f64,
    /// Chance that a call starts an outage.
    pub outage: f64,
    /// How many calls an outage fails, at most.
    pub outage_calls: u32,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan { fail_before: 0.05, fail_after: 0.05, outage: 0.01, outage_calls: 20 }
    }
}

/// What was injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Calls made.
    pub calls: u64,
    /// Calls failed before reaching the store.
    pub failed_before: u64,
    /// Writes that committed, then reported failure.
    pub failed_after: u64,
    /// Outages started.
    pub outages: u64,
}

struct Faults {
    rng: StdRng,
    plan: FaultPlan,
    outage_left: u32,
    healed: bool,
    stats: FaultStats,
}

enum Fault {
    None,
    Before,
    After,
}

/// A store that fails on purpose; clones share the generator and the counts.
#[derive(Clone)]
pub struct FaultStore<S> {
    inner: S,
    faults: Arc<Mutex<Faults>>,
}

impl<S: Store> FaultStore<S> {
    /// Wraps `inner`, failing calls as `plan` says, drawn from `seed`.
    pub fn new(inner: S, seed: u64, plan: FaultPlan) -> FaultStore<S> {
        let faults = Faults {
            rng: StdRng::seed_from_u64(seed),
            plan,
            outage_left: 0,
            healed: false,
            stats: FaultStats::default(),
        };
        FaultStore { inner, faults: Arc::new(Mutex::new(faults)) }
    }

    /// The store behind the faults, to check what it holds.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        self.lock().healed = true;
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn draw(&self, write: bool) -> Fault {
        let mut f = self.lock();
        f.stats.calls += 1;
        if f.healed {
            return Fault::None;
        }
        if f.outage_left > 0 {
            f.outage_left -= 1;
            f.stats.failed_before += 1;
            return Fault::Before;
        }
        let plan = f.plan;
        if f.rng.random_bool(plan.outage) {
            f.outage_left = f.rng.random_range(1..=plan.outage_calls.max(1)) - 1;
            f.stats.outages += 1;
            f.stats.failed_before += 1;
            return Fault::Before;
        }
        if f.rng.random_bool(plan.fail_before) {
            f.stats.failed_before += 1;
            return Fault::Before;
        }
        if write && f.rng.random_bool(plan.fail_after) {
            f.stats.failed_after += 1;
            return Fault::After;
        }
        Fault::None
    }

    async fn call<T>(&self, write: bool, op: impl Future<Output = Result<T>>) -> Result<T> {
        match self.draw(write) {
            Fault::None => op.await,
            Fault::Before => Err(Error::Unavailable { detail: "injected fault: the store did not answer".into() }),
            Fault::After => {
                op.await?;
                Err(Error::Unavailable { detail: "injected fault: committed, but the reply was lost".into() })
            }
        }
    }
}

impl<S: Store + Clone> Store for FaultStore<S> {
    async fn create_run(&self, run: NewRun) -> Result<Run> {
        self.call(true, self.inner.create_run(run)).await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        self.call(true, self.inner.commit(commit)).await
    }

    async fn claim(&self, claim: steward_store::Claim) -> Result<Vec<steward_store::Claimed>> {
        self.call(true, self.inner.claim(claim)).await
    }

    async fn renew(&self, leases: &[steward_store::Lease], lease_ms: u64, now: Timestamp) -> Result<Vec<String>> {
        self.call(true, self.inner.renew(leases, lease_ms, now)).await
    }

    fn runnable_hint(&self) -> impl std::future::Future<Output = ()> + Send {
        self.inner.runnable_hint()
    }

    async fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>> {
        self.call(true, self.inner.recover_stalled(now, scan)).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        self.call(false, self.inner.get_run(run_id)).await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        self.call(false, self.inner.list_runs(filter)).await
    }

    async fn list_attempts(&self, run_id: &str) -> Result<Vec<Attempt>> {
        self.call(false, self.inner.list_attempts(run_id)).await
    }

    async fn list_events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        self.call(false, self.inner.list_events(run_id, after_seq)).await
    }

    async fn list_events_since(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.call(false, self.inner.list_events_since(after_id, limit)).await
    }

    async fn count_runs(&self) -> Result<Vec<(RunState, u64)>> {
        self.call(false, self.inner.count_runs()).await
    }

    async fn last_event_id(&self) -> Result<i64> {
        self.call(false, self.inner.last_event_id()).await
    }

    async fn prune(&self, now: Timestamp, policy: &RetentionPolicy, dry_run: bool) -> Result<PruneReport> {
        self.call(true, self.inner.prune(now, policy, dry_run)).await
    }

    async fn get_definition(&self, hash: &str) -> Result<String> {
        self.call(false, self.inner.get_definition(hash)).await
    }
}
