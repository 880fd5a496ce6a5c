//! The engine's entry points, recovery gate and heartbeat loop.

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
use steward_store::{Attempt, Commit, Expect, NewRun, Owner, Recovered, Run, RunFilter, Scan, Store, Transition};
use steward_tools::bus::{Refusal, ToolBus};
use steward_tools::process::{self, Liveness, Reaped};

use crate::clock::{Clock, new_run_id};
use crate::halt::{Halt, Stop};
use crate::micro_task::HumanDecision;
use crate::retry::{RetryPolicy, Retrying};
use crate::secrets::Sealer;

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
    /// A command a dead engine left running cannot be checked (or killed) from here, so
    /// retrying its step could run it twice at once.
    #[error(
        "run `{run_id}`: the command of step `{step_id}` (attempt {attempt}) may still run: {why}; resume the run where it ran"
    )]
    Orphan {
        /// The run.
        run_id: String,
        /// The step.
        step_id: String,
        /// Its attempt.
        attempt: u32,
        /// Why it cannot be checked.
        why: String,
    },
    /// Another live process is executing the run.
    #[error(
        "run `{run_id}` is being executed by {owner} (last heartbeat {age_secs}s ago); if that process has stopped, the run can be resumed once its heartbeat is older than the stall threshold"
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
}

/// Tuning of one engine process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This process's identity, recorded as the owner of the runs it executes.
    pub owner: String,
    /// How often running runs renew their heartbeat (design decision 5: 5 s).
    pub heartbeat_interval: Duration,
    /// How often the engine checks whether its runs were cancelled elsewhere.
    pub watch_interval: Duration,
    /// A running run whose heartbeat is older than this is stalled (30 s); at least
    /// [`steward_core::liveness::MIN_STALL_FACTOR`] heartbeats.
    pub stall_threshold_secs: u64,
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
}

impl EngineConfig {
    /// Defaults for a process named `owner`.
    pub fn new(owner: String) -> EngineConfig {
        EngineConfig {
            owner,
            heartbeat_interval: Duration::from_secs(5),
            watch_interval: Duration::from_millis(500),
            stall_threshold_secs: 30,
            owner_process: process::current(),
            store_retry: RetryPolicy::default(),
            env: std::collections::BTreeMap::new(),
            sealer: Arc::new(Sealer::ephemeral()),
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
    /// Runs this process is driving, with the switch that stops their steps.
    pub(crate) active: Mutex<HashMap<String, Halt>>,
    /// The signal this engine is stopping on, once it is: a run it starts driving after that
    /// is stopped at once.
    pub(crate) stopping: std::sync::OnceLock<&'static str>,
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
                stopping: std::sync::OnceLock::new(),
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
    /// the heartbeat loop (HSK-WF-003). Returns the runs it stalled.
    pub async fn boot(&self) -> Result<Vec<Recovered>> {
        let recovered = self.recover().await?;
        self.inner.ready.send_replace(true);
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move { heartbeat_loop(weak, shutdown).await });
        Ok(recovered)
    }

    /// The recovery scan alone, as `steward recover` runs it: stalls every running run whose
    /// heartbeat is older than the threshold, and at once every run whose owner is a process
    /// of this machine that has exited (a `kill -9` needs no waiting).
    ///
    /// An owner of this machine that is alive but renewed no heartbeat for longer than the
    /// threshold is killed first (see `abandoned`).
    pub async fn recover(&self) -> Result<Vec<Recovered>> {
        let config = &self.inner.config;
        config.check()?;
        let running = self.inner.store.list_runs(RunFilter { state: Some(RunState::Running), limit: None }).await?;
        let now = self.inner.clock.now();
        let mut scan = Scan { threshold_secs: config.stall_threshold_secs, ..Scan::default() };
        for run in running {
            let Some(owner) = run.owner.clone() else { continue };
            match self.abandoned(&run, now).await {
                Some(Abandoned::OwnerExited) => scan.dead_owners.push(owner),
                Some(Abandoned::OwnerKilled) => scan.killed_owners.push(owner),
                None => {}
            }
        }
        Ok(self.inner.store.recover_stalled(now, &scan).await?)
    }

    /// Whether nobody drives a `running` run any more, made sure of: its owner is a process of
    /// this machine that has exited, or one that is alive but renewed no heartbeat for longer
    /// than the stall threshold (stopped, or hung) and is killed here. Fencing refuses such an
    /// owner's late writes to the store, but left alive it could still hold the database's
    /// write lock (a SIGSTOPped writer blocks every other process) or write files outside it;
    /// on one machine it can be made sure it never writes again. Never this process.
    async fn abandoned(&self, run: &Run, now: Timestamp) -> Option<Abandoned> {
        let config = &self.inner.config;
        let p = run.owner_process.as_ref().filter(|p| config.owner_process.as_ref() != Some(p))?;
        match process::liveness(p) {
            Liveness::Gone => Some(Abandoned::OwnerExited),
            Liveness::Alive if steward_store::rules::stale(run.heartbeat_at, now, config.stall_threshold_secs) => {
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
        };
        Ok(self.inner.store.create_run(run).await?)
    }

    /// Starts a `queued` run and drives it until it stops running.
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
        if let Some(failed) = self.begin(&run).await? {
            return Ok(failed);
        }
        self.drive(run_id).await
    }

    /// Moves a queued run to `running`, owned by this process. A run that
    /// cannot start fails with the reason instead (P09-T03), and is returned.
    pub(crate) async fn begin(&self, run: &Run) -> Result<Option<Run>> {
        self.secrets_open(run)?;
        if let Err(reason) = self.startable(run).await {
            return self.fail_start(run, RunState::Queued, &reason).await.map(Some);
        }
        let mut c = self.commit(&run.run_id, RunState::Queued, Actor::System);
        c.transition =
            Some(Transition { to: RunState::Running, cause: TransitionCause::Engine, reason: "started".into() });
        c.set_owner = Some(self.inner.config.owner());
        c.summary = Some(format!("workflow {} started", run.workflow_id));
        self.inner.store.commit(c).await?;
        Ok(None)
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

    /// Continues a stalled (or queued) run: the interrupted
    /// attempts are recorded as interrupted, completed steps are not run
    /// again, and the run is driven until it stops running.
    pub async fn resume(&self, run_id: &str, actor_id: &str) -> Result<Run> {
        self.accepting().await;
        let run = self.inner.store.get_run(run_id).await?;
        match run.state {
            RunState::Queued => return self.start(run_id).await,
            RunState::Running => return Err(self.running_elsewhere(run)),
            RunState::Stalled => {}
            RunState::AwaitingUser => {
                return Err(Error::WrongState {
                    run_id: run.run_id,
                    state: run.state,
                    hint: "it waits for a person: answer with `steward gate RUN continue|abort`",
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
        let wf = match self.startable(&run).await {
            Ok(wf) => wf,
            Err(reason) => return self.fail_start(&run, run.state, &reason).await,
        };
        // Nothing a dead engine left running may overlap the retry of its step. Only attempts
        // already recorded as interrupted are its: a running one belongs to whoever resumed the
        // run meanwhile (this resume will then lose its commit), and is not this one to kill.
        let attempts = self.inner.store.list_attempts(run_id).await?;
        let reaped = self.reap_orphans(&run, &attempts, &[AttemptStatus::Interrupted]).await?;
        let mut c = self.commit(&run.run_id, run.state, Actor::Human);
        c.actor_id = actor_id.to_owned();
        c.events = reaped;
        c.finish_running_as = Some(AttemptStatus::Interrupted);
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
            return Ok(self.inner.store.get_run(run_id).await?);
        }
        c.transition = Some(Transition {
            to: RunState::Running,
            cause: TransitionCause::Operator,
            reason: format!("resumed from {}", run.state),
        });
        c.set_owner = Some(self.inner.config.owner());
        c.summary = Some(format!("workflow {} resumed", run.workflow_id));
        self.inner.store.commit(c).await?;
        self.drive(run_id).await
    }

    /// Kills what a dead engine's commands left running, before their steps are retried or
    /// their run ends (design decision 5): the command of each step's latest attempt, if that
    /// attempt is in one of `statuses` and recorded its process group. Each group found alive
    /// is killed like a timed-out one and an `attempt_process_reaped` event returned to
    /// commit. A group that cannot be checked from here refuses the takeover.
    async fn reap_orphans(&self, run: &Run, attempts: &[Attempt], statuses: &[AttemptStatus]) -> Result<Vec<NewEvent>> {
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
                    return Err(Error::Orphan {
                        run_id: run.run_id.clone(),
                        step_id: a.step_id.clone(),
                        attempt: a.attempt,
                        why,
                    });
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
        Ok(events)
    }

    /// Answers a run that waits for a person (a hard gate or a pause point): records the
    /// `human_decision` for each waiting step, takes the run back to `running`, and drives it.
    /// The waiting steps start a fresh attempt that reads the answer; `abort` fails them.
    pub async fn gate(
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
        self.secrets_open(&run)?;
        if let Err(reason) = self.startable(&run).await {
            return self.fail_start(&run, run.state, &reason).await;
        }
        let attempts = self.inner.store.list_attempts(run_id).await?;
        let mut c = self.commit(&run.run_id, run.state, Actor::Human);
        c.actor_id = actor_id.to_owned();
        for a in crate::drive::waiting(&attempts) {
            let pause = a.output.as_ref().map(|o| &o["pause"]);
            let gate = pause.and_then(|p| p["kind"].as_str()).unwrap_or("gate");
            let mut body = serde_json::json!({"decision": decision.as_str(), "gate": gate, "decided_by": actor_id});
            if let Some(r) = reason {
                body["reason"] = serde_json::json!(r);
            }
            c.events.push(NewEvent {
                actor: Actor::Human,
                actor_id: actor_id.to_owned(),
                step_id: Some(a.step_id.clone()),
                payload: Payload::recorded("human_decision", body),
            });
        }
        c.transition = Some(Transition {
            to: RunState::Running,
            cause: TransitionCause::Operator,
            reason: format!("{} by {actor_id}", decision.as_str()),
        });
        c.set_owner = Some(self.inner.config.owner());
        c.summary = Some(format!("{}: {} by {actor_id}", run.workflow_id, decision.as_str()));
        self.inner.store.commit(c).await?;
        self.drive(run_id).await
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
        let driverless = run.state == RunState::Stalled
            || (run.state == RunState::Running && self.abandoned(&run, self.inner.clock.now()).await.is_some());
        let reaped = if driverless {
            let attempts = self.inner.store.list_attempts(run_id).await?;
            self.reap_orphans(&run, &attempts, &[AttemptStatus::Interrupted, AttemptStatus::Running]).await?
        } else {
            Vec::new()
        };
        let mut c = self.commit(&run.run_id, run.state, Actor::Human);
        c.actor_id = actor_id.to_owned();
        c.events = reaped;
        c.finish_running_as = Some(AttemptStatus::Cancelled);
        c.transition = Some(Transition {
            to: RunState::Cancelled,
            cause: TransitionCause::Operator,
            reason: format!("cancelled by {actor_id}"),
        });
        c.summary = Some("cancelled by command".into());
        self.inner.store.commit(c).await?;
        if let Some(halt) = self.active().get(run_id) {
            halt.stop(Stop::Cancelled);
        }
        Ok(self.inner.store.get_run(run_id).await?)
    }

    /// Stops every run this process drives because it received `signal`: their commands'
    /// process groups get SIGTERM, then SIGKILL after the grace; each driver records its
    /// stopped attempts as `interrupted` and releases its run to `stalled`, so `steward
    /// resume` continues it at once (and the steps' retry budgets are untouched).
    pub fn interrupt(&self, signal: &'static str) {
        let _ = self.inner.stopping.set(signal);
        for halt in self.active().values() {
            halt.stop(Stop::Interrupted(signal));
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

    async fn fail_start(&self, run: &Run, from: RunState, reason: &str) -> Result<Run> {
        let mut c = self.commit(&run.run_id, from, Actor::System);
        let reason = format!("engine start failed: {reason}");
        c.transition =
            Some(Transition { to: RunState::Failed, cause: TransitionCause::Engine, reason: reason.clone() });
        c.summary = Some(reason);
        self.inner.store.commit(c).await?;
        Ok(self.inner.store.get_run(&run.run_id).await?)
    }

    /// The definition a run pinned, parsed.
    pub(crate) async fn workflow(&self, run: &Run) -> Result<Workflow> {
        let source = self.inner.store.get_definition(&run.definition_hash).await?;
        workflow::parse(&source).map_err(Error::Definition)
    }

    pub(crate) fn commit(&self, run_id: &str, state: RunState, actor: Actor) -> Commit {
        Commit::new(run_id, Expect { state, owner: None }, self.inner.clock.now(), actor, &self.inner.config.owner)
    }

    pub(crate) fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Halt>> {
        // A panic while holding this lock leaves a plain map behind; keep using it.
        self.inner.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Renews heartbeats of active runs and stops runs that were taken away.
async fn heartbeat_loop<S: Store + Clone>(weak: std::sync::Weak<Inner<S>>, shutdown: CancellationToken) {
    let mut since_beat = Duration::ZERO;
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
        let active: Vec<(String, Halt)> = engine.active().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if active.is_empty() {
            since_beat = Duration::ZERO;
            continue;
        }
        since_beat += watch;
        let owner = engine.inner.config.owner.clone();
        let lost: Vec<String> = if since_beat >= engine.inner.config.heartbeat_interval {
            since_beat = Duration::ZERO;
            let ids: Vec<String> = active.iter().map(|(id, _)| id.clone()).collect();
            engine.inner.store.heartbeat(&owner, &ids, engine.inner.clock.now()).await.unwrap_or_default()
        } else {
            let mut lost = Vec::new();
            for (id, _) in &active {
                if let Ok(run) = engine.inner.store.get_run(id).await
                    && (run.state != RunState::Running || run.owner.as_deref() != Some(owner.as_str()))
                {
                    lost.push(id.clone());
                }
            }
            lost
        };
        for (id, halt) in &active {
            if lost.contains(id) {
                halt.stop(Stop::TakenAway);
            }
        }
    }
}
