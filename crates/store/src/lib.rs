//! Steward's storage contract: one [`Store`] trait that every backend implements.
//!
//! The store is the single source of truth (design decision 2). Each write
//! method is one transaction: a state change and the Flight Recorder events
//! that record it are committed together or not at all, so there is never a
//! transition without its event nor an event without its transition. Event
//! payloads are built by the store from the change itself (with event IDs
//! from an injected [`steward_core::ids::IdGen`]), which makes that pairing
//! structural rather than a convention callers must remember.
//!
//! Every write of a run's state goes through
//! [`steward_core::state::check_run_transition`] and is conditional on the
//! state (and, where given, the lease epoch) the caller last saw, which is how a
//! stale process is fenced off: its late write fails with
//! [`Error::Conflict`] and changes nothing.
//!
//! Workers take runs with [`Store::claim`]: a lease of a set length whose epoch, raised by
//! every claim, is the fencing token every driving write names. Leases are measured on the
//! database's clock (PostgreSQL's `now()`, the host's clock for the embedded stores), never a
//! caller's, so a worker with a skewed clock can neither steal a run nor keep one.
//!
//! The conformance suite in `steward-store-testkit` is the executable form of
//! the contracts documented on each method; every backend runs it.
#![warn(missing_docs)]

pub mod mem;
pub mod rules;
pub mod stats;
mod types;

use std::future::Future;

pub use types::*;

use steward_core::Timestamp;
use steward_core::event::Event;

/// Storage errors, split by what a caller can do about them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The run (or definition) does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What was looked up.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The run is not in the state (or not held by the owner) the writer expected.
    #[error("run `{run_id}` changed underneath this write: expected {expected}, found {actual}")]
    Conflict {
        /// The run.
        run_id: String,
        /// What the writer expected.
        expected: String,
        /// What the store holds.
        actual: String,
    },
    /// The write breaks the run state machine.
    #[error("run `{run_id}`: {source}")]
    InvalidTransition {
        /// The run.
        run_id: String,
        /// The rejected edge.
        source: steward_core::state::InvalidTransition,
    },
    /// The write breaks another invariant (job contract, attempt lifecycle, duplicate id).
    #[error("{0}")]
    Invalid(String),
    /// The database file is damaged or not a Steward database.
    #[error("database {path} is unreadable: {detail}")]
    Corrupt {
        /// Where.
        path: String,
        /// What the database engine said.
        detail: String,
    },
    /// The database is opened read-only or its directory is not writable.
    #[error("database {path} is read-only: {detail}")]
    ReadOnly {
        /// Where.
        path: String,
        /// What the database engine said.
        detail: String,
    },
    /// The database could not be reached or failed transiently; retrying may help.
    #[error("storage unavailable: {detail}")]
    Unavailable {
        /// What failed.
        detail: String,
    },
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The clock leases are measured on: the database's. An embedded store's database runs on this
/// host, so its clock is [`host_now`]; a server's is the server's.
pub type DbClock = dyn Fn() -> Timestamp + Send + Sync;

/// This host's clock, as an embedded database's clock.
pub fn host_now() -> Timestamp {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The storage a Steward engine runs on.
///
/// Methods return `Send` futures so the engine can drive many runs on a
/// multi-threaded runtime. Event times are supplied by the caller; the store reads a clock
/// only for leases, and that clock is the database's.
pub trait Store: Send + Sync + 'static {
    /// Creates a run in `queued` with its `run_created` event, storing the
    /// definition source under its hash if it is not there yet.
    ///
    /// Idempotent: the same request again (same `run_id` and `job_id`) returns the run it
    /// created, so a caller that lost the reply may repeat it. Refuses a job contract that
    /// breaks DG-JOB-06 ([`Error::Invalid`]) and another request for a `run_id` that is taken
    /// ([`Error::Invalid`]); nothing is written then.
    fn create_run(&self, run: NewRun) -> impl Future<Output = Result<Run>> + Send;

    /// Applies one [`Commit`] atomically, each change with its event, in this order: the
    /// commit's own events, attempt finishes, running attempts finished as
    /// `finish_running_as`, the transition, attempt starts, attempt processes, a release, then
    /// the run's fields. A run that enters `running` this way is held by nobody and claimable at
    /// once; one that leaves it is held by nobody.
    ///
    /// Fails with [`Error::Conflict`] if the run's state is not what `commit.expect` says, or
    /// (when it names an epoch) the run is not held under that epoch any more, with
    /// [`Error::InvalidTransition`] if the transition is not in the table,
    /// and with [`Error::Invalid`] if an attempt already exists (start) or is
    /// not running (finish, process). On any error nothing is written.
    ///
    /// A commit with an `id` the run already applied is not applied again: it returns the
    /// run's current state, whatever its expectation says (the retry of a write whose reply
    /// was lost).
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<CommitOutcome>> + Send;

    /// Claims up to `claim.limit` runs a worker may drive, oldest first, in one write (a run is
    /// claimed whole or not at all), skipping runs another claimer holds locked: `queued` runs; `running` runs
    /// nobody holds whose `ready_at` has come; `running` runs whose owner's lease has expired
    /// (the interrupted attempts end `interrupted`, the recovery is counted and recorded as
    /// FR-EVT-WF-RECOVERY naming the old and the new owner); and with `resume_stalled`,
    /// `stalled` runs. Runs to recover come before queued ones (HSK-WF-003: interrupted work is
    /// recovered before new work is taken). Each claimed run is `running`, owned by `claim.owner`, its epoch raised
    /// by one, its lease ending `lease_ms` after the database's now (never the caller's), with
    /// a `run_claimed` event.
    ///
    /// With `claim.run_id`, only that run; an empty answer then means it is not claimable.
    fn claim(&self, claim: Claim) -> impl Future<Output = Result<Vec<Claimed>>> + Send;

    /// Extends each lease that is still held (the run `running`, owned, under that epoch) to
    /// `lease_ms` after the database's now. Returns the runs whose lease is not held any more,
    /// so their driver can stop: they were cancelled, released, recovered or claimed by another.
    /// Writes no events.
    fn renew(
        &self,
        leases: &[Lease],
        lease_ms: u64,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The recovery scan (HSK-WF-003): in one transaction, moves every `running` run held by an
    /// owner whose lease has expired on the database's clock, or whose owner is one of
    /// `scan.dead_owners` or `scan.killed_owners`, to `stalled`, records FR-EVT-WF-RECOVERY
    /// (actor `system`) for each, marks their in-flight attempts `interrupted`, and counts the
    /// recovery on the run. Idempotent: a second scan finds nothing. With `scan.hand_over`, it
    /// only ends the leases of the runs it finds (no event: the claim that takes them records
    /// their recovery).
    fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> impl Future<Output = Result<Vec<Recovered>>> + Send;

    /// One run. [`Error::NotFound`] if there is none.
    fn get_run(&self, run_id: &str) -> impl Future<Output = Result<Run>> + Send;

    /// Runs, newest first, optionally only in one state.
    fn list_runs(&self, filter: RunFilter) -> impl Future<Output = Result<Vec<Run>>> + Send;

    /// A run's attempts in the order they started. Empty for an unknown run.
    fn list_attempts(&self, run_id: &str) -> impl Future<Output = Result<Vec<Attempt>>> + Send;

    /// A run's events with `seq > after_seq`, in sequence order.
    fn list_events(&self, run_id: &str, after_seq: i64) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// Events of every run with store-wide `id > after_id`, in `id` order, at most `limit`.
    /// This is the order the Flight Recorder mirror copies in.
    fn list_events_since(&self, after_id: i64, limit: u32) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// The largest store-wide event id recorded so far (0 for none): where a reader that wants
    /// only what happens next starts [`Store::list_events_since`]. Ids are handed out in commit
    /// order, so no event below it can still appear.
    fn last_event_id(&self) -> impl Future<Output = Result<i64>> + Send;

    /// How many runs are in each state; a state no run is in is absent.
    fn count_runs(&self) -> impl Future<Output = Result<Vec<(steward_core::state::RunState, u64)>>> + Send;

    /// What this process's writer has committed so far (batch sizes, durations); `None` for a
    /// backend without a writer of its own.
    fn commit_stats(&self) -> Option<stats::CommitStats> {
        None
    }

    /// Retention (FR-EVT-004): removes events past their family's retention,
    /// never those of a run that is not terminal. In the same transaction, and
    /// before anything is deleted, records a `prune_report` event (HSK-GC-003/004)
    /// in the store's own `_system` log. It also forgets the commit ids finished runs applied
    /// (a repeat of one is then a conflict, still never applied twice). With `dry_run`, only
    /// reports.
    fn prune(
        &self,
        now: Timestamp,
        policy: &RetentionPolicy,
        dry_run: bool,
    ) -> impl Future<Output = Result<PruneReport>> + Send;

    /// The definition source stored under `hash`.
    fn get_definition(&self, hash: &str) -> impl Future<Output = Result<String>> + Send;

    /// Resolves when a run may have become claimable (a hint: only a claim tells), for
    /// workers to wake at once instead of at their next poll. A store that cannot tell never
    /// resolves, and its workers poll.
    fn runnable_hint(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}
