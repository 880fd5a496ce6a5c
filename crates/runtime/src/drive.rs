//! Driving a run: plan from the persisted view, commit, execute, record, repeat.
//!
//! [`Engine::drive`] loops until the run stops running, starting steps as
//! soon as the planner allows and folding every completion that arrived
//! meanwhile into the next commit. [`Engine::execute_next`] does one round
//! of the same mechanism and returns. Both build their commits through
//! [`RunCtx`], whose view of the run is what has been committed, plus the ends of the commit
//! it is building (a driver whose commit fails stops and never reads the view again). The view
//! keeps the planner's [`Tally`] beside the attempts, updated attempt by attempt, so a turn
//! costs what it changes, not the run's history.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use steward_core::Timestamp;
use steward_core::event::Actor;
use steward_core::schedule::{self, AttemptFact, Plan, Tally, Verdict};
use steward_core::state::{AttemptStatus, RunState, TransitionCause};
use steward_core::workflow::{Decided, Step, StepKind, Workflow};
use steward_store::{Attempt, AttemptFinish, AttemptStart, Commit, Lease, Release, Run, Store, Transition};

use crate::engine::{Driving, Engine, Error, Handoff, ProgressUpdate, Result};
use crate::halt::{Halt, Stop};
use crate::micro_task::job::{CommitFn, FenceFn, ReadFn, RunWriter};
use crate::step::{self, AttemptRecorder, Scope, StepDone, Work};
use steward_core::event::NewEvent;
use steward_tools::bus::ToolBus;

/// Removes a run from the active set when its driver ends, however it ends.
pub(crate) struct ActiveGuard<'a, S: Store + Clone> {
    engine: &'a Engine<S>,
    run_id: String,
}

impl<S: Store + Clone> Drop for ActiveGuard<'_, S> {
    fn drop(&mut self) {
        self.engine.active().remove(&self.run_id);
    }
}

/// A step attempt to execute once its start is committed.
type Spawn = (Step, u32, Work);

/// One run as this process last committed it.
struct RunCtx {
    run: Run,
    /// Its inputs with the secret ones opened: what templates read. Never recorded.
    inputs: serde_json::Map<String, serde_json::Value>,
    /// The tool bus, with a redactor that also knows the run's secret inputs.
    bus: Arc<ToolBus>,
    /// This engine's data directory, absolute (see `Scope::data_dir`).
    data_dir: std::path::PathBuf,
    wf: Workflow,
    attempts: Vec<Attempt>,
    /// The planner's account of `attempts`, kept up to date with them.
    tally: Tally,
    /// When the run started: its timeout counts from here.
    started_at: Timestamp,
    /// When it times out, as of the last plan (see [`RunCtx::deadline_at`]); every use of a
    /// `RunCtx` plans first.
    deadline: Timestamp,
    env: Arc<std::collections::BTreeMap<String, String>>,
    writer: RunWriter,
}

impl RunCtx {
    /// The planner's answer for the committed attempts plus `finished`, which the view takes
    /// now, as the commit that records them will leave it.
    fn plan(&mut self, finished: &mut [StepDone], now: Timestamp) -> Plan {
        for d in finished.iter_mut() {
            if d.finish.status == AttemptStatus::Completed {
                d.finish.routes = schedule::routes_of(&self.wf, &d.finish.step_id, decided(d.finish.output.as_ref()));
            }
        }
        self.take_ends(finished.iter().map(|d| &d.finish), now);
        self.deadline = self.deadline_at(now);
        if now >= self.deadline {
            let reason = format!("workflow run timed out after {}s", self.wf.limits.run_timeout_seconds);
            return Plan {
                start: Vec::new(),
                wake_at: None,
                approvals_waiting: Vec::new(),
                verdict: Verdict::Failed { reason },
            };
        }
        self.tally.plan(&self.wf, now)
    }

    /// Ends the view's running attempts that `ends` name, exactly as the store ends them, and
    /// tells the tally. An attempt already ended is left as it is, so ends may be taken twice.
    fn take_ends<'a>(&mut self, ends: impl IntoIterator<Item = &'a AttemptFinish>, now: Timestamp) {
        for f in ends {
            // From the end, and only as far as the attempt: the attempts in flight are the
            // latest, and an end taken before stops the search there too (a pass that went on
            // would cost every turn the run's whole history).
            if let Some(a) = self.attempts.iter_mut().rev().find(|a| a.attempt == f.attempt && a.step_id == f.step_id)
                && a.status == AttemptStatus::Running
            {
                a.finish(f, now);
                self.tally.apply(&self.wf, &fact(&self.wf, a));
            }
        }
    }

    /// When the run times out: `run_timeout_seconds` after it started, plus the time some step
    /// has waited for a person (an approval may wait for days; the run's own work may not).
    fn deadline_at(&self, now: Timestamp) -> Timestamp {
        self.started_at
            .plus_millis((self.wf.limits.run_timeout_seconds as i64).saturating_mul(1000))
            .plus_millis(self.tally.waited_for_people(now))
    }

    /// The commit that records `finished` and does what `plan` says; the
    /// attempts it starts are returned to be executed after it commits.
    async fn commit_for(
        &mut self,
        plan: &Plan,
        finished: Vec<StepDone>,
        now: Timestamp,
        may_start: bool,
        bus: &ToolBus,
    ) -> (Commit, Vec<Spawn>) {
        let mut c = self.writer.fenced(now);
        let mut spawn = Vec::new();
        // The view takes this commit's ends now (most already at `plan`), as the store will
        // (`applied` finds nothing more to end): steps about to start read their predecessors'
        // outputs from it. A commit that fails ends this driver, which never reads the view again.
        self.take_ends(finished.iter().map(|d| &d.finish), now);
        match &plan.verdict {
            Verdict::Completed { with_issues } => {
                let (to, summary) = if *with_issues {
                    (RunState::CompletedWithIssues, "workflow completed with issues")
                } else {
                    (RunState::Completed, "workflow completed")
                };
                c.transition =
                    Some(Transition { to, cause: TransitionCause::Engine, reason: "all steps completed".into() });
                c.summary = Some(summary.into());
            }
            Verdict::AwaitingUser { steps } => {
                let view = &self.attempts;
                let run_id = &self.run.run_id;
                let why: Vec<String> = steps
                    .iter()
                    .filter_map(|s| view.iter().rev().find(|a| &a.step_id == s))
                    .map(|a| match self.wf.step(&a.step_id).map(|s| &s.kind) {
                        Some(StepKind::Approval(_)) => format!(
                            "approval {0} waits for a decision (`steward approve {run_id} {0}` or `steward reject {run_id} {0}`)",
                            a.step_id
                        ),
                        _ => format!(
                            "step {}: {} (`steward gate {run_id} continue|abort|skip`)",
                            a.step_id,
                            a.error.as_deref().unwrap_or("waiting for a person")
                        ),
                    })
                    .collect();
                let reason = why.join("; ");
                c.transition = Some(Transition {
                    to: RunState::AwaitingUser,
                    cause: TransitionCause::Engine,
                    reason: reason.clone(),
                });
                // The first approval timeout wakes the run by itself (any worker claims it then).
                c.wake_after_ms = plan.wake_at.map(|w| u64::try_from(w.since(now)).unwrap_or(0));
                c.summary = Some(reason);
            }
            Verdict::Failed { reason } => {
                c.transition =
                    Some(Transition { to: RunState::Failed, cause: TransitionCause::Engine, reason: reason.clone() });
                c.summary = Some(format!("failed: {reason}"));
            }
            Verdict::Poisoned { reason } => {
                c.transition =
                    Some(Transition { to: RunState::Poisoned, cause: TransitionCause::Engine, reason: reason.clone() });
                c.summary = Some(format!("poisoned: {reason}"));
            }
            Verdict::Continue if may_start => {
                let scope = Scope {
                    run: &self.run,
                    inputs: &self.inputs,
                    wf: &self.wf,
                    attempts: &self.attempts,
                    bus,
                    data_dir: &self.data_dir,
                    actor_id: &self.writer.owner,
                    env: self.env.clone(),
                    writer: &self.writer,
                };
                for s in &plan.start {
                    let step = &self.wf.steps[s.step_index];
                    let prepared = scope.prepare(step, s.attempt, s.visit).await;
                    c.started.push(AttemptStart {
                        step_id: s.step_id.clone(),
                        attempt: s.attempt,
                        visit: s.visit,
                        input: prepared.input,
                    });
                    spawn.push((step.clone(), s.attempt, prepared.work));
                }
            }
            Verdict::Continue => {}
        }
        if c.summary.is_none() {
            c.summary = match (c.started.last(), finished.last().map(|d| &d.finish)) {
                (Some(s), _) => Some(format!("step {} attempt {} running", s.step_id, s.attempt)),
                (None, Some(f)) => Some(format!("step {} attempt {} {}", f.step_id, f.attempt, f.status)),
                (None, None) => None,
            };
        }
        record_ends(&mut c, finished);
        (c, spawn)
    }

    /// Makes the in-memory view match a commit that the store accepted.
    fn applied(&mut self, c: &Commit) {
        self.take_ends(&c.finished, c.now);
        for s in &c.started {
            let a = Attempt::started(&c.run_id, s, c.now);
            self.tally.apply(&self.wf, &fact(&self.wf, &a));
            self.attempts.push(a);
        }
    }
}

/// How a completed review or approval was decided, as its output says.
fn decided(output: Option<&serde_json::Value>) -> Option<Decided> {
    output.and_then(|o| o.get("decision")).and_then(|v| v.as_str()).and_then(Decided::parse)
}

/// Whether a completed approval was rejected or timed out, so the steps that need it stay put.
fn declined(wf: &Workflow, step_id: &str, status: AttemptStatus, output: Option<&serde_json::Value>) -> bool {
    status == AttemptStatus::Completed
        && matches!(wf.step(step_id).map(|s| &s.kind), Some(StepKind::Approval(_)))
        && decided(output) != Some(Decided::Approved)
}

/// What the planner knows of an attempt.
fn fact<'a>(wf: &Workflow, a: &'a Attempt) -> AttemptFact<'a> {
    AttemptFact {
        answered: a.answer.is_some(),
        with_issues: a.with_issues,
        declined: declined(wf, &a.step_id, a.status, a.output.as_ref()),
        started_at: a.started_at,
        step_id: &a.step_id,
        attempt: a.attempt,
        visit: a.visit,
        status: a.status,
        retryable: a.retryable,
        error: a.error.as_deref(),
        finished_at: a.finished_at,
        routes: &a.routes,
    }
}

/// Every string inside a JSON value.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Adds ended attempts to a commit, each with the events the tool bus returned for it.
fn record_ends(c: &mut Commit, ended: Vec<StepDone>) {
    for done in ended {
        let step_id = Some(done.finish.step_id.clone());
        c.events.extend(done.events.into_iter().map(|payload| NewEvent {
            actor: Actor::System,
            actor_id: "tool-bus".into(),
            step_id: step_id.clone(),
            payload,
        }));
        c.finished.push(done.finish);
    }
}

/// The latest attempt of each step, in the order the steps first started.
pub(crate) fn latest_per_step(attempts: &[Attempt]) -> Vec<&Attempt> {
    let mut last: Vec<&Attempt> = Vec::new();
    for a in attempts {
        match last.iter_mut().find(|l| l.step_id == a.step_id) {
            Some(l) if l.attempt < a.attempt => *l = a,
            Some(_) => {}
            None => last.push(a),
        }
    }
    last
}

/// The attempts that stopped for a person and are still the latest of their step.
pub(crate) fn waiting(attempts: &[Attempt]) -> Vec<&Attempt> {
    let mut last = latest_per_step(attempts);
    last.retain(|a| a.status == AttemptStatus::AwaitingUser);
    last
}

/// Step tasks in flight, remembering which attempt each task runs.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<StepDone>,
    ids: HashMap<tokio::task::Id, (String, u32)>,
}

impl InFlight {
    fn spawn(&mut self, (step, attempt, work): Spawn, bus: Arc<ToolBus>, halt: Halt, recorder: AttemptRecorder) {
        let key = (step.id.clone(), attempt);
        let handle = self.tasks.spawn(async move {
            let mut done = step::execute(&step, attempt, work, &bus, &halt, &recorder).await;
            let why = match halt.why() {
                Some(Stop::Interrupted(signal)) => Some(format!("interrupted: its engine stopped on {signal}")),
                Some(Stop::TakenAway) => Some("interrupted: its engine could not keep the run's lease".to_owned()),
                _ => None,
            };
            if let Some(why) = why
                && matches!(done.finish.status, AttemptStatus::Cancelled | AttemptStatus::Failed)
            {
                // Stopped because its engine is shutting down or lost (or could not keep) the
                // run, not by anyone's choice (or failing as it was being stopped): the step
                // keeps its retries and the run goes on elsewhere.
                done.finish.status = AttemptStatus::Interrupted;
                done.finish.retryable = true;
                done.finish.error = Some(why);
            }
            done
        });
        self.ids.insert(handle.id(), key);
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next attempt to end; a panicked task becomes a failed attempt, not a lost one.
    async fn next(&mut self) -> Option<StepDone> {
        let joined = self.tasks.join_next_with_id().await?;
        Some(self.finish(joined))
    }

    /// Attempts that have already ended, without waiting.
    fn ready(&mut self) -> Vec<StepDone> {
        let mut out = Vec::new();
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            out.push(self.finish(joined));
        }
        out
    }

    async fn all(&mut self) -> Vec<StepDone> {
        let mut out = Vec::new();
        while let Some(f) = self.next().await {
            out.push(f);
        }
        out
    }

    fn finish(&mut self, joined: std::result::Result<(tokio::task::Id, StepDone), tokio::task::JoinError>) -> StepDone {
        match joined {
            Ok((id, f)) => {
                self.ids.remove(&id);
                f
            }
            Err(e) => {
                let (step_id, attempt) = self.ids.remove(&e.id()).unwrap_or_default();
                let why = format!("internal error while running the step: {e}");
                let finish = step::finish(&step_id, attempt, AttemptStatus::Failed, Some(why), false, None);
                StepDone { finish, events: Vec::new() }
            }
        }
    }
}

impl<S: Store + Clone> Engine<S> {
    /// Reads a run this process holds, its definition and its attempts, or fails the run if its
    /// definition no longer parses.
    async fn read_held(&self, lease: &Lease) -> Result<std::result::Result<(Run, Workflow, Vec<Attempt>), Run>> {
        let store = &self.inner.store;
        let run_id = lease.run_id.as_str();
        let run = store.get_run(run_id).await?;
        let wf = match self.workflow(&run).await {
            Ok(wf) => wf,
            Err(e) => {
                let mut c = self.held(lease, Actor::System);
                c.finish_running_as = Some(AttemptStatus::Cancelled);
                let reason = format!("engine start failed: {e}");
                c.transition =
                    Some(Transition { to: RunState::Failed, cause: TransitionCause::Engine, reason: reason.clone() });
                c.summary = Some(reason);
                store.commit(c).await?;
                return Ok(Err(store.get_run(run_id).await?));
            }
        };
        let attempts = store.list_attempts(run_id).await?;
        Ok(Ok((run, wf, attempts)))
    }

    /// What a driver needs of a run this process holds under `lease`: the run as claimed, its
    /// definition and its attempts, which the claim has just read.
    fn load(&self, run: Run, wf: Workflow, attempts: Vec<Attempt>, lease: &Lease) -> Result<RunCtx> {
        let run_id = lease.run_id.as_str();
        let owner = self.inner.config.owner.clone();
        let store = self.inner.store.clone();
        let commit: Arc<CommitFn> = Arc::new({
            let (store, engine) = (store.clone(), self.clone());
            move |c: Commit| {
                let (store, engine) = (store.clone(), engine.clone());
                Box::pin(async move {
                    store.commit(c).await.map(|_| ()).map_err(|e| {
                        if matches!(e, steward_store::Error::Conflict { .. }) {
                            engine.note_refused();
                        }
                        e.to_string()
                    })
                })
            }
        });
        let fence: Arc<FenceFn> = Arc::new({
            let (lease, owner) = (lease.clone(), owner.clone());
            move || {
                let (store, lease, owner) = (store.clone(), lease.clone(), owner.clone());
                Box::pin(async move {
                    let run = store.get_run(&lease.run_id).await.map_err(|e| e.to_string())?;
                    if steward_store::rules::holds(&run, &lease) {
                        Ok(())
                    } else {
                        Err(format!(
                            "run `{}` is {} and no longer held by {owner} under lease epoch {}",
                            lease.run_id, run.state, lease.epoch
                        ))
                    }
                })
            }
        });
        let read: Arc<ReadFn> = Arc::new({
            let (store, run_id) = (self.inner.store.clone(), run_id.to_owned());
            move || {
                let (store, run_id) = (store.clone(), run_id.clone());
                Box::pin(async move { store.list_attempts(&run_id).await.map_err(|e| e.to_string()) })
            }
        });
        let writer = RunWriter {
            commit,
            fence,
            read,
            clock: self.inner.clock.clone(),
            run_id: run_id.to_owned(),
            owner: owner.clone(),
            epoch: lease.epoch,
        };
        let started_at = run.started_at.unwrap_or_else(|| self.inner.clock.now());
        let env = Arc::new(self.inner.config.env.clone());
        let (inputs, secrets) = self.secrets_open(&run)?;
        let bus = if secrets.is_empty() {
            self.inner.bus.clone()
        } else {
            // Everything this run records passes a redactor that knows its secret inputs, in
            // the forms a step sees them: the text a placeholder renders, and every string
            // inside a JSON value.
            let mut values = Vec::new();
            for v in &secrets {
                values.push(steward_core::template::value_text(v));
                strings(v, &mut values);
            }
            Arc::new(self.inner.bus.with_redactor(self.inner.bus.redactor().clone().with_secrets(values)))
        };
        let data_dir = &self.inner.config.data_dir;
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.clone());
        let deadline = started_at; // Set by the first plan.
        let tally = Tally::of(&wf, &attempts.iter().map(|a| fact(&wf, a)).collect::<Vec<_>>());
        Ok(RunCtx { run, inputs, bus, data_dir, wf, attempts, tally, started_at, deadline, env, writer })
    }

    /// Copies the decisions people recorded on the run's waiting attempts since this view was
    /// read (a read that fails is tried again at the next look).
    async fn pick_up_decisions(&self, ctx: &mut RunCtx) {
        let Ok(stored) = self.inner.store.list_attempts(&ctx.run.run_id).await else { return };
        for a in ctx.attempts.iter_mut().filter(|a| a.status == AttemptStatus::AwaitingUser && a.answer.is_none()) {
            if let Some(s) = stored.iter().find(|s| s.step_id == a.step_id && s.attempt == a.attempt) {
                a.answer = s.answer;
                a.answer_detail = s.answer_detail.clone();
                if a.answer.is_some() {
                    ctx.tally.apply(&ctx.wf, &fact(&ctx.wf, a));
                }
            }
        }
    }

    /// Commits `c`; `Ok(None)` when the run was taken away (cancelled or recovered elsewhere).
    async fn record(&self, ctx: &mut RunCtx, c: Commit) -> Result<Option<RunState>> {
        let summary = c.summary.clone();
        match self.inner.store.commit(c.clone()).await {
            Ok(outcome) => {
                ctx.applied(&c);
                if let Some(summary) = summary {
                    let update = ProgressUpdate { run_id: c.run_id.clone(), state: outcome.state, summary };
                    let _ = self.inner.progress.send(update);
                }
                Ok(Some(outcome.state))
            }
            Err(steward_store::Error::Conflict { .. }) => {
                self.note_refused();
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn register(&self, lease: &Lease) -> (Halt, ActiveGuard<'_, S>) {
        let halt = Halt::new();
        let mut active = self.active();
        // Checked under the lock `interrupt` takes, so no run escapes a signal.
        if let Some(signal) = self.inner.stopping.get() {
            halt.stop(Stop::Interrupted(signal));
        }
        if self.inner.draining.load(std::sync::atomic::Ordering::SeqCst) {
            halt.drain();
        }
        active.insert(lease.run_id.clone(), Driving { halt: halt.clone(), epoch: lease.epoch });
        drop(active);
        (halt, ActiveGuard { engine: self, run_id: lease.run_id.clone() })
    }

    fn recorder(&self, ctx: &RunCtx, step_id: &str, attempt: u32) -> AttemptRecorder {
        AttemptRecorder { writer: ctx.writer.clone(), step_id: step_id.to_owned(), attempt }
    }

    /// Records the attempts an interrupt (or a drain) stopped and hands the run back, so that
    /// it is continued at once: to a person (`running` -> `stalled`, for `steward resume`) or,
    /// from a worker, to any worker (still `running`, held by nobody). If the run was taken
    /// away meanwhile, there is nothing of ours to record.
    async fn release(&self, ctx: &mut RunCtx, stopped: Vec<StepDone>, signal: &str) -> Result<()> {
        let mut c = ctx.writer.fenced(self.inner.clock.now());
        record_ends(&mut c, stopped);
        c.finish_running_as = Some(AttemptStatus::Interrupted);
        match self.inner.config.handoff {
            Handoff::Person => {
                let reason =
                    format!("released on {signal}: its engine stopped the commands; `steward resume` continues it");
                c.transition = Some(Transition {
                    to: RunState::Stalled,
                    cause: TransitionCause::Recovery,
                    reason: reason.clone(),
                });
                c.summary =
                    Some(format!("stalled: interrupted ({signal}); resume with `steward resume {}`", ctx.run.run_id));
            }
            Handoff::Workers => {
                let reason = format!("released on {signal} by {}: its worker is stopping", ctx.writer.owner);
                c.summary = Some(format!("waiting for a worker ({reason})"));
                c.release = Some(Release { after_ms: 0, reason });
            }
        }
        self.record(ctx, c).await.map(|_| ())
    }

    /// Hands a run that only waits for a retry's backoff back to the workers, claimable once
    /// `wait_ms` have passed (on the database's clock).
    async fn park(&self, ctx: &mut RunCtx, wait_ms: i64) -> Result<()> {
        let mut c = ctx.writer.fenced(self.inner.clock.now());
        let reason = format!("parked for {:.1}s until a retry is due", wait_ms as f64 / 1000.0);
        c.summary = Some(format!("waiting for a retry ({reason})"));
        c.release = Some(Release { after_ms: u64::try_from(wait_ms).unwrap_or(0), reason });
        self.record(ctx, c).await.map(|_| ())
    }

    /// Drives a `running` run this process holds under `lease` until it is no longer running
    /// here: it ended, waits for a person, was taken away, or was handed back. `run`, `wf` and
    /// `attempts` are the run as claimed, its definition and its attempts.
    ///
    /// The run was registered as this process's (`register`) when it was claimed, so that its
    /// lease is renewed from then on.
    pub(crate) async fn drive(
        &self,
        (run, wf, attempts): (Run, Workflow, Vec<Attempt>),
        lease: Lease,
        halt: Halt,
        _guard: ActiveGuard<'_, S>,
    ) -> Result<Run> {
        let run_id = lease.run_id.as_str();
        let mut ctx = self.load(run, wf, attempts, &lease)?;
        let bus = ctx.bus.clone();
        let mut in_flight = InFlight::default();
        let mut finished: Vec<StepDone> = Vec::new();
        loop {
            let now = self.inner.clock.now();
            let plan = ctx.plan(&mut finished, now);
            if matches!(plan.verdict, Verdict::Failed { .. } | Verdict::Poisoned { .. }) && !in_flight.is_empty() {
                // Stop whatever still runs; its attempts end in the same commit as the run.
                halt.stop(Stop::RunEnded);
                finished.extend(in_flight.all().await);
            }
            let draining = halt.draining();
            // A stopped run starts nothing: an attempt that ended because of the stop (say
            // `interrupted`, which retries at once) is recorded alone, not beside a successor
            // that would only be recorded to be interrupted in turn.
            let may_start = !draining && !halt.token().is_cancelled();
            let (c, spawn) = ctx.commit_for(&plan, std::mem::take(&mut finished), now, may_start, &bus).await;
            let state = match self.record(&mut ctx, c).await {
                Ok(Some(state)) => state,
                taken_or_failed => {
                    // This process must stop touching the run either way.
                    halt.stop(Stop::TakenAway);
                    in_flight.all().await;
                    taken_or_failed?;
                    return Ok(self.inner.store.get_run(run_id).await?);
                }
            };
            if state != RunState::Running {
                return Ok(self.inner.store.get_run(run_id).await?);
            }
            if draining && in_flight.is_empty() {
                // Its steps have finished; whatever comes next is another worker's to start.
                self.release(&mut ctx, Vec::new(), "drain").await?;
                return Ok(self.inner.store.get_run(run_id).await?);
            }
            // A stop that came after the commit: what it recorded as started never runs, and is
            // ended with the rest when the run is released.
            for s in spawn.into_iter().filter(|_| !halt.token().is_cancelled()) {
                let recorder = self.recorder(&ctx, &s.0.id, s.1);
                in_flight.spawn(s, bus.clone(), halt.clone(), recorder);
            }
            let deadline = ctx.deadline;
            if in_flight.is_empty()
                && self.inner.config.handoff == Handoff::Workers
                && let Some(due) = plan.wake_at.filter(|&w| w < deadline)
                && due.since(now) >= self.inner.config.heartbeat_interval.as_millis() as i64
            {
                // Only a retry's backoff is left to wait for: the run is parked, and a worker's
                // slot is not held by a run that only waits. Any worker claims it when it is due.
                self.park(&mut ctx, due.since(now)).await?;
                return Ok(self.inner.store.get_run(run_id).await?);
            }
            let wake = plan.wake_at.unwrap_or(deadline).min(deadline);
            let wake_in = std::time::Duration::from_millis(wake.since(self.inner.clock.now()).max(0) as u64);
            let awaits_decision = !plan.approvals_waiting.is_empty();
            tokio::select! {
                // A decision lands on a running run without moving it: look for it as often as
                // for a cancel.
                () = tokio::time::sleep(self.inner.config.watch_interval), if awaits_decision => {
                    self.pick_up_decisions(&mut ctx).await;
                }
                Some(f) = in_flight.next(), if !in_flight.is_empty() => {
                    finished.push(f);
                    // Completions that arrived meanwhile share the next commit.
                    finished.extend(in_flight.ready());
                }
                () = tokio::time::sleep(wake_in) => {}
                () = halt.drained(), if !draining => {}
                () = halt.token().cancelled() => {
                    let stopped = in_flight.all().await;
                    if let Some(signal) = halt.interrupted() {
                        self.release(&mut ctx, stopped, signal).await?;
                    } else if halt.why() == Some(Stop::TakenAway) {
                        // Taken away, or this process stopped it because its renewals did not go
                        // through: the release is refused (and counted) if the run is another's
                        // by now, and hands it on if this process still held it after all.
                        self.release(&mut ctx, stopped, "a lease it could not keep").await?;
                    } else if !stopped.is_empty() {
                        // Cancelled: the ends are offered to the store like any write, and
                        // refused (and counted) unless this process still holds the run.
                        let mut c = ctx.writer.fenced(self.inner.clock.now());
                        record_ends(&mut c, stopped);
                        self.record(&mut ctx, c).await?;
                    }
                    return Ok(self.inner.store.get_run(run_id).await?);
                }
            }
        }
    }

    /// One round, resolved only from persisted state: starts the attempts
    /// the planner allows now (claiming a `queued` run first), runs them to their end, records
    /// them, and returns the run. A run left `running` between calls is held by this process
    /// (its lease renewed only while a round runs) and is recovered by others if nobody
    /// continues it.
    pub async fn execute_next(&self, run_id: &str) -> Result<Run> {
        self.accepting().await;
        let run = self.inner.store.get_run(run_id).await?;
        if run.state == RunState::Queued {
            // A secret input this process cannot open leaves the run queued for one that can.
            self.secrets_open(&run)?;
        }
        let lease = match run.state {
            RunState::Queued => match self.claim(Some(run_id), 1, &[], false).await?.pop() {
                Some(claimed) => Lease { run_id: run_id.to_owned(), epoch: claimed.run.lease_epoch },
                None => return Err(self.running_elsewhere(self.inner.store.get_run(run_id).await?)),
            },
            RunState::Running if run.owner.as_deref() == Some(self.inner.config.owner.as_str()) => {
                Lease { run_id: run_id.to_owned(), epoch: run.lease_epoch }
            }
            RunState::Running => return Err(self.running_elsewhere(run)),
            state => {
                return Err(Error::WrongState {
                    run_id: run.run_id,
                    state,
                    hint: "only a queued or running run has a next step; use `steward resume` for a stalled one",
                });
            }
        };
        let mut ctx = match self.read_held(&lease).await? {
            Ok(held) => self.load(held.0, held.1, held.2, &lease)?,
            Err(failed) => return Ok(failed),
        };
        let (halt, _guard) = self.register(&lease);
        let bus = ctx.bus.clone();
        let now = self.inner.clock.now();
        let plan = ctx.plan(&mut [], now);
        let (c, spawn) = ctx.commit_for(&plan, Vec::new(), now, true, &bus).await;
        if self.record(&mut ctx, c).await? != Some(RunState::Running) || spawn.is_empty() {
            return Ok(self.inner.store.get_run(run_id).await?);
        }
        let mut in_flight = InFlight::default();
        for s in spawn {
            let recorder = self.recorder(&ctx, &s.0.id, s.1);
            in_flight.spawn(s, bus.clone(), halt.clone(), recorder);
        }
        let mut finished = in_flight.all().await;
        if let Some(signal) = halt.interrupted() {
            self.release(&mut ctx, finished, signal).await?;
            return Ok(self.inner.store.get_run(run_id).await?);
        }
        let now = self.inner.clock.now();
        let plan = ctx.plan(&mut finished, now);
        let (c, _) = ctx.commit_for(&plan, finished, now, false, &bus).await;
        self.record(&mut ctx, c).await?;
        Ok(self.inner.store.get_run(run_id).await?)
    }
}
