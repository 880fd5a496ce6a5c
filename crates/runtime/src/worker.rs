//! A worker: claims runs from the store and drives them, up to a concurrency, until told to stop.
//!
//! Any number of workers, in one process or on many machines, share one store. Each round the
//! worker claims as many runs as it has free slots (queued runs, runs handed back, runs parked
//! for a retry's backoff once it is due, runs whose holder's lease ran out, and stalled runs
//! under the automatic-resume policy) and drives each
//! in its own task; the engine's renewal loop keeps their leases. It claims nothing while its
//! own renewals fail, so a worker cut off from the store does not take work it cannot keep.
//! Told to stop, it claims nothing more, lets the steps in flight finish within a grace period,
//! then stops what is left and hands every run back for a peer to claim at once.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use steward_store::Store;

use crate::engine::{Engine, Result};

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// At most this many runs driven at once.
    pub concurrency: usize,
    /// Only runs whose workspace is one of these directories or beneath one; empty for any.
    pub workdirs: Vec<String>,
    /// Also continue `stalled` runs (DG-WF-11's "by policy"): those a recovery scan found
    /// abandoned and those a foreground run released on Ctrl-C.
    pub resume_stalled: bool,
    /// How often to look for work when the store gives no hint.
    pub poll: Duration,
    /// How long steps in flight may take to finish once the worker is told to stop.
    pub grace: Duration,
    /// Stop once nothing is left to claim and nothing is being driven.
    pub exit_when_idle: bool,
}

/// What a worker did, when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Runs it claimed.
    pub claimed: u64,
    /// Runs it drove until they no longer needed it (ended, waited for a person, handed back).
    pub driven: u64,
    /// Runs whose driving failed with an error (the store refused, a definition broke).
    pub errors: Vec<String>,
    /// Rounds whose claim or recovery scan failed (the store was unreachable: retried at the
    /// next round), and the last such failure.
    pub outages: u64,
    /// The last failed round's error.
    pub last_outage: Option<String>,
    /// Writes the store refused because the worker no longer held their run.
    pub refused_writes: u64,
}

impl<S: Store + Clone> Engine<S> {
    /// Works until `stop` fires (after [`Engine::boot`], whose recovery scan is the barrier
    /// before any claim, HSK-WF-003), then drains and hands back what it holds.
    pub async fn work(&self, opts: WorkerOptions, stop: CancellationToken) -> Result<WorkerReport> {
        self.accepting().await;
        // An engine may work again after it stopped working (the bench does): not draining yet.
        self.inner.draining.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut report = WorkerReport::default();
        let mut tasks: JoinSet<Result<steward_store::Run>> = JoinSet::new();
        let store = self.inner.store.clone();
        let mut scanned = std::time::Instant::now();
        while !stop.is_cancelled() {
            while let Some(done) = tasks.try_join_next() {
                note(&mut report, done);
            }
            let free = opts.concurrency.saturating_sub(tasks.len());
            let mut took = 0;
            if free > 0 && self.renewals_healthy() {
                if scanned.elapsed() >= self.inner.config.heartbeat_interval {
                    // A peer on this machine that died is found at once, without waiting for
                    // its leases to run out: they are ended, and the claim below recovers them.
                    scanned = std::time::Instant::now();
                    if let Err(e) = self.recover().await {
                        report.outages += 1;
                        report.last_outage = Some(format!("recovery scan: {e}"));
                    }
                }
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match self.claim(None, limit, &opts.workdirs, opts.resume_stalled).await {
                    Ok(claimed) => {
                        took = claimed.len();
                        report.claimed += took as u64;
                        for c in claimed {
                            let engine = self.clone();
                            tasks.spawn(async move { engine.drive_claimed(c).await });
                        }
                    }
                    // The store is unreachable: look again at the next round.
                    Err(e) => {
                        report.outages += 1;
                        report.last_outage = Some(format!("claim: {e}"));
                    }
                }
            }
            if took > 0 && took == free {
                // There may be more waiting; a slot frees only when a run ends.
                tokio::select! {
                    () = stop.cancelled() => {}
                    Some(done) = tasks.join_next() => note(&mut report, done),
                }
                continue;
            }
            if took > 0 {
                continue;
            }
            if opts.exit_when_idle && tasks.is_empty() && self.renewals_healthy() {
                // A run parked until its retry is due is work still to do.
                match self.parked(&opts.workdirs).await {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => {
                        report.outages += 1;
                        report.last_outage = Some(format!("looking for parked runs: {e}"));
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => note(&mut report, done),
                () = store.runnable_hint() => {}
                () = tokio::time::sleep(opts.poll) => {}
            }
        }
        // Stopping: nothing new is claimed or started; what runs may finish within the grace.
        // Set under the lock `register` takes, so a run claimed just before is drained too.
        {
            let active = self.active();
            self.inner.draining.store(true, std::sync::atomic::Ordering::SeqCst);
            for d in active.values() {
                d.halt.drain();
            }
        }
        let deadline = tokio::time::sleep(opts.grace);
        tokio::pin!(deadline);
        let mut interrupted = false;
        while !tasks.is_empty() {
            tokio::select! {
                Some(done) = tasks.join_next() => note(&mut report, done),
                () = &mut deadline, if !interrupted => {
                    interrupted = true;
                    self.interrupt("SIGTERM");
                }
            }
        }
        report.refused_writes = self.refused_writes();
        Ok(report)
    }
}

impl<S: Store + Clone> Engine<S> {
    /// Whether a run this worker serves is parked: `running`, held by nobody, claimable later.
    async fn parked(&self, workdirs: &[String]) -> Result<bool> {
        let filter = steward_store::RunFilter {
            state: Some(steward_core::state::RunState::Running),
            limit: None,
            ..Default::default()
        };
        let runs = self.inner.store.list_runs(filter).await?;
        let cannot_drive = self.inner.cannot_drive.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(runs.iter().any(|r| {
            r.owner.is_none()
                && r.ready_at.is_some()
                && steward_store::rules::serves(workdirs, &r.workdir)
                && !cannot_drive.contains(&r.run_id)
        }))
    }
}

fn note(report: &mut WorkerReport, done: std::result::Result<Result<steward_store::Run>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(_)) => report.driven += 1,
        Ok(Err(e)) => report.errors.push(e.to_string()),
        Err(e) => report.errors.push(format!("a driver task failed: {e}")),
    }
}
