//! Steward's embedded store: one SQLite file in WAL mode, durable by default.
//!
//! Layout: [`SqliteStore`] owns a write connection on a dedicated thread
//! (`writer`, which batches concurrent writes into one transaction: group
//! commit) and a read connection used from blocking tasks. The SQL of each
//! write lives in `ops`, row mapping in `rows`, and the schema in
//! `migrations/` (applied on open, versioned with `PRAGMA user_version`).
//!
//! Durability: [`Durability::Full`] (the default) is `synchronous=FULL`, which
//! survives power loss for every acknowledged write. [`Durability::ProcessCrash`]
//! is `synchronous=NORMAL`: it survives a crash or kill of the process but
//! may lose the last commits on power loss. It exists for benchmarks and
//! throwaway data and is never the default.

mod ops;
mod rows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, ffi};

use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::ids::IdGen;
use steward_core::state::RunState;
use steward_store::{
    Attempt, Claim, Claimed, Commit, CommitOutcome, DbClock, Error, Lease, NewRun, PruneReport, Recovered, Result,
    RetentionPolicy, Run, RunFilter, Scan, Store,
};

use writer::Writer;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/001_initial.sql"),
    include_str!("../migrations/002_crash_semantics.sql"),
    include_str!("../migrations/003_leases.sql"),
    include_str!("../migrations/004_typed_answers.sql"),
    include_str!("../migrations/005_lineage.sql"),
    include_str!("../migrations/006_answer_detail.sql"),
    include_str!("../migrations/007_claimable_without_in.sql"),
];

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash only. Opt-in.
    ProcessCrash,
}

/// How to open the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Durability of writes.
    pub durability: Durability,
    /// Open without a writer; every write fails with [`Error::ReadOnly`].
    pub read_only: bool,
}

/// A [`Store`] on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // Fields drop in order: the reader closes first, so that the writer's
    // connection is the last one and checkpoints the WAL away on close.
    reader: Arc<Mutex<Connection>>,
    writer: Option<Writer>,
    ids: Arc<dyn IdGen>,
    /// The database's clock, that leases are measured on: this host's.
    clock: Arc<DbClock>,
}

/// Maps a SQLite error to a store error, naming the file where it helps.
pub(crate) fn map_err(path: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| {
        let detail = e.to_string();
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
            _ => None,
        };
        match code {
            Some(ffi::ErrorCode::NotADatabase | ffi::ErrorCode::DatabaseCorrupt) => {
                Error::Corrupt { path: path.to_owned(), detail }
            }
            Some(ffi::ErrorCode::ReadOnly) => Error::ReadOnly { path: path.to_owned(), detail },
            Some(ffi::ErrorCode::ConstraintViolation) => Error::Invalid(detail),
            _ if path.is_empty() => Error::Unavailable { detail },
            _ => Error::Unavailable { detail: format!("{path}: {detail}") },
        }
    }
}

fn configure(conn: &Connection, path: &str, durability: Durability) -> Result<()> {
    // Every statement the store runs stays prepared: rusqlite keeps 16 by default, fewer than
    // the writer uses, and a statement pushed out is parsed and planned again on its next use.
    conn.set_prepared_statement_cache_capacity(128);
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::ProcessCrash => "NORMAL",
    };
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(map_err(path))?;
    conn.execute_batch(&format!("PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;")).map_err(map_err(path))
}

fn schema_version(conn: &Connection, path: &str) -> Result<i64> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(map_err(path))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "schema version {version} is newer than this steward understands ({known}); upgrade steward"
            ),
        });
    }
    Ok(version)
}

fn migrate(conn: &Connection, path: &str) -> Result<()> {
    // The first statement that touches the file is where a damaged or foreign file shows.
    if schema_version(conn, path)? == MIGRATIONS.len() as i64 {
        return Ok(());
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(map_err(path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable { detail: format!("{path}: cannot enable WAL (journal_mode is {mode})") });
    }
    // Several processes may upgrade one file at once: the version is read again under the
    // write lock, so each migration runs exactly once.
    let tx =
        rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate).map_err(map_err(path))?;
    let version = schema_version(conn, path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(map_err(path))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).map_err(map_err(path))?;
    }
    tx.commit().map_err(map_err(path))?;
    Ok(())
}

/// Refuses a database file that cannot hold what a Steward database holds, before SQLite
/// would quietly treat it as a new, empty one: an empty file, a file too short for its own
/// header's page count (truncated), or not an SQLite file at all. A file this process creates
/// appears complete (see [`create`]), so an empty one is always damage, never a creation in
/// progress.
fn check_file(path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    let corrupt = |detail: String| Error::Corrupt { path: shown.clone(), detail };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Unavailable { detail: format!("{shown}: {e}") }),
    };
    if !meta.is_file() {
        return Err(corrupt("it is not a regular file".into()));
    }
    let len = meta.len();
    if len == 0 {
        return Err(corrupt(
            "the file is empty (0 bytes); a Steward database never is, so something truncated or replaced it".into(),
        ));
    }
    let mut header = [0u8; 100];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
    if read.is_err() || !header.starts_with(b"SQLite format 3\0") {
        return Err(corrupt("file is not a database".into()));
    }
    let be32 = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(be32(28));
    // The header's page count is valid only when its change counter matches, and the main file
    // is complete only when no write-ahead log holds newer pages. Another process may be
    // checkpointing as this one looks (copying the log into the file: the header first, the
    // file growing to its last page, and only then the log emptied or removed), so the header
    // is read first, the log second and the length last: a log seen empty means the copy that
    // wrote that header has finished, and the length read after it is the whole file's.
    let wal_has_pages = std::fs::metadata(wal_path(path)).is_ok_and(|m| m.len() > 0);
    let len = std::fs::metadata(path).map_or(len, |m| m.len());
    if be32(24) == be32(92) && pages > 0 && !wal_has_pages && len < page_size * pages {
        return Err(corrupt(format!(
            "the file is truncated: {len} bytes where its header says {pages} pages of {page_size} bytes"
        )));
    }
    Ok(())
}

/// Creates the database at `path` as a complete file: it is initialised under a temporary
/// name beside it and then linked into place, which fails if the name exists. Processes that
/// start on a fresh data directory together never see a half-made file; one link wins and
/// the others open it.
fn create(path: &Path, durability: Durability) -> Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let shown = path.display().to_string();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.init-{}-{n}", std::process::id()));
    let unavailable = |e: std::io::Error| Error::Unavailable { detail: format!("{shown}: {e}") };
    let made = (|| {
        let conn = Connection::open_with_flags(
            &tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err(&shown))?;
        configure(&conn, &shown, durability)?;
        migrate(&conn, &shown)?;
        // Closing the only connection checkpoints the log into the file and removes it.
        conn.close().map_err(|(_, e)| map_err(&shown)(e))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(unavailable)?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable(e)),
        }
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(unavailable)?;
        }
        Ok(())
    })();
    for leftover in [tmp.clone(), suffixed(&tmp, "-wal"), suffixed(&tmp, "-shm")] {
        let _ = std::fs::remove_file(leftover);
    }
    made
}

/// Opens the read connection. A WAL database in a directory this process
/// cannot write (say, a read-only mount) cannot get its `-shm` index; when
/// there is also no `-wal` file, every commit is already in the main file and
/// it is opened `immutable`, so `status` and friends still work there.
fn open_reader(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // The file is only read when first used: probe it now.
    match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)) {
        Err(rusqlite::Error::SqliteFailure(f, _))
            if read_only && f.code == ffi::ErrorCode::CannotOpen && !wal_path(path).exists() =>
        {
            drop(conn);
            let encoded = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
            let uri = format!("file:{encoded}?immutable=1");
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
        }
        _ => Ok(conn),
    }
}

fn wal_path(path: &Path) -> PathBuf {
    suffixed(path, "-wal")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl SqliteStore {
    /// Opens (and in read-write mode creates and migrates) the database at `path`.
    ///
    /// The directory must exist. A file that is not a Steward database (empty, truncated,
    /// foreign) is reported as [`Error::Corrupt`] and left untouched: it is never replaced by
    /// a new, empty database.
    pub fn open(path: &Path, options: Options, ids: Arc<dyn IdGen>) -> Result<SqliteStore> {
        let shown = path.display().to_string();
        check_file(path)?;
        let writer = if options.read_only {
            None
        } else {
            if !path.exists() {
                create(path, options.durability)?;
            }
            // No CREATE flag: a file that vanished since is an error, not a new empty database.
            let conn =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                    .map_err(map_err(&shown))?;
            configure(&conn, &shown, options.durability)?;
            migrate(&conn, &shown)?;
            Some(Writer::spawn(conn, shown.clone())?)
        };
        let reader = open_reader(path, options.read_only).map_err(map_err(&shown))?;
        configure(&reader, &shown, options.durability)?;
        let version: i64 = reader.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(map_err(&shown))?;
        if version == 0 && options.read_only {
            // A file whose creation was interrupted before its schema committed
            // holds nothing; a writer will initialise it.
            return Err(Error::NotFound { what: "initialised database", id: shown });
        }
        if version != MIGRATIONS.len() as i64 {
            return Err(Error::Corrupt {
                path: shown,
                detail: format!("schema version {version}, expected {}", MIGRATIONS.len()),
            });
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                reader: Arc::new(Mutex::new(reader)),
                writer,
                ids,
                clock: Arc::new(steward_store::host_now),
            }),
        })
    }

    /// The same store with leases measured on `clock` instead of this host's (for tests that
    /// move time). Only before the store is shared.
    pub fn with_clock(self, clock: Arc<DbClock>) -> SqliteStore {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.clock = clock;
                SqliteStore { inner: Arc::new(inner) }
            }
            Err(inner) => SqliteStore { inner },
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &dyn IdGen) -> Result<T> + Send + 'static,
    {
        let Some(writer) = &self.inner.writer else {
            return Err(Error::ReadOnly {
                path: self.inner.path.display().to_string(),
                detail: "opened read-only".into(),
            });
        };
        let ids = self.inner.ids.clone();
        writer.submit(move |conn| f(conn, ids.as_ref())).await.map_err(|e| self.located(e))
    }

    /// Names this database in errors raised where the path was not at hand.
    fn located(&self, e: Error) -> Error {
        let path = self.inner.path.display().to_string();
        match e {
            Error::Corrupt { path: p, detail } if p.is_empty() => Error::Corrupt { path, detail },
            Error::ReadOnly { path: p, detail } if p.is_empty() => Error::ReadOnly { path, detail },
            other => other,
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let reader = self.inner.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn =
                reader.lock().map_err(|_| Error::Unavailable { detail: "the read connection is poisoned".into() })?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::Unavailable { detail: format!("read task failed: {e}") })?
        .map_err(|e| self.located(e))
    }
}

/// A damaged file can hide a row it holds: "not found" is only answered by a database that
/// passes SQLite's own check; otherwise the damage is reported.
fn vouch_for_absence<T>(conn: &Connection, found: Result<T>) -> Result<T> {
    if !matches!(found, Err(Error::NotFound { .. })) {
        return found;
    }
    let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(map_err(""))?;
    if verdict == "ok" {
        found
    } else {
        Err(Error::Corrupt { path: String::new(), detail: format!("database disk image is malformed ({verdict})") })
    }
}

fn collect<T>(rows: Vec<Result<T>>) -> Result<Vec<T>> {
    rows.into_iter().collect()
}

impl Store for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<Run> {
        self.write(move |conn, ids| ops::create_run(conn, ids, &run)).await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        let clock = self.inner.clock.clone();
        self.write(move |conn, ids| ops::commit(conn, ids, clock(), &commit)).await
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<Claimed>> {
        let clock = self.inner.clock.clone();
        self.write(move |conn, ids| ops::claim(conn, ids, clock(), &claim)).await
    }

    async fn renew(&self, leases: &[Lease], lease_ms: u64, now: Timestamp) -> Result<Vec<String>> {
        let (leases, clock) = (leases.to_vec(), self.inner.clock.clone());
        self.write(move |conn, _| ops::renew(conn, clock(), &leases, lease_ms, now)).await
    }

    async fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>> {
        let (scan, clock) = (scan.clone(), self.inner.clock.clone());
        self.write(move |conn, ids| ops::recover_stalled(conn, ids, clock(), now, &scan)).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        let run_id = run_id.to_owned();
        self.read(move |conn| vouch_for_absence(conn, ops::get_run(conn, &run_id))).await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        self.read(move |conn| {
            // The same conditions as `RunFilter::admits`, in SQL.
            let sql = format!(
                "SELECT {} FROM runs WHERE (?1 IS NULL OR state = ?1) AND (?3 IS NULL OR workflow_id = ?3)
                   AND (?4 IS NULL OR instr(run_id, ?4) > 0 OR instr(workflow_id, ?4) > 0 OR instr(summary, ?4) > 0)
                   AND (?5 IS NULL OR created_at >= ?5) AND (?6 IS NULL OR created_at < ?6)
                   AND (?7 IS NULL OR created_at < ?7 OR (created_at = ?7 AND run_id < ?8))
                 ORDER BY created_at DESC, run_id DESC LIMIT ?2",
                rows::RUN_COLUMNS
            );
            let rows = conn
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_map(
                        rusqlite::params![
                            filter.state.map(|s| s.as_str()),
                            filter.limit.map_or(-1, i64::from),
                            filter.workflow_id,
                            filter.text,
                            filter.created_since.map(Timestamp::millis),
                            filter.created_before.map(Timestamp::millis),
                            filter.after.as_ref().map(|(t, _)| t.millis()),
                            filter.after.as_ref().map(|(_, id)| id.as_str()),
                        ],
                        rows::run_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(map_err(""))?;
            collect(rows)
        })
        .await
    }

    async fn list_attempts(&self, run_id: &str) -> Result<Vec<Attempt>> {
        let run_id = run_id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {} FROM step_attempts WHERE run_id = ?1 ORDER BY ordinal", rows::ATTEMPT_COLUMNS);
            let rows = conn
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_map([&run_id], rows::attempt_from_row)?.collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(map_err(""))?;
            collect(rows)
        })
        .await
    }

    async fn list_events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        let run_id = run_id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {} FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq", rows::EVENT_COLUMNS);
            let rows = conn
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_map(rusqlite::params![run_id, after_seq], rows::event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(map_err(""))?;
            collect(rows)
        })
        .await
    }

    async fn prune(&self, now: Timestamp, policy: &RetentionPolicy, dry_run: bool) -> Result<PruneReport> {
        let policy = policy.clone();
        self.write(move |conn, ids| ops::prune(conn, ids, now, &policy, dry_run)).await
    }

    fn commit_stats(&self) -> Option<steward_store::stats::CommitStats> {
        self.inner.writer.as_ref().map(|w| w.stats.snapshot())
    }

    async fn count_runs(&self) -> Result<Vec<(RunState, u64)>> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached("SELECT state, COUNT(*) FROM runs GROUP BY state")
                .and_then(|mut st| {
                    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(map_err(""))?;
            rows.into_iter()
                .map(|(state, n)| {
                    let state = state
                        .parse::<RunState>()
                        .map_err(|e| Error::Corrupt { path: String::new(), detail: format!("run state: {e}") })?;
                    Ok((state, u64::try_from(n).unwrap_or(0)))
                })
                .collect()
        })
        .await
    }

    async fn last_event_id(&self) -> Result<i64> {
        self.read(|conn| {
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0)).map_err(map_err(""))
        })
        .await
    }

    async fn list_events_since(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(move |conn| {
            let sql = format!("SELECT {} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2", rows::EVENT_COLUMNS);
            let rows = conn
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_map(rusqlite::params![after_id, limit], rows::event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(map_err(""))?;
            collect(rows)
        })
        .await
    }

    async fn get_definition(&self, hash: &str) -> Result<String> {
        let hash = hash.to_owned();
        self.read(move |conn| {
            use rusqlite::OptionalExtension;
            let found = conn
                .prepare_cached("SELECT source FROM definitions WHERE hash = ?1")
                .and_then(|mut st| st.query_row([&hash], |r| r.get(0)).optional())
                .map_err(map_err(""))?
                .ok_or(Error::NotFound { what: "definition", id: hash });
            vouch_for_absence(conn, found)
        })
        .await
    }
}
