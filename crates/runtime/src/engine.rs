//! The engine's entry points, recovery gate, and the loops that renew and watch its leases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use steward_core::Timestamp;
use steward_core::event::{Actor, NewEvent, Payload};
use steward_core::ids::IdGen;
use steward_core::job::JobContract;
use steward_core::liveness::{ProcessRef, check_liveness};
use steward_core::state::{AttemptStatus, RunState, TransitionCause};
use steward_core::workflow::{self, Diagnostic, Workflow};
use steward_store::{
    Answer, Attempt, Claim, Claimed, Commit, Expect, Lease, NewRun, Owner, Recovered, Run, RunFilter, Scan, Store,
    Transition,
};
use steward_tools::bus::{Refusal, ToolBus};
use steward_tools::process::{self, Liveness, Reaped};

use crate::clock::{Clock, new_run_id};
use crate::halt::{Halt, Stop};
use crate::retry::{RetryPolicy, Retrying};
use crate::secrets::Sealer;
use steward_core::state::HumanDecision;

/// Engine errors. Step failures are not errors: they are recorded on the run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] steward_store::Error),
    /// The workflow definition is invalid.
    #[error("invalid workflow definition:\n{}", .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Definition(Vec<Diagnostic>),
    /// Steps ask for what the workflow's capability profile or the tool policy does not allow.
    #[error("the workflow is refused before it starts:\n{}", .0.iter().map(|(s, r)| format!("  step `{s}`: {r}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<(String, Refusal)>),
    /// The job contract is broken or does not fit the workflow (DG-JOB-06/07).
    #[error("{0}")]
    Contract(String),
    /// A secret input cannot be sealed or opened; the run is left as it was.
    #[error(transparent)]
    Secret(#[from] crate::secrets::Error),
    /// The given inputs do not match the declarations.
    #[error("invalid inputs:\n{}", .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Inputs(Vec<String>),
    /// The run cannot be resumed in its state.
    #[error("run `{run_id}` is {state}; {hint}")]
    WrongState {
        /// The run.
        run_id: String,
        /// Its state.
        state: RunState,
        /// What can be done instead.
        hint: &'static str,
    },
    /// The heartbeat and stall threshold would let a live run be declared stalled.
    #[error("liveness settings: {0}")]
    Liveness(String),
    /// A decision an approval step does not take: an unknown step, a step of another type,
    /// or `continue`/`abort`.
    #[error("{0}")]
    Decision(String),
    /// The person is not among the approval's approvers.
    #[error("`{who}` may not decide step `{step_id}`: its approvers are {}", .approvers.join(", "))]
    NotApprover {
        /// The approval step.
        step_id: String,
        /// Who tried.
        who: String,
        /// Who may.
        approvers: Vec<String>,
    },
    /// The step does not wait for a decision (not yet, or no longer).
    #[error("step `{step_id}` of run `{run_id}` does not wait for a decision")]
    NotWaiting {
        /// The run.
        run_id: String,
        /// The step.
        step_id: String,
    },
    /// Another live process is executing the run.
    #[error(
        "run `{run_id}` is being executed by {owner} (lease last renewed {age_secs}s ago); if that process has stopped, the run can be resumed once its lease runs out (the stall threshold)"
    )]
    RunningElsewhere {
        /// The run.
        run_id: String,
        /// The process holding it.
        owner: String,
        /// Seconds since its last heartbeat.
        age_secs: i64,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why nobody drives a `running` run any more.
enum Abandoned {
    /// Its owner's process has exited.
    OwnerExited,
    /// Its owner stopped renewing its heartbeat and was killed.
    OwnerKilled,
    /// Its owner is stopped but its lease has not run out by this process's clock: not this
    /// scan's to take (the store's clock may already say otherwise), so that a stopped owner is
    /// always killed before its run is taken.
    NotYet,
}

/// Who continues a run this engine gives back when it stops on a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// A person, with `steward resume`: the run is released to `stalled` (a foreground run).
    Person,
    /// Any worker: the run stays `running`, held by nobody, claimable at once (a worker).
    Workers,
}

/// Tuning of one engine process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This process's identity, recorded as the owner of the runs it executes.
    pub owner: String,
    /// How often the leases of the runs it drives are renewed (design decision 5: 5 s).
    pub heartbeat_interval: Duration,
    /// How often the engine checks whether its runs were cancelled elsewhere.
    pub watch_interval: Duration,
    /// The lease length: a run whose lease was not renewed for this long is abandoned, stalled
    /// by a recovery scan or recovered by a worker's claim (30 s); at least
    /// [`steward_core::liveness::MIN_STALL_FACTOR`] renewals.
    pub stall_threshold_secs: u64,
    /// Who continues a run this engine releases on a signal.
    pub handoff: Handoff,
    /// This engine's operating-system process, recorded with the runs it owns so that a peer
    /// on the same machine sees at once when it has died.
    pub owner_process: Option<ProcessRef>,
    /// How long an unavailable store is waited out.
    pub store_retry: RetryPolicy,
    /// Environment variables seen before the process environment (API keys
    /// named by `api_key_env`, agent CLI paths); for embedding and tests.
    pub env: std::collections::BTreeMap<String, String>,
    /// Seals secret inputs before a run is stored and opens them to drive it. The CLI's is the
    /// data directory's key file; the default is a key of this process alone.
    pub sealer: Arc<Sealer>,
    /// This process's own directory for the files an attempt hands to a process it starts: an
    /// agent CLI's prompt file and an agent's output files
    /// (`runs/<run>/steps/<step>/attempts/<n>/`). Nothing a later attempt needs is kept there
    /// (that is the artifact store's, which every worker reaches), so two workers with
    /// different data directories can take turns on one run. The default is a directory under
    /// the system's temporary directory.
    pub data_dir: std::path::PathBuf,
}

impl EngineConfig {
    /// Defaults for a process named `owner`.
    pub fn new(owner: String) -> EngineConfig {
        EngineConfig {
            owner,
            heartbeat_interval: Duration::from_secs(5),
            watch_interval: Duration::from_millis(500),
            stall_threshold_secs: 30,
            handoff: Handoff::Person,
            owner_process: process::current(),
            store_retry: RetryPolicy::default(),
            env: std::collections::BTreeMap::new(),
            sealer: Arc::new(Sealer::ephemeral()),
            data_dir: std::env::temp_dir().join("steward"),
        }
    }

    /// Refuses settings under which a live run could be declared stalled.
    pub fn check(&self) -> Result<()> {
        let beat = self.heartbeat_interval.as_secs_f64().ceil() as u64;
        check_liveness(beat.max(1), self.stall_threshold_secs).map_err(Error::Liveness)
    }

    fn owner(&self) -> Owner {
        Owner { id: self.owner.clone(), process: self.owner_process.clone() }
    }

    /// The lease length, in milliseconds.
    pub fn lease_ms(&self) -> u64 {
        self.stall_threshold_secs.saturating_mul(1000)
    }
}

/// A run this process drives: its stop switch and the epoch of the lease it holds.
#[derive(Debug, Clone)]
pub(crate) struct Driving {
    pub(crate) halt: Halt,
    pub(crate) epoch: u64,
}

/// A request to create a run.
#[derive(Debug, Clone)]
pub struct CreateRun {
    /// The workflow YAML.
    pub source: String,
    /// Input values as given (checked against the declarations).
    pub inputs: Map<String, Value>,
    /// The absolute directory steps run in.
    pub workdir: String,
    /// Who asks.
    pub actor_id: String,
    /// The job it executes: a workflow run, or a micro-task job (DG-JOB-06).
    pub contract: JobContract,
}

/// A change in a run's progress, for live display.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    /// The run.
    pub run_id: String,
    /// Its state.
    pub state: RunState,
    /// Its summary line.
    pub summary: String,
}

pub(crate) struct Inner<S> {
    /// The store, with its unavailability waited out; every engine write goes through it.
    pub(crate) store: Retrying<S>,
    pub(crate) bus: Arc<ToolBus>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<dyn IdGen>,
    pub(crate) config: EngineConfig,
    ready: watch::Sender<bool>,
    /// Runs this process is driving, with the switch that stops their steps and their lease.
    pub(crate) active: Mutex<HashMap<String, Driving>>,
    /// When the leases were last renewed in full, or `None` while every renewal succeeds: a
    /// worker claims nothing while its own renewals fail.
    pub(crate) renewals_failing_since: Mutex<Option<std::time::Instant>>,
    /// The owners the latest recovery scan found stopped but not yet past their leases: claims
    /// leave their runs alone until a scan has killed them.
    pub(crate) spared: Mutex<Vec<String>>,
    /// Runs this process gave back because it cannot drive them (their secrets need a key it
    /// lacks): work for another process, not work a worker that exits when idle waits for.
    pub(crate) cannot_drive: Mutex<std::collections::HashSet<String>>,
    /// Definitions parsed, by hash.
    parsed: Mutex<HashMap<String, Arc<Workflow>>>,
    /// Writes the store refused because this process no longer held the run (fencing).
    pub(crate) refused_writes: std::sync::atomic::AtomicU64,
    /// The signal this engine is stopping on, once it is: a run it starts driving after that
    /// is stopped at once.
    pub(crate) stopping: std::sync::OnceLock<&'static str>,
    /// Set once a worker drains: a run it starts driving after that is drained at once.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    pub(crate) progress: broadcast::Sender<ProgressUpdate>,
    shutdown: CancellationToken,
}

/// The workflow engine. Cheap to clone.
pub struct Engine<S> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine { inner: self.inner.clone() }
    }
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl<S: Store + Clone> Engine<S> {
    /// An engine that accepts no work until [`Engine::boot`] has run.
    pub fn new(
        store: S,
        bus: Arc<ToolBus>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
        config: EngineConfig,
    ) -> Engine<S> {
        let (ready, _) = watch::channel(false);
        let (progress, _) = broadcast::channel(1024);
        let store = Retrying { store, policy: config.store_retry };
        Engine {
            inner: Arc::new(Inner {
                store,
                bus,
                clock,
                ids,
                config,
                ready,
                active: Mutex::new(HashMap::new()),
                renewals_failing_since: Mutex::new(None),
                refused_writes: std::sync::atomic::AtomicU64::new(0),
                parsed: Mutex::new(HashMap::new()),
                cannot_drive: Mutex::new(std::collections::HashSet::new()),
                spared: Mutex::new(Vec::new()),
                stopping: std::sync::OnceLock::new(),
                draining: std::sync::atomic::AtomicBool::new(false),
                progress,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The tool bus.
    pub fn bus(&self) -> &ToolBus {
        &self.inner.bus
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store.store
    }

    /// Live progress of the runs this engine drives.
    pub fn subscribe(&self) -> broadcast::Receiver<ProgressUpdate> {
        self.inner.progress.subscribe()
    }

    /// Runs the recovery scan, then opens the gate for new work and starts
    /// the renew and watch loops (HSK-WF-003). Returns the runs it stalled.
    pub async fn boot(&self) -> Result<Vec<Recovered>> {
        let recovered = self.recover().await?;
        self.inner.ready.send_replace(true);
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn({
            let (weak, shutdown) = (weak.clone(), shutdown.clone());
            async move { renew_loop(weak, shutdown).await }
        });
        tokio::spawn(async move { watch_loop(weak, shutdown).await });
        Ok(recovered)
    }

    /// The recovery scan alone, as `steward recover` runs it: stalls every running run whose
    /// lease has run out, and at once every run whose owner is a process of this machine that
    /// has exited (a `kill -9` needs no waiting); a worker's scan hands them to its claims.
    ///
    /// An owner of this machine whose lease ran out and that is stopped is killed first (see
    /// `abandoned`).
    pub async fn recover(&self) -> Result<Vec<Recovered>> {
        let config = &self.inner.config;
        config.check()?;
        let running = self
            .inner
            .store
            .list_runs(RunFilter { state: Some(RunState::Running), limit: None, ..Default::default() })
            .await?;
        let now = self.inner.clock.now();
        // A worker hands what it finds to the claims (its own first): they record the recovery.
        let hand_over = config.handoff == Handoff::Workers;
        let mut scan = Scan { threshold_secs: config.stall_threshold_secs, hand_over, ..Scan::default() };
        for run in running {
            let Some(owner) = run.owner.clone() else { continue };
            match self.abandoned(&run, now).await {
                Some(Abandoned::OwnerExited) => scan.dead_owners.push(owner),
                Some(Abandoned::OwnerKilled) => scan.killed_owners.push(owner),
                Some(Abandoned::NotYet) => scan.spare_owners.push(owner),
                None => {}
            }
        }
        let recovered = self.inner.store.recover_stalled(now, &scan).await?;
        *self.spared() = scan.spare_owners;
        Ok(recovered)
    }

    /// Whether nobody drives a `running` run any more, made sure of: its owner is a process of
    /// this machine that has exited, or one whose lease has run out and that is stopped
    /// (SIGSTOP) and is killed here. Fencing refuses such an owner's late writes to the store,
    /// but left alive a stopped one could still hold the database's write lock (a stopped
    /// SQLite writer blocks every other process) or write files once continued; on one machine
    /// it can be made sure it never writes again. An owner that is merely slow (a busy machine
    /// delayed its renewals) is not killed: its runs are taken over by the lease (the takeover
    /// kills the commands of the attempts it interrupts, `reap_orphans`), and it stops them
    /// itself when its next renewal finds them lost. Never this process.
    async fn abandoned(&self, run: &Run, now: Timestamp) -> Option<Abandoned> {
        let config = &self.inner.config;
        let p = run.owner_process.as_ref().filter(|p| config.owner_process.as_ref() != Some(p))?;
        match process::liveness(p) {
            Liveness::Gone => Some(Abandoned::OwnerExited),
            Liveness::Alive if process::is_stopped(p) => {
                if !steward_store::rules::lease_expired(run, now) {
                    return Some(Abandoned::NotYet);
                }
                process::kill_process(p).await.then_some(Abandoned::OwnerKilled)
            }
            Liveness::Alive | Liveness::Unknown(_) => None,
        }
    }

    /// Waits until the recovery scan has finished: every entry point that
    /// accepts work calls this first.
    pub(crate) async fn accepting(&self) {
        let mut rx = self.inner.ready.subscribe();
        // The sender lives in `inner`, which `self` keeps alive.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Validates a definition and its inputs and records a new `queued` run.
    pub async fn create_run(&self, req: CreateRun) -> Result<Run> {
        self.create(req, None).await
    }

    /// A new run made from run `parent_id` (`steward restart` / `steward fork`): the definition
    /// the parent pinned, the parent's inputs with `inputs` laid over them, in the parent's
    /// workspace, linked to it (`parent_run_id`). With `from`, every completed attempt of a
    /// step that `from` does not lead to is reused: recorded in the new run as completed,
    /// naming the attempt it reuses (`step_attempt_reused`), never run again, so no command or
    /// model call before `from` is paid for twice. Queued for a worker; the parent is
    /// untouched.
    pub async fn fork(
        &self,
        parent_id: &str,
        from: Option<&str>,
        inputs: Map<String, Value>,
        actor_id: &str,
    ) -> Result<Run> {
        self.accepting().await;
        let parent = self.inner.store.get_run(parent_id).await?;
        let source = self.inner.store.get_definition(&parent.definition_hash).await?;
        let wf = workflow::parse(&source).map_err(Error::Definition)?;
        let reused = match from {
            None => Vec::new(),
            Some(step) => {
                let Some(i) = wf.step_index(step) else {
                    let steps: Vec<&str> = wf.steps.iter().map(|s| s.id.as_str()).collect();
                    return Err(Error::Contract(format!(
                        "run `{parent_id}` has no step `{step}` to restart from (its steps: {})",
                        steps.join(", ")
                    )));
                };
                let again = steward_core::schedule::downstream(&wf, i);
                let attempts = self.inner.store.list_attempts(parent_id).await?;
                attempts
                    .iter()
                    .filter(|a| a.status == AttemptStatus::Completed)
                    .filter(|a| wf.step_index(&a.step_id).is_some_and(|j| !again[j]))
                    .map(|a| steward_store::ReusedAttempt {
                        step_id: a.step_id.clone(),
                        attempt: a.attempt,
                        visit: a.visit,
                        input: a.input.clone(),
                        output: a.output.clone(),
                        with_issues: a.with_issues,
                        routes: a.routes.clone(),
                        from: a.idempotency_key.clone(),
                    })
                    .collect()
            }
        };
        // The parent's inputs as they were given (a secret one opened, to be sealed again for
        // the new run), with the new ones laid over them.
        let (mut given, _) = self.secrets_open(&parent)?;
        given.extend(inputs);
        let req = CreateRun {
            source,
            inputs: given,
            workdir: parent.workdir.clone(),
            actor_id: actor_id.to_owned(),
            contract: parent.contract.clone(),
        };
        let lineage = steward_store::Lineage { parent_run_id: parent.run_id.clone(), reused };
        self.create(req, Some(lineage)).await
    }

    async fn create(&self, req: CreateRun, lineage: Option<steward_store::Lineage>) -> Result<Run> {
        self.accepting().await;
        let wf = workflow::parse(&req.source).map_err(Error::Definition)?;
        // DG-JOB-07: checked here, and again at dispatch (`startable`).
        steward_core::job::check_job(&req.contract, &wf).map_err(|e| Error::Contract(e.to_string()))?;
        let inputs = steward_core::inputs::resolve(&wf, &req.inputs).map_err(Error::Inputs)?;
        let refused = self.inner.bus.preflight(&wf, wf.profile(), std::path::Path::new(&req.workdir));
        if !refused.is_empty() {
            return Err(Error::Refused(refused));
        }
        let now = self.inner.clock.now();
        let run_id = new_run_id(now);
        // Issue 11: a secret input reaches the store sealed, never in clear.
        let inputs = self.inner.config.sealer.seal_inputs(&run_id, &wf, inputs)?;
        let run = NewRun {
            run_id,
            workflow_id: wf.id.clone(),
            workflow_version: wf.version,
            definition_hash: workflow::definition_hash(&req.source),
            definition_source: req.source,
            inputs,
            workdir: req.workdir,
            job_id: self.inner.ids.next_id(),
            trace_id: self.inner.ids.next_id(),
            contract: req.contract,
            actor: Actor::Human,
            actor_id: req.actor_id,
            now,
            lineage,
        };
        Ok(self.inner.store.create_run(run).await?)
    }

    /// Starts a `queued` run in this process (claiming it) and drives it until it stops
    /// running. If a worker claimed it first, that is [`Error::RunningElsewhere`].
    pub async fn start(&self, run_id: &str) -> Result<Run> {
        self.accepting().await;
        let run = self.inner.store.get_run(run_id).await?;
        if run.state != RunState::Queued {
            return Err(Error::WrongState {
                run_id: run.run_id,
                state: run.state,
                hint: "only a queued run can be started; use `steward resume` for a stalled one",
            });
        }
        // A secret input this process cannot open leaves the run queued for one that can.
        self.secrets_open(&run)?;
        self.take(run_id).await
    }

    /// Claims one run for this process and drives it; [`Error::RunningElsewhere`] if another
    /// holds it (a worker was quicker), or the state it is in if it is not claimable.
    pub(crate) async fn take(&self, run_id: &str) -> Result<Run> {
        match self.claim(Some(run_id), 1, &[], false).await?.pop() {
            Some(claimed) => self.drive_claimed(claimed).await,
            None => {
                let run = self.inner.store.get_run(run_id).await?;
                match run.state {
                    RunState::Running => Err(self.running_elsewhere(run)),
                    state => Err(Error::WrongState { run_id: run.run_id, state, hint: "it cannot be driven now" }),
                }
            }
        }
    }

    /// Claims runs for this process with its lease length.
    pub(crate) async fn claim(
        &self,
        run_id: Option<&str>,
        limit: u32,
        workdirs: &[String],
        resume_stalled: bool,
    ) -> Result<Vec<Claimed>> {
        let config = &self.inner.config;
        let claim = Claim {
            owner: config.owner(),
            lease_ms: config.lease_ms(),
            limit,
            run_id: run_id.map(str::to_owned),
            workdirs: workdirs.to_vec(),
            resume_stalled,
            spare_owners: self.spared().clone(),
            now: self.inner.clock.now(),
        };
        Ok(self.inner.store.claim(claim).await?)
    }

    /// Drives a run this process just claimed, after what every takeover owes: a definition,
    /// inputs and contract that still hold (else it fails), a recovery budget not spent (else
    /// it is poisoned, DG-WF-12), and nothing a dead engine left running that could overlap
    /// the retry of its step (killed first, design decision 5).
    pub(crate) async fn drive_claimed(&self, claimed: Claimed) -> Result<Run> {
        let run = claimed.run;
        let lease = Lease { run_id: run.run_id.clone(), epoch: run.lease_epoch };
        // Renewed from now on: reaping a dead engine's commands may take a while.
        let (halt, guard) = self.register(&lease);
        // A secret that cannot be opened leaves the run as it was, for a process with the key.
        if let Err(e) = self.secrets_open(&run) {
            self.inner
                .cannot_drive
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(run.run_id.clone());
            self.hand_back(&lease, &e.to_string()).await;
            return Err(e);
        }
        let wf = match self.startable(&run).await {
            Ok(wf) => wf,
            Err(reason) => return self.fail_held(&lease, &reason).await,
        };
        let attempts = self.inner.store.list_attempts(&run.run_id).await?;
        let reaped = self.reap_orphans(&attempts, &[AttemptStatus::Interrupted]).await;
        let mut c = self.held(&lease, Actor::System);
        c.events = reaped;
        if run.recoveries > wf.limits.max_recoveries {
            // DG-WF-12: a run whose engine keeps dying under it is not retried again.
            let reason = format!(
                "recovered {} times after its engine stopped, more than limits.max_recoveries ({}): poisoned, not retried",
                run.recoveries, wf.limits.max_recoveries
            );
            c.transition =
                Some(Transition { to: RunState::Poisoned, cause: TransitionCause::Engine, reason: reason.clone() });
            c.summary = Some(format!("poisoned: {reason}"));
            self.inner.store.commit(c).await?;
            return Ok(self.inner.store.get_run(&run.run_id).await?);
        }
        if !c.events.is_empty() {
            self.inner.store.commit(c).await?;
        }
        // The driver starts from what was just read (the commit above added events alone)
        // instead of reading the run again.
        self.drive((run, wf, attempts), lease, halt, guard).await
    }

    /// Gives a claimed run back, untouched, for another process to take after a lease's time.
    async fn hand_back(&self, lease: &Lease, why: &str) {
        let mut c = self.held(lease, Actor::System);
        c.release = Some(steward_store::Release { after_ms: self.inner.config.lease_ms(), reason: why.to_owned() });
        let _ = self.inner.store.commit(c).await;
    }

    /// Fails a run this process holds that cannot start (P09-T03).
    async fn fail_held(&self, lease: &Lease, reason: &str) -> Result<Run> {
        let mut c = self.held(lease, Actor::System);
        let reason = format!("engine start failed: {reason}");
        c.finish_running_as = Some(AttemptStatus::Cancelled);
        c.transition =
            Some(Transition { to: RunState::Failed, cause: TransitionCause::Engine, reason: reason.clone() });
        c.summary = Some(reason);
        self.inner.store.commit(c).await?;
        Ok(self.inner.store.get_run(&lease.run_id).await?)
    }

    /// An empty commit that lands only while this process holds `lease`.
    pub(crate) fn held(&self, lease: &Lease, actor: Actor) -> Commit {
        Commit::new(&lease.run_id, Expect::held(lease.epoch), self.inner.clock.now(), actor, &self.inner.config.owner)
    }

    pub(crate) fn running_elsewhere(&self, run: Run) -> Error {
        let now = self.inner.clock.now();
        let age_secs = run.heartbeat_at.map_or(i64::MAX, |h| now.since(h) / 1000);
        Error::RunningElsewhere {
            run_id: run.run_id,
            owner: run.owner.unwrap_or_else(|| "another process".into()),
            age_secs,
        }
    }

    /// Continues a stalled (or queued) run: the interrupted attempts are recorded as
    /// interrupted, completed steps are not run again, and the run is driven here until it
    /// stops running. The person's decision is one write ([`Engine::record_resume`]); this
    /// process then claims it like any worker would. A `running` run nobody holds, or whose
    /// holder's lease ran out, is claimed at once.
    pub async fn resume(&self, run_id: &str, actor_id: &str) -> Result<Run> {
        let run = self.record_resume(run_id, actor_id).await?;
        match run.state {
            RunState::Queued => self.start(run_id).await,
            _ => self.take(run_id).await,
        }
    }

    /// A person's decision to continue a stalled run, as one write: its interrupted attempts
    /// are recorded as interrupted and it goes back to `running`, held by nobody, for any
    /// worker (or [`Engine::resume`]) to claim. A queued or running run is left as it is.
    /// Returns the run as it is afterwards; nothing is driven here.
    pub async fn record_resume(&self, run_id: &str, actor_id: &str) -> Result<Run> {
        self.accepting().await;
        let run = self.inner.store.get_run(run_id).await?;
        match run.state {
            RunState::Queued | RunState::Running => return Ok(run),
            RunState::Stalled => {}
            RunState::AwaitingUser => {
                return Err(Error::WrongState {
                    run_id: run.run_id,
                    state: run.state,
                    hint: "it waits for a person: answer a gate with `steward gate RUN continue|abort|skip`, an approval with `steward approve|reject RUN STEP`",
                });
            }
            finished => {
                return Err(Error::WrongState {
                    run_id: run.run_id,
                    state: finished,
                    hint: "a finished run cannot be resumed; start a new run instead",
                });
            }
        }
        self.secrets_open(&run)?;
        let mut c = self.commit(&run.run_id, run.state, Actor::Human);
        c.actor_id = actor_id.to_owned();
        c.finish_running_as = Some(AttemptStatus::Interrupted);
        c.transition = Some(Transition {
            to: RunState::Running,
            cause: TransitionCause::Operator,
            reason: format!("resumed from {} by {actor_id}", run.state),
        });
        c.summary = Some(format!("workflow {} resumed", run.workflow_id));
        self.inner.store.commit(c).await?;
        Ok(self.inner.store.get_run(run_id).await?)
    }

    /// Kills what a dead engine's commands left running, before their steps are retried or
    /// their run ends (design decision 5): the command of each step's latest attempt, if that
    /// attempt is in one of `statuses` and recorded its process group. Each group found alive
    /// is killed like a timed-out one and an `attempt_process_reaped` event returned to
    /// commit. A group on another machine (or pid namespace) cannot be checked from here: it is
    /// recorded as `attempt_process_unreachable`, and the run goes on, because the run was taken
    /// from a holder whose lease ran out, and a sandboxed command dies with its engine (see
    /// `steward_tools::sandbox::ENGINE_PID`) or is stopped by it once it finds its lease lost.
    async fn reap_orphans(&self, attempts: &[Attempt], statuses: &[AttemptStatus]) -> Vec<NewEvent> {
        let grace = self.inner.bus.policy().kill_grace;
        let mut events = Vec::new();
        for a in crate::drive::latest_per_step(attempts) {
            let Some(p) = a.process.as_ref().filter(|_| statuses.contains(&a.status)) else {
                continue;
            };
            let (signal, processes) = match process::reap(p, grace).await {
                Reaped::Gone => continue,
                Reaped::Killed { signal, processes } => (signal, processes),
                Reaped::Unreachable(why) => {
                    let body = serde_json::json!({
                        "step_id": a.step_id,
                        "attempt": a.attempt,
                        "pid": p.pid,
                        "host": p.host,
                        "reason": format!("{why}; its engine's lease ran out, and a sandboxed command ends with its engine"),
                    });
                    events.push(NewEvent {
                        actor: Actor::System,
                        actor_id: self.inner.config.owner.clone(),
                        step_id: Some(a.step_id.clone()),
                        payload: Payload::recorded("attempt_process_unreachable", body),
                    });
                    continue;
                }
            };
            let body = serde_json::json!({
                "step_id": a.step_id,
                "attempt": a.attempt,
                "pid": p.pid,
                "host": p.host,
                "signal": signal.as_str(),
                "processes": processes,
                "reason": "its engine stopped while it ran; killed before the run goes on",
            });
            events.push(NewEvent {
                actor: Actor::System,
                actor_id: self.inner.config.owner.clone(),
                step_id: Some(a.step_id.clone()),
                payload: Payload::recorded("attempt_process_reaped", body),
            });
        }
        events
    }

    /// Answers a run that waits for a person (a hard gate or a pause point) and drives it here
    /// ([`Engine::record_gate`], then a claim like any worker's).
    pub async fn gate(
        &self,
        run_id: &str,
        actor_id: &str,
        decision: HumanDecision,
        reason: Option<&str>,
    ) -> Result<Run> {
        self.record_gate(run_id, actor_id, decision, reason).await?;
        self.take(run_id).await
    }

    /// A person's answer to a run that waits for them, as one write: the answer is set on each
    /// waiting attempt (the store records `human_decision` with it, once; of two answers that
    /// race, the second is refused with `Conflict`) and the run goes back to `running`, held
    /// by nobody. The waiting steps start a fresh attempt that reads the answer; `abort` fails
    /// them. Returns the run as it is afterwards; nothing is driven here.
    pub async fn record_gate(
        &self,
        run_id: &str,
        actor_id: &str,
        decision: HumanDecision,
        reason: Option<&str>,
    ) -> Result<Run> {
        self.accepting().await;
        let run = self.inner.store.get_run(run_id).await?;
        if run.state != RunState::AwaitingUser {
            return Err(Error::WrongState {
                run_id: run.run_id,
                state: run.state,
                hint: "only a run waiting for a person (awaiting_user) takes a gate decision",
            });
        }
        if decision.decides_approval() {
            return Err(Error::Decision(format!(
                "a gate takes continue or abort; `{decision}` decides an approval step: `steward {decision} RUN STEP`"
            )));
        }
        self.secrets_open(&run)?;
        let wf = self.workflow(&run).await?;
        let attempts = self.inner.store.list_attempts(run_id).await?;
        let mut c = self.commit(&run.run_id, run.state, Actor::Human);
        c.actor_id = actor_id.to_owned();
        // Approvals waiting beside the gate are decided on their own (`record_approval`).
        let gates = crate::drive::waiting(&attempts).into_iter().filter(|a| {
            !matches!(wf.step(&a.step_id).map(|s| &s.kind), Some(steward_core::workflow::StepKind::Approval(_)))
        });
        for a in gates {
            let pause = a.output.as_ref().map(|o| &o["pause"]);
            c.answers.push(Answer {
                step_id: a.step_id.clone(),
                attempt: a.attempt,
                decision,
                gate: pause.and_then(|p| p["kind"].as_str()).unwrap_or("gate").to_owned(),
                reason: reason.map(str::to_owned),
                fields: serde_json::Map::new(),
            });
        }
        if c.answers.is_empty() {
            return Err(Error::Decision(format!(
                "run `{run_id}` waits only for approvals: decide them with `steward approve` or `steward reject`"
            )));
        }
        c.transition = Some(Transition {
            to: RunState::Running,
            cause: TransitionCause::Operator,
            reason: format!("{} by {actor_id}", decision.as_str()),
        });
        c.summary = Some(format!("{}: {} by {actor_id}", run.workflow_id, decision.as_str()));
        self.inner.store.commit(c).await?;
        Ok(self.inner.store.get_run(run_id).await?)
    }

    /// Cancels a run that has not finished. Steps running in this process are
    /// stopped at once; a process driving it elsewhere stops them when its
    /// watch notices (within `watch_interval`).
    pub async fn cancel(&self, run_id: &str, actor_id: &str) -> Result<Run> {
        let run = self.inner.store.get_run(run_id).await?;
        if run.state.is_terminal() {
            return Err(Error::WrongState { run_id: run.run_id, state: run.state, hint: "there is nothing to cancel" });
        }
        // Nobody drives a stalled run, or one whose engine has died or stopped answering: its
        // leftover commands are this command's to stop.
        let now = self.inner.clock.now();
        let driverless = run.state == RunState::Stalled
            || (run.state == RunState::Running
                && (steward_store::rules::lease_expired(&run, now)
                    || matches!(
                        self.abandoned(&run, now).await,
                        Some(Abandoned::OwnerExited | Abandoned::OwnerKilled)
                    )));
        let reaped = if driverless {
            let attempts = self.inner.store.list_attempts(run_id).await?;
            self.reap_orphans(&attempts, &[AttemptStatus::Interrupted, AttemptStatus::Running]).await
        } else {
            Vec::new()
        };
        let mut events = reaped;
        events.extend(self.cancel_jobs(run_id).await);
        let mut c = self.commit(&run.run_id, run.state, Actor::Human);
        c.actor_id = actor_id.to_owned();
        c.events = events;
        c.finish_running_as = Some(AttemptStatus::Cancelled);
        c.transition = Some(Transition {
            to: RunState::Cancelled,
            cause: TransitionCause::Operator,
            reason: format!("cancelled by {actor_id}"),
        });
        c.summary = Some("cancelled by command".into());
        self.inner.store.commit(c).await?;
        if let Some(d) = self.active().get(run_id) {
            d.halt.stop(Stop::Cancelled);
        }
        Ok(self.inner.store.get_run(run_id).await?)
    }

    /// The micro-task jobs of a run being cancelled that have not ended: each is marked cancelled
    /// in its documents, and gets its MT-011 (`micro_task_loop_cancelled`) to record with the
    /// cancel, whether its loop runs somewhere or the run waits at a gate with no loop at all.
    async fn cancel_jobs(&self, run_id: &str) -> Vec<NewEvent> {
        let Ok(attempts) = self.inner.store.list_attempts(run_id).await else { return Vec::new() };
        let now = self.inner.clock.now().to_rfc3339();
        let mut events = Vec::new();
        for a in crate::drive::latest_per_step(&attempts) {
            if a.input["type"] != "micro_tasks" {
                continue;
            }
            let Some(job_id) = a.input["job_id"].as_str() else { continue };
            let artifacts = self.inner.bus.artifacts();
            let Ok(Some(wp_id)) = crate::micro_task::cancel_documents(artifacts.as_ref(), job_id, &now).await else {
                continue;
            };
            // Nothing of an unfinished task reaches the workspace: this machine's stages go (a
            // loop that runs here removes them too when it sees the cancel).
            crate::micro_task::remove_stages(job_id);
            let payload = Payload::recorded("micro_task_loop_cancelled", serde_json::json!({"wp_id": wp_id}));
            let actor = steward_core::event_registry::spec_of(payload.event_type())
                .and_then(|s| s.actor)
                .unwrap_or(Actor::System);
            events.push(NewEvent {
                actor,
                actor_id: "micro-task-executor".into(),
                step_id: Some(a.step_id.clone()),
                payload,
            });
        }
        events
    }

    /// Stops every run this process drives because it received `signal`: their commands'
    /// process groups get SIGTERM, then SIGKILL after the grace; each driver records its
    /// stopped attempts as `interrupted` and releases its run to `stalled`, so `steward
    /// resume` continues it at once (and the steps' retry budgets are untouched).
    pub fn interrupt(&self, signal: &'static str) {
        let _ = self.inner.stopping.set(signal);
        for d in self.active().values() {
            d.halt.stop(Stop::Interrupted(signal));
        }
    }

    /// The definition a run can start with, or why it cannot: its definition, inputs or job
    /// contract no longer hold.
    async fn startable(&self, run: &Run) -> std::result::Result<Workflow, String> {
        let wf = self.workflow(run).await.map_err(|e| e.to_string())?;
        steward_core::inputs::resolve(&wf, &run.inputs).map_err(|errs| errs.join("; "))?;
        steward_core::job::check_job(&run.contract, &wf).map_err(|e| e.to_string())?;
        Ok(wf)
    }

    /// The run's inputs with its secret ones opened, and their values. A secret that cannot be
    /// opened (a lost or foreign key) is an error that leaves the run as it is, so that it can
    /// be continued once the key is back; it is never a reason to fail the run.
    pub(crate) fn secrets_open(&self, run: &Run) -> Result<(Map<String, Value>, Vec<Value>)> {
        Ok(self.inner.config.sealer.open_inputs(&run.run_id, &run.inputs)?)
    }

    /// The definition a run pinned, parsed.
    ///
    /// Parsed once per process and definition: a definition is stored under its hash and never
    /// changes, and a worker drives many runs of the same few.
    pub(crate) async fn workflow(&self, run: &Run) -> Result<Workflow> {
        if let Some(wf) = self.parsed().get(&run.definition_hash) {
            return Ok(Workflow::clone(wf));
        }
        let source = self.inner.store.get_definition(&run.definition_hash).await?;
        let wf = Arc::new(workflow::parse(&source).map_err(Error::Definition)?);
        let mut parsed = self.parsed();
        if parsed.len() >= 256 {
            parsed.clear();
        }
        parsed.insert(run.definition_hash.clone(), wf.clone());
        Ok(Workflow::clone(&wf))
    }

    fn spared(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.inner.spared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn parsed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Workflow>>> {
        self.inner.parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn commit(&self, run_id: &str, state: RunState, actor: Actor) -> Commit {
        Commit::new(run_id, Expect::state(state), self.inner.clock.now(), actor, &self.inner.config.owner)
    }

    pub(crate) fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Driving>> {
        // A panic while holding this lock leaves a plain map behind; keep using it.
        self.inner.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn failing_since(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.inner.renewals_failing_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many of its writes the store refused because it no longer held their run: a driver
    /// that lost its lease (cancelled, or taken over after it stopped renewing) and wrote late.
    pub fn refused_writes(&self) -> u64 {
        self.inner.refused_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn note_refused(&self) {
        self.inner.refused_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this process's lease renewals are going through (a worker claims nothing while
    /// they fail).
    pub fn renewals_healthy(&self) -> bool {
        self.failing_since().is_none()
    }
}

/// Renews the leases of the runs this process drives, on the wall clock every
/// `heartbeat_interval`, and stops those it no longer holds (cancelled, released, or claimed
/// by another after its lease ran out).
///
/// A process whose renewals do not go through cannot know whether it still holds anything.
/// Its leases end at the latest one lease after the last renewal that went through was *sent*;
/// half a heartbeat before that, it stops its runs itself (and hands them on if it still held
/// them after all), rather than race whoever recovers them
/// (their writes would be refused anyway; their commands would not). A renewal that hangs is
/// given up at that moment too.
async fn renew_loop<S: Store + Clone>(weak: std::sync::Weak<Inner<S>>, shutdown: CancellationToken) {
    let mut last_ok_sent = std::time::Instant::now();
    let mut next = tokio::time::Instant::now();
    loop {
        let beat = match weak.upgrade() {
            Some(inner) => inner.config.heartbeat_interval,
            None => return,
        };
        // Every `beat` from the last send, however long that renewal took.
        next += beat;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next = next.max(tokio::time::Instant::now() - beat);
        let Some(inner) = weak.upgrade() else { return };
        let engine = Engine { inner };
        let active: Vec<(String, Driving)> = engine.active().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let config = &engine.inner.config;
        let lease = Duration::from_millis(config.lease_ms());
        // Half a heartbeat before the leases could have run out: time to stop the commands.
        let fence_at = lease.saturating_sub(config.heartbeat_interval / 2);
        if active.is_empty() {
            last_ok_sent = std::time::Instant::now();
            *engine.failing_since() = None;
            continue;
        }
        let sent = std::time::Instant::now();
        let leases: Vec<Lease> = active.iter().map(|(id, d)| Lease { run_id: id.clone(), epoch: d.epoch }).collect();
        let budget = fence_at.saturating_sub(last_ok_sent.elapsed());
        let renewal = engine.inner.store.renew(&leases, config.lease_ms(), engine.inner.clock.now());
        let lost: Vec<String> = match tokio::time::timeout(budget, renewal).await {
            Ok(Ok(lost)) => {
                last_ok_sent = sent;
                *engine.failing_since() = None;
                lost
            }
            Ok(Err(_)) | Err(_) => {
                engine.failing_since().get_or_insert(sent);
                if last_ok_sent.elapsed() >= fence_at {
                    active.iter().map(|(id, _)| id.clone()).collect()
                } else {
                    Vec::new()
                }
            }
        };
        for (id, d) in &active {
            if lost.contains(id) {
                d.halt.stop(Stop::TakenAway);
            }
        }
    }
}

/// Looks at each run this process drives every `watch_interval` and stops those it no longer
/// holds, so that a cancel elsewhere stops their steps within that interval (renewals alone
/// would notice only at the next heartbeat).
async fn watch_loop<S: Store + Clone>(weak: std::sync::Weak<Inner<S>>, shutdown: CancellationToken) {
    loop {
        let watch = match weak.upgrade() {
            Some(inner) => inner.config.watch_interval,
            None => return,
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(watch) => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        let engine = Engine { inner };
        let active: Vec<(String, Driving)> = engine.active().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, d) in &active {
            let lease = Lease { run_id: id.clone(), epoch: d.epoch };
            if let Ok(run) = engine.inner.store.get_run(id).await
                && !steward_store::rules::holds(&run, &lease)
            {
                d.halt.stop(Stop::TakenAway);
            }
        }
    }
}
