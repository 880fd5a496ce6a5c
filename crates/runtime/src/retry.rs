//! The engine's view of its store: calls that outlast a store's hiccups.
//!
//! An unavailable store (a lock held too long, a full disk, a dropped connection) is retried
//! with backoff for as long as [`RetryPolicy::patience`] allows. A write whose outcome is
//! unknown (it may have committed before the reply was lost) is safe to send again: every
//! commit carries an id the store applies once, and `create_run` is idempotent. Errors a
//! retry cannot change (a conflict, a refused write, corruption) are returned at once.

use std::time::{Duration, Instant};

use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::ids::IdGen;
use steward_core::state::RunState;
use steward_store::{
    Attempt, Claim, Claimed, Commit, CommitOutcome, Error, Lease, NewRun, PruneReport, Recovered, Result,
    RetentionPolicy, Run, RunFilter, Scan, Store,
};

use crate::clock::UuidIds;

/// How long and how often an unavailable store is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait between two tries.
    pub max: Duration,
    /// How long to keep trying one call before giving up with the store's error. Past the
    /// stall threshold another process may recover the run anyway.
    pub patience: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            patience: Duration::from_secs(30),
        }
    }
}

/// A store whose unavailability the engine waits out.
#[derive(Clone)]
pub(crate) struct Retrying<S> {
    pub(crate) store: S,
    pub(crate) policy: RetryPolicy,
}

impl<S: Store> Retrying<S> {
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut wait = self.policy.initial;
        loop {
            match call().await {
                Err(Error::Unavailable { .. }) if started.elapsed() + wait <= self.policy.patience => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.policy.max);
                }
                other => return other,
            }
        }
    }
}

impl<S: Store + Clone> Store for Retrying<S> {
    async fn create_run(&self, run: NewRun) -> Result<Run> {
        self.retry(|| self.store.create_run(run.clone())).await
    }

    async fn commit(&self, mut commit: Commit) -> Result<CommitOutcome> {
        // Internal: the id never leaves the store, so it need not come from the injected ids.
        commit.id.get_or_insert_with(|| UuidIds.next_id());
        self.retry(|| self.store.commit(commit.clone())).await
    }

    /// A claim of one named run is retried, and a repeat that finds the run already held by
    /// the claimer is the claim whose reply was lost. Any other claim is not retried: a repeat
    /// would take other runs, and those its lost reply took are recovered once their leases run
    /// out. Workers simply claim again at their next round.
    async fn claim(&self, claim: Claim) -> Result<Vec<Claimed>> {
        let Some(run_id) = claim.run_id.clone() else {
            return self.store.claim(claim).await;
        };
        let mut tried = false;
        self.retry(|| {
            let (claim, run_id, again) = (claim.clone(), run_id.clone(), tried);
            tried = true;
            async move {
                let got = self.store.claim(claim.clone()).await?;
                if !got.is_empty() || !again {
                    return Ok(got);
                }
                let run = self.store.get_run(&run_id).await?;
                if run.state == steward_core::state::RunState::Running && run.owner.as_ref() == Some(&claim.owner.id) {
                    return Ok(vec![Claimed {
                        run,
                        from: steward_core::state::RunState::Running,
                        recovered_from: None,
                    }]);
                }
                Ok(got)
            }
        })
        .await
    }

    async fn renew(&self, leases: &[Lease], lease_ms: u64, now: Timestamp) -> Result<Vec<String>> {
        self.retry(|| self.store.renew(leases, lease_ms, now)).await
    }

    fn runnable_hint(&self) -> impl Future<Output = ()> + Send {
        self.store.runnable_hint()
    }

    async fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>> {
        self.retry(|| self.store.recover_stalled(now, scan)).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        self.retry(|| self.store.get_run(run_id)).await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        self.retry(|| self.store.list_runs(filter.clone())).await
    }

    async fn list_attempts(&self, run_id: &str) -> Result<Vec<Attempt>> {
        self.retry(|| self.store.list_attempts(run_id)).await
    }

    async fn list_events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        self.retry(|| self.store.list_events(run_id, after_seq)).await
    }

    async fn list_events_since(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.retry(|| self.store.list_events_since(after_id, limit)).await
    }

    async fn count_runs(&self) -> Result<Vec<(RunState, u64)>> {
        self.retry(|| self.store.count_runs()).await
    }

    async fn last_event_id(&self) -> Result<i64> {
        self.retry(|| self.store.last_event_id()).await
    }

    async fn prune(&self, now: Timestamp, policy: &RetentionPolicy, dry_run: bool) -> Result<PruneReport> {
        self.retry(|| self.store.prune(now, policy, dry_run)).await
    }

    async fn get_definition(&self, hash: &str) -> Result<String> {
        self.retry(|| self.store.get_definition(hash)).await
    }
}
