//! The SQL behind each write, run by the writer inside its transaction.
//!
//! What a write accepts and which events it records come from `steward_store::rules`; this
//! module only says how PostgreSQL stores it. Statements are prepared once per connection.
//!
//! Round trips are what a write costs (the writer runs writes one after another), so a commit
//! reads everything its checks need in one (its run, locked; whether its id was applied; the
//! attempts it touches), decides on that with the same checks in the same order as the
//! reference store, and only then writes, in one more. A refused commit therefore wrote
//! nothing, which lets the writer decide a whole wave of commits to distinct runs with two
//! round trips and no savepoints (`commit_wave`); other writes run in a savepoint each.
//!
//! Events are not inserted here: a write appends them to [`Pending`], and the writer inserts a
//! whole batch's events at once, last, under the `event_ids` row lock (see `writer`). Nothing
//! in a write reads events back except `prune`, which the writer runs in a batch of its own.

use std::collections::{HashMap, HashSet};

use serde_json::Value as Value_;
use tokio_postgres::types::Type;

use steward_core::Timestamp;
use steward_core::event::{Actor, Payload};
use steward_core::idempotency_key;
use steward_core::ids::IdGen;
use steward_core::state::{AttemptStatus, HumanDecision, RunState};
use steward_store::{
    AttemptFinish, AttemptProcess, AttemptStart, Claim, Claimed, Commit, CommitOutcome, Error, Lease, NewRun,
    PruneReport, Recovered, RetentionPolicy, Run, Scan, rules,
};

use crate::conn::{Answer, Flight, Session, Value, val};
use crate::rows::{RUN_COLUMNS, corrupt, process_json, run_from_row};

/// A write, as data: the writer may run it again when its transaction was lost.
pub(crate) enum Op {
    CreateRun(NewRun),
    Commit(Commit),
    Claim(Claim),
    Renew { leases: Vec<Lease>, lease_ms: u64, now: Timestamp },
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
    Claimed(Vec<Claimed>),
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
    pub(crate) db: &'a Session,
    pub(crate) ids: &'a dyn IdGen,
    pub(crate) pending: &'a mut Pending,
    /// Transaction control to send before the write's first statement (`BEGIN`, the previous
    /// write's `RELEASE` or `ROLLBACK TO`, this write's `SAVEPOINT`), in the same round trip.
    /// `None` once sent: the writer then knows the write has a savepoint to release or undo.
    pub(crate) opening: Option<String>,
    /// The database's time as a test sets it (`PgStore::with_clock`); `None` is the server's
    /// clock, which is what leases are measured on.
    pub(crate) db_now: Option<i64>,
    /// Whether the server refused one of the write's statements: the transaction is then
    /// unusable until the savepoint is rolled back, even if the write reports a refusal of its
    /// own that came earlier in order.
    pub(crate) aborted: bool,
}

impl<'a> Ctx<'a> {
    /// A round trip; it carries the opening if that has not gone out yet. The opening is
    /// taken only when the trip is sent: a statement that fails to prepare while the trip is
    /// built leaves it unsent, so the writer does not undo a savepoint that never existed
    /// (and report that instead of the statement's own error).
    fn trip(&mut self) -> Trip<'a> {
        Trip { flight: Flight::new(self.db) }
    }

    /// Sends the opening on its own, for writes whose statements are not on a hot path.
    async fn open(&mut self) -> Result<(), OpError> {
        let trip = self.trip();
        trip.send(self).await.map(drop)
    }
}

/// Statements of one round trip (see [`Flight`]).
struct Trip<'a> {
    flight: Flight<'a>,
}

impl Trip<'_> {
    async fn query(&mut self, what: &'static str, sql: &str, params: Vec<(Value, Type)>) -> Result<(), OpError> {
        self.flight.query(sql, params).await.map(drop).map_err(pg(what))
    }

    async fn send(mut self, cx: &mut Ctx<'_>) -> Result<Answers, OpError> {
        let opens = cx.opening.take().map(|sql| self.flight.simple_first(sql)).is_some();
        let answers = self.flight.send().await;
        cx.aborted |= answers.iter().any(Result::is_err);
        let mut answers = answers.into_iter();
        if opens {
            answers.next().transpose().map_err(pg("opening a savepoint"))?;
        }
        Ok(Answers(answers))
    }
}

/// A round trip's answers, read in the order the statements were added.
struct Answers(std::vec::IntoIter<Answer>);

impl Answers {
    fn next(&mut self, what: &'static str) -> Result<Vec<tokio_postgres::Row>, OpError> {
        match self.0.next() {
            Some(answer) => answer.map_err(pg(what)),
            None => Err(OpError::Refused(Error::Unavailable { detail: format!("{what}: no answer") })),
        }
    }
}

/// The database's clock in SQL, in milliseconds: the server's `clock_timestamp()`, unless a
/// test set the time (the parameter numbered `n`).
fn db_now_sql(n: usize) -> String {
    format!("COALESCE(${n}::bigint, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)")
}

/// A duration in milliseconds as the database adds it.
fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The fields of a run a write reads and updates.
struct Head {
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

/// A run's head from a row of [`WAVE_HEADS`] (whose column 0 is the run id).
fn head(run_id: &str, row: &tokio_postgres::Row) -> Result<Head, OpError> {
    let what = format!("run `{run_id}`");
    let get = |e: tokio_postgres::Error| corrupt(&what, e);
    let state: String = row.try_get(1).map_err(get)?;
    let epoch: i64 = row.try_get(3).map_err(get)?;
    let total: i64 = row.try_get(7).map_err(get)?;
    Ok(Head {
        state: state.parse().map_err(|e| corrupt(&what, e))?,
        owner: row.try_get(2).map_err(get)?,
        lease_epoch: u64::try_from(epoch).map_err(|e| corrupt(&what, e))?,
        job_id: row.try_get(4).map_err(get)?,
        trace_id: row.try_get(5).map_err(get)?,
        last_event_seq: row.try_get(6).map_err(get)?,
        total_iterations: u32::try_from(total).map_err(|e| corrupt(&what, e))?,
        updated_at: Timestamp(row.try_get(8).map_err(get)?),
    })
}

const FINISH: &str = "UPDATE step_attempts AS a
     SET status = $4, output = $5, error = $6, retryable = $7, routes = $8, finished_at = $9, with_issues = $10
     FROM step_attempts AS old
     WHERE a.run_id = $1 AND a.step_id = $2 AND a.attempt = $3
       AND old.run_id = a.run_id AND old.step_id = a.step_id AND old.attempt = a.attempt
     RETURNING old.status, old.started_at";

fn finish_params(run_id: &str, f: &AttemptFinish, now: Timestamp) -> Vec<(Value, Type)> {
    vec![
        val(run_id.to_owned(), Type::TEXT),
        val(f.step_id.clone(), Type::TEXT),
        val(i64::from(f.attempt), Type::INT8),
        val(f.status.as_str(), Type::TEXT),
        val(f.output.as_ref().map(Value_::to_string), Type::TEXT),
        val(f.error.clone(), Type::TEXT),
        val(f.retryable, Type::BOOL),
        val(serde_json::to_string(&f.routes).unwrap_or_else(|_| "[]".into()), Type::TEXT),
        val(now.millis(), Type::INT8),
        val(f.with_issues, Type::BOOL),
    ]
}

/// The status and start an attempt had before [`FINISH`] ended it.
fn finished_from(
    run_id: &str,
    f: &AttemptFinish,
    rows: &[tokio_postgres::Row],
) -> Result<Option<(AttemptStatus, Timestamp)>, OpError> {
    let Some(row) = rows.first() else { return Ok(None) };
    let what = format!("attempt `{}`", idempotency_key(run_id, &f.step_id, f.attempt));
    let status: String = row.try_get(0).map_err(|e| corrupt(&what, e))?;
    let started_at: i64 = row.try_get(1).map_err(|e| corrupt(&what, e))?;
    Ok(Some((status.parse::<AttemptStatus>().map_err(|e| corrupt(&what, e))?, Timestamp(started_at))))
}

/// A run's running attempts, in the order they started.
const RUNNING: &str =
    "SELECT step_id, attempt FROM step_attempts WHERE run_id = $1 AND status = 'running' ORDER BY ordinal";

fn running_from(run_id: &str, rows: &[tokio_postgres::Row]) -> Result<Vec<(String, u32)>, OpError> {
    let what = format!("run `{run_id}`");
    let mut out = Vec::new();
    for row in rows {
        let step_id: String = row.try_get(0).map_err(|e| corrupt(&what, e))?;
        let attempt: i64 = row.try_get(1).map_err(|e| corrupt(&what, e))?;
        out.push((step_id, u32::try_from(attempt).map_err(|e| corrupt(&what, e))?));
    }
    Ok(out)
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
        let json = rules::check_event(actor, payload)?;
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
            payload: json.to_string(),
        });
        Ok(())
    }

    /// Ends every attempt of the run that is still running with `status`, in the order they
    /// started (recovery; a commit does it in its own round trip).
    async fn finish_running(
        &mut self,
        w: &Writing<'_>,
        h: &mut Head,
        status: AttemptStatus,
    ) -> Result<Vec<String>, OpError> {
        let rows = self.db.query(RUNNING, &[(&w.run_id, Type::TEXT)]).await.map_err(pg("listing running attempts"))?;
        let mut keys = Vec::new();
        for (step_id, attempt) in running_from(w.run_id, &rows)? {
            keys.push(idempotency_key(w.run_id, &step_id, attempt));
            let f = rules::abandoned(step_id, attempt, status);
            let params = finish_params(w.run_id, &f, w.now);
            let refs: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> = params
                .iter()
                .map(|(v, t)| (v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync), t.clone()))
                .collect();
            let rows = self.db.query(FINISH, &refs).await.map_err(pg("ending an attempt"))?;
            let payload = rules::finish(w.run_id, &f, finished_from(w.run_id, &f, &rows)?, w.now)?;
            self.event(w, h, &payload)?;
        }
        Ok(keys)
    }
}

/// Runs one write.
pub(crate) async fn run(cx: &mut Ctx<'_>, op: &Op) -> Result<Done, OpError> {
    match op {
        Op::CreateRun(new) => create_run(cx, new).await.map(|r| Done::Run(Box::new(r))),
        Op::Commit(c) => commit(cx, c).await.map(Done::Outcome),
        Op::Claim(claim) => self::claim(cx, claim).await.map(Done::Claimed),
        Op::Renew { leases, lease_ms, now } => renew(cx, leases, *lease_ms, *now).await.map(Done::Lost),
        Op::Recover { now, scan } => recover_stalled(cx, *now, scan).await.map(Done::Recovered),
        Op::Prune { now, policy, dry_run } => prune(cx, *now, policy, *dry_run).await.map(Done::Pruned),
    }
}

/// Reads a whole run inside the transaction.
async fn read_run(db: &Session, run_id: &str, lock: bool) -> Result<Option<Run>, OpError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1{}", if lock { " FOR UPDATE" } else { "" });
    let row = db.query_opt(&sql, &[(&run_id, Type::TEXT)]).await.map_err(pg("reading the run"))?;
    Ok(row.as_ref().map(run_from_row).transpose()?)
}

/// Creates the run, and the definition it refers to if it is new, in one statement; a run id
/// that is taken inserts nothing, and a concurrent creator of the same id is waited for.
const CREATE: &str = "WITH definition AS (
         INSERT INTO definitions (hash, workflow_id, version, source, created_at)
         VALUES ($4, $2, $3, $13, $11) ON CONFLICT (hash) DO NOTHING
     )
     INSERT INTO runs (run_id, workflow_id, workflow_version, definition_hash, inputs, state, summary,
         job_id, trace_id, job_kind, profile_id, protocol_id, created_at, updated_at, last_progress_at,
         workdir, last_event_seq, parent_run_id)
     VALUES ($1, $2, $3, $4, $5, 'queued', 'queued', $6, $7, $8, $9, $10, $11, $11, $11, $12, 1, $14)
     ON CONFLICT (run_id) DO NOTHING
     RETURNING 1";

/// A restarted or forked run's reused attempts, completed at its creation.
const REUSE: &str = "INSERT INTO step_attempts (run_id, step_id, attempt, visit, ordinal, status, idempotency_key,
         input, output, retryable, routes, started_at, finished_at, with_issues, reused_from)
     SELECT $1, k.step_id, k.attempt, k.visit, k.ordinal, 'completed', k.key, k.input, k.output, FALSE, k.routes,
         $2, $2, k.with_issues, k.from_key
     FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[],
             $10::text[], $11::bool[], $12::text[])
         AS k(step_id, attempt, visit, ordinal, key, input, output, routes, with_issues, from_key)";

const REUSED_HEAD: &str = "UPDATE runs SET last_event_seq = $2, total_iterations = $3 WHERE run_id = $1";

async fn create_run(cx: &mut Ctx<'_>, new: &NewRun) -> Result<Run, OpError> {
    let payload = rules::created(new)?;
    let reused = rules::reused(new)?;
    let mut trip = cx.trip();
    trip.query(
        "creating the run",
        CREATE,
        vec![
            val(new.run_id.clone(), Type::TEXT),
            val(new.workflow_id.clone(), Type::TEXT),
            val(i64::from(new.workflow_version), Type::INT8),
            val(new.definition_hash.clone(), Type::TEXT),
            val(Value_::Object(new.inputs.clone()).to_string(), Type::TEXT),
            val(new.job_id.clone(), Type::TEXT),
            val(new.trace_id.clone(), Type::TEXT),
            val(new.contract.job_kind.as_str(), Type::TEXT),
            val(new.contract.profile_id.clone(), Type::TEXT),
            val(new.contract.protocol_id.clone(), Type::TEXT),
            val(new.now.millis(), Type::INT8),
            val(new.workdir.clone(), Type::TEXT),
            val(new.definition_source.clone(), Type::TEXT),
            val(new.lineage.as_ref().map(|l| l.parent_run_id.clone()), Type::TEXT),
        ],
    )
    .await?;
    let inserted = !trip.send(cx).await?.next("creating the run")?.is_empty();
    if !inserted {
        let existing = read_run(cx.db, &new.run_id, false).await?.ok_or_else(|| Error::Unavailable {
            detail: format!("run `{}` vanished while it was created", new.run_id),
        })?;
        return Ok(rules::existing_run(new, existing)?);
    }
    let mut h = Head {
        state: RunState::Queued,
        owner: None,
        lease_epoch: 0,
        job_id: new.job_id.clone(),
        trace_id: new.trace_id.clone(),
        last_event_seq: 0,
        total_iterations: 0,
        updated_at: new.now,
    };
    let w = Writing { run_id: &new.run_id, now: new.now, actor: new.actor, actor_id: &new.actor_id };
    cx.event(&w, &mut h, &payload)?;
    if let Some(lineage) = new.lineage.as_ref().filter(|l| !l.reused.is_empty()) {
        for p in &reused {
            cx.event(&w, &mut h, p)?;
        }
        let rows: Vec<steward_store::Attempt> =
            lineage.reused.iter().map(|r| r.attempt_of(&new.run_id, new.now)).collect();
        let mut trip = cx.trip();
        let params = vec![
            val(new.run_id.clone(), Type::TEXT),
            val(new.now.millis(), Type::INT8),
            val(rows.iter().map(|a| a.step_id.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(rows.iter().map(|a| i64::from(a.attempt)).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(rows.iter().map(|a| i64::from(a.visit)).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val((1..=rows.len() as i64).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(rows.iter().map(|a| a.idempotency_key.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(rows.iter().map(|a| a.input.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(rows.iter().map(|a| a.output.as_ref().map(Value_::to_string)).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(
                rows.iter()
                    .map(|a| serde_json::to_string(&a.routes).unwrap_or_else(|_| "[]".into()))
                    .collect::<Vec<_>>(),
                Type::TEXT_ARRAY,
            ),
            val(rows.iter().map(|a| a.with_issues).collect::<Vec<_>>(), Type::BOOL_ARRAY),
            val(rows.iter().map(|a| a.reused_from.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
        ];
        trip.query("reusing attempts", REUSE, params).await?;
        let head = vec![
            val(new.run_id.clone(), Type::TEXT),
            val(h.last_event_seq, Type::INT8),
            val(rows.len() as i64, Type::INT8),
        ];
        trip.query("updating the run", REUSED_HEAD, head).await?;
        let mut answers = trip.send(cx).await?;
        answers.next("reusing attempts")?;
        answers.next("updating the run")?;
        h.total_iterations = rows.len() as u32;
    }
    cx.pending.runnable += 1;
    Ok(Run { last_event_seq: h.last_event_seq, total_iterations: h.total_iterations, ..Run::queued(new) })
}

// A wave's statements: each takes the rows of every commit of the wave as arrays, so a wave
// costs the same few statements whatever its size (a statement's fixed cost on the server is
// most of what a small write costs it).

/// The wave's runs, locked in run-id order (so that two writers' waves cannot deadlock each
/// other): writers of one run, in this process or another, apply one after another, each
/// against what the last committed.
const WAVE_HEADS: &str = "SELECT run_id, state, owner, lease_epoch, job_id, trace_id, last_event_seq,
         total_iterations, updated_at
     FROM runs WHERE run_id = ANY($1::text[]) ORDER BY run_id FOR UPDATE";

/// Which of the wave's commit ids were applied before.
const WAVE_APPLIED: &str = "SELECT a.run_id FROM applied_commits AS a
     JOIN unnest($1::text[], $2::text[]) AS k(commit_id, run_id) ON a.commit_id = k.commit_id AND a.run_id = k.run_id";

/// The attempts the commits' checks look at: those each ends, starts, answers or records a
/// process for, and, for a commit that ends all running ones or releases its run, every
/// running one; by run, in the order they started.
/// An attempt that waits for a person says whether a later attempt of its step exists (an answer
/// may not land on it then); for the rest, which are most, nothing is looked up.
const WAVE_ATTEMPTS: &str = "SELECT a.*, a.status = 'awaiting_user' AND EXISTS (SELECT 1 FROM step_attempts AS b
         WHERE b.run_id = a.run_id AND b.step_id = a.step_id AND b.attempt > a.attempt)
     FROM (SELECT run_id, step_id, attempt, status, started_at, answer, ordinal
           FROM step_attempts WHERE run_id = ANY($1::text[]) AND status = 'running'
           UNION
           SELECT a.run_id, a.step_id, a.attempt, a.status, a.started_at, a.answer, a.ordinal
           FROM step_attempts AS a
           JOIN unnest($2::text[], $3::text[], $4::bigint[]) AS k(run_id, step_id, attempt)
             ON a.run_id = k.run_id AND a.step_id = k.step_id AND a.attempt = k.attempt) AS a
     ORDER BY 1, 7";

const WAVE_NOTES: &str = "INSERT INTO applied_commits (commit_id, run_id)
     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING";

const WAVE_ANSWERS: &str = "UPDATE step_attempts AS a SET answer = k.answer, answer_detail = k.detail
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])
         AS k(run_id, step_id, attempt, answer, detail)
     WHERE a.run_id = k.run_id AND a.step_id = k.step_id AND a.attempt = k.attempt";

const WAVE_FINISHES: &str = "UPDATE step_attempts AS a SET status = k.status, output = k.output, error = k.error,
         retryable = k.retryable, routes = k.routes, finished_at = k.finished_at, with_issues = k.with_issues
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bool[],
             $8::text[], $9::bigint[], $10::bool[])
         AS k(run_id, step_id, attempt, status, output, error, retryable, routes, finished_at, with_issues)
     WHERE a.run_id = k.run_id AND a.step_id = k.step_id AND a.attempt = k.attempt";

const WAVE_STARTS: &str = "INSERT INTO step_attempts
         (run_id, step_id, attempt, visit, ordinal, status, idempotency_key, input, started_at)
     SELECT k.run_id, k.step_id, k.attempt, k.visit, k.ordinal, 'running', k.idempotency_key, k.input, k.started_at
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[],
             $8::bigint[])
         AS k(run_id, step_id, attempt, visit, ordinal, idempotency_key, input, started_at)
     ON CONFLICT DO NOTHING";

const WAVE_PROCESSES: &str = "UPDATE step_attempts AS a SET process = k.process
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS k(run_id, step_id, attempt, process)
     WHERE a.run_id = k.run_id AND a.step_id = k.step_id AND a.attempt = k.attempt";

/// The runs' fields after their commits. Whoever holds a run keeps it (`keeps`) only while it
/// goes on running unreleased; a release makes it claimable `ready_in` ms after the database's
/// now; a run that (re-)enters `running` is claimable at once.
fn wave_runs_sql() -> String {
    format!(
        "UPDATE runs SET
            state = k.state,
            current_step_id = COALESCE(k.current_step_id, runs.current_step_id),
            current_attempt = COALESCE(k.current_attempt, runs.current_attempt),
            summary = COALESCE(k.summary, runs.summary),
            terminal_reason = COALESCE(k.terminal_reason, runs.terminal_reason),
            total_iterations = k.total_iterations,
            owner = CASE WHEN k.keeps THEN runs.owner ELSE NULL END,
            owner_process = CASE WHEN k.keeps THEN runs.owner_process ELSE NULL END,
            lease_expires_at = CASE WHEN k.keeps THEN runs.lease_expires_at ELSE NULL END,
            started_at = CASE WHEN k.state = 'running' THEN COALESCE(runs.started_at, k.now) ELSE runs.started_at END,
            updated_at = k.now,
            last_progress_at = k.now,
            finished_at = k.finished_at,
            last_event_seq = k.last_event_seq,
            ready_at = CASE WHEN k.ready_in IS NOT NULL THEN {} + k.ready_in
                            WHEN k.resets_ready THEN NULL ELSE runs.ready_at END
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[],
                 $8::bool[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bool[])
             AS k(run_id, state, current_step_id, current_attempt, summary, terminal_reason, total_iterations,
                  keeps, now, finished_at, last_event_seq, ready_in, resets_ready)
         WHERE runs.run_id = k.run_id",
        db_now_sql(14)
    )
}

/// An attempt as a commit's checks see it, changed as the commit's own changes apply.
struct Stored {
    step_id: String,
    attempt: u32,
    status: AttemptStatus,
    started_at: Timestamp,
    answer: Option<HumanDecision>,
    superseded: bool,
}

/// Adds what a wave's commits read before they decide: their runs (locked), which of their ids
/// were applied, the attempts they touch.
async fn add_wave_reads(trip: &mut Trip<'_>, commits: &[&Commit]) -> Result<(), OpError> {
    let runs: Vec<String> = commits.iter().map(|c| c.run_id.clone()).collect();
    trip.query("reading the runs", WAVE_HEADS, vec![val(runs, Type::TEXT_ARRAY)]).await?;
    let (ids, id_runs): (Vec<String>, Vec<String>) =
        commits.iter().filter_map(|c| c.id.clone().map(|id| (id, c.run_id.clone()))).unzip();
    let params = vec![val(ids, Type::TEXT_ARRAY), val(id_runs, Type::TEXT_ARRAY)];
    trip.query("checking the commit ids", WAVE_APPLIED, params).await?;
    let all_running: Vec<String> = commits
        .iter()
        .filter(|c| c.finish_running_as.is_some() || c.release.is_some())
        .map(|c| c.run_id.clone())
        .collect();
    let (mut runs, mut steps, mut attempts) = (Vec::new(), Vec::new(), Vec::<i64>::new());
    for c in commits {
        let keys = c
            .finished
            .iter()
            .map(|f| (&f.step_id, f.attempt))
            .chain(c.started.iter().map(|s| (&s.step_id, s.attempt)))
            .chain(c.processes.iter().map(|p| (&p.step_id, p.attempt)))
            .chain(c.answers.iter().map(|a| (&a.step_id, a.attempt)));
        for (step, attempt) in keys {
            runs.push(c.run_id.clone());
            steps.push(step.clone());
            attempts.push(i64::from(attempt));
        }
    }
    let params = vec![
        val(all_running, Type::TEXT_ARRAY),
        val(runs, Type::TEXT_ARRAY),
        val(steps, Type::TEXT_ARRAY),
        val(attempts, Type::INT8_ARRAY),
    ];
    trip.query("reading attempts", WAVE_ATTEMPTS, params).await
}

/// What a commit read.
struct Reads {
    head: Head,
    applied: bool,
    attempts: Vec<Stored>,
}

/// What each commit of a wave read, in the commits' order; a commit whose run does not exist
/// is refused alone.
fn wave_reads(answers: &mut Answers, commits: &[&Commit]) -> Result<Vec<Result<Reads, Error>>, OpError> {
    let mut heads: HashMap<String, Head> = HashMap::new();
    for row in answers.next("reading the runs")? {
        let run_id: String = row.try_get(0).map_err(|e| corrupt("run", e))?;
        let h = head(&run_id, &row)?;
        heads.insert(run_id, h);
    }
    let mut applied: HashSet<String> = HashSet::new();
    for row in answers.next("checking the commit ids")? {
        applied.insert(row.try_get(0).map_err(|e| corrupt("applied commit", e))?);
    }
    let mut attempts: HashMap<String, Vec<Stored>> = HashMap::new();
    for row in answers.next("reading attempts")? {
        let run_id: String = row.try_get(0).map_err(|e| corrupt("attempt", e))?;
        let what = format!("run `{run_id}`");
        let status: String = row.try_get(3).map_err(|e| corrupt(&what, e))?;
        let attempt: i64 = row.try_get(2).map_err(|e| corrupt(&what, e))?;
        let answer: Option<&str> = row.try_get(5).map_err(|e| corrupt(&what, e))?;
        let stored = Stored {
            step_id: row.try_get(1).map_err(|e| corrupt(&what, e))?,
            attempt: u32::try_from(attempt).map_err(|e| corrupt(&what, e))?,
            status: status.parse().map_err(|e| corrupt(&what, e))?,
            started_at: Timestamp(row.try_get(4).map_err(|e| corrupt(&what, e))?),
            answer: answer.map(str::parse).transpose().map_err(|e| corrupt(&what, e))?,
            superseded: row.try_get(7).map_err(|e| corrupt(&what, e))?,
        };
        attempts.entry(run_id).or_default().push(stored);
    }
    Ok(commits
        .iter()
        .map(|c| match heads.remove(&c.run_id) {
            Some(head) => Ok(Reads {
                head,
                applied: c.id.is_some() && applied.contains(&c.run_id),
                attempts: attempts.remove(&c.run_id).unwrap_or_default(),
            }),
            None => Err(Error::NotFound { what: "run", id: c.run_id.clone() }),
        })
        .collect())
}

/// What a commit writes, once every check passed.
struct Writes {
    note: Option<String>,
    decisions: Vec<(steward_store::Answer, String)>,
    endings: Vec<AttemptFinish>,
    starts: Vec<(AttemptStart, i64)>,
    when: Timestamp,
    run: RunUpdate,
}

/// A run's fields after a commit (see [`wave_runs_sql`]).
struct RunUpdate {
    state: &'static str,
    current_step_id: Option<String>,
    current_attempt: Option<i64>,
    summary: Option<String>,
    terminal_reason: Option<String>,
    total_iterations: i64,
    keeps: bool,
    now: i64,
    finished_at: Option<i64>,
    last_event_seq: i64,
    ready_in: Option<i64>,
    /// The run (re-)enters running or waits for a person: claimable at once, or only when its
    /// `ready_in` (if any) has passed.
    resets_ready: bool,
}

/// Decides a commit from what it read, exactly as the reference store does (the same checks,
/// in the same order, through `rules`), appending its events; nothing is written yet, so a
/// refusal needs nothing undone. `None` writes: the commit was applied before.
fn plan_commit(cx: &mut Ctx<'_>, c: &Commit, reads: Reads) -> Result<(CommitOutcome, Option<Writes>), OpError> {
    let run_id = c.run_id.as_str();
    let Reads { head: mut h, applied, mut attempts } = reads;
    if applied {
        // Applied before: the retry of a write whose reply was lost.
        return Ok((CommitOutcome { state: h.state, last_event_seq: h.last_event_seq }, None));
    }
    rules::check_expect(c, h.state, h.owner.as_deref(), h.lease_epoch)?;
    rules::check_shape(c)?;
    let before = h.state;
    let when = rules::event_time(c.now, h.updated_at);
    let w = Writing { run_id, now: when, actor: c.actor, actor_id: &c.actor_id };
    for e in &c.events {
        cx.event_as(&w, &mut h, e.actor, &e.actor_id, e.step_id.as_deref(), &e.payload)?;
    }
    let find = |attempts: &mut Vec<Stored>, step: &str, attempt: u32| -> Option<usize> {
        attempts.iter().position(|a| a.step_id == step && a.attempt == attempt)
    };
    let mut decisions = Vec::new();
    for a in &c.answers {
        let found = find(&mut attempts, &a.step_id, a.attempt);
        let stored = found.map(|i| rules::Answerable {
            status: attempts[i].status,
            answer: attempts[i].answer,
            superseded: attempts[i].superseded,
        });
        let payload = rules::answer(run_id, a, &c.actor_id, stored)?;
        if let Some(i) = found {
            attempts[i].answer = Some(a.decision);
        }
        decisions.push((a.clone(), steward_store::AnswerDetail::of(a, &c.actor_id).to_text()));
        cx.event(&w, &mut h, &payload)?;
    }
    let mut endings = Vec::new();
    let mut end = |cx: &mut Ctx<'_>, h: &mut Head, attempts: &mut Vec<Stored>, f: &AttemptFinish| {
        let found = find(attempts, &f.step_id, f.attempt);
        let stored = found.map(|i| (attempts[i].status, attempts[i].started_at));
        let payload = rules::finish(run_id, f, stored, when)?;
        if let Some(i) = found {
            attempts[i].status = f.status;
        }
        endings.push(f.clone());
        cx.event(&w, h, &payload)
    };
    for f in &c.finished {
        end(cx, &mut h, &mut attempts, f)?;
    }
    if let Some(status) = c.finish_running_as {
        let running: Vec<(String, u32)> = attempts
            .iter()
            .filter(|a| a.status == AttemptStatus::Running)
            .map(|a| (a.step_id.clone(), a.attempt))
            .collect();
        for (step, attempt) in running {
            end(cx, &mut h, &mut attempts, &rules::abandoned(step, attempt, status))?;
        }
    }
    if let Some(t) = &c.transition {
        let payload = rules::transition(run_id, &h.job_id, h.owner.as_deref(), h.state, t)?;
        cx.event(&w, &mut h, &payload)?;
        h.state = t.to;
    }
    let mut starts = Vec::new();
    for s in &c.started {
        let payload = rules::started(run_id, s, find(&mut attempts, &s.step_id, s.attempt).is_some())?;
        let ordinal = i64::from(h.total_iterations) + 1;
        h.total_iterations += 1;
        attempts.push(Stored {
            step_id: s.step_id.clone(),
            attempt: s.attempt,
            status: AttemptStatus::Running,
            started_at: when,
            answer: None,
            superseded: false,
        });
        starts.push((s.clone(), ordinal));
        cx.event(&w, &mut h, &payload)?;
    }
    for p in &c.processes {
        let stored = find(&mut attempts, &p.step_id, p.attempt).map(|i| attempts[i].status);
        let payload = rules::process(run_id, p, stored)?;
        cx.event(&w, &mut h, &payload)?;
    }
    let running_left = attempts.iter().any(|a| a.status == AttemptStatus::Running);
    rules::check_release(c, h.state, running_left)?;
    if let Some(r) = &c.release {
        let payload = rules::released(h.owner.as_deref(), h.lease_epoch, r);
        cx.event_as(&w, &mut h, Actor::System, &c.actor_id, payload.step_id(), &payload)?;
    }
    let state = h.state;
    let entered_running = state == RunState::Running && before != RunState::Running;
    let entered_waiting = c.transition.as_ref().is_some_and(|t| t.to == RunState::AwaitingUser);
    // Claimable now (or once a release's delay has passed): worth waking idle workers for. A
    // stalled run is, for workers that resume stalled runs.
    if (state == RunState::Running && (c.release.is_some() || entered_running))
        || (c.transition.is_some() && matches!(state, RunState::Queued | RunState::Stalled))
    {
        cx.pending.runnable += 1;
    }
    let now = when.millis();
    let current = c.started.last();
    let run = RunUpdate {
        state: state.as_str(),
        current_step_id: current.map(|s| s.step_id.clone()),
        current_attempt: current.map(|s| i64::from(s.attempt)),
        summary: c.summary.clone(),
        terminal_reason: c.transition.as_ref().filter(|t| t.to.is_terminal()).map(|t| t.reason.clone()),
        total_iterations: i64::from(h.total_iterations),
        keeps: rules::keeps_owner(state, c),
        now,
        finished_at: state.is_terminal().then_some(now),
        last_event_seq: h.last_event_seq,
        ready_in: c
            .release
            .as_ref()
            .map(|r| millis(r.after_ms))
            .or(c.wake_after_ms.filter(|_| entered_waiting).map(millis)),
        resets_ready: entered_running || entered_waiting,
    };
    let writes = Writes { note: c.id.clone(), decisions, endings, starts, when, run };
    Ok((CommitOutcome { state, last_event_seq: h.last_event_seq }, Some(writes)))
}

/// Adds a wave's planned writes, a statement for each kind of row whatever the number of
/// commits; none of them can be refused, so their answers only tell whether the database took
/// them. Answers precede endings, and starts precede the processes recorded on them.
async fn add_wave_writes(
    trip: &mut Trip<'_>,
    planned: &[(&Commit, Writes)],
    db_now: Option<i64>,
) -> Result<usize, OpError> {
    let mut n = 0;
    let (ids, id_runs): (Vec<String>, Vec<String>) =
        planned.iter().filter_map(|(c, w)| w.note.clone().map(|id| (id, c.run_id.clone()))).unzip();
    if !ids.is_empty() {
        trip.query(
            "noting the commit ids",
            WAVE_NOTES,
            vec![val(ids, Type::TEXT_ARRAY), val(id_runs, Type::TEXT_ARRAY)],
        )
        .await?;
        n += 1;
    }
    let answers: Vec<(&str, &steward_store::Answer, &String)> = planned
        .iter()
        .flat_map(|(c, w)| w.decisions.iter().map(|(a, detail)| (c.run_id.as_str(), a, detail)))
        .collect();
    if !answers.is_empty() {
        let params = vec![
            val(answers.iter().map(|(r, ..)| r.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(answers.iter().map(|(_, a, _)| a.step_id.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(answers.iter().map(|(_, a, _)| i64::from(a.attempt)).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(answers.iter().map(|(_, a, _)| a.decision.as_str()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(answers.iter().map(|(.., d)| d.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
        ];
        trip.query("recording answers", WAVE_ANSWERS, params).await?;
        n += 1;
    }
    let ends: Vec<(&str, &AttemptFinish, i64)> =
        planned.iter().flat_map(|(c, w)| w.endings.iter().map(|f| (c.run_id.as_str(), f, w.when.millis()))).collect();
    if !ends.is_empty() {
        let params = vec![
            val(ends.iter().map(|(r, ..)| r.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(ends.iter().map(|(_, f, _)| f.step_id.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(ends.iter().map(|(_, f, _)| i64::from(f.attempt)).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(ends.iter().map(|(_, f, _)| f.status.as_str()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(
                ends.iter().map(|(_, f, _)| f.output.as_ref().map(Value_::to_string)).collect::<Vec<_>>(),
                Type::TEXT_ARRAY,
            ),
            val(ends.iter().map(|(_, f, _)| f.error.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(ends.iter().map(|(_, f, _)| f.retryable).collect::<Vec<_>>(), Type::BOOL_ARRAY),
            val(
                ends.iter()
                    .map(|(_, f, _)| serde_json::to_string(&f.routes).unwrap_or_else(|_| "[]".into()))
                    .collect::<Vec<_>>(),
                Type::TEXT_ARRAY,
            ),
            val(ends.iter().map(|(.., when)| *when).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(ends.iter().map(|(_, f, _)| f.with_issues).collect::<Vec<_>>(), Type::BOOL_ARRAY),
        ];
        trip.query("ending attempts", WAVE_FINISHES, params).await?;
        n += 1;
    }
    let starts: Vec<(&str, &AttemptStart, i64, i64)> = planned
        .iter()
        .flat_map(|(c, w)| w.starts.iter().map(|(s, ordinal)| (c.run_id.as_str(), s, *ordinal, w.when.millis())))
        .collect();
    if !starts.is_empty() {
        let params = vec![
            val(starts.iter().map(|(r, ..)| r.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(starts.iter().map(|(_, s, ..)| s.step_id.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(starts.iter().map(|(_, s, ..)| i64::from(s.attempt)).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(starts.iter().map(|(_, s, ..)| i64::from(s.visit)).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(starts.iter().map(|(_, _, ordinal, _)| *ordinal).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(
                starts.iter().map(|(r, s, ..)| idempotency_key(r, &s.step_id, s.attempt)).collect::<Vec<_>>(),
                Type::TEXT_ARRAY,
            ),
            val(starts.iter().map(|(_, s, ..)| s.input.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(starts.iter().map(|(.., when)| *when).collect::<Vec<_>>(), Type::INT8_ARRAY),
        ];
        trip.query("starting attempts", WAVE_STARTS, params).await?;
        n += 1;
    }
    let processes: Vec<(&str, &AttemptProcess)> =
        planned.iter().flat_map(|(c, _)| c.processes.iter().map(|p| (c.run_id.as_str(), p))).collect();
    if !processes.is_empty() {
        let params = vec![
            val(processes.iter().map(|(r, _)| r.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(processes.iter().map(|(_, p)| p.step_id.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(processes.iter().map(|(_, p)| i64::from(p.attempt)).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(processes.iter().map(|(_, p)| process_json(&p.process)).collect::<Vec<_>>(), Type::TEXT_ARRAY),
        ];
        trip.query("recording command processes", WAVE_PROCESSES, params).await?;
        n += 1;
    }
    if !planned.is_empty() {
        let runs: Vec<(&str, &RunUpdate)> = planned.iter().map(|(c, w)| (c.run_id.as_str(), &w.run)).collect();
        let params = vec![
            val(runs.iter().map(|(r, _)| r.to_string()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(runs.iter().map(|(_, u)| u.state).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(runs.iter().map(|(_, u)| u.current_step_id.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(runs.iter().map(|(_, u)| u.current_attempt).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(runs.iter().map(|(_, u)| u.summary.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(runs.iter().map(|(_, u)| u.terminal_reason.clone()).collect::<Vec<_>>(), Type::TEXT_ARRAY),
            val(runs.iter().map(|(_, u)| u.total_iterations).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(runs.iter().map(|(_, u)| u.keeps).collect::<Vec<_>>(), Type::BOOL_ARRAY),
            val(runs.iter().map(|(_, u)| u.now).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(runs.iter().map(|(_, u)| u.finished_at).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(runs.iter().map(|(_, u)| u.last_event_seq).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(runs.iter().map(|(_, u)| u.ready_in).collect::<Vec<_>>(), Type::INT8_ARRAY),
            val(runs.iter().map(|(_, u)| u.resets_ready).collect::<Vec<_>>(), Type::BOOL_ARRAY),
            val(db_now, Type::INT8),
        ];
        trip.query("updating the runs", &wave_runs_sql(), params).await?;
        n += 1;
    }
    Ok(n)
}

/// One commit in its own savepoint: a wave of one.
async fn commit(cx: &mut Ctx<'_>, c: &Commit) -> Result<CommitOutcome, OpError> {
    let db_now = cx.db_now;
    let mut outcomes = commit_wave(cx, &[(c, db_now)]).await?;
    match outcomes.pop() {
        Some(outcome) => outcome.map_err(OpError::Refused),
        None => Err(OpError::Refused(Error::Unavailable { detail: "a commit went unanswered".into() })),
    }
}

/// Commits to distinct runs, decided together: one round trip reads them all (their runs
/// locked in run-id order, so that two writers' waves cannot deadlock each other), each is
/// checked in turn, and one round trip writes all that passed, with no savepoints: a refused
/// commit wrote nothing. Events are appended in the commits' order.
///
/// An `Err` means the database refused a statement: the transaction is unusable, and the
/// caller runs the batch again one savepoint per write.
pub(crate) async fn commit_wave(
    cx: &mut Ctx<'_>,
    commits: &[(&Commit, Option<i64>)],
) -> Result<Vec<Result<CommitOutcome, Error>>, OpError> {
    let just: Vec<&Commit> = commits.iter().map(|(c, _)| *c).collect();
    let mut trip = cx.trip();
    add_wave_reads(&mut trip, &just).await?;
    let reads = wave_reads(&mut trip.send(cx).await?, &just)?;
    let mut outcomes = Vec::with_capacity(commits.len());
    let mut planned = Vec::new();
    for ((c, db_now), read) in commits.iter().zip(reads) {
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                outcomes.push(Err(e));
                continue;
            }
        };
        let mark = cx.pending.mark();
        match plan_commit(cx, c, read) {
            Ok((outcome, writes)) => {
                outcomes.push(Ok(outcome));
                planned.extend(writes.map(|w| (*c, w, *db_now)));
            }
            Err(OpError::Refused(e)) => {
                cx.pending.rollback(mark);
                outcomes.push(Err(e));
            }
            Err(e) => return Err(e),
        }
    }
    // One writer's commits share its clock setting, so the wave shares it too.
    let db_now = planned.first().and_then(|(.., db_now)| *db_now);
    let planned: Vec<(&Commit, Writes)> = planned.into_iter().map(|(c, w, _)| (c, w)).collect();
    if !planned.is_empty() {
        let mut trip = cx.trip();
        let n = add_wave_writes(&mut trip, &planned, db_now).await?;
        let mut answers = trip.send(cx).await?;
        for _ in 0..n {
            answers.next("writing the commits")?;
        }
    }
    Ok(outcomes)
}

/// Candidates for a claim, oldest first, locked as they are read; rows another claimer (or
/// writer) holds locked are skipped, so concurrent claimers never wait for each other and never
/// take the same run. `recover` asks for the runs to recover, which a claim takes before queued
/// ones (HSK-WF-003), else for queued runs: two queries, so that each walks `runs_by_state` in
/// order and stops at its `LIMIT` instead of sorting every candidate of both kinds.
/// `rules::claimable` has the last word on each, but the query must already ask everything it
/// asks: a row the query returns and the rule refuses still uses up a place under `LIMIT`.
fn claim_candidates_sql(recover: bool) -> String {
    let which = if recover {
        "((state = 'stalled' AND $3)
          OR (state = 'running' AND owner IS NULL AND (ready_at IS NULL OR ready_at <= clock.db_now))
          OR (state = 'running' AND owner IS NOT NULL
              AND (lease_expires_at IS NULL OR lease_expires_at <= clock.db_now)
              AND NOT (owner = ANY($6::text[])))
          OR (state = 'awaiting_user' AND ready_at <= clock.db_now))"
    } else {
        "state = 'queued'"
    };
    format!(
        "WITH clock AS (SELECT {} AS db_now)
         SELECT {RUN_COLUMNS}, clock.db_now FROM runs, clock
         WHERE ($2::text IS NULL OR run_id = $2)
           AND {which}
           AND (cardinality($4::text[]) = 0 OR EXISTS (
                SELECT 1 FROM unnest($4::text[]) AS w(dir)
                WHERE rtrim(w.dir, '/') = '' OR workdir = rtrim(w.dir, '/')
                   OR starts_with(workdir, rtrim(w.dir, '/') || '/')))
         ORDER BY created_at, run_id
         LIMIT $5
         FOR UPDATE OF runs SKIP LOCKED",
        db_now_sql(1)
    )
}

const CLAIMED: &str = "UPDATE runs SET state = 'running', owner = $2, owner_process = $3, lease_epoch = $4,
         lease_expires_at = $5, heartbeat_at = $6, ready_at = NULL, started_at = COALESCE(started_at, $7),
         summary = $8, updated_at = $7, last_progress_at = $7, last_event_seq = $9, recoveries = recoveries + $10
     WHERE run_id = $1";

async fn claim(cx: &mut Ctx<'_>, claim: &Claim) -> Result<Vec<Claimed>, OpError> {
    let mut trip = cx.trip();
    let params = || {
        vec![
            val(cx.db_now, Type::INT8),
            val(claim.run_id.clone(), Type::TEXT),
            val(claim.resume_stalled, Type::BOOL),
            val(claim.workdirs.clone(), Type::TEXT_ARRAY),
            val(i64::from(claim.limit), Type::INT8),
            val(claim.spare_owners.clone(), Type::TEXT_ARRAY),
        ]
    };
    let (recover, queued) = (params(), params());
    trip.query("finding runs to recover", &claim_candidates_sql(true), recover).await?;
    trip.query("finding queued runs", &claim_candidates_sql(false), queued).await?;
    let mut answers = trip.send(cx).await?;
    let mut rows = answers.next("finding runs to recover")?;
    rows.extend(answers.next("finding queued runs")?);
    let owner = claim.owner.id.as_str();
    let mut taken = Vec::new();
    for row in &rows {
        if taken.len() >= claim.limit as usize {
            // Queued runs locked beyond the limit stay queued; the lock ends with this write.
            break;
        }
        let run = run_from_row(row)?;
        let db_now = Timestamp(row.try_get(31).map_err(|e| corrupt("claim", e))?);
        let Some(kind) = rules::claimable(&run, claim, db_now) else { continue };
        let mut h = Head {
            state: run.state,
            owner: run.owner.clone(),
            lease_epoch: run.lease_epoch,
            job_id: run.job_id.clone(),
            trace_id: run.trace_id.clone(),
            last_event_seq: run.last_event_seq,
            total_iterations: run.total_iterations,
            updated_at: run.updated_at,
        };
        let now = rules::event_time(claim.now, run.updated_at);
        let w = Writing { run_id: &run.run_id, now, actor: Actor::System, actor_id: owner };
        let recovery = Writing { actor_id: rules::RECOVERY_ACTOR, ..w };
        let mut recovered = 0i64;
        for payload in rules::claim_events(&run, kind, claim)? {
            if payload.event_type() == "workflow_recovery" {
                cx.event(&recovery, &mut h, &payload)?;
                // What the previous owner left running ends with its recovery.
                cx.finish_running(&recovery, &mut h, AttemptStatus::Interrupted).await?;
                recovered = 1;
            } else {
                cx.event(&w, &mut h, &payload)?;
            }
        }
        let epoch = run.lease_epoch + 1;
        cx.event(&w, &mut h, &rules::claimed(&run, run.state, claim, epoch))?;
        taken.push((run, kind, epoch, db_now, now, h.last_event_seq, recovered));
    }
    // Every claimed run's update in one round trip, each answering the run as it is now.
    let mut trip = cx.trip();
    let returning = format!("{CLAIMED} RETURNING {RUN_COLUMNS}");
    for (run, kind, epoch, db_now, now, last_event_seq, recovered) in &taken {
        let params = vec![
            val(run.run_id.clone(), Type::TEXT),
            val(owner.to_owned(), Type::TEXT),
            val(claim.owner.process.as_ref().map(process_json), Type::TEXT),
            val(i64::try_from(*epoch).unwrap_or(i64::MAX), Type::INT8),
            val(db_now.millis().saturating_add(millis(claim.lease_ms)), Type::INT8),
            val(db_now.millis(), Type::INT8),
            val(now.millis(), Type::INT8),
            val(rules::claimed_summary(*kind, owner), Type::TEXT),
            val(*last_event_seq, Type::INT8),
            val(*recovered, Type::INT8),
        ];
        trip.query("claiming a run", &returning, params).await?;
    }
    let mut answers = trip.send(cx).await?;
    let mut out = Vec::new();
    for (before, kind, ..) in taken {
        let rows = answers.next("claiming a run")?;
        let run = run_from_row(rows.first().ok_or_else(|| corrupt(&before.run_id, "claimed run vanished"))?)?;
        out.push(Claimed { run, from: before.state, recovered_from: kind.recovered(&before) });
    }
    Ok(out)
}

async fn renew(cx: &mut Ctx<'_>, leases: &[Lease], lease_ms: u64, now: Timestamp) -> Result<Vec<String>, OpError> {
    let sql = format!(
        "WITH clock AS (SELECT {} AS db_now)
         UPDATE runs SET lease_expires_at = clock.db_now + $4, heartbeat_at = clock.db_now,
             last_progress_at = GREATEST(last_progress_at, $5)
         FROM clock, unnest($1::text[], $2::bigint[]) AS l(run_id, epoch)
         WHERE runs.run_id = l.run_id AND runs.lease_epoch = l.epoch
           AND runs.owner IS NOT NULL AND runs.state = 'running'
         RETURNING runs.run_id, runs.lease_epoch",
        db_now_sql(3)
    );
    let ids: Vec<String> = leases.iter().map(|l| l.run_id.clone()).collect();
    let epochs: Vec<i64> = leases.iter().map(|l| i64::try_from(l.epoch).unwrap_or(i64::MAX)).collect();
    let mut trip = cx.trip();
    let params = vec![
        val(ids, Type::TEXT_ARRAY),
        val(epochs, Type::INT8_ARRAY),
        val(cx.db_now, Type::INT8),
        val(millis(lease_ms), Type::INT8),
        val(now.millis(), Type::INT8),
    ];
    trip.query("renewing leases", &sql, params).await?;
    let renewed = trip.send(cx).await?.next("renewing leases")?;
    let renewed: std::collections::HashSet<(String, i64)> =
        renewed.iter().filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?))).collect();
    Ok(leases
        .iter()
        .filter(|l| !renewed.contains(&(l.run_id.clone(), i64::try_from(l.epoch).unwrap_or(i64::MAX))))
        .map(|l| l.run_id.clone())
        .collect())
}

async fn recover_stalled(cx: &mut Ctx<'_>, now: Timestamp, scan: &Scan) -> Result<Vec<Recovered>, OpError> {
    cx.open().await?;
    // Candidates are found without locks, so that live runs' writers are not held up; each is
    // then locked and judged again, since its owner may have renewed or written in between.
    let sql = format!(
        "WITH clock AS (SELECT {} AS db_now)
         SELECT {RUN_COLUMNS}, clock.db_now FROM runs, clock WHERE state = 'running' ORDER BY created_at, run_id",
        db_now_sql(1)
    );
    let rows = cx.db.query(&sql, &[(&cx.db_now, Type::INT8)]).await.map_err(pg("listing running runs"))?;
    let mut candidates = Vec::new();
    let mut db_now = Timestamp(0);
    for row in &rows {
        let run = run_from_row(row)?;
        db_now = Timestamp(row.try_get(31).map_err(|e| corrupt("recovery", e))?);
        if rules::abandoned_because(&run, db_now, scan).is_some() {
            candidates.push(run.run_id);
        }
    }
    let mut out = Vec::new();
    for run_id in candidates {
        let Some(run) = read_run(cx.db, &run_id, true).await? else { continue };
        if run.state != RunState::Running {
            continue;
        }
        let Some(reason) = rules::abandoned_because(&run, db_now, scan) else { continue };
        if scan.hand_over {
            // The lease ends now; the next claim recovers the run and records it.
            cx.db
                .execute(
                    "UPDATE runs SET lease_expires_at = $2 WHERE run_id = $1",
                    &[(&run.run_id, Type::TEXT), (&db_now.millis(), Type::INT8)],
                )
                .await
                .map_err(pg("ending a lease"))?;
            cx.pending.runnable += 1;
            out.push(rules::handed_over(&run, reason));
            continue;
        }
        let mut h = Head {
            state: run.state,
            owner: run.owner.clone(),
            lease_epoch: run.lease_epoch,
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
        cx.db
            .execute(
                "UPDATE runs SET state = 'stalled', owner = NULL, owner_process = NULL, lease_expires_at = NULL,
                     recoveries = recoveries + 1, summary = $2, updated_at = $3, last_progress_at = $3,
                     last_event_seq = $4
                 WHERE run_id = $1",
                &[
                    (&run.run_id, Type::TEXT),
                    (&rules::STALLED_SUMMARY, Type::TEXT),
                    (&now.millis(), Type::INT8),
                    (&h.last_event_seq, Type::INT8),
                ],
            )
            .await
            .map_err(pg("stalling the run"))?;
        // Stalled runs are claimable by workers that resume them.
        cx.pending.runnable += 1;
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
    cx.open().await?;
    let rows = cx
        .db
        .query(
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
        .db
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = $1", &[(&rules::SYSTEM_RUN, Type::TEXT)])
        .await
        .map_err(pg("reading the system log"))?
        .try_get(0)
        .map_err(|e| corrupt("events", e))?;
    let mut h = Head {
        state: RunState::Completed,
        owner: None,
        lease_epoch: 0,
        job_id: rules::SYSTEM_RUN.into(),
        trace_id: rules::SYSTEM_RUN.into(),
        last_event_seq,
        total_iterations: 0,
        updated_at: now,
    };
    let w = Writing { run_id: rules::SYSTEM_RUN, now, actor: Actor::System, actor_id: "gc" };
    cx.event(&w, &mut h, &rules::prune_report(&report, policy, now, dry_run))?;
    cx.db
        .execute("DELETE FROM events WHERE id = ANY($1)", &[(&report.pruned_ids, Type::INT8_ARRAY)])
        .await
        .map_err(pg("deleting events"))?;
    let finished: Vec<&str> = RunState::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
    cx.db
        .execute(
            "DELETE FROM applied_commits WHERE run_id IN (SELECT run_id FROM runs WHERE state = ANY($1))",
            &[(&finished, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(pg("forgetting finished runs' commit ids"))?;
    Ok(report)
}
