//! `MemStore`: the reference backend, in memory.
//!
//! It exists to pin the contract, not for speed: it runs the whole
//! conformance suite beside SQLite, so a behaviour that only one backend has
//! shows up as a failing case. Each write works on a copy of the run and
//! replaces it only when every check passed, which is its transaction.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use steward_core::Timestamp;
use steward_core::event::{Actor, Event, NewEvent, Payload};
use steward_core::idempotency_key;
use steward_core::ids::IdGen;
use steward_core::state::{AttemptStatus, RunState};

use crate::{
    AnswerDetail, Attempt, AttemptFinish, Claim, Claimed, Commit, CommitOutcome, Error, Lease, NewRun, Recovered,
    Result, Run, RunFilter, Scan, Store, rules,
};

#[derive(Clone)]
struct RunData {
    run: Run,
    /// In the order they started.
    attempts: Vec<Attempt>,
    /// Ids of the commits applied, so a repeated one is not applied twice.
    applied: HashSet<String>,
    /// Events of the write in progress.
    pending: Vec<(Timestamp, NewEvent)>,
}

impl RunData {
    fn event(&mut self, now: Timestamp, actor: Actor, actor_id: &str, payload: Payload) -> Result<()> {
        rules::check_event(actor, &payload)?;
        let step_id = payload.step_id().map(str::to_owned);
        self.pending.push((now, NewEvent { actor, actor_id: actor_id.to_owned(), step_id, payload }));
        Ok(())
    }

    fn finish(&mut self, f: &AttemptFinish, now: Timestamp, actor: Actor, actor_id: &str) -> Result<()> {
        let run_id = self.run.run_id.clone();
        let found = self.attempts.iter_mut().find(|a| a.step_id == f.step_id && a.attempt == f.attempt);
        let payload = rules::finish(&run_id, f, found.as_ref().map(|a| (a.status, a.started_at)), now)?;
        if let Some(a) = found {
            a.finish(f, now);
        }
        self.event(now, actor, actor_id, payload)
    }

    fn finish_running(
        &mut self,
        status: AttemptStatus,
        now: Timestamp,
        actor: Actor,
        actor_id: &str,
    ) -> Result<Vec<String>> {
        let running: Vec<(String, u32)> = self
            .attempts
            .iter()
            .filter(|a| a.status == AttemptStatus::Running)
            .map(|a| (a.step_id.clone(), a.attempt))
            .collect();
        let mut keys = Vec::new();
        for (step_id, attempt) in running {
            keys.push(idempotency_key(&self.run.run_id, &step_id, attempt));
            self.finish(&rules::abandoned(step_id, attempt, status), now, actor, actor_id)?;
        }
        Ok(keys)
    }
}

#[derive(Default)]
struct State {
    runs: HashMap<String, RunData>,
    definitions: HashMap<String, String>,
    events: Vec<Event>,
    /// The last event id handed out: ids are never reused, pruned or not, as in SQLite's
    /// AUTOINCREMENT, so a reader that asks for "everything after id N" misses nothing.
    last_id: i64,
}

impl State {
    /// Stores a run whose write succeeded, numbering its pending events.
    fn put(&mut self, ids: &dyn IdGen, mut data: RunData) {
        for (ts, event) in std::mem::take(&mut data.pending) {
            data.run.last_event_seq += 1;
            let run = &data.run;
            self.append(ids, (&run.trace_id, &run.job_id, &run.run_id), data.run.last_event_seq, ts, event);
        }
        self.runs.insert(data.run.run_id.clone(), data);
    }

    /// Appends one event under the next id, its envelope from `(trace_id, job_id, run_id)`.
    fn append(
        &mut self,
        ids: &dyn IdGen,
        (trace_id, job_id, run_id): (&str, &str, &str),
        seq: i64,
        ts: Timestamp,
        e: NewEvent,
    ) {
        self.last_id += 1;
        let NewEvent { actor, actor_id, step_id, payload } = e;
        self.events.push(Event {
            id: self.last_id,
            seq,
            event_id: ids.next_id(),
            ts,
            event_type: payload.event_type().to_owned(),
            actor,
            actor_id,
            trace_id: trace_id.to_owned(),
            job_id: job_id.to_owned(),
            workflow_run_id: run_id.to_owned(),
            step_id,
            mt_id: payload.mt_id().map(str::to_owned),
            model_id: payload.model_id().map(str::to_owned),
            capability_id: payload.capability_id().map(str::to_owned),
            payload: payload.to_json(),
        });
    }

    fn run(&self, run_id: &str) -> Result<RunData> {
        self.runs.get(run_id).cloned().ok_or_else(|| Error::NotFound { what: "run", id: run_id.to_owned() })
    }
}

/// An in-memory [`Store`]. Cheap to clone; clones share their data.
#[derive(Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
    ids: Arc<dyn IdGen>,
    /// The "database's clock" leases are measured on.
    clock: Arc<crate::DbClock>,
}

impl MemStore {
    /// An empty store whose event ids come from `ids`, its leases measured on this host's clock.
    pub fn new(ids: Arc<dyn IdGen>) -> MemStore {
        MemStore { state: Arc::default(), ids, clock: Arc::new(crate::host_now) }
    }

    /// The same, with leases measured on `clock` (for tests that move time).
    pub fn with_clock(ids: Arc<dyn IdGen>, clock: Arc<crate::DbClock>) -> MemStore {
        MemStore { state: Arc::default(), ids, clock }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Writes replace whole runs, so a panic mid-write leaves no partial state.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemStore {
    async fn create_run(&self, new: NewRun) -> Result<Run> {
        let payload = rules::created(&new)?;
        let mut state = self.lock();
        if let Some(existing) = state.runs.get(&new.run_id) {
            return rules::existing_run(&new, existing.run.clone());
        }
        state.definitions.entry(new.definition_hash.clone()).or_insert_with(|| new.definition_source.clone());
        let reused = rules::reused(&new)?;
        let mut run = Run::queued(&new);
        let attempts: Vec<Attempt> =
            new.lineage.iter().flat_map(|l| l.reused.iter().map(|r| r.attempt_of(&new.run_id, new.now))).collect();
        run.total_iterations = attempts.len() as u32;
        let mut data = RunData { run, attempts, applied: HashSet::new(), pending: Vec::new() };
        data.event(new.now, new.actor, &new.actor_id, payload)?;
        for p in reused {
            data.event(new.now, new.actor, &new.actor_id, p)?;
        }
        state.put(self.ids.as_ref(), data);
        state.run(&new.run_id).map(|d| d.run)
    }

    async fn commit(&self, c: Commit) -> Result<CommitOutcome> {
        let mut state = self.lock();
        let mut d = state.run(&c.run_id)?;
        if c.id.as_ref().is_some_and(|id| d.applied.contains(id)) {
            return Ok(CommitOutcome { state: d.run.state, last_event_seq: d.run.last_event_seq });
        }
        rules::check_expect(&c, d.run.state, d.run.owner.as_deref(), d.run.lease_epoch)?;
        rules::check_shape(&c)?;
        let now = rules::event_time(c.now, d.run.updated_at);
        let (actor, actor_id) = (c.actor, c.actor_id.as_str());
        for e in &c.events {
            rules::check_event(e.actor, &e.payload)?;
            d.pending.push((now, e.clone()));
        }
        for a in &c.answers {
            let superseded = d.attempts.iter().any(|x| x.step_id == a.step_id && x.attempt > a.attempt);
            let found = d.attempts.iter_mut().find(|x| x.step_id == a.step_id && x.attempt == a.attempt);
            let stored = found.as_ref().map(|x| rules::Answerable { status: x.status, answer: x.answer, superseded });
            let payload = rules::answer(&c.run_id, a, actor_id, stored)?;
            if let Some(x) = found {
                x.answer = Some(a.decision);
                x.answer_detail = Some(AnswerDetail::of(a, actor_id));
            }
            d.event(now, actor, actor_id, payload)?;
        }
        for f in &c.finished {
            d.finish(f, now, actor, actor_id)?;
        }
        if let Some(status) = c.finish_running_as {
            d.finish_running(status, now, actor, actor_id)?;
        }
        let entered_running =
            c.transition.as_ref().is_some_and(|t| t.to == RunState::Running) && d.run.state != RunState::Running;
        let entered_waiting = c.transition.as_ref().is_some_and(|t| t.to == RunState::AwaitingUser);
        if let Some(t) = &c.transition {
            let payload = rules::transition(&c.run_id, &d.run.job_id, d.run.owner.as_deref(), d.run.state, t)?;
            d.event(now, actor, actor_id, payload)?;
            d.run.state = t.to;
            if t.to.is_terminal() {
                d.run.terminal_reason = Some(t.reason.clone());
            }
        }
        for s in &c.started {
            let exists = d.attempts.iter().any(|a| a.step_id == s.step_id && a.attempt == s.attempt);
            let payload = rules::started(&c.run_id, s, exists)?;
            d.run.total_iterations += 1;
            d.attempts.push(Attempt::started(&c.run_id, s, now));
            d.event(now, actor, actor_id, payload)?;
            d.run.current_step_id = Some(s.step_id.clone());
            d.run.current_attempt = Some(s.attempt);
        }
        for p in &c.processes {
            let found = d.attempts.iter_mut().find(|a| a.step_id == p.step_id && a.attempt == p.attempt);
            let payload = rules::process(&c.run_id, p, found.as_ref().map(|a| a.status))?;
            if let Some(a) = found {
                a.process = Some(p.process.clone());
            }
            d.event(now, actor, actor_id, payload)?;
        }
        let running_left = d.attempts.iter().any(|a| a.status == AttemptStatus::Running);
        rules::check_release(&c, d.run.state, running_left)?;
        if let Some(r) = &c.release {
            let payload = rules::released(d.run.owner.as_deref(), d.run.lease_epoch, r);
            d.event(now, Actor::System, actor_id, payload)?;
            d.run.ready_at = Some((self.clock)().plus_millis(r.after_ms as i64));
        } else if entered_waiting {
            d.run.ready_at = c.wake_after_ms.map(|ms| (self.clock)().plus_millis(ms as i64));
        } else if entered_running {
            d.run.ready_at = None;
        }
        if let Some(id) = &c.id {
            d.applied.insert(id.clone());
        }
        let run = &mut d.run;
        if let Some(summary) = &c.summary {
            run.summary = summary.clone();
        }
        if !rules::keeps_owner(run.state, &c) {
            (run.owner, run.owner_process, run.lease_expires_at) = (None, None, None);
        }
        if run.state == RunState::Running {
            run.started_at = run.started_at.or(Some(now));
        }
        run.updated_at = now;
        run.last_progress_at = now;
        run.finished_at = run.state.is_terminal().then_some(now);
        let outcome_state = run.state;
        state.put(self.ids.as_ref(), d);
        let last_event_seq = state.run(&c.run_id)?.run.last_event_seq;
        Ok(CommitOutcome { state: outcome_state, last_event_seq })
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<Claimed>> {
        let db_now = (self.clock)();
        let mut state = self.lock();
        let mut found: Vec<(rules::ClaimKind, RunData)> = state
            .runs
            .values()
            .filter_map(|d| rules::claimable(&d.run, &claim, db_now).map(|k| (k, d.clone())))
            .collect();
        found.sort_by(|(ka, a), (kb, b)| {
            (*ka == rules::ClaimKind::Queued, a.run.created_at, &a.run.run_id).cmp(&(
                *kb == rules::ClaimKind::Queued,
                b.run.created_at,
                &b.run.run_id,
            ))
        });
        let mut out = Vec::new();
        for (kind, mut d) in found.into_iter().take(claim.limit as usize) {
            let now = rules::event_time(claim.now, d.run.updated_at);
            let owner = claim.owner.id.as_str();
            let before = d.run.clone();
            for payload in rules::claim_events(&before, kind, &claim)? {
                let recovery = payload.event_type() == "workflow_recovery";
                d.event(now, Actor::System, if recovery { rules::RECOVERY_ACTOR } else { owner }, payload)?;
                if recovery {
                    // What the previous owner left running ends with its recovery.
                    d.finish_running(AttemptStatus::Interrupted, now, Actor::System, rules::RECOVERY_ACTOR)?;
                    d.run.recoveries += 1;
                }
            }
            let epoch = d.run.lease_epoch + 1;
            d.event(now, Actor::System, owner, rules::claimed(&before, before.state, &claim, epoch))?;
            let run = &mut d.run;
            run.state = RunState::Running;
            run.owner = Some(claim.owner.id.clone());
            run.owner_process = claim.owner.process.clone();
            run.lease_epoch = epoch;
            run.lease_expires_at = Some(db_now.plus_millis(claim.lease_ms as i64));
            run.heartbeat_at = Some(db_now);
            run.ready_at = None;
            run.started_at = run.started_at.or(Some(now));
            run.summary = rules::claimed_summary(kind, owner);
            run.updated_at = now;
            run.last_progress_at = now;
            let run_id = run.run_id.clone();
            state.put(self.ids.as_ref(), d);
            out.push(Claimed {
                run: state.run(&run_id)?.run,
                from: before.state,
                recovered_from: kind.recovered(&before),
            });
        }
        Ok(out)
    }

    async fn renew(&self, leases: &[Lease], lease_ms: u64, now: Timestamp) -> Result<Vec<String>> {
        let db_now = (self.clock)();
        let mut state = self.lock();
        let mut lost = Vec::new();
        for lease in leases {
            match state.runs.get_mut(&lease.run_id) {
                Some(d) if rules::holds(&d.run, lease) => {
                    d.run.lease_expires_at = Some(db_now.plus_millis(lease_ms as i64));
                    d.run.heartbeat_at = Some(db_now);
                    d.run.last_progress_at = now.max(d.run.last_progress_at);
                }
                _ => lost.push(lease.run_id.clone()),
            }
        }
        Ok(lost)
    }

    async fn recover_stalled(&self, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>> {
        let db_now = (self.clock)();
        let mut state = self.lock();
        let mut stale: Vec<(String, RunData)> = state
            .runs
            .values()
            .filter(|d| d.run.state == RunState::Running)
            .filter_map(|d| rules::abandoned_because(&d.run, db_now, scan).map(|why| (why, d.clone())))
            .collect();
        stale.sort_by(|(_, a), (_, b)| (a.run.created_at, &a.run.run_id).cmp(&(b.run.created_at, &b.run.run_id)));
        let mut out = Vec::new();
        for (reason, mut d) in stale {
            if scan.hand_over {
                d.run.lease_expires_at = Some(db_now);
                out.push(rules::handed_over(&d.run, reason));
                state.runs.insert(d.run.run_id.clone(), d);
                continue;
            }
            let now = rules::event_time(now, d.run.updated_at);
            let payload = rules::recovery(&d.run, reason.clone(), now, scan)?;
            d.event(now, Actor::System, rules::RECOVERY_ACTOR, payload)?;
            let interrupted_attempts =
                d.finish_running(AttemptStatus::Interrupted, now, Actor::System, rules::RECOVERY_ACTOR)?;
            d.run.state = RunState::Stalled;
            d.run.owner = None;
            d.run.owner_process = None;
            d.run.lease_expires_at = None;
            d.run.recoveries += 1;
            d.run.summary = rules::STALLED_SUMMARY.to_owned();
            d.run.updated_at = now;
            d.run.last_progress_at = now;
            out.push(Recovered {
                run_id: d.run.run_id.clone(),
                workflow_id: d.run.workflow_id.clone(),
                reason,
                last_heartbeat_at: d.run.heartbeat_at,
                interrupted_attempts,
            });
            state.put(self.ids.as_ref(), d);
        }
        Ok(out)
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        self.lock().run(run_id).map(|d| d.run)
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        let state = self.lock();
        let mut runs: Vec<Run> = state.runs.values().map(|d| d.run.clone()).filter(|r| filter.admits(r)).collect();
        runs.sort_by(|a, b| (b.created_at, &b.run_id).cmp(&(a.created_at, &a.run_id)));
        if let Some(limit) = filter.limit {
            runs.truncate(limit as usize);
        }
        Ok(runs)
    }

    async fn list_attempts(&self, run_id: &str) -> Result<Vec<Attempt>> {
        Ok(self.lock().runs.get(run_id).map(|d| d.attempts.clone()).unwrap_or_default())
    }

    async fn list_events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        Ok(self.lock().events.iter().filter(|e| e.workflow_run_id == run_id && e.seq > after_seq).cloned().collect())
    }

    async fn prune(
        &self,
        now: Timestamp,
        policy: &crate::RetentionPolicy,
        dry_run: bool,
    ) -> Result<crate::PruneReport> {
        let mut state = self.lock();
        let mut report = crate::PruneReport::default();
        let mut per_run: HashMap<String, (u64, u64)> = HashMap::new();
        for e in &state.events {
            report.scanned += 1;
            let finished = e.workflow_run_id == rules::SYSTEM_RUN
                || state.runs.get(&e.workflow_run_id).is_some_and(|d| d.run.state.is_terminal());
            let entry = per_run.entry(e.workflow_run_id.clone()).or_default();
            entry.0 += 1;
            if rules::prunable(policy, now, &e.event_type, e.ts, finished) {
                report.pruned_ids.push(e.id);
                report.bytes += e.payload.to_string().len() as u64;
                entry.1 += 1;
            } else if rules::prunable(policy, now, &e.event_type, e.ts, true) {
                report.spared += 1;
            }
        }
        report.runs_emptied = per_run.values().filter(|(all, gone)| all == gone && *gone > 0).count() as u64;
        if dry_run {
            return Ok(report);
        }
        let payload = rules::prune_report(&report, policy, now, dry_run);
        rules::check_event(Actor::System, &payload)?;
        let seq =
            state.events.iter().filter(|e| e.workflow_run_id == rules::SYSTEM_RUN).map(|e| e.seq).max().unwrap_or(0)
                + 1;
        let system = (rules::SYSTEM_RUN, rules::SYSTEM_RUN, rules::SYSTEM_RUN);
        let event = NewEvent { actor: Actor::System, actor_id: "gc".into(), step_id: None, payload };
        state.append(self.ids.as_ref(), system, seq, now, event);
        let gone: std::collections::HashSet<i64> = report.pruned_ids.iter().copied().collect();
        state.events.retain(|e| !gone.contains(&e.id));
        for d in state.runs.values_mut().filter(|d| d.run.state.is_terminal()) {
            d.applied.clear();
        }
        Ok(report)
    }

    async fn list_events_since(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        Ok(self.lock().events.iter().filter(|e| e.id > after_id).take(limit as usize).cloned().collect())
    }

    async fn count_runs(&self) -> Result<Vec<(RunState, u64)>> {
        let state = self.lock();
        Ok(RunState::ALL
            .into_iter()
            .map(|s| (s, state.runs.values().filter(|d| d.run.state == s).count() as u64))
            .filter(|(_, n)| *n > 0)
            .collect())
    }

    async fn last_event_id(&self) -> Result<i64> {
        Ok(self.lock().events.iter().map(|e| e.id).max().unwrap_or(0))
    }

    async fn get_definition(&self, hash: &str) -> Result<String> {
        self.lock()
            .definitions
            .get(hash)
            .cloned()
            .ok_or_else(|| Error::NotFound { what: "definition", id: hash.to_owned() })
    }
}
