//! Steward's PostgreSQL store: the same contract as the embedded SQLite store, for workers on
//! several machines.
//!
//! Layout: [`PgStore`] owns a writer task with one connection (`writer`, which batches
//! concurrent writes into one transaction: group commit), a small pool of read connections
//! (`conn`), and a LISTEN connection (`listen`) that wakes idle workers. The SQL of each write
//! lives in `ops`, row mapping in `rows`, and the schema in `migrations/` (applied on connect,
//! versioned in `schema_migrations`, under an advisory lock: `migrate`).
//!
//! Decisions and why:
//! - **Driver.** `tokio-postgres` alone: no TLS, no pool crate, no macros. Statements are
//!   prepared once per connection with their parameter types and sent back to back where they
//!   do not depend on each other, since round trips and planning are what a write costs.
//! - **Behaviour comes from `steward_store::rules`**, as in every backend: the same checks,
//!   the same event payloads, event ids from the injected `IdGen`.
//! - **Event order.** Event ids are handed out in commit order, so that
//!   [`Store::list_events_since`] never passes over an event that commits later with a smaller
//!   id (which a sequence would allow): see `writer`.
//! - **Fencing across processes.** A write locks its run's row (`SELECT ... FOR UPDATE`) before
//!   it checks its expectation, so writers of one run on different machines apply one after
//!   another, each against what the last one committed. Claims lock their candidates with
//!   `FOR UPDATE SKIP LOCKED`: concurrent claimers pass over each other's runs instead of
//!   waiting, and never take the same one.
//! - **Time.** Event times are the caller's, stored as BIGINT milliseconds exactly as SQLite
//!   stores them. Lease arithmetic (claims, renewals, releases, the recovery scan) uses the
//!   server's `clock_timestamp()`, never a caller's clock, so a worker whose clock is off can
//!   neither steal a run nor keep one.
//! - **Outages.** A lost connection is `Unavailable` naming the server, never a panic; the
//!   writer and the readers reconnect on their own (with backoff, for up to
//!   [`PgOptions::reconnect_patience`] per call), so a later call works without reopening.
//! - **Wake-ups.** Every write that makes a run claimable sends `NOTIFY steward_runnable` in
//!   its transaction; [`PgStore::work_signal`] and [`Store::runnable_hint`] turn it into a
//!   wake-up, and [`PgOptions::poll_only`] turns LISTEN off for poolers.

#![warn(missing_docs)]

mod artifacts;
mod conn;
mod listen;
mod migrate;
mod ops;
mod rows;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::types::{ToSql, Type};

use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::ids::IdGen;
use steward_core::state::RunState;
use steward_store::{
    Attempt, Claim, Claimed, Commit, CommitOutcome, DbClock, Error, Lease, NewRun, PruneReport, Recovered, Result,
    RetentionPolicy, Run, RunFilter, Scan, Store,
};

pub use artifacts::PgArtifacts;
use conn::{Readers, Target};
use ops::{Done, Op};
use writer::Writer;

/// How to connect.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections kept for reads; each read holds one for its query. Default 4.
    pub read_connections: usize,
    /// Never LISTEN: waiters only wake on their timeout (or on this process's own writes).
    /// For PgBouncer in transaction mode, where a LISTEN connection would not stay with one
    /// server session; also sends no startup options (which poolers refuse), so abandoned
    /// sessions are not ended early by the server. Default off.
    pub poll_only: bool,
    /// How long one connection attempt may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a call waits for an unreachable server to come back (retrying with backoff)
    /// before it answers [`Error::Unavailable`]. Default 10 s.
    pub reconnect_patience: Duration,
    /// How long the server may take to answer one transaction of writes, or one read, before
    /// the connection is given up as hung (a stopped server, a partition the kernel has not
    /// noticed) and the call answers [`Error::Unavailable`]. Default 30 s.
    pub request_timeout: Duration,
    /// The most writes one transaction takes. Default 64: each write runs in a savepoint,
    /// and a transaction with more than 64 subtransactions overflows the server's per-session
    /// cache of them, which slows every other session's visibility checks while it runs.
    pub max_batch: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            read_connections: 4,
            poll_only: false,
            connect_timeout: Duration::from_secs(5),
            reconnect_patience: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_batch: 64,
        }
    }
}

/// A [`Store`] on a PostgreSQL database. Cheap to clone; clones share their connections.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: Arc<Target>,
    writer: Writer,
    readers: Arc<Readers>,
    /// Bumped whenever a run may have become claimable.
    wake: Arc<watch::Sender<u64>>,
    /// Leases measured on this clock instead of the server's (tests that move time).
    clock: Option<Arc<DbClock>>,
    /// Stops the LISTEN task with the store; `None` in poll-only mode.
    _listener: Option<listen::Listener>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db` or
    /// `host=... dbname=...`) and brings its schema up to date.
    ///
    /// A URL that does not parse is [`Error::Invalid`]; a server that cannot be reached is
    /// [`Error::Unavailable`]. Both name the URL without its password. A database whose schema
    /// is newer than this build knows is [`Error::Corrupt`].
    pub async fn connect(url: &str, opts: PgOptions, ids: Arc<dyn IdGen>) -> Result<PgStore> {
        let target = Arc::new(Target::parse(url, &opts)?);
        let client = target.connect().await?;
        migrate::migrate(&client, &target).await?;
        let wake = Arc::new(watch::Sender::new(0u64));
        let listener = if opts.poll_only { None } else { Some(listen::spawn(target.clone(), wake.clone()).await?) };
        let local_wake = opts.poll_only.then(|| wake.clone());
        let writer = Writer::spawn(client, target.clone(), ids, opts.max_batch, local_wake);
        let readers = Arc::new(Readers::new(opts.read_connections));
        Ok(PgStore { inner: Arc::new(Inner { target, writer, readers, wake, clock: None, _listener: listener }) })
    }

    /// The same store with leases measured on `clock` instead of the server's (for tests that
    /// move time, as the other backends offer). Only before the store is shared.
    pub fn with_clock(self, clock: Arc<DbClock>) -> PgStore {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.clock = Some(clock);
                PgStore { inner: Arc::new(inner) }
            }
            Err(inner) => PgStore { inner },
        }
    }

    /// The database URL, without its password.
    pub fn url(&self) -> &str {
        &self.inner.target.shown
    }

    /// A signal that fires when a run may have become claimable: a `NOTIFY steward_runnable`
    /// from any process (every write that makes a run claimable sends one when it commits), or
    /// the LISTEN connection coming back after it dropped. Take it before looking for work:
    /// a notification that arrives after it was taken is never missed.
    pub fn work_signal(&self) -> WorkSignal {
        WorkSignal { rx: self.inner.wake.subscribe() }
    }

    /// The artifact store in this database (blobs and documents beside the runs), on this
    /// store's connections: what every worker reads and writes, wherever it runs.
    pub fn artifacts(&self) -> PgArtifacts {
        PgArtifacts { target: self.inner.target.clone(), readers: self.inner.readers.clone() }
    }

    /// Waits up to `timeout` for a run to become claimable (see [`PgStore::work_signal`]).
    /// A notification that arrived before the call is not seen; a worker loop should hold a
    /// [`WorkSignal`] instead, and the timeout is its poll interval either way.
    pub async fn wait_for_work(&self, timeout: Duration) -> Wake {
        self.work_signal().wait_for_work(timeout).await
    }

    async fn write(&self, op: Op) -> Result<Done> {
        let db_now = self.inner.clock.as_ref().map(|clock| clock().millis());
        self.inner.writer.submit(op, db_now).await
    }

    async fn read(
        &self,
        what: &str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.inner.readers.query(&self.inner.target, what, sql, params).await
    }

    /// Names this database in errors raised where it was not at hand.
    fn located(&self, e: Error) -> Error {
        match e {
            Error::Corrupt { path, detail } if path.is_empty() => {
                Error::Corrupt { path: self.url().to_owned(), detail }
            }
            other => other,
        }
    }
}

/// Why [`WorkSignal::wait_for_work`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A run may have become claimable (or the listener reconnected): look for work.
    Notified,
    /// Nothing was signalled within the timeout: poll anyway.
    TimedOut,
}

/// A waiter's view of "a run may have become claimable" (see [`PgStore::work_signal`]).
#[derive(Debug, Clone)]
pub struct WorkSignal {
    rx: watch::Receiver<u64>,
}

impl WorkSignal {
    /// Waits up to `timeout` for a signal newer than the last one this waiter saw. Many
    /// signals while the caller was busy wake it once.
    pub async fn wait_for_work(&mut self, timeout: Duration) -> Wake {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.rx.changed()).await {
            Ok(Ok(())) => {
                self.rx.mark_unchanged();
                Wake::Notified
            }
            // The store is gone: nothing will signal again, so this is only a poll timer.
            Ok(Err(_)) => {
                tokio::time::sleep_until(deadline).await;
                Wake::TimedOut
            }
            Err(_) => Wake::TimedOut,
        }
    }
}

fn answer<T>(done: Done, pick: impl FnOnce(Done) -> Option<T>) -> Result<T> {
    pick(done).ok_or_else(|| Error::Unavailable { detail: "the PostgreSQL writer answered another write".into() })
}

impl Store for PgStore {
    async fn create_run(&self, run: NewRun) -> Result<Run> {
        let done = self.write(Op::CreateRun(run)).await.map_err(|e| self.located(e))?;
        answer(done, |d| if let Done::Run(r) = d { Some(*r) } else { None })
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        let done = self.write(Op::Commit(commit)).await.map_err(|e| self.located(e))?;
        answer(done, |d| if let Done::Outcome(o) = d { Some(o) } else { None })
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<Claimed>> {
        let done = self.write(Op::Claim(claim)).await.map_err(|e| self.located(e))?;
        answer(done, |d| if let Done::Claimed(c) = d { Some(c) } else { None })
    }

    async fn renew(&self, leases: &[Lease], lease_ms: u64, now: Timestamp) -> Result<Vec<String>> {
        let op = Op::Renew { leases: leases.to_vec(), lease_ms, now };
        let done = self.write(op).await.map_err(|e| self.located(e))?;
        answer(done, |d| if let Done::Lost(l) = d { Some(l) } else { None })
    }

    /// Resolves on the next `NOTIFY steward_runnable` (or LISTEN reconnection) after the call;
    /// in poll-only mode, on this process's own writes only. See [`PgStore::work_signal`] for
    /// a waiter that misses nothing between two waits.
    fn runnable_hint(&self) -> impl std::future::Future<Output = ()> + Send {
        let mut rx = self.inner.wake.subscribe();
        async move {
            if rx.changed().await.is_err() {
                // Nothing will signal again (the store is gone): the worker's poll timer decides.
                std::future::pending::<()>().await;
            }
        }
    }

    async fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>> {
        let done = self.write(Op::Recover { now, scan: scan.clone() }).await.map_err(|e| self.located(e))?;
        answer(done, |d| if let Done::Recovered(r) = d { Some(r) } else { None })
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        let sql = format!("SELECT {} FROM runs WHERE run_id = $1", rows::RUN_COLUMNS);
        let rows = self.read("reading a run", &sql, &[(&run_id, Type::TEXT)]).await?;
        match rows.first() {
            Some(row) => rows::run_from_row(row).map_err(|e| self.located(e)),
            None => Err(Error::NotFound { what: "run", id: run_id.to_owned() }),
        }
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        // The same conditions as `RunFilter::admits`, in SQL.
        let sql = format!(
            "SELECT {} FROM runs WHERE ($1::text IS NULL OR state = $1) AND ($3::text IS NULL OR workflow_id = $3)
               AND ($4::text IS NULL OR strpos(run_id, $4) > 0 OR strpos(workflow_id, $4) > 0 OR strpos(summary, $4) > 0)
               AND ($5::bigint IS NULL OR created_at >= $5) AND ($6::bigint IS NULL OR created_at < $6)
               AND ($7::bigint IS NULL OR created_at < $7 OR (created_at = $7 AND run_id < $8))
             ORDER BY created_at DESC, run_id DESC LIMIT $2",
            rows::RUN_COLUMNS
        );
        let state = filter.state.map(|s| s.as_str());
        let limit = filter.limit.map(i64::from);
        let (since, before) =
            (filter.created_since.map(Timestamp::millis), filter.created_before.map(Timestamp::millis));
        let (after_at, after_id) =
            (filter.after.as_ref().map(|(t, _)| t.millis()), filter.after.as_ref().map(|(_, id)| id.clone()));
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 8] = [
            (&state, Type::TEXT),
            (&limit, Type::INT8),
            (&filter.workflow_id, Type::TEXT),
            (&filter.text, Type::TEXT),
            (&since, Type::INT8),
            (&before, Type::INT8),
            (&after_at, Type::INT8),
            (&after_id, Type::TEXT),
        ];
        let rows = self.read("listing runs", &sql, &params).await?;
        rows.iter().map(rows::run_from_row).collect::<Result<_>>().map_err(|e| self.located(e))
    }

    async fn list_attempts(&self, run_id: &str) -> Result<Vec<Attempt>> {
        let sql = format!("SELECT {} FROM step_attempts WHERE run_id = $1 ORDER BY ordinal", rows::ATTEMPT_COLUMNS);
        let rows = self.read("listing attempts", &sql, &[(&run_id, Type::TEXT)]).await?;
        rows.iter().map(rows::attempt_from_row).collect::<Result<_>>().map_err(|e| self.located(e))
    }

    async fn list_events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        let sql = format!("SELECT {} FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq", rows::EVENT_COLUMNS);
        let rows = self.read("listing events", &sql, &[(&run_id, Type::TEXT), (&after_seq, Type::INT8)]).await?;
        rows.iter().map(rows::event_from_row).collect::<Result<_>>().map_err(|e| self.located(e))
    }

    async fn list_events_since(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        let sql = format!("SELECT {} FROM events WHERE id > $1 ORDER BY id LIMIT $2", rows::EVENT_COLUMNS);
        let limit = i64::from(limit);
        let rows = self.read("listing events", &sql, &[(&after_id, Type::INT8), (&limit, Type::INT8)]).await?;
        rows.iter().map(rows::event_from_row).collect::<Result<_>>().map_err(|e| self.located(e))
    }

    fn commit_stats(&self) -> Option<steward_store::stats::CommitStats> {
        Some(self.inner.writer.stats.snapshot())
    }

    async fn count_runs(&self) -> Result<Vec<(RunState, u64)>> {
        let rows = self.read("counting runs", "SELECT state, COUNT(*) FROM runs GROUP BY state", &[]).await?;
        let corrupt = |detail: String| self.located(Error::Corrupt { path: String::new(), detail });
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(0).map_err(|e| corrupt(format!("run state: {e}")))?;
                let n: i64 = r.try_get(1).map_err(|e| corrupt(format!("run count: {e}")))?;
                let state = state.parse::<RunState>().map_err(|e| corrupt(format!("run state: {e}")))?;
                Ok((state, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    async fn last_event_id(&self) -> Result<i64> {
        let rows = self.read("reading the last event id", "SELECT COALESCE(MAX(id), 0) FROM events", &[]).await?;
        rows.first()
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()
            .map_err(|e| self.located(Error::Corrupt { path: String::new(), detail: format!("last event id: {e}") }))
            .map(|id| id.unwrap_or(0))
    }

    async fn prune(&self, now: Timestamp, policy: &RetentionPolicy, dry_run: bool) -> Result<PruneReport> {
        let op = Op::Prune { now, policy: policy.clone(), dry_run };
        let done = self.write(op).await.map_err(|e| self.located(e))?;
        answer(done, |d| if let Done::Pruned(p) = d { Some(p) } else { None })
    }

    async fn get_definition(&self, hash: &str) -> Result<String> {
        let rows = self
            .read("reading a definition", "SELECT source FROM definitions WHERE hash = $1", &[(&hash, Type::TEXT)])
            .await?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(|e| self.located(rows::corrupt("definition", e))),
            None => Err(Error::NotFound { what: "definition", id: hash.to_owned() }),
        }
    }
}
