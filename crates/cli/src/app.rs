//! Opening the data directory, the store and the engine, with errors a person can act on: the
//! composition root that picks the backend once (PostgreSQL when a database URL is set, else the
//! embedded SQLite file) for every command.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::state::RunState;
use steward_runtime::secrets::{KEY_FILE, Sealer};
use steward_runtime::{Engine, EngineConfig, Handoff, SystemClock, UuidIds};
use steward_store::{
    Attempt, Claim, Claimed, Commit, CommitOutcome, Lease, NewRun, PruneReport, Recovered, Result as StoreResult,
    RetentionPolicy, Run, RunFilter, Scan, Store,
};
use steward_store_postgres::{PgOptions, PgStore};
use steward_store_sqlite::{Durability, Options, SqliteStore};

use crate::config::Settings;

pub(crate) const DB_FILE: &str = "steward.db";

/// The database file under a data directory.
pub(crate) fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// The store a command works on.
#[derive(Clone)]
pub(crate) enum Db {
    /// The embedded default: one SQLite file under the data directory.
    Sqlite(SqliteStore),
    /// PostgreSQL, for several workers on several machines.
    Postgres(PgStore),
}

/// The same call on whichever backend it is.
macro_rules! each {
    ($db:expr, $s:ident => $call:expr) => {
        match $db {
            Db::Sqlite($s) => $call,
            Db::Postgres($s) => $call,
        }
    };
}

impl Store for Db {
    async fn create_run(&self, run: NewRun) -> StoreResult<Run> {
        each!(self, s => s.create_run(run).await)
    }
    async fn commit(&self, commit: Commit) -> StoreResult<CommitOutcome> {
        each!(self, s => s.commit(commit).await)
    }
    async fn claim(&self, claim: Claim) -> StoreResult<Vec<Claimed>> {
        each!(self, s => s.claim(claim).await)
    }
    async fn renew(&self, leases: &[Lease], lease_ms: u64, now: Timestamp) -> StoreResult<Vec<String>> {
        each!(self, s => s.renew(leases, lease_ms, now).await)
    }
    async fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> StoreResult<Vec<Recovered>> {
        each!(self, s => s.recover_stalled(now, scan).await)
    }
    async fn get_run(&self, run_id: &str) -> StoreResult<Run> {
        each!(self, s => s.get_run(run_id).await)
    }
    async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<Run>> {
        each!(self, s => s.list_runs(filter).await)
    }
    async fn list_attempts(&self, run_id: &str) -> StoreResult<Vec<Attempt>> {
        each!(self, s => s.list_attempts(run_id).await)
    }
    async fn list_events(&self, run_id: &str, after_seq: i64) -> StoreResult<Vec<Event>> {
        each!(self, s => s.list_events(run_id, after_seq).await)
    }
    async fn list_events_since(&self, after_id: i64, limit: u32) -> StoreResult<Vec<Event>> {
        each!(self, s => s.list_events_since(after_id, limit).await)
    }
    async fn count_runs(&self) -> StoreResult<Vec<(RunState, u64)>> {
        each!(self, s => s.count_runs().await)
    }
    async fn last_event_id(&self) -> StoreResult<i64> {
        each!(self, s => s.last_event_id().await)
    }
    async fn prune(&self, now: Timestamp, policy: &RetentionPolicy, dry_run: bool) -> StoreResult<PruneReport> {
        each!(self, s => s.prune(now, policy, dry_run).await)
    }
    async fn get_definition(&self, hash: &str) -> StoreResult<String> {
        each!(self, s => s.get_definition(hash).await)
    }
    fn runnable_hint(&self) -> impl std::future::Future<Output = ()> + Send {
        let db = self.clone();
        async move { each!(&db, s => s.runnable_hint().await) }
    }
}

/// The artifact store that goes with `db`: on PostgreSQL the database's own, so that every
/// worker reaches what another wrote; else the data directory's.
pub(crate) fn artifacts_of(settings: &Settings, db: &Db) -> Arc<dyn steward_artifacts::ArtifactStore> {
    match db {
        Db::Postgres(pg) => Arc::new(pg.artifacts()),
        Db::Sqlite(_) => settings.artifacts(),
    }
}

/// Opens the configured store for writing (the SQLite file is created if needed).
pub(crate) async fn open_db(settings: &Settings) -> Result<Db> {
    match &settings.database_url {
        Some(url) => postgres(settings, url).await,
        None => Ok(Db::Sqlite(open_rw(&settings.data_dir, Durability::Full)?)),
    }
}

/// Opens the configured store to read; `None` when nothing was ever recorded in the embedded one.
pub(crate) async fn open_db_ro_if_any(settings: &Settings) -> Result<Option<Db>> {
    match &settings.database_url {
        Some(url) => postgres(settings, url).await.map(Some),
        None => Ok(open_ro_if_any(&settings.data_dir)?.map(Db::Sqlite)),
    }
}

/// Opens the configured store to read; the embedded database must exist.
pub(crate) async fn open_db_ro(settings: &Settings) -> Result<Db> {
    match &settings.database_url {
        Some(url) => postgres(settings, url).await,
        None => Ok(Db::Sqlite(open_ro(&settings.data_dir)?)),
    }
}

async fn postgres(settings: &Settings, url: &str) -> Result<Db> {
    let opts = PgOptions { poll_only: settings.database_poll_only, ..PgOptions::default() };
    let store = PgStore::connect(url, opts, Arc::new(UuidIds))
        .await
        .context("cannot open the PostgreSQL database (set by --database-url, STEWARD_DATABASE_URL or database_url)")?;
    Ok(Db::Postgres(store))
}

/// Opens the store for writing, creating the data directory if needed.
pub(crate) fn open_rw(data_dir: &Path, durability: Durability) -> Result<SqliteStore> {
    if !data_dir.exists() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    }
    if !data_dir.is_dir() {
        bail!("the data directory {} is not a directory", data_dir.display());
    }
    let probe = data_dir.join(".steward-write-probe");
    if let Err(e) = std::fs::write(&probe, b"") {
        bail!("the data directory {} is not writable: {e}", data_dir.display());
    }
    let _ = std::fs::remove_file(&probe);
    let path = db_path(data_dir);
    SqliteStore::open(&path, Options { durability, read_only: false }, Arc::new(UuidIds)).map_err(explain)
}

/// Opens the store read-only; the data directory and database must exist.
pub(crate) fn open_ro(data_dir: &Path) -> Result<SqliteStore> {
    open_ro_if_any(data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no Steward database at {} (no runs recorded there yet; pass --data-dir or set STEWARD_DATA_DIR to point elsewhere)",
            db_path(data_dir).display()
        )
    })
}

/// Opens the store read-only, or `None` when nothing was ever recorded there.
pub(crate) fn open_ro_if_any(data_dir: &Path) -> Result<Option<SqliteStore>> {
    if data_dir.exists() && !data_dir.is_dir() {
        bail!("the data directory {} is not a directory", data_dir.display());
    }
    let path = db_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    match SqliteStore::open(&path, Options { durability: Durability::Full, read_only: true }, Arc::new(UuidIds)) {
        Ok(store) => Ok(Some(store)),
        Err(steward_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(explain(e)),
    }
}

fn explain(e: steward_store::Error) -> anyhow::Error {
    match e {
        steward_store::Error::Corrupt { .. } => {
            anyhow::anyhow!(
                "{e}\nthe file was left untouched; move it aside to start a fresh database, or restore it from a backup"
            )
        }
        other => other.into(),
    }
}

/// This process's identity as a run owner.
fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// An engine on the configured store and tool bus, for a command that drives runs in the
/// foreground (a run it releases on a signal waits for a person).
pub(crate) async fn engine(settings: &Settings) -> Result<Engine<Db>> {
    engine_for(settings, Handoff::Person).await
}

/// An engine whose released runs go to `handoff`.
pub(crate) async fn engine_for(settings: &Settings, handoff: Handoff) -> Result<Engine<Db>> {
    let store = open_db(settings).await?;
    let mut config = EngineConfig::new(owner_id());
    config.handoff = handoff;
    config.stall_threshold_secs = settings.stall_threshold_secs;
    config.heartbeat_interval = Duration::from_secs(settings.heartbeat_secs);
    // A write that cannot land within the stall threshold gives up: by then a peer may have
    // recovered the run anyway.
    config.store_retry.patience = Duration::from_secs(settings.stall_threshold_secs);
    // Secret inputs are sealed under the data directory's key, so every process that drives a
    // run from this directory (the detached driver, resume, gate) can open them.
    let key = settings.data_dir.join(KEY_FILE);
    config.sealer = Arc::new(Sealer::at(std::path::absolute(&key).unwrap_or(key)));
    // The files an attempt hands to a process it starts (an agent CLI's prompt) are this
    // process's own; everything a later attempt needs is in the artifact store.
    config.data_dir = std::path::absolute(&settings.data_dir).unwrap_or_else(|_| settings.data_dir.clone());
    let bus = settings.bus_with(artifacts_of(settings, &store))?;
    Ok(Engine::new(store, Arc::new(bus), Arc::new(SystemClock), Arc::new(UuidIds), config))
}

/// Reads a workflow file, naming it in any error.
/// A workflow file's text as a run stores it: a DireClaw orchestrator file with the workflow
/// `--workflow` names appended (`steward_core::workflow::direclaw::select`), any other file as
/// it is.
pub(crate) fn read_workflow(file: &Path, workflow: Option<&str>) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read workflow file {}", file.display()))?;
    Ok(match workflow {
        // Text that is not YAML at all is the parser's to report, at its line.
        Some(_) if steward_core::yaml::parse(&text).is_err() => text,
        Some(_) if !steward_core::workflow::direclaw::is_orchestrator_text(&text) => {
            bail!(
                "--workflow picks one workflow of a DireClaw orchestrator file; {} is not one (it lists no `workflows`)",
                file.display()
            )
        }
        Some(id) => {
            let origin = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
            steward_core::workflow::direclaw::select(&text, id, &origin.display().to_string())
        }
        None => text,
    })
}
