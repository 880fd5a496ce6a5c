//! A test clock, a gated store wrapper, and engine builders.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use steward_core::Timestamp;
use steward_core::event::Event;
use steward_core::ids::SeqIds;
use steward_core::state::AttemptStatus;
use steward_runtime::{Clock, CreateRun, Engine, EngineConfig, SystemClock};
use steward_store::{Attempt, Commit, CommitOutcome, NewRun, Recovered, Result, Run, RunFilter, Scan, Store};
use steward_store_sqlite::{Options, SqliteStore};
use steward_tools::bus::ToolBus;
use steward_tools::redact::Redactor;
use steward_tools::registry::EngineRegistry;
use steward_tools::terminal::TerminalPolicy;
use tokio::sync::Notify;

/// A clock that only moves when told, starting at a fixed instant.
#[derive(Debug)]
pub(crate) struct SimClock(AtomicI64);

impl SimClock {
    pub(crate) fn new(at: Timestamp) -> Arc<SimClock> {
        Arc::new(SimClock(AtomicI64::new(at.millis())))
    }
    pub(crate) fn advance_secs(&self, s: i64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

pub(crate) const T0: Timestamp = Timestamp(1_800_000_000_000);

pub(crate) fn sqlite(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(&dir.join("steward.db"), Options::default(), Arc::new(SeqIds::new("ev"))).unwrap()
}

/// A tool bus with the shipped registry and policy, a short kill grace, and
/// a shared artifact store on disk.
pub(crate) fn bus() -> ToolBus {
    bus_at(&std::env::temp_dir().join("steward-it"))
}

/// The same bus with its artifact store in the layout of the data directory `data`.
pub(crate) fn bus_at(data: &std::path::Path) -> ToolBus {
    bus_with(Arc::new(steward_artifacts::FsArtifacts::in_data_dir(data)))
}

/// The same bus over `artifacts`.
pub(crate) fn bus_with(artifacts: Arc<dyn steward_artifacts::ArtifactStore>) -> ToolBus {
    let policy = TerminalPolicy { kill_grace: std::time::Duration::from_millis(200), ..TerminalPolicy::default() };
    ToolBus::new(
        EngineRegistry::builtin().unwrap(),
        policy,
        Redactor::new(vec!["configured-secret-value".into()]),
        artifacts,
        // The sandbox is tested with its launcher, through the binary (crates/cli/tests/it/sandbox.rs).
        steward_tools::sandbox::Sandbox::off(),
    )
}

pub(crate) fn engine<S: Store + Clone>(store: S, clock: Arc<dyn Clock>, owner: &str) -> Engine<S> {
    engine_with_env(store, clock, owner, &[])
}

/// An engine that sees these environment variables (API keys, agent CLI paths) first.
pub(crate) fn engine_with_env<S: Store + Clone>(
    store: S,
    clock: Arc<dyn Clock>,
    owner: &str,
    env: &[(&str, &str)],
) -> Engine<S> {
    let mut config = EngineConfig::new(owner.into());
    config.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    config.watch_interval = std::time::Duration::from_millis(50);
    Engine::new(store, Arc::new(bus()), clock, Arc::new(SeqIds::new(owner)), config)
}

pub(crate) fn create(source: &str, workdir: &std::path::Path, inputs: Value) -> CreateRun {
    CreateRun {
        source: source.to_owned(),
        inputs: inputs.as_object().cloned().unwrap_or_else(Map::new),
        workdir: workdir.display().to_string(),
        actor_id: "test".into(),
        contract: steward_core::job::JobContract::workflow_run(),
    }
}

/// A store whose recovery scan waits until the test releases it, and which
/// logs the writes that reach it, in order.
#[derive(Clone)]
pub(crate) struct GatedStore {
    pub(crate) inner: SqliteStore,
    /// Notified when the recovery scan reaches the store.
    pub(crate) reached: Arc<Notify>,
    pub(crate) release: Arc<Notify>,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl GatedStore {
    pub(crate) fn new(inner: SqliteStore) -> GatedStore {
        GatedStore {
            inner,
            reached: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }
    fn note(&self, what: &str) {
        self.log.lock().unwrap().push(what.into());
    }
}

impl Store for GatedStore {
    async fn create_run(&self, run: NewRun) -> Result<Run> {
        self.note("create_run");
        self.inner.create_run(run).await
    }
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        self.note("commit");
        self.inner.commit(commit).await
    }
    async fn claim(&self, claim: steward_store::Claim) -> Result<Vec<steward_store::Claimed>> {
        self.inner.claim(claim).await
    }
    async fn renew(&self, leases: &[steward_store::Lease], lease_ms: u64, now: Timestamp) -> Result<Vec<String>> {
        self.inner.renew(leases, lease_ms, now).await
    }
    async fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>> {
        self.note("recover_stalled");
        self.reached.notify_one();
        self.release.notified().await;
        self.inner.recover_stalled(now, scan).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Run> {
        self.inner.get_run(run_id).await
    }
    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        self.inner.list_runs(filter).await
    }
    async fn list_attempts(&self, run_id: &str) -> Result<Vec<Attempt>> {
        self.inner.list_attempts(run_id).await
    }
    async fn list_events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        self.inner.list_events(run_id, after_seq).await
    }
    async fn prune(
        &self,
        now: Timestamp,
        policy: &steward_store::RetentionPolicy,
        dry_run: bool,
    ) -> Result<steward_store::PruneReport> {
        self.inner.prune(now, policy, dry_run).await
    }
    async fn list_events_since(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.inner.list_events_since(after_id, limit).await
    }
    async fn get_definition(&self, hash: &str) -> Result<String> {
        self.inner.get_definition(hash).await
    }
    async fn count_runs(&self) -> Result<Vec<(steward_core::state::RunState, u64)>> {
        self.inner.count_runs().await
    }
    async fn last_event_id(&self) -> Result<i64> {
        self.inner.last_event_id().await
    }
}

/// A booted engine on a fresh SQLite file in a scratch workspace.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: SqliteStore,
    pub(crate) engine: Engine<SqliteStore>,
}

pub(crate) async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let engine = engine(store.clone(), Arc::new(SystemClock), "me");
    engine.boot().await.unwrap();
    Env { dir, store, engine }
}

impl Env {
    pub(crate) async fn run(&self, source: &str, inputs: serde_json::Value) -> Run {
        let run = self.engine.create_run(create(source, self.dir.path(), inputs)).await.unwrap();
        self.engine.start(&run.run_id).await.unwrap()
    }

    pub(crate) async fn attempts(&self, run: &Run) -> Vec<(String, u32, AttemptStatus)> {
        self.store
            .list_attempts(&run.run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.step_id, a.attempt, a.status))
            .collect()
    }
}
