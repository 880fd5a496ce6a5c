//! The checks and event payloads every backend applies identically.
//!
//! Backends differ in how they persist, never in what they accept or record:
//! each write path calls these functions, so a behaviour can only change for
//! all backends at once (and the conformance suite pins it).

use steward_core::Timestamp;
use steward_core::event::Payload;
use steward_core::job::check_contract;
use steward_core::state::{
    AttemptStatus, HumanDecision, RunState, TransitionCause, check_attempt_transition, check_run_transition,
};

use crate::{
    Answer, AttemptFinish, AttemptProcess, AttemptStart, Commit, Error, NewRun, Result, Run, Scan, Transition,
};

/// The summary a recovered run gets.
pub const STALLED_SUMMARY: &str = "stalled: its process stopped; resume with `steward resume`";

/// The pseudo-run that holds the store's own events (prune reports).
pub const SYSTEM_RUN: &str = "_system";

/// Whether an event is past retention and may go: its run is finished (or it is a system event).
pub fn prunable(
    policy: &crate::RetentionPolicy,
    now: Timestamp,
    event_type: &str,
    ts: Timestamp,
    run_finished: bool,
) -> bool {
    run_finished && ts < now.plus_millis(-i64::from(policy.days_for(event_type)) * 86_400_000)
}

/// The `prune_report` payload.
pub fn prune_report(
    report: &crate::PruneReport,
    policy: &crate::RetentionPolicy,
    now: Timestamp,
    dry_run: bool,
) -> Payload {
    Payload::recorded(
        "prune_report",
        serde_json::json!({
            "dry_run": dry_run,
            "items_scanned": report.scanned,
            "items_pruned": report.pruned_ids.len(),
            "items_spared": report.spared,
            "bytes_freed": report.bytes,
            "cutoffs": policy.cutoffs(now),
        }),
    )
}

/// The time a write records its events at: its own, unless the run was last written later
/// (every event of a run is written at its `updated_at`, so that bounds its log). Writers of
/// one run (a driver, a step recording its process, another process taking over) read their
/// clocks before they queue; the log stays ordered in time as in sequence.
pub fn event_time(now: Timestamp, updated_at: Timestamp) -> Timestamp {
    now.max(updated_at)
}

/// Who recovery events name as their actor.
pub const RECOVERY_ACTOR: &str = "recovery-scan";

/// Every event is checked against the registry before it is written (DG-FR-05):
/// a refused event fails the whole write with `HSK-400-INVALID-EVENT`. An accepted one's payload
/// comes back as the JSON that was checked, which is what a backend stores.
pub fn check_event(actor: steward_core::event::Actor, payload: &Payload) -> Result<serde_json::Value> {
    let json = payload.to_json();
    steward_core::event_registry::validate(payload.event_type(), actor, &json)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(json)
}

/// A new run's contract must hold (DG-JOB-06); its `run_created` payload.
pub fn created(run: &NewRun) -> Result<Payload> {
    check_contract(&run.contract).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut input_keys: Vec<String> = run.inputs.keys().cloned().collect();
    input_keys.sort();
    Ok(Payload::RunCreated {
        workflow_id: run.workflow_id.clone(),
        workflow_version: run.workflow_version,
        definition_hash: run.definition_hash.clone(),
        input_keys,
    })
}

/// The `step_attempt_reused` payloads of a restarted or forked run, in order; refused if two
/// name the same attempt or one names no parent attempt.
pub fn reused(run: &NewRun) -> Result<Vec<Payload>> {
    let Some(lineage) = &run.lineage else { return Ok(Vec::new()) };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in &lineage.reused {
        if !seen.insert((r.step_id.as_str(), r.attempt)) {
            return Err(Error::Invalid(format!(
                "run `{}`: attempt {} of step `{}` is reused twice",
                run.run_id, r.attempt, r.step_id
            )));
        }
        if r.from.is_empty() {
            return Err(Error::Invalid(format!("run `{}`: a reused attempt must name its original", run.run_id)));
        }
        out.push(Payload::recorded(
            "step_attempt_reused",
            serde_json::json!({
                "step_id": r.step_id,
                "attempt": r.attempt,
                "visit": r.visit,
                "from": r.from,
                "parent_run_id": lineage.parent_run_id,
            }),
        ));
    }
    Ok(out)
}

/// A repeated `create_run` returns the run it created; another request for a taken id is refused.
pub fn existing_run(new: &NewRun, existing: Run) -> Result<Run> {
    if existing.job_id == new.job_id && existing.definition_hash == new.definition_hash {
        Ok(existing)
    } else {
        Err(Error::Invalid(format!("run `{}` already exists", new.run_id)))
    }
}

/// The commit's expectation must match the stored state and, when it names one, the lease the
/// writer holds: the same epoch, still held by someone (a released run's old epoch is stale too).
pub fn check_expect(c: &Commit, state: RunState, owner: Option<&str>, epoch: u64) -> Result<()> {
    if state != c.expect.state {
        return Err(Error::Conflict {
            run_id: c.run_id.clone(),
            expected: format!("state {}", c.expect.state),
            actual: format!("state {state}"),
        });
    }
    match c.expect.epoch {
        Some(want) if want != epoch || owner.is_none() => Err(Error::Conflict {
            run_id: c.run_id.clone(),
            expected: format!("lease epoch {want}"),
            actual: match owner {
                Some(o) => format!("lease epoch {epoch} held by {o}"),
                None => format!("lease epoch {epoch}, held by nobody"),
            },
        }),
        _ => Ok(()),
    }
}

/// A release gives back a held run that goes on running, with nothing left in flight.
pub fn check_release(c: &Commit, state_after: RunState, running_left: bool) -> Result<()> {
    if c.release.is_none() {
        return Ok(());
    }
    if c.expect.epoch.is_none() {
        return Err(Error::Invalid(format!("run `{}`: only the holder of its lease can release it", c.run_id)));
    }
    if state_after != RunState::Running {
        return Err(Error::Invalid(format!(
            "run `{}`: a release keeps the run running; it would be {state_after}",
            c.run_id
        )));
    }
    if running_left || !c.started.is_empty() {
        return Err(Error::Invalid(format!(
            "run `{}`: a run is released with no attempt in flight; end them in the same write",
            c.run_id
        )));
    }
    Ok(())
}

/// The `run_released` payload.
pub fn released(owner: Option<&str>, epoch: u64, r: &crate::Release) -> Payload {
    Payload::recorded(
        "run_released",
        serde_json::json!({
            "owner": owner.unwrap_or("none"),
            "epoch": epoch,
            "ready_in_ms": r.after_ms,
            "reason": r.reason,
        }),
    )
}

/// Why a run is claimable by `claim` at `db_now`, or `None` if it is not.
pub fn claimable(run: &Run, claim: &crate::Claim, db_now: Timestamp) -> Option<ClaimKind> {
    if claim.run_id.as_ref().is_some_and(|id| id != &run.run_id) || !serves(&claim.workdirs, &run.workdir) {
        return None;
    }
    match (run.state, &run.owner) {
        (RunState::Queued, _) => Some(ClaimKind::Queued),
        (RunState::Running, None) => run.ready_at.is_none_or(|t| t <= db_now).then_some(ClaimKind::Released),
        (RunState::Running, Some(owner)) => {
            (lease_expired(run, db_now) && !claim.spare_owners.contains(owner)).then_some(ClaimKind::Expired)
        }
        (RunState::Stalled, _) if claim.resume_stalled => Some(ClaimKind::Stalled),
        (RunState::AwaitingUser, _) => run.ready_at.is_some_and(|t| t <= db_now).then_some(ClaimKind::Due),
        _ => None,
    }
}

/// Whether a held run's lease has run out (a lease never recorded counts as run out).
pub fn lease_expired(run: &Run, db_now: Timestamp) -> bool {
    run.lease_expires_at.is_none_or(|t| t <= db_now)
}

/// Whether a worker serving `workdirs` (none: every workspace) may drive a run in `workdir`.
pub fn serves(workdirs: &[String], workdir: &str) -> bool {
    workdirs.is_empty()
        || workdirs.iter().any(|w| {
            let w = w.trim_end_matches('/');
            workdir == w || workdir.strip_prefix(w).is_some_and(|rest| rest.starts_with('/')) || w.is_empty()
        })
}

/// What kind of run a claim takes, which decides what it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A run nobody started.
    Queued,
    /// A running run its holder gave back (or that waits for a retry's backoff).
    Released,
    /// A running run whose owner's lease ran out: recovered.
    Expired,
    /// A stalled run continued by the automatic-resume policy.
    Stalled,
    /// A run waiting for a person whose wait ran out (an approval's timeout).
    Due,
}

/// The events a claim of `run` records, in order, before its `run_claimed`: the recovery of
/// an expired lease (stalled and taken over in the same write, FR-EVT-WF-RECOVERY naming both
/// owners) or the transition into `running`.
pub fn claim_events(run: &Run, kind: ClaimKind, claim: &crate::Claim) -> Result<Vec<Payload>> {
    let new_owner = claim.owner.id.as_str();
    let mut out = Vec::new();
    let into_running = |from: RunState, reason: String| -> Result<Payload> {
        check_run_transition(from, RunState::Running, TransitionCause::Engine)
            .map_err(|source| Error::InvalidTransition { run_id: run.run_id.clone(), source })?;
        Ok(Payload::RunStateChanged { from_state: from, to_state: RunState::Running, reason })
    };
    match kind {
        ClaimKind::Queued => out.push(into_running(RunState::Queued, format!("claimed by {new_owner}"))?),
        ClaimKind::Released => {}
        ClaimKind::Expired => {
            check_run_transition(RunState::Running, RunState::Stalled, TransitionCause::Recovery)
                .map_err(|source| Error::InvalidTransition { run_id: run.run_id.clone(), source })?;
            let old = run.owner.clone();
            out.push(Payload::WorkflowRecovery {
                workflow_run_id: run.run_id.clone(),
                job_id: run.job_id.clone(),
                from_state: RunState::Running,
                to_state: RunState::Stalled,
                reason: format!(
                    "the lease of {} ran out (last renewed {}); taken over by {new_owner}",
                    old.as_deref().unwrap_or("its owner"),
                    run.heartbeat_at.map_or("never".into(), |t| t.to_rfc3339())
                ),
                last_heartbeat_ts: Some(run.heartbeat_at.unwrap_or(claim.now).to_rfc3339()),
                threshold_secs: Some(claim.lease_ms / 1000),
                owner: old,
                new_owner: Some(new_owner.to_owned()),
                recoveries: Some(run.recoveries + 1),
            });
            out.push(into_running(RunState::Stalled, format!("recovered by {new_owner}"))?);
        }
        ClaimKind::Stalled => {
            out.push(into_running(RunState::Stalled, format!("resumed automatically by {new_owner}"))?)
        }
        ClaimKind::Due => out.push(into_running(
            RunState::AwaitingUser,
            format!("woken by {new_owner}: the wait for a person ran out"),
        )?),
    }
    Ok(out)
}

impl ClaimKind {
    /// The owner whose lease ran out, for a recovered run.
    pub fn recovered(self, before: &Run) -> Option<String> {
        if self == ClaimKind::Expired { before.owner.clone() } else { None }
    }
}

/// The summary line of a run just claimed.
pub fn claimed_summary(kind: ClaimKind, owner: &str) -> String {
    match kind {
        ClaimKind::Queued => format!("started by {owner}"),
        ClaimKind::Released => format!("continued by {owner}"),
        ClaimKind::Expired => format!("recovered by {owner} after its previous owner's lease ran out"),
        ClaimKind::Stalled => format!("resumed automatically by {owner}"),
        ClaimKind::Due => format!("woken by {owner}: the wait for a person ran out"),
    }
}

/// Whether `lease` still holds its run: `running`, owned, under that epoch.
pub fn holds(run: &Run, lease: &crate::Lease) -> bool {
    run.state == RunState::Running && run.owner.is_some() && run.lease_epoch == lease.epoch
}

/// The `run_claimed` payload.
pub fn claimed(run: &Run, from: RunState, claim: &crate::Claim, epoch: u64) -> Payload {
    let mut body = serde_json::json!({
        "owner": claim.owner.id,
        "epoch": epoch,
        "lease_ms": claim.lease_ms,
        "from_state": from.as_str(),
    });
    if let Some(previous) = &run.owner {
        body["previous_owner"] = serde_json::json!(previous);
    }
    Payload::recorded("run_claimed", body)
}

/// Running attempts are never all ended `awaiting_user` at once (each that waits for a person
/// says so itself), and only a write that moves its run to `awaiting_user` may set when it wakes.
/// (An attempt may end `awaiting_user` while its run goes on: an approval holds back only the
/// steps that need it. Which waits hold the whole run is the planner's rule.)
pub fn check_shape(c: &Commit) -> Result<()> {
    if c.finish_running_as == Some(AttemptStatus::AwaitingUser) {
        return Err(Error::Invalid(format!("run `{}`: running attempts cannot all end awaiting_user", c.run_id)));
    }
    let to_waiting = c.transition.as_ref().is_some_and(|t| t.to == RunState::AwaitingUser);
    if c.wake_after_ms.is_some() && !to_waiting {
        return Err(Error::Invalid(format!(
            "run `{}`: only a write that moves the run to awaiting_user sets when it wakes",
            c.run_id
        )));
    }
    Ok(())
}

/// The transition must be in the table; its `run_state_changed` payload, or for a run its own
/// engine releases to `stalled`, FR-EVT-WF-RECOVERY like every entry into `stalled`.
pub fn transition(run_id: &str, job_id: &str, owner: Option<&str>, from: RunState, t: &Transition) -> Result<Payload> {
    check_run_transition(from, t.to, t.cause)
        .map_err(|source| Error::InvalidTransition { run_id: run_id.to_owned(), source })?;
    if t.to == RunState::Stalled {
        return Ok(Payload::WorkflowRecovery {
            workflow_run_id: run_id.to_owned(),
            job_id: job_id.to_owned(),
            from_state: from,
            to_state: RunState::Stalled,
            reason: t.reason.clone(),
            last_heartbeat_ts: None,
            threshold_secs: None,
            owner: owner.map(str::to_owned),
            new_owner: None,
            recoveries: None,
        });
    }
    Ok(Payload::RunStateChanged { from_state: from, to_state: t.to, reason: t.reason.clone() })
}

/// A command's process may be recorded only for an attempt that is running; its
/// `attempt_process_started` payload.
pub fn process(run_id: &str, p: &AttemptProcess, stored: Option<AttemptStatus>) -> Result<Payload> {
    match stored {
        Some(AttemptStatus::Running) => Ok(Payload::recorded(
            "attempt_process_started",
            serde_json::json!({
                "step_id": p.step_id,
                "attempt": p.attempt,
                "pid": p.process.pid,
                "start_ticks": p.process.start_ticks,
                "host": p.process.host,
            }),
        )),
        Some(status) => Err(Error::Invalid(format!(
            "run `{run_id}`: attempt {} of step `{}` is {status}; it cannot start a command",
            p.attempt, p.step_id
        ))),
        None => Err(Error::Invalid(format!(
            "run `{run_id}`: attempt {} of step `{}` was never started",
            p.attempt, p.step_id
        ))),
    }
}

/// What the store knows of an attempt a person answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answerable {
    /// Its status.
    pub status: AttemptStatus,
    /// Its answer, if it has one.
    pub answer: Option<HumanDecision>,
    /// Whether a later attempt of its step exists: the run went on without an answer to it
    /// (an approval that timed out), and none may land on it now.
    pub superseded: bool,
}

/// A person's answer lands only on the latest attempt of its step, which waits for them and has
/// no answer yet; its `human_decision` payload (FR-EVT-GOV-HUMAN; the registry refuses it from
/// any actor but a person). `stored` is what the store knows of the attempt, if it exists.
/// Of two answers that race, or an answer and the timeout that starts the next attempt, the one
/// the store writes first wins and the other is refused with `Conflict`.
pub fn answer(run_id: &str, a: &Answer, decided_by: &str, stored: Option<Answerable>) -> Result<Payload> {
    match stored {
        Some(Answerable { status: AttemptStatus::AwaitingUser, answer: None, superseded: false }) => {
            let mut body = serde_json::json!({
                "decision": a.decision.as_str(),
                "gate": a.gate,
                "decided_by": decided_by,
                "step_id": a.step_id,
                "attempt": a.attempt,
            });
            if let Some(r) = &a.reason {
                body["reason"] = serde_json::json!(r);
            }
            if !a.fields.is_empty() {
                body["fields"] = serde_json::Value::Object(a.fields.clone());
            }
            Ok(Payload::recorded("human_decision", body))
        }
        Some(Answerable { status, answer, superseded }) => Err(Error::Conflict {
            run_id: run_id.to_owned(),
            expected: format!("attempt {} of step `{}` waiting for an answer", a.attempt, a.step_id),
            actual: match (answer, superseded) {
                (Some(d), _) => format!("it was answered `{d}`"),
                (None, true) => "the run went on without an answer (it timed out)".to_owned(),
                (None, false) => format!("it is {status}"),
            },
        }),
        None => Err(Error::Invalid(format!(
            "run `{run_id}`: attempt {} of step `{}` was never started",
            a.attempt, a.step_id
        ))),
    }
}

/// An attempt may only end once, and only if it started; its `step_attempt_finished` payload.
pub fn finish(
    run_id: &str,
    f: &AttemptFinish,
    stored: Option<(AttemptStatus, Timestamp)>,
    now: Timestamp,
) -> Result<Payload> {
    let Some((from, started_at)) = stored else {
        return Err(Error::Invalid(format!(
            "run `{run_id}`: attempt {} of step `{}` was never started",
            f.attempt, f.step_id
        )));
    };
    if !check_attempt_transition(from, f.status) {
        return Err(Error::Invalid(format!(
            "run `{run_id}`: attempt {} of step `{}` is already {from}, it cannot become {}",
            f.attempt, f.step_id, f.status
        )));
    }
    Ok(Payload::StepAttemptFinished {
        step_id: f.step_id.clone(),
        attempt: f.attempt,
        status: f.status,
        error: f.error.clone(),
        duration_ms: now.since(started_at),
    })
}

/// How an attempt still running ends when its run is cancelled or its process is gone.
pub fn abandoned(step_id: String, attempt: u32, status: AttemptStatus) -> AttemptFinish {
    let error = match status {
        AttemptStatus::Cancelled => "the run was cancelled",
        _ => "the process running this attempt stopped",
    };
    AttemptFinish {
        step_id,
        attempt,
        status,
        output: None,
        error: Some(error.to_owned()),
        retryable: status == AttemptStatus::Interrupted,
        with_issues: false,
        routes: Vec::new(),
    }
}

/// The error for an attempt that already exists; the `step_attempt_started` payload otherwise.
pub fn started(run_id: &str, s: &AttemptStart, exists: bool) -> Result<Payload> {
    if exists {
        return Err(Error::Invalid(format!(
            "run `{run_id}`: attempt {} of step `{}` already exists",
            s.attempt, s.step_id
        )));
    }
    Ok(Payload::StepAttemptStarted {
        step_id: s.step_id.clone(),
        attempt: s.attempt,
        visit: s.visit,
        idempotency_key: steward_core::idempotency_key(run_id, &s.step_id, s.attempt),
    })
}

/// Whether whoever holds a run keeps it after a commit: not once the run leaves `running`
/// (finished, stalled, waiting for a person) or is released.
pub fn keeps_owner(state_after: RunState, c: &Commit) -> bool {
    state_after == RunState::Running && c.release.is_none()
}

/// Why the scan stalls a `running` run, if it does: its owner is known to be dead, or its
/// lease has expired on the database's clock. A run nobody holds (handed back by a stopping
/// worker, or resumed by a person whose own claim never came) is left to the claims by a
/// worker's scan, and stalled by any other once nobody has claimed it for a lease's length, so
/// that without workers a person still sees it.
pub fn abandoned_because(run: &Run, db_now: Timestamp, scan: &Scan) -> Option<String> {
    let Some(owner) = run.owner.as_deref() else {
        let since = run.ready_at.unwrap_or(run.updated_at);
        let cutoff = db_now.plus_millis(-(scan.threshold_secs as i64).saturating_mul(1000));
        return (!scan.hand_over && since <= cutoff)
            .then(|| format!("nobody has claimed it for more than {}s", scan.threshold_secs));
    };
    if scan.spare_owners.iter().any(|o| o == owner) {
        return None;
    }
    if scan.dead_owners.iter().any(|d| d == owner) {
        return Some(format!("its engine process ({owner}) has exited"));
    }
    if scan.killed_owners.iter().any(|d| d == owner) {
        return Some(format!(
            "its engine process ({owner}) renewed no heartbeat for more than {}s and was killed",
            scan.threshold_secs
        ));
    }
    lease_expired(run, db_now).then(|| {
        format!("its lease ran out ({}s without a renewal); the process running it is gone", scan.threshold_secs)
    })
}

/// What a scan that hands abandoned runs over reports of one (nothing is interrupted yet: the
/// claim that recovers it does that).
pub fn handed_over(run: &Run, reason: String) -> crate::Recovered {
    crate::Recovered {
        run_id: run.run_id.clone(),
        workflow_id: run.workflow_id.clone(),
        reason,
        last_heartbeat_at: run.heartbeat_at,
        interrupted_attempts: Vec::new(),
    }
}

/// The FR-EVT-WF-RECOVERY payload for a run the scan stalls (HSK-WF-003).
pub fn recovery(run: &Run, reason: String, now: Timestamp, scan: &Scan) -> Result<Payload> {
    check_run_transition(RunState::Running, RunState::Stalled, TransitionCause::Recovery)
        .map_err(|source| Error::InvalidTransition { run_id: run.run_id.clone(), source })?;
    Ok(Payload::WorkflowRecovery {
        workflow_run_id: run.run_id.clone(),
        job_id: run.job_id.clone(),
        from_state: RunState::Running,
        to_state: RunState::Stalled,
        reason,
        last_heartbeat_ts: Some(run.heartbeat_at.unwrap_or(now).to_rfc3339()),
        threshold_secs: Some(scan.threshold_secs),
        owner: run.owner.clone(),
        new_owner: None,
        recoveries: Some(run.recoveries + 1),
    })
}
