//! The SQL behind each write, run inside the writer's transaction.
//!
//! What a write accepts and which events it records come from
//! `steward_store::rules`; this module only says how SQLite stores it.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use steward_core::Timestamp;
use steward_core::event::{Actor, Payload};
use steward_core::idempotency_key;
use steward_core::ids::IdGen;
use steward_core::state::{AttemptStatus, HumanDecision, RunState};
use steward_store::{
    Answer, AnswerDetail, AttemptFinish, Claim, Claimed, Commit, CommitOutcome, Error, Lease, NewRun, PruneReport,
    Recovered, Result, RetentionPolicy, Run, Scan, rules,
};

use crate::map_err;
use crate::rows::{RUN_COLUMNS, process_json, run_from_row};

/// The fields of a run a write reads and updates.
struct RunHead {
    state: RunState,
    owner: Option<String>,
    lease_epoch: u64,
    job_id: String,
    trace_id: String,
    last_event_seq: i64,
    total_iterations: u32,
    /// When it was last written, which bounds its events' times.
    updated_at: Timestamp,
}

fn corrupt(detail: impl std::fmt::Display) -> Error {
    Error::Corrupt { path: String::new(), detail: detail.to_string() }
}

fn head(conn: &Connection, run_id: &str) -> Result<RunHead> {
    let row = conn
        .prepare_cached(
            "SELECT state, owner, lease_epoch, job_id, trace_id, last_event_seq, total_iterations, updated_at
             FROM runs WHERE run_id = ?1",
        )
        .and_then(|mut st| {
            st.query_row([run_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get::<_, i64>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .optional()
        })
        .map_err(map_err(""))?;
    let (state, owner, lease_epoch, job_id, trace_id, last_event_seq, total_iterations, updated_at) =
        row.ok_or_else(|| Error::NotFound { what: "run", id: run_id.to_owned() })?;
    let state = state.parse().map_err(|e| corrupt(format!("run `{run_id}`: {e}")))?;
    Ok(RunHead {
        state,
        owner,
        lease_epoch: u64::try_from(lease_epoch).map_err(|e| corrupt(format!("run `{run_id}`: {e}")))?,
        job_id,
        trace_id,
        last_event_seq,
        total_iterations,
        updated_at: Timestamp(updated_at),
    })
}

/// Who writes to one run's log, and when: every event of a write shares these.
struct Tx<'a> {
    conn: &'a Connection,
    ids: &'a dyn IdGen,
    run_id: &'a str,
    now: Timestamp,
    actor: Actor,
    actor_id: &'a str,
}

impl Tx<'_> {
    /// Appends one event to the run's log, taking the next sequence number.
    fn event(&self, h: &mut RunHead, payload: &Payload) -> Result<()> {
        self.event_as(h, self.actor, self.actor_id, payload.step_id(), payload)
    }

    /// Appends an event with its own actor and step.
    fn event_as(
        &self,
        h: &mut RunHead,
        actor: Actor,
        actor_id: &str,
        step_id: Option<&str>,
        payload: &Payload,
    ) -> Result<()> {
        let json = rules::check_event(actor, payload)?;
        h.last_event_seq += 1;
        self.conn
            .prepare_cached(
                "INSERT INTO events (run_id, seq, event_id, ts, event_type, actor, actor_id, trace_id, job_id, step_id, capability_id, model_id, mt_id, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    self.run_id,
                    h.last_event_seq,
                    self.ids.next_id(),
                    self.now.millis(),
                    payload.event_type(),
                    actor.as_str(),
                    actor_id,
                    h.trace_id,
                    h.job_id,
                    step_id,
                    payload.capability_id(),
                    payload.model_id(),
                    payload.mt_id(),
                    json.to_string(),
                ])
            })
            .map_err(map_err(""))?;
        Ok(())
    }

    /// Ends a running attempt and records `step_attempt_finished`.
    fn finish_attempt(&self, h: &mut RunHead, f: &AttemptFinish) -> Result<()> {
        let stored: Option<(String, i64)> = self
            .conn
            .prepare_cached(
                "SELECT status, started_at FROM step_attempts WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![self.run_id, f.step_id, f.attempt], |r| Ok((r.get(0)?, r.get(1)?))).optional()
            })
            .map_err(map_err(""))?;
        let stored = match stored {
            Some((status, started_at)) => {
                Some((status.parse::<AttemptStatus>().map_err(corrupt)?, Timestamp(started_at)))
            }
            None => None,
        };
        let payload = rules::finish(self.run_id, f, stored, self.now)?;
        self.conn
            .prepare_cached(
                "UPDATE step_attempts SET status = ?4, output = ?5, error = ?6, retryable = ?7, routes = ?8, finished_at = ?9,
                 with_issues = ?10 WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )
            .and_then(|mut st| {
                st.execute(params![
                    self.run_id,
                    f.step_id,
                    f.attempt,
                    f.status.as_str(),
                    f.output.as_ref().map(Value::to_string),
                    f.error,
                    f.retryable,
                    serde_json::to_string(&f.routes).unwrap_or_else(|_| "[]".into()),
                    self.now.millis(),
                    f.with_issues,
                ])
            })
            .map_err(map_err(""))?;
        self.event(h, &payload)
    }

    /// Sets a person's answer on the attempt that waits for it and records `human_decision`.
    fn answer(&self, h: &mut RunHead, a: &Answer) -> Result<()> {
        let stored: Option<(String, Option<String>, bool)> = self
            .conn
            .prepare_cached(
                "SELECT status, answer, EXISTS (SELECT 1 FROM step_attempts AS b
                     WHERE b.run_id = a.run_id AND b.step_id = a.step_id AND b.attempt > a.attempt)
                 FROM step_attempts AS a WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![self.run_id, a.step_id, a.attempt], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .map_err(map_err(""))?;
        let stored = match stored {
            Some((status, answer, superseded)) => Some(rules::Answerable {
                status: status.parse::<AttemptStatus>().map_err(corrupt)?,
                answer: answer.map(|d| d.parse::<HumanDecision>()).transpose().map_err(corrupt)?,
                superseded,
            }),
            None => None,
        };
        let payload = rules::answer(self.run_id, a, self.actor_id, stored)?;
        let detail = AnswerDetail::of(a, self.actor_id).to_text();
        self.conn
            .prepare_cached(
                "UPDATE step_attempts SET answer = ?4, answer_detail = ?5
                 WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )
            .and_then(|mut st| st.execute(params![self.run_id, a.step_id, a.attempt, a.decision.as_str(), detail]))
            .map_err(map_err(""))?;
        self.event(h, &payload)
    }

    /// Ends every attempt of the run that is still running with `status`.
    fn finish_running(&self, h: &mut RunHead, status: AttemptStatus) -> Result<Vec<String>> {
        let running: Vec<(String, u32)> = self
            .conn
            .prepare_cached(
                "SELECT step_id, attempt FROM step_attempts WHERE run_id = ?1 AND status = 'running' ORDER BY ordinal",
            )
            .and_then(|mut st| {
                st.query_map([self.run_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(map_err(""))?;
        let mut keys = Vec::new();
        for (step_id, attempt) in running {
            keys.push(idempotency_key(self.run_id, &step_id, attempt));
            self.finish_attempt(h, &rules::abandoned(step_id, attempt, status))?;
        }
        Ok(keys)
    }
}

pub(crate) fn create_run(conn: &Connection, ids: &dyn IdGen, run: &NewRun) -> Result<Run> {
    let payload = rules::created(run)?;
    let reused = rules::reused(run)?;
    match get_run(conn, &run.run_id) {
        Ok(existing) => return rules::existing_run(run, existing),
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let now = run.now.millis();
    conn.prepare_cached("INSERT OR IGNORE INTO definitions (hash, workflow_id, version, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut st| st.execute(params![run.definition_hash, run.workflow_id, run.workflow_version, run.definition_source, now]))
        .map_err(map_err(""))?;
    conn.prepare_cached(
        "INSERT INTO runs (run_id, workflow_id, workflow_version, definition_hash, inputs, state, summary,
             job_id, trace_id, job_kind, profile_id, protocol_id, created_at, updated_at, last_progress_at, workdir,
             parent_run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 'queued', ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?11, ?12, ?13)",
    )
    .and_then(|mut st| {
        st.execute(params![
            run.run_id,
            run.workflow_id,
            run.workflow_version,
            run.definition_hash,
            Value::Object(run.inputs.clone()).to_string(),
            run.job_id,
            run.trace_id,
            run.contract.job_kind.as_str(),
            run.contract.profile_id,
            run.contract.protocol_id,
            now,
            run.workdir,
            run.lineage.as_ref().map(|l| l.parent_run_id.as_str()),
        ])
    })
    .map_err(map_err(""))?;
    let mut h = head(conn, &run.run_id)?;
    let tx = Tx { conn, ids, run_id: &run.run_id, now: run.now, actor: run.actor, actor_id: &run.actor_id };
    tx.event(&mut h, &payload)?;
    for (i, r) in run.lineage.iter().flat_map(|l| &l.reused).enumerate() {
        let a = r.attempt_of(&run.run_id, run.now);
        conn.prepare_cached(
            "INSERT INTO step_attempts (run_id, step_id, attempt, visit, ordinal, status, idempotency_key, input,
                 output, retryable, routes, started_at, finished_at, with_issues, reused_from)
             VALUES (?1, ?2, ?3, ?4, ?5, 'completed', ?6, ?7, ?8, 0, ?9, ?10, ?10, ?11, ?12)",
        )
        .and_then(|mut st| {
            st.execute(params![
                run.run_id,
                a.step_id,
                a.attempt,
                a.visit,
                i as i64 + 1,
                a.idempotency_key,
                a.input.to_string(),
                a.output.as_ref().map(Value::to_string),
                serde_json::to_string(&a.routes).unwrap_or_else(|_| "[]".into()),
                now,
                a.with_issues,
                a.reused_from,
            ])
        })
        .map_err(map_err(""))?;
    }
    for p in &reused {
        tx.event(&mut h, p)?;
    }
    conn.prepare_cached("UPDATE runs SET last_event_seq = ?2, total_iterations = ?3 WHERE run_id = ?1")
        .and_then(|mut st| st.execute(params![run.run_id, h.last_event_seq, reused.len() as i64]))
        .map_err(map_err(""))?;
    get_run(conn, &run.run_id)
}

pub(crate) fn get_run(conn: &Connection, run_id: &str) -> Result<Run> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row([run_id], run_from_row).optional())
        .map_err(map_err(""))?;
    row.ok_or_else(|| Error::NotFound { what: "run", id: run_id.to_owned() })?
}

/// What a commit writes to its run's row. `state` is set only by a commit that moves the run:
/// SQLite updates the entries of every index on a column an UPDATE sets, changed or not, and two
/// of the run's indexes lead with its state.
fn update_run_sql(sets_state: bool) -> String {
    format!(
        "UPDATE runs SET {}
            current_step_id = COALESCE(?3, current_step_id),
            current_attempt = COALESCE(?4, current_attempt),
            summary = COALESCE(?5, summary),
            terminal_reason = COALESCE(?6, terminal_reason),
            total_iterations = ?7,
            owner = CASE WHEN ?8 THEN owner ELSE NULL END,
            owner_process = CASE WHEN ?8 THEN owner_process ELSE NULL END,
            lease_expires_at = CASE WHEN ?8 THEN lease_expires_at ELSE NULL END,
            started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?9) ELSE started_at END,
            updated_at = ?9,
            last_progress_at = ?9,
            finished_at = ?10,
            last_event_seq = ?11,
            ready_at = CASE WHEN ?12 IS NOT NULL THEN ?12 WHEN ?13 THEN NULL ELSE ready_at END
         WHERE run_id = ?1",
        if sets_state { "state = ?2," } else { "" }
    )
}

static UPDATE_RUN_AND_STATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| update_run_sql(true));
static UPDATE_RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| update_run_sql(false));

pub(crate) fn commit(conn: &Connection, ids: &dyn IdGen, db_now: Timestamp, c: &Commit) -> Result<CommitOutcome> {
    let mut h = head(conn, &c.run_id)?;
    if let Some(id) = &c.id {
        // Noted first: if the rest of the write is refused, its savepoint takes this back too.
        let fresh = conn
            .prepare_cached("INSERT OR IGNORE INTO applied_commits (run_id, commit_id) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![c.run_id, id]))
            .map_err(map_err(""))?;
        if fresh == 0 {
            return Ok(CommitOutcome { state: h.state, last_event_seq: h.last_event_seq });
        }
    }
    rules::check_expect(c, h.state, h.owner.as_deref(), h.lease_epoch)?;
    rules::check_shape(c)?;
    let entered_running =
        c.transition.as_ref().is_some_and(|t| t.to == RunState::Running) && h.state != RunState::Running;
    let entered_waiting = c.transition.as_ref().is_some_and(|t| t.to == RunState::AwaitingUser);
    let when = rules::event_time(c.now, h.updated_at);
    let tx = Tx { conn, ids, run_id: &c.run_id, now: when, actor: c.actor, actor_id: &c.actor_id };
    for e in &c.events {
        tx.event_as(&mut h, e.actor, &e.actor_id, e.step_id.as_deref(), &e.payload)?;
    }
    for a in &c.answers {
        tx.answer(&mut h, a)?;
    }
    for f in &c.finished {
        tx.finish_attempt(&mut h, f)?;
    }
    if let Some(status) = c.finish_running_as {
        tx.finish_running(&mut h, status)?;
    }
    let mut terminal_reason: Option<&str> = None;
    if let Some(t) = &c.transition {
        let payload = rules::transition(&c.run_id, &h.job_id, h.owner.as_deref(), h.state, t)?;
        tx.event(&mut h, &payload)?;
        h.state = t.to;
        if t.to.is_terminal() {
            terminal_reason = Some(&t.reason);
        }
    }
    let now = when.millis();
    for s in &c.started {
        let key = idempotency_key(&c.run_id, &s.step_id, s.attempt);
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO step_attempts (run_id, step_id, attempt, visit, ordinal, status, idempotency_key, input, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![c.run_id, s.step_id, s.attempt, s.visit, h.total_iterations + 1, key, s.input.to_string(), now])
            })
            .map_err(map_err(""))?;
        let payload = rules::started(&c.run_id, s, inserted == 0)?;
        h.total_iterations += 1;
        tx.event(&mut h, &payload)?;
    }
    for p in &c.processes {
        let stored: Option<String> = conn
            .prepare_cached("SELECT status FROM step_attempts WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3")
            .and_then(|mut st| st.query_row(params![c.run_id, p.step_id, p.attempt], |r| r.get(0)).optional())
            .map_err(map_err(""))?;
        let stored = stored.map(|s| s.parse::<AttemptStatus>().map_err(corrupt)).transpose()?;
        let payload = rules::process(&c.run_id, p, stored)?;
        conn.prepare_cached(
            "UPDATE step_attempts SET process = ?4 WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
        )
        .and_then(|mut st| st.execute(params![c.run_id, p.step_id, p.attempt, process_json(&p.process)]))
        .map_err(map_err(""))?;
        tx.event(&mut h, &payload)?;
    }
    // Asked only of a release: every other commit skips the read.
    let running_left = c.release.is_some()
        && conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM step_attempts WHERE run_id = ?1 AND status = 'running')")
            .and_then(|mut st| st.query_row([&c.run_id], |r| r.get::<_, bool>(0)))
            .map_err(map_err(""))?;
    rules::check_release(c, h.state, running_left)?;
    // `ready_at`: set by a release, or by the wait for a person that wakes the run by itself;
    // cleared when the run (re-)enters running or waits for a person without one, else kept.
    let ready_at = match &c.release {
        Some(r) => {
            let payload = rules::released(h.owner.as_deref(), h.lease_epoch, r);
            tx.event_as(&mut h, Actor::System, &c.actor_id, None, &payload)?;
            Some(db_now.plus_millis(r.after_ms as i64).millis())
        }
        None => c.wake_after_ms.filter(|_| entered_waiting).map(|ms| db_now.plus_millis(ms as i64).millis()),
    };
    let keep_owner = rules::keeps_owner(h.state, c);
    let current = c.started.last().map(|s| (s.step_id.clone(), s.attempt));
    conn.prepare_cached(if c.transition.is_some() { &UPDATE_RUN_AND_STATE } else { &UPDATE_RUN })
        .and_then(|mut st| {
            st.execute(params![
                c.run_id,
                h.state.as_str(),
                current.as_ref().map(|c| c.0.clone()),
                current.as_ref().map(|c| c.1),
                c.summary,
                terminal_reason,
                h.total_iterations,
                keep_owner,
                now,
                h.state.is_terminal().then_some(now),
                h.last_event_seq,
                ready_at,
                entered_running || entered_waiting,
            ])
        })
        .map_err(map_err(""))?;
    Ok(CommitOutcome { state: h.state, last_event_seq: h.last_event_seq })
}

/// What may be claimable, runs to recover first (HSK-WF-003); `rules::claimable` decides. Each
/// query reads only what an index leads to: the one run asked for; the few runs to recover
/// (running or stalled); and queued runs oldest first, no more than the claim can take unless it
/// serves only some workspaces (filtered after reading).
fn claim_candidates(conn: &Connection, db_now: Timestamp, claim: &Claim) -> Result<Vec<Result<Run>>> {
    let read = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<Vec<Result<Run>>> {
        conn.prepare_cached(sql).and_then(|mut st| st.query_map(params, run_from_row)?.collect()).map_err(map_err(""))
    };
    if let Some(run_id) = &claim.run_id {
        return read(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"), &[run_id]);
    }
    let mut out = read(
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE (state = 'stalled' AND ?1)
                OR (state = 'running' AND owner IS NULL AND (ready_at IS NULL OR ready_at <= ?2))
                OR (state = 'running' AND owner IS NOT NULL AND (lease_expires_at IS NULL OR lease_expires_at <= ?2))
                OR (state = 'awaiting_user' AND ready_at <= ?2)
             ORDER BY created_at, run_id"
        ),
        &[&claim.resume_stalled, &db_now.millis()],
    )?;
    let limit = if claim.workdirs.is_empty() { i64::from(claim.limit) } else { -1 };
    out.extend(read(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = 'queued' ORDER BY created_at, run_id LIMIT ?1"),
        &[&limit],
    )?);
    Ok(out)
}

/// Claims runs oldest first, each fully checked by `rules::claimable` on the row as it is
/// inside this write (the writer's transaction is the only one, so nothing else can claim
/// between the read and the update).
pub(crate) fn claim(conn: &Connection, ids: &dyn IdGen, db_now: Timestamp, claim: &Claim) -> Result<Vec<Claimed>> {
    let candidates = claim_candidates(conn, db_now, claim)?;
    let mut out = Vec::new();
    for run in candidates {
        if out.len() >= claim.limit as usize {
            break;
        }
        let run = run?;
        let Some(kind) = rules::claimable(&run, claim, db_now) else { continue };
        let mut h = head(conn, &run.run_id)?;
        let now = rules::event_time(claim.now, h.updated_at);
        let owner = claim.owner.id.as_str();
        let tx = Tx { conn, ids, run_id: &run.run_id, now, actor: Actor::System, actor_id: owner };
        let mut recovered = 0;
        for payload in rules::claim_events(&run, kind, claim)? {
            if payload.event_type() == "workflow_recovery" {
                tx.event_as(&mut h, Actor::System, rules::RECOVERY_ACTOR, None, &payload)?;
                // What the previous owner left running ends with its recovery.
                Tx { actor_id: rules::RECOVERY_ACTOR, ..tx }.finish_running(&mut h, AttemptStatus::Interrupted)?;
                recovered = 1;
            } else {
                tx.event(&mut h, &payload)?;
            }
        }
        let epoch = h.lease_epoch + 1;
        tx.event(&mut h, &rules::claimed(&run, run.state, claim, epoch))?;
        conn.prepare_cached(
            "UPDATE runs SET state = 'running', owner = ?2, owner_process = ?3, lease_epoch = ?4,
                 lease_expires_at = ?5, heartbeat_at = ?6, ready_at = NULL, started_at = COALESCE(started_at, ?7),
                 summary = ?8, updated_at = ?7, last_progress_at = ?7, last_event_seq = ?9,
                 recoveries = recoveries + ?10
             WHERE run_id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                run.run_id,
                owner,
                claim.owner.process.as_ref().map(process_json),
                i64::try_from(epoch).unwrap_or(i64::MAX),
                db_now.plus_millis(claim.lease_ms as i64).millis(),
                db_now.millis(),
                now.millis(),
                rules::claimed_summary(kind, owner),
                h.last_event_seq,
                recovered,
            ])
        })
        .map_err(map_err(""))?;
        out.push(Claimed { run: get_run(conn, &run.run_id)?, from: run.state, recovered_from: kind.recovered(&run) });
    }
    Ok(out)
}

pub(crate) fn renew(
    conn: &Connection,
    db_now: Timestamp,
    leases: &[Lease],
    lease_ms: u64,
    now: Timestamp,
) -> Result<Vec<String>> {
    let mut lost = Vec::new();
    for lease in leases {
        let n = conn
            .prepare_cached(
                "UPDATE runs SET lease_expires_at = ?3, heartbeat_at = ?4, last_progress_at = MAX(last_progress_at, ?5)
                 WHERE run_id = ?1 AND lease_epoch = ?2 AND owner IS NOT NULL AND state = 'running'",
            )
            .and_then(|mut st| {
                st.execute(params![
                    lease.run_id,
                    i64::try_from(lease.epoch).unwrap_or(i64::MAX),
                    db_now.plus_millis(lease_ms as i64).millis(),
                    db_now.millis(),
                    now.millis()
                ])
            })
            .map_err(map_err(""))?;
        if n == 0 {
            lost.push(lease.run_id.clone());
        }
    }
    Ok(lost)
}

pub(crate) fn recover_stalled(
    conn: &Connection,
    ids: &dyn IdGen,
    db_now: Timestamp,
    now: Timestamp,
    scan: &Scan,
) -> Result<Vec<Recovered>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' ORDER BY created_at, run_id");
    let running: Vec<Result<Run>> =
        conn.prepare_cached(&sql).and_then(|mut st| st.query_map([], run_from_row)?.collect()).map_err(map_err(""))?;
    let mut out = Vec::new();
    for run in running {
        let run = run?;
        let Some(reason) = rules::abandoned_because(&run, db_now, scan) else {
            continue;
        };
        if scan.hand_over {
            conn.prepare_cached("UPDATE runs SET lease_expires_at = ?2 WHERE run_id = ?1")
                .and_then(|mut st| st.execute(params![run.run_id, db_now.millis()]))
                .map_err(map_err(""))?;
            out.push(rules::handed_over(&run, reason));
            continue;
        }
        let mut h = head(conn, &run.run_id)?;
        let now = rules::event_time(now, h.updated_at);
        let payload = rules::recovery(&run, reason.clone(), now, scan)?;
        let tx = Tx { conn, ids, run_id: &run.run_id, now, actor: Actor::System, actor_id: rules::RECOVERY_ACTOR };
        tx.event(&mut h, &payload)?;
        let interrupted_attempts = tx.finish_running(&mut h, AttemptStatus::Interrupted)?;
        conn.prepare_cached(
            "UPDATE runs SET state = 'stalled', owner = NULL, owner_process = NULL, lease_expires_at = NULL,
                 recoveries = recoveries + 1,
                 summary = ?2, updated_at = ?3, last_progress_at = ?3, last_event_seq = ?4
             WHERE run_id = ?1",
        )
        .and_then(|mut st| st.execute(params![run.run_id, rules::STALLED_SUMMARY, now.millis(), h.last_event_seq]))
        .map_err(map_err(""))?;
        out.push(Recovered {
            run_id: run.run_id,
            workflow_id: run.workflow_id,
            reason,
            last_heartbeat_at: run.heartbeat_at,
            interrupted_attempts,
        });
    }
    Ok(out)
}

pub(crate) fn prune(
    conn: &Connection,
    ids: &dyn IdGen,
    now: Timestamp,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<PruneReport> {
    let rows: Vec<(i64, String, i64, i64, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT e.id, e.event_type, e.ts, length(CAST(e.payload AS BLOB)), e.run_id, r.state
             FROM events e LEFT JOIN runs r ON r.run_id = e.run_id ORDER BY e.id",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(map_err(""))?;
    let mut report = PruneReport::default();
    let mut emptied: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (id, event_type, ts, bytes, run_id, state) in rows {
        report.scanned += 1;
        let finished = run_id == rules::SYSTEM_RUN
            || state.as_deref().and_then(|s| s.parse::<RunState>().ok()).is_some_and(RunState::is_terminal);
        let entry = emptied.entry(run_id).or_default();
        entry.0 += 1;
        if rules::prunable(policy, now, &event_type, Timestamp(ts), finished) {
            report.pruned_ids.push(id);
            report.bytes += bytes.max(0) as u64;
            entry.1 += 1;
        } else if rules::prunable(policy, now, &event_type, Timestamp(ts), true) {
            report.spared += 1;
        }
    }
    report.runs_emptied = emptied.values().filter(|(all, gone)| all == gone && *gone > 0).count() as u64;
    if dry_run {
        return Ok(report);
    }
    // HSK-GC-004: the report is recorded before anything is deleted, in the same transaction.
    let last_event_seq: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?1", [rules::SYSTEM_RUN], |r| r.get(0))
        .map_err(map_err(""))?;
    let mut h = RunHead {
        state: RunState::Completed,
        owner: None,
        lease_epoch: 0,
        job_id: rules::SYSTEM_RUN.into(),
        trace_id: rules::SYSTEM_RUN.into(),
        last_event_seq,
        total_iterations: 0,
        updated_at: now,
    };
    let tx = Tx { conn, ids, run_id: rules::SYSTEM_RUN, now, actor: Actor::System, actor_id: "gc" };
    tx.event(&mut h, &rules::prune_report(&report, policy, now, dry_run))?;
    for chunk in report.pruned_ids.chunks(500) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        conn.execute(&format!("DELETE FROM events WHERE id IN ({})", list.join(",")), []).map_err(map_err(""))?;
    }
    let finished: Vec<String> =
        RunState::ALL.iter().filter(|s| s.is_terminal()).map(|s| format!("'{}'", s.as_str())).collect();
    conn.execute(
        &format!(
            "DELETE FROM applied_commits WHERE run_id IN (SELECT run_id FROM runs WHERE state IN ({}))",
            finished.join(",")
        ),
        [],
    )
    .map_err(map_err(""))?;
    Ok(report)
}
