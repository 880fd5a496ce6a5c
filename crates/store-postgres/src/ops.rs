//! The SQL behind each write, run by the writer inside its transaction, each in a savepoint.
//!
//! What a write accepts and which events it records come from `steward_store::rules`; this
//! module only says how PostgreSQL stores it. Every statement is sent with its parameter types
//! (`query_typed`): one round trip each, and no named prepared statements, so the store also
//! works behind a pooler in transaction mode.
//!
//! Events are not inserted here: a write appends them to [`Pending`], and the writer inserts a
//! whole batch's events at once, last, under the `event_ids` row lock (see `writer`). Nothing
//! in a write reads events back except `prune`, which the writer runs in a batch of its own.

use serde_json::Value;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use steward_core::Timestamp;
use steward_core::event::{Actor, Payload};
use steward_core::idempotency_key;
use steward_core::ids::IdGen;
use steward_core::state::{AttemptStatus, RunState};
use steward_store::{
    AttemptFinish, Commit, CommitOutcome, Error, NewRun, PruneReport, Recovered, RetentionPolicy, Run, Scan, rules,
};

use crate::rows::{RUN_COLUMNS, corrupt, process_json, run_from_row};

/// A write, as data: the writer may run it again when its transaction was lost.
pub(crate) enum Op {
    CreateRun(NewRun),
    Commit(Commit),
    Heartbeat { owner: String, run_ids: Vec<String>, now: Timestamp },
    Recover { now: Timestamp, scan: Scan },
    Prune { now: Timestamp, policy: RetentionPolicy, dry_run: bool },
}

impl Op {
    /// Whether it runs in a transaction of its own: `prune` reads every event, so the events
    /// other writes of its batch have not inserted yet must not exist.
    pub(crate) fn alone(&self) -> bool {
        matches!(self, Op::Prune { .. })
    }
}

/// What a write answers.
pub(crate) enum Done {
    Run(Box<Run>),
    Outcome(CommitOutcome),
    Lost(Vec<String>),
    Recovered(Vec<Recovered>),
    Pruned(PruneReport),
}

/// Why a write did not apply: the store refused it, or the database failed under it.
pub(crate) enum OpError {
    Refused(Error),
    Pg(&'static str, tokio_postgres::Error),
}

impl From<Error> for OpError {
    fn from(e: Error) -> OpError {
        OpError::Refused(e)
    }
}

fn pg(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> OpError {
    move |e| OpError::Pg(what, e)
}

/// An event waiting for its id, as it will be inserted.
pub(crate) struct PendingEvent {
    pub(crate) run_id: String,
    pub(crate) seq: i64,
    pub(crate) event_id: String,
    pub(crate) ts: i64,
    pub(crate) event_type: String,
    pub(crate) actor: &'static str,
    pub(crate) actor_id: String,
    pub(crate) trace_id: String,
    pub(crate) job_id: String,
    pub(crate) step_id: Option<String>,
    pub(crate) mt_id: Option<String>,
    pub(crate) model_id: Option<String>,
    pub(crate) capability_id: Option<String>,
    pub(crate) payload: String,
}

/// What the batch's writes so far leave for the end of the transaction.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) events: Vec<PendingEvent>,
    /// Writes that made a run claimable: the batch notifies `steward_runnable` if any.
    pub(crate) runnable: usize,
}

impl Pending {
    pub(crate) fn mark(&self) -> (usize, usize) {
        (self.events.len(), self.runnable)
    }

    /// Forgets what a write that was rolled back left.
    pub(crate) fn rollback(&mut self, (events, runnable): (usize, usize)) {
        self.events.truncate(events);
        self.runnable = runnable;
    }
}

/// The writer's transaction as a write sees it.
pub(crate) struct Ctx<'a> {
    pub(crate) client: &'a Client,
    pub(crate) ids: &'a dyn IdGen,
    pub(crate) pending: &'a mut Pending,
}

/// Whether a run in this state waits for a worker to claim it.
fn claimable(state: RunState) -> bool {
    matches!(state, RunState::Queued | RunState::Stalled)
}

/// The fields of a run a write reads and updates.
struct Head {
    state: RunState,
    owner: Option<String>,
    owner_process: Option<String>,
    job_id: String,
    trace_id: String,
    last_event_seq: i64,
    total_iterations: u32,
    /// When it was last written, which bounds its events' times.
    updated_at: Timestamp,
}

/// Reads a run's head and locks its row until the transaction ends: writers of one run, in
/// this process or another, apply one after another.
async fn head(client: &Client, run_id: &str) -> Result<Head, OpError> {
    let row = client
        .query_typed_opt(
            "SELECT state, owner, owner_process, job_id, trace_id, last_event_seq, total_iterations, updated_at
             FROM runs WHERE run_id = $1 FOR UPDATE",
            &[(&run_id, Type::TEXT)],
        )
        .await
        .map_err(pg("reading the run"))?
        .ok_or_else(|| Error::NotFound { what: "run", id: run_id.to_owned() })?;
    let what = format!("run `{run_id}`");
    let get = |e: tokio_postgres::Error| corrupt(&what, e);
    let state: String = row.try_get(0).map_err(get)?;
    let total: i64 = row.try_get(6).map_err(get)?;
    Ok(Head {
        state: state.parse().map_err(|e| corrupt(&what, e))?,
        owner: row.try_get(1).map_err(get)?,
        owner_process: row.try_get(2).map_err(get)?,
        job_id: row.try_get(3).map_err(get)?,
        trace_id: row.try_get(4).map_err(get)?,
        last_event_seq: row.try_get(5).map_err(get)?,
        total_iterations: u32::try_from(total).map_err(|e| corrupt(&what, e))?,
        updated_at: Timestamp(row.try_get(7).map_err(get)?),
    })
}

/// Who writes to one run's log, and when: every event of a write shares these.
struct Writing<'a> {
    run_id: &'a str,
    now: Timestamp,
    actor: Actor,
    actor_id: &'a str,
}

impl Ctx<'_> {
    /// Appends one event to the run's log, taking the next sequence number.
    fn event(&mut self, w: &Writing<'_>, h: &mut Head, payload: &Payload) -> Result<(), OpError> {
        self.event_as(w, h, w.actor, w.actor_id, payload.step_id(), payload)
    }

    /// Appends an event with its own actor and step.
    fn event_as(
        &mut self,
        w: &Writing<'_>,
        h: &mut Head,
        actor: Actor,
        actor_id: &str,
        step_id: Option<&str>,
        payload: &Payload,
    ) -> Result<(), OpError> {
        rules::check_event(actor, payload)?;
        h.last_event_seq += 1;
        self.pending.events.push(PendingEvent {
            run_id: w.run_id.to_owned(),
            seq: h.last_event_seq,
            event_id: self.ids.next_id(),
            ts: w.now.millis(),
            event_type: payload.event_type().to_owned(),
            actor: actor.as_str(),
            actor_id: actor_id.to_owned(),
            trace_id: h.trace_id.clone(),
            job_id: h.job_id.clone(),
            step_id: step_id.map(str::to_owned),
            mt_id: payload.mt_id().map(str::to_owned),
            model_id: payload.model_id().map(str::to_owned),
            capability_id: payload.capability_id().map(str::to_owned),
            payload: payload.to_json().to_string(),
        });
        Ok(())
    }

    /// Ends a started attempt and records `step_attempt_finished`. The row is updated and its
    /// previous status read in one statement; a refused ending rolls the update back with the
    /// write's savepoint.
    async fn finish_attempt(&mut self, w: &Writing<'_>, h: &mut Head, f: &AttemptFinish) -> Result<(), OpError> {
        let attempt = i64::from(f.attempt);
        let output = f.output.as_ref().map(Value::to_string);
        let routes = serde_json::to_string(&f.routes).unwrap_or_else(|_| "[]".into());
        let now = w.now.millis();
        let row = self
            .client
            .query_typed_opt(
                "UPDATE step_attempts AS a
                 SET status = $4, output = $5, error = $6, retryable = $7, routes = $8, finished_at = $9
                 FROM step_attempts AS old
                 WHERE a.run_id = $1 AND a.step_id = $2 AND a.attempt = $3
                   AND old.run_id = a.run_id AND old.step_id = a.step_id AND old.attempt = a.attempt
                 RETURNING old.status, old.started_at",
                &[
                    (&w.run_id, Type::TEXT),
                    (&f.step_id, Type::TEXT),
                    (&attempt, Type::INT8),
                    (&f.status.as_str(), Type::TEXT),
                    (&output, Type::TEXT),
                    (&f.error, Type::TEXT),
                    (&f.retryable, Type::BOOL),
                    (&routes, Type::TEXT),
                    (&now, Type::INT8),
                ],
            )
            .await
            .map_err(pg("ending an attempt"))?;
        let stored = match row {
            Some(row) => {
                let what = format!("attempt `{}`", idempotency_key(w.run_id, &f.step_id, f.attempt));
                let status: String = row.try_get(0).map_err(|e| corrupt(&what, e))?;
                let started_at: i64 = row.try_get(1).map_err(|e| corrupt(&what, e))?;
                Some((status.parse::<AttemptStatus>().map_err(|e| corrupt(&what, e))?, Timestamp(started_at)))
            }
            None => None,
        };
        let payload = rules::finish(w.run_id, f, stored, w.now)?;
        self.event(w, h, &payload)
    }

    /// Ends every attempt of the run that is still running with `status`, in the order they
    /// started.
    async fn finish_running(
        &mut self,
        w: &Writing<'_>,
        h: &mut Head,
        status: AttemptStatus,
    ) -> Result<Vec<String>, OpError> {
        let running = self
            .client
            .query_typed(
                "SELECT step_id, attempt FROM step_attempts WHERE run_id = $1 AND status = 'running' ORDER BY ordinal",
                &[(&w.run_id, Type::TEXT)],
            )
            .await
            .map_err(pg("listing running attempts"))?;
        let mut keys = Vec::new();
        for row in running {
            let what = format!("run `{}`", w.run_id);
            let step_id: String = row.try_get(0).map_err(|e| corrupt(&what, e))?;
            let attempt: i64 = row.try_get(1).map_err(|e| corrupt(&what, e))?;
            let attempt = u32::try_from(attempt).map_err(|e| corrupt(&what, e))?;
            keys.push(idempotency_key(w.run_id, &step_id, attempt));
            self.finish_attempt(w, h, &rules::abandoned(step_id, attempt, status)).await?;
        }
        Ok(keys)
    }
}

/// Runs one write.
pub(crate) async fn run(cx: &mut Ctx<'_>, op: &Op) -> Result<Done, OpError> {
    match op {
        Op::CreateRun(new) => create_run(cx, new).await.map(|r| Done::Run(Box::new(r))),
        Op::Commit(c) => commit(cx, c).await.map(Done::Outcome),
        Op::Heartbeat { owner, run_ids, now } => heartbeat(cx, owner, run_ids, *now).await.map(Done::Lost),
        Op::Recover { now, scan } => recover_stalled(cx, *now, scan).await.map(Done::Recovered),
        Op::Prune { now, policy, dry_run } => prune(cx, *now, policy, *dry_run).await.map(Done::Pruned),
    }
}

/// Reads a whole run inside the transaction.
async fn read_run(client: &Client, run_id: &str, lock: bool) -> Result<Option<Run>, OpError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1{}", if lock { " FOR UPDATE" } else { "" });
    let row = client.query_typed_opt(&sql, &[(&run_id, Type::TEXT)]).await.map_err(pg("reading the run"))?;
    Ok(row.as_ref().map(run_from_row).transpose()?)
}

async fn create_run(cx: &mut Ctx<'_>, new: &NewRun) -> Result<Run, OpError> {
    let payload = rules::created(new)?;
    let now = new.now.millis();
    let inputs = Value::Object(new.inputs.clone()).to_string();
    let version = i64::from(new.workflow_version);
    // The definition first (the run refers to it), in the same statement; a run id that is
    // taken inserts nothing, and a concurrent creator of the same id is waited for.
    let inserted = cx
        .client
        .execute_typed(
            "WITH definition AS (
                 INSERT INTO definitions (hash, workflow_id, version, source, created_at)
                 VALUES ($4, $2, $3, $13, $11) ON CONFLICT (hash) DO NOTHING
             )
             INSERT INTO runs (run_id, workflow_id, workflow_version, definition_hash, inputs, state, summary,
                 job_id, trace_id, job_kind, profile_id, protocol_id, created_at, updated_at, last_progress_at,
                 workdir, last_event_seq)
             VALUES ($1, $2, $3, $4, $5, 'queued', 'queued', $6, $7, $8, $9, $10, $11, $11, $11, $12, 1)
             ON CONFLICT (run_id) DO NOTHING",
            &[
                (&new.run_id, Type::TEXT),
                (&new.workflow_id, Type::TEXT),
                (&version, Type::INT8),
                (&new.definition_hash, Type::TEXT),
                (&inputs, Type::TEXT),
                (&new.job_id, Type::TEXT),
                (&new.trace_id, Type::TEXT),
                (&new.contract.job_kind.as_str(), Type::TEXT),
                (&new.contract.profile_id, Type::TEXT),
                (&new.contract.protocol_id, Type::TEXT),
                (&now, Type::INT8),
                (&new.workdir, Type::TEXT),
                (&new.definition_source, Type::TEXT),
            ],
        )
        .await
        .map_err(pg("creating the run"))?;
    if inserted == 0 {
        let existing = read_run(cx.client, &new.run_id, false).await?.ok_or_else(|| Error::Unavailable {
            detail: format!("run `{}` vanished while it was created", new.run_id),
        })?;
        return Ok(rules::existing_run(new, existing)?);
    }
    let mut h = Head {
        state: RunState::Queued,
        owner: None,
        owner_process: None,
        job_id: new.job_id.clone(),
        trace_id: new.trace_id.clone(),
        last_event_seq: 0,
        total_iterations: 0,
        updated_at: new.now,
    };
    let w = Writing { run_id: &new.run_id, now: new.now, actor: new.actor, actor_id: &new.actor_id };
    cx.event(&w, &mut h, &payload)?;
    cx.pending.runnable += 1;
    Ok(Run {
        run_id: new.run_id.clone(),
        workflow_id: new.workflow_id.clone(),
        workflow_version: new.workflow_version,
        definition_hash: new.definition_hash.clone(),
        inputs: new.inputs.clone(),
        workdir: new.workdir.clone(),
        state: RunState::Queued,
        current_step_id: None,
        current_attempt: None,
        summary: "queued".into(),
        terminal_reason: None,
        job_id: new.job_id.clone(),
        trace_id: new.trace_id.clone(),
        contract: new.contract.clone(),
        total_iterations: 0,
        owner: None,
        owner_process: None,
        recoveries: 0,
        created_at: new.now,
        started_at: None,
        updated_at: new.now,
        heartbeat_at: None,
        last_progress_at: new.now,
        finished_at: None,
        last_event_seq: h.last_event_seq,
    })
}

async fn commit(cx: &mut Ctx<'_>, c: &Commit) -> Result<CommitOutcome, OpError> {
    let mut h = head(cx.client, &c.run_id).await?;
    if let Some(id) = &c.id {
        // Noted first: if the rest of the write is refused, its savepoint takes this back too.
        let fresh = cx
            .client
            .execute_typed(
                "INSERT INTO applied_commits (commit_id, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[(id, Type::TEXT), (&c.run_id, Type::TEXT)],
            )
            .await
            .map_err(pg("noting the commit id"))?;
        if fresh == 0 {
            return Ok(CommitOutcome { state: h.state, last_event_seq: h.last_event_seq });
        }
    }
    rules::check_expect(c, h.state, h.owner.as_deref())?;
    rules::check_shape(c)?;
    let when = rules::event_time(c.now, h.updated_at);
    let w = Writing { run_id: &c.run_id, now: when, actor: c.actor, actor_id: &c.actor_id };
    for e in &c.events {
        cx.event_as(&w, &mut h, e.actor, &e.actor_id, e.step_id.as_deref(), &e.payload)?;
    }
    for f in &c.finished {
        cx.finish_attempt(&w, &mut h, f).await?;
    }
    if let Some(status) = c.finish_running_as {
        cx.finish_running(&w, &mut h, status).await?;
    }
    let mut terminal_reason: Option<&str> = None;
    if let Some(t) = &c.transition {
        let payload = rules::transition(&c.run_id, &h.job_id, h.owner.as_deref(), h.state, t)?;
        cx.event(&w, &mut h, &payload)?;
        h.state = t.to;
        if t.to.is_terminal() {
            terminal_reason = Some(&t.reason);
        }
        if claimable(t.to) {
            cx.pending.runnable += 1;
        }
    }
    let now = when.millis();
    for s in &c.started {
        let key = idempotency_key(&c.run_id, &s.step_id, s.attempt);
        let (attempt, visit, ordinal) = (i64::from(s.attempt), i64::from(s.visit), i64::from(h.total_iterations) + 1);
        let input = s.input.to_string();
        let inserted = cx
            .client
            .execute_typed(
                "INSERT INTO step_attempts (run_id, step_id, attempt, visit, ordinal, status, idempotency_key, input, started_at)
                 VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    (&c.run_id, Type::TEXT),
                    (&s.step_id, Type::TEXT),
                    (&attempt, Type::INT8),
                    (&visit, Type::INT8),
                    (&ordinal, Type::INT8),
                    (&key, Type::TEXT),
                    (&input, Type::TEXT),
                    (&now, Type::INT8),
                ],
            )
            .await
            .map_err(pg("starting an attempt"))?;
        let payload = rules::started(&c.run_id, s, inserted == 0)?;
        h.total_iterations += 1;
        cx.event(&w, &mut h, &payload)?;
    }
    for p in &c.processes {
        let attempt = i64::from(p.attempt);
        let process = process_json(&p.process);
        let row = cx
            .client
            .query_typed_opt(
                "UPDATE step_attempts AS a SET process = $4
                 FROM step_attempts AS old
                 WHERE a.run_id = $1 AND a.step_id = $2 AND a.attempt = $3
                   AND old.run_id = a.run_id AND old.step_id = a.step_id AND old.attempt = a.attempt
                 RETURNING old.status",
                &[(&c.run_id, Type::TEXT), (&p.step_id, Type::TEXT), (&attempt, Type::INT8), (&process, Type::TEXT)],
            )
            .await
            .map_err(pg("recording a command process"))?;
        let stored = match row {
            Some(row) => {
                let status: String = row.try_get(0).map_err(|e| corrupt(&c.run_id, e))?;
                Some(status.parse::<AttemptStatus>().map_err(|e| corrupt(&c.run_id, e))?)
            }
            None => None,
        };
        let payload = rules::process(&c.run_id, p, stored)?;
        cx.event(&w, &mut h, &payload)?;
    }
    // Owners as stored: the id, and the process as JSON (kept as it is unless replaced).
    let set = c.set_owner.as_ref().map(|o| (o.id.clone(), o.process.as_ref().map(process_json)));
    let current = h.owner.clone().map(|id| (id, h.owner_process.clone()));
    let (owner, owner_process) = rules::owner_after(h.state, set, current).unzip();
    let owner_process = owner_process.flatten();
    let current = c.started.last().map(|s| (s.step_id.clone(), i64::from(s.attempt)));
    let (current_step, current_attempt) = current.unzip();
    let total = i64::from(h.total_iterations);
    let finished_at = h.state.is_terminal().then_some(now);
    cx.client
        .execute_typed(
            "UPDATE runs SET
                state = $2,
                current_step_id = COALESCE($3, current_step_id),
                current_attempt = COALESCE($4, current_attempt),
                summary = COALESCE($5, summary),
                terminal_reason = COALESCE($6, terminal_reason),
                total_iterations = $7,
                owner = $8,
                started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, $9) ELSE started_at END,
                updated_at = $9,
                heartbeat_at = CASE WHEN $2 = 'running' THEN $9 ELSE heartbeat_at END,
                last_progress_at = $9,
                finished_at = $10,
                last_event_seq = $11,
                owner_process = $12
             WHERE run_id = $1",
            &[
                (&c.run_id, Type::TEXT),
                (&h.state.as_str(), Type::TEXT),
                (&current_step, Type::TEXT),
                (&current_attempt, Type::INT8),
                (&c.summary, Type::TEXT),
                (&terminal_reason, Type::TEXT),
                (&total, Type::INT8),
                (&owner, Type::TEXT),
                (&now, Type::INT8),
                (&finished_at, Type::INT8),
                (&h.last_event_seq, Type::INT8),
                (&owner_process, Type::TEXT),
            ],
        )
        .await
        .map_err(pg("updating the run"))?;
    Ok(CommitOutcome { state: h.state, last_event_seq: h.last_event_seq })
}

async fn heartbeat(cx: &mut Ctx<'_>, owner: &str, run_ids: &[String], now: Timestamp) -> Result<Vec<String>, OpError> {
    let now = now.millis();
    let renewed = cx
        .client
        .query_typed(
            "UPDATE runs SET heartbeat_at = $3, last_progress_at = $3
             WHERE run_id = ANY($1) AND owner = $2 AND state = 'running' RETURNING run_id",
            &[(&run_ids, Type::TEXT_ARRAY), (&owner, Type::TEXT), (&now, Type::INT8)],
        )
        .await
        .map_err(pg("renewing heartbeats"))?;
    let renewed: std::collections::HashSet<String> = renewed.iter().filter_map(|r| r.try_get(0).ok()).collect();
    Ok(run_ids.iter().filter(|id| !renewed.contains(*id)).cloned().collect())
}

async fn recover_stalled(cx: &mut Ctx<'_>, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>, OpError> {
    // Candidates are found without locks, so that live runs' writers are not held up; each is
    // then locked and judged again, since its owner may have written in between.
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' ORDER BY created_at, run_id");
    let rows = cx.client.query_typed(&sql, &[]).await.map_err(pg("listing running runs"))?;
    let mut candidates = Vec::new();
    for row in &rows {
        let run = run_from_row(row)?;
        if rules::abandoned_because(run.owner.as_deref(), run.heartbeat_at, now, scan).is_some() {
            candidates.push(run.run_id);
        }
    }
    let mut out = Vec::new();
    for run_id in candidates {
        let Some(run) = read_run(cx.client, &run_id, true).await? else { continue };
        if run.state != RunState::Running {
            continue;
        }
        let Some(reason) = rules::abandoned_because(run.owner.as_deref(), run.heartbeat_at, now, scan) else {
            continue;
        };
        let mut h = Head {
            state: run.state,
            owner: run.owner.clone(),
            owner_process: None,
            job_id: run.job_id.clone(),
            trace_id: run.trace_id.clone(),
            last_event_seq: run.last_event_seq,
            total_iterations: run.total_iterations,
            updated_at: run.updated_at,
        };
        let now = rules::event_time(now, h.updated_at);
        let payload = rules::recovery(&run, reason.clone(), now, scan)?;
        let w = Writing { run_id: &run.run_id, now, actor: Actor::System, actor_id: rules::RECOVERY_ACTOR };
        cx.event(&w, &mut h, &payload)?;
        let interrupted_attempts = cx.finish_running(&w, &mut h, AttemptStatus::Interrupted).await?;
        let millis = now.millis();
        cx.client
            .execute_typed(
                "UPDATE runs SET state = 'stalled', owner = NULL, owner_process = NULL, recoveries = recoveries + 1,
                     summary = $2, updated_at = $3, last_progress_at = $3, last_event_seq = $4
                 WHERE run_id = $1",
                &[
                    (&run.run_id, Type::TEXT),
                    (&rules::STALLED_SUMMARY, Type::TEXT),
                    (&millis, Type::INT8),
                    (&h.last_event_seq, Type::INT8),
                ],
            )
            .await
            .map_err(pg("stalling the run"))?;
        if claimable(RunState::Stalled) {
            cx.pending.runnable += 1;
        }
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

async fn prune(
    cx: &mut Ctx<'_>,
    now: Timestamp,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<PruneReport, OpError> {
    let rows = cx
        .client
        .query_typed(
            "SELECT e.id, e.event_type, e.ts, octet_length(e.payload)::bigint, e.run_id, r.state
             FROM events e LEFT JOIN runs r ON r.run_id = e.run_id ORDER BY e.id",
            &[],
        )
        .await
        .map_err(pg("reading events to prune"))?;
    let mut report = PruneReport::default();
    let mut emptied: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for row in rows {
        let get = |e: tokio_postgres::Error| corrupt("events", e);
        let (id, event_type, ts, bytes, run_id, state): (i64, String, i64, i64, String, Option<String>) = (
            row.try_get(0).map_err(get)?,
            row.try_get(1).map_err(get)?,
            row.try_get(2).map_err(get)?,
            row.try_get(3).map_err(get)?,
            row.try_get(4).map_err(get)?,
            row.try_get(5).map_err(get)?,
        );
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
    // HSK-GC-004: the report is part of the transaction that deletes; it takes an id above
    // every event this prune saw.
    let last_event_seq: i64 = cx
        .client
        .query_typed_one(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = $1",
            &[(&rules::SYSTEM_RUN, Type::TEXT)],
        )
        .await
        .map_err(pg("reading the system log"))?
        .try_get(0)
        .map_err(|e| corrupt("events", e))?;
    let mut h = Head {
        state: RunState::Completed,
        owner: None,
        owner_process: None,
        job_id: rules::SYSTEM_RUN.into(),
        trace_id: rules::SYSTEM_RUN.into(),
        last_event_seq,
        total_iterations: 0,
        updated_at: now,
    };
    let w = Writing { run_id: rules::SYSTEM_RUN, now, actor: Actor::System, actor_id: "gc" };
    cx.event(&w, &mut h, &rules::prune_report(&report, policy, now, dry_run))?;
    cx.client
        .execute_typed("DELETE FROM events WHERE id = ANY($1)", &[(&report.pruned_ids, Type::INT8_ARRAY)])
        .await
        .map_err(pg("deleting events"))?;
    let finished: Vec<&str> = RunState::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
    cx.client
        .execute_typed(
            "DELETE FROM applied_commits WHERE run_id IN (SELECT run_id FROM runs WHERE state = ANY($1))",
            &[(&finished, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(pg("forgetting finished runs' commit ids"))?;
    Ok(report)
}
