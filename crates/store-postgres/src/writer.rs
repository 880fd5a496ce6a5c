//! The writer task: one connection, group commit, the store-wide event order.
//!
//! Every write is a job sent to one task that owns the write connection. The task takes the
//! first waiting job and every job already queued behind it (up to `max_batch`), runs them in
//! one transaction, and commits once: one WAL flush for many step completions, as in the
//! SQLite backend. Consecutive commits to distinct runs are decided together as a wave (two
//! round trips for all of them; a refused one wrote nothing); any other job runs in its own
//! savepoint, rolled back alone if it fails. A refused write never spoils its neighbours: if
//! the database itself refuses a statement of a wave, the batch runs again one savepoint per
//! job, where the refusal is that job's alone. No caller hears back before the COMMIT returned.
//!
//! Event ids. Writes do not insert their events; they leave them in `Pending`, and the batch
//! inserts them all as its last statement, with ids taken from the `event_ids` row, whose lock
//! it then holds until COMMIT. Transactions that append events (from this process or any
//! other) therefore do so one at a time, and ids are handed out in commit order: a reader of
//! `list_events_since(after_id)` can never see id 12 while id 11 is still to commit. Taking the
//! lock last keeps it held only for that one statement and the commit; group commit is what
//! keeps that serial section from limiting throughput.
//!
//! Round trips. Transaction control never costs one of its own: `BEGIN` goes out with the
//! first job's first statements, each job's `RELEASE` (or `ROLLBACK TO`) with the next job's
//! `SAVEPOINT`, the last one with the event insert.
//!
//! Failures. A job that is refused (or picked as a deadlock victim, which is retried) is a
//! savepoint's business. A broken connection before COMMIT was sent means the transaction is
//! gone: the task reconnects (with backoff, for up to `reconnect_patience`) and runs the whole
//! batch again, since jobs are data. A connection that breaks during COMMIT leaves the outcome
//! unknown: every caller hears `Unavailable`, and a commit repeated with its id lands once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_postgres::types::Type;

use steward_core::ids::IdGen;
use steward_store::{Error, Result};

use crate::conn::{Flight, Session, Target, connection_lost, is_transient, val};
use crate::ops::{self, Ctx, Done, Op, OpError, Pending};

/// The channel LISTEN/NOTIFY wakes idle workers on.
pub(crate) const CHANNEL: &str = "steward_runnable";

/// How often a job picked as a deadlock or serialization victim is tried again.
const JOB_TRIES: usize = 5;

struct Job {
    op: Op,
    /// The database's time as a test set it; `None` for the server's clock.
    db_now: Option<i64>,
    reply: oneshot::Sender<Result<Done>>,
}

/// Handle to the writer task. Dropping it lets the task finish the queued writes and close
/// its connection.
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Job>,
    /// Each batch's size and the time its transaction took.
    pub(crate) stats: Arc<steward_store::stats::CommitRecorder>,
}

impl Writer {
    pub(crate) fn spawn(
        client: tokio_postgres::Client,
        target: Arc<Target>,
        ids: Arc<dyn IdGen>,
        max_batch: usize,
        local_wake: Option<Arc<watch::Sender<u64>>>,
    ) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(steward_store::stats::CommitRecorder::default());
        let task = Task {
            session: Some(Session::new(client)),
            target,
            ids,
            max_batch: max_batch.max(1),
            local_wake,
            stats: stats.clone(),
        };
        tokio::spawn(task.run(rx));
        Writer { tx, stats }
    }

    /// Runs `op` in the next group commit and resolves once that commit returned.
    pub(crate) async fn submit(&self, op: Op, db_now: Option<i64>) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable { detail: "the PostgreSQL writer task has stopped".into() };
        self.tx.send(Job { op, db_now, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// How a batch's transaction ended, when it did not commit.
enum Failed {
    /// Not committed, and worth running again: the connection broke before COMMIT was sent,
    /// or the server picked this transaction as a deadlock victim.
    Retry(Error),
    /// Not committed (or not known to be): every job hears this.
    Final(Error),
    /// Not committed: the database refused a statement of a wave (see `ops::commit_wave`), so
    /// the batch runs again with one savepoint per write, where a refusal is the write's own.
    Redo,
}

/// Why a batch's transaction stopped before COMMIT.
enum Abort {
    Pg(&'static str, tokio_postgres::Error),
    Redo,
}

impl From<(&'static str, tokio_postgres::Error)> for Abort {
    fn from((what, e): (&'static str, tokio_postgres::Error)) -> Abort {
        Abort::Pg(what, e)
    }
}

struct Task {
    /// `None` after the connection broke, until the next batch reconnects.
    session: Option<Session>,
    target: Arc<Target>,
    ids: Arc<dyn IdGen>,
    max_batch: usize,
    /// In poll-only mode nobody LISTENs, so this process's own waiters are woken directly.
    local_wake: Option<Arc<watch::Sender<u64>>>,
    stats: Arc<steward_store::stats::CommitRecorder>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut held: Option<Job> = None;
        loop {
            let first = match held.take() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut batch = vec![first];
            // A write that must run alone ends the batch before it; one that came first takes
            // none behind it.
            while !batch[0].op.alone() && batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(job) if job.op.alone() => {
                        held = Some(job);
                        break;
                    }
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let began = Instant::now();
            let answers = self.run_batch(&batch).await;
            self.stats.record(batch.len(), began.elapsed());
            for (job, answer) in batch.into_iter().zip(answers) {
                let _ = job.reply.send(answer);
            }
        }
    }

    /// Runs a batch to its end, again if its transaction was lost before COMMIT, and returns
    /// each job's answer.
    async fn run_batch(&mut self, batch: &[Job]) -> Vec<Result<Done>> {
        let deadline = Instant::now() + self.target.patience;
        let mut backoff = crate::conn::Backoff::new();
        let mut waves = true;
        loop {
            let limit = self.target.request_timeout;
            let tried = tokio::time::timeout(limit, self.try_batch(batch, deadline, waves)).await;
            let tried = tried.unwrap_or_else(|_| {
                // The connection went with the abandoned try: a hung server is not waited on
                // again, and what the transaction did is unknown.
                Err(Failed::Final(Error::Unavailable {
                    detail: format!(
                        "PostgreSQL at {}: no answer within {:?}; whether this write landed is unknown, and \
                         repeating a commit with the same id applies it once",
                        self.target.addr, self.target.request_timeout
                    ),
                }))
            });
            match tried {
                Ok((answers, runnable)) => {
                    if let Some(wake) = self.local_wake.as_ref().filter(|_| runnable) {
                        wake.send_modify(|n| *n += 1);
                    }
                    return answers;
                }
                Err(Failed::Redo) => waves = false,
                Err(Failed::Retry(_)) if Instant::now() + backoff.peek() < deadline => backoff.wait().await,
                Err(Failed::Retry(e) | Failed::Final(e)) => return batch.iter().map(|_| Err(e.clone())).collect(),
            }
        }
    }

    /// One try at the batch's transaction, on the connection (made again if it broke).
    async fn try_batch(
        &mut self,
        batch: &[Job],
        deadline: Instant,
        waves: bool,
    ) -> std::result::Result<(Vec<Result<Done>>, bool), Failed> {
        let session = match self.session.take() {
            Some(session) if !session.is_closed() => session,
            _ => Session::new(self.target.connect_until(deadline).await.map_err(Failed::Final)?),
        };
        let outcome = self.transaction(&session, batch, waves).await;
        if !session.is_closed() {
            self.session = Some(session);
        }
        outcome
    }

    /// The batch's transaction. With `waves`, consecutive commits to distinct runs are decided
    /// together (`ops::commit_wave`: two round trips for all of them); every other write runs
    /// in its own savepoint.
    async fn transaction(
        &self,
        db: &Session,
        batch: &[Job],
        waves: bool,
    ) -> std::result::Result<(Vec<Result<Done>>, bool), Failed> {
        let target = self.target.as_ref();
        let mut pending = Pending::default();
        // Transaction control rides along with the next statement that goes out: BEGIN with
        // the first write's first round trip, each write's RELEASE with the next one's.
        let mut control = String::from(if db.replan_due() { "BEGIN; DISCARD PLANS; " } else { "BEGIN; " });
        let result = async {
            let mut answers = Vec::with_capacity(batch.len());
            let mut next = 0;
            while next < batch.len() {
                let wave = if waves { wave(&batch[next..]) } else { Vec::new() };
                if wave.len() > 1 {
                    let opening = (!control.is_empty()).then(|| control.clone());
                    let mut cx = Ctx {
                        db,
                        ids: self.ids.as_ref(),
                        pending: &mut pending,
                        opening,
                        db_now: None,
                        aborted: false,
                    };
                    match ops::commit_wave(&mut cx, &wave).await {
                        Ok(outcomes) => {
                            if cx.opening.is_none() {
                                control.clear();
                            }
                            answers.extend(outcomes.into_iter().map(|o| o.map(Done::Outcome)));
                        }
                        Err(OpError::Pg(what, e)) if db.is_closed() || e.as_db_error().is_none() => {
                            return Err(Abort::Pg(what, e));
                        }
                        Err(_) => return Err(Abort::Redo),
                    }
                    next += wave.len();
                    continue;
                }
                answers.push(run_job(db, target, self.ids.as_ref(), &batch[next], &mut pending, &mut control).await?);
                next += 1;
            }
            if control.starts_with("BEGIN") {
                // No write sent anything (all refused at once): there is no transaction.
                return Ok((answers, false));
            }
            append(db, &pending, &control).await.map_err(|e| ("appending events", e))?;
            Ok((answers, true))
        }
        .await;
        let answers = match result {
            Ok((answers, false)) => return Ok((answers, false)),
            Ok((answers, true)) => answers,
            Err(abort) => {
                // Ends the failed transaction; if even that fails, the connection is dropped.
                if !db.is_closed() {
                    let _ = db.batch("ROLLBACK").await;
                }
                return Err(match abort {
                    Abort::Pg(what, e) => failed(target, what, &e),
                    Abort::Redo => Failed::Redo,
                });
            }
        };
        match db.batch("COMMIT").await {
            Ok(()) => Ok((answers, pending.runnable > 0)),
            // The server refused to commit: nothing was written.
            Err(e) if !connection_lost(db.client(), &e) => Err(failed(target, "committing", &e)),
            Err(e) => Err(Failed::Final(Error::Unavailable {
                detail: format!(
                    "PostgreSQL at {}: the connection broke while committing, so whether this write landed is \
                     unknown; repeating a commit with the same id applies it once: {e}",
                    target.addr
                ),
            })),
        }
    }
}

/// The commits at the head of `jobs` that can be decided together: consecutive, each to a run
/// none of the others touches (a second write to a run must see the first one's changes).
fn wave(jobs: &[Job]) -> Vec<(&steward_store::Commit, Option<i64>)> {
    let mut runs = std::collections::HashSet::new();
    jobs.iter()
        .map_while(|job| match &job.op {
            Op::Commit(c) if runs.insert(c.run_id.as_str()) => Some((c, job.db_now)),
            _ => None,
        })
        .collect()
}

/// Classifies a failure of a statement that is not a job's own answer (BEGIN, savepoints, the
/// event insert, COMMIT, or a job's statement whose connection broke).
fn failed(target: &Target, what: &str, e: &tokio_postgres::Error) -> Failed {
    let err = target.error(what, e);
    if is_transient(e) { Failed::Retry(err) } else { Failed::Final(err) }
}

/// Runs one job in its own savepoint. The outer error is the batch's (the connection broke, or
/// the transaction is in a state this job cannot undo alone); the inner result is the job's
/// answer. `control` is the transaction control still to send (see [`Task::transaction`]).
async fn run_job(
    db: &Session,
    target: &Target,
    ids: &dyn IdGen,
    job: &Job,
    pending: &mut Pending,
    control: &mut String,
) -> std::result::Result<Result<Done>, (&'static str, tokio_postgres::Error)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mark = pending.mark();
        let opening = Some(format!("{control}SAVEPOINT job"));
        let mut cx = Ctx { db, ids, pending, opening, db_now: job.db_now, aborted: false };
        let outcome = ops::run(&mut cx, &job.op).await;
        // Whether this job's savepoint exists (its opening went out), and whether the server
        // refused one of its statements, which leaves the transaction unusable until the
        // savepoint is rolled back.
        let (opened, aborted) = (cx.opening.is_none(), cx.aborted);
        if opened {
            control.clear();
        }
        let err = match outcome {
            Ok(done) => {
                if opened {
                    control.push_str("RELEASE SAVEPOINT job; ");
                }
                return Ok(Ok(done));
            }
            Err(err) => err,
        };
        // Undo this job only; the batch's other jobs still commit.
        pending.rollback(mark);
        let err = match err {
            // Before its savepoint existed, or with the connection gone, only the whole
            // transaction can be undone.
            OpError::Pg(what, e) if !opened || db.is_closed() || e.as_db_error().is_none() => return Err((what, e)),
            other => other,
        };
        if opened {
            control.push_str("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job; ");
            if aborted || matches!(err, OpError::Pg(..)) {
                // Now, not with the next statement: the next write may have to prepare one,
                // which an aborted transaction refuses.
                db.batch(control).await.map_err(|e| ("rolling back a savepoint", e))?;
                control.clear();
            }
        }
        match err {
            OpError::Refused(e) => return Ok(Err(e)),
            OpError::Pg(what, e) if is_transient(&e) && connection_lost(db.client(), &e) => return Err((what, e)),
            OpError::Pg(_, e) if is_transient(&e) && tries < JOB_TRIES => continue,
            OpError::Pg(what, e) => return Ok(Err(target.error(what, &e))),
        }
    }
}

/// Appends the batch's events under the `event_ids` row lock, and notifies idle workers when a
/// write made a run claimable (the notification is delivered at COMMIT, or never); `control`
/// (the last write's RELEASE or ROLLBACK TO) goes first, in the same round trip.
async fn append(db: &Session, pending: &Pending, control: &str) -> std::result::Result<(), tokio_postgres::Error> {
    let mut flight = Flight::new(db);
    if !control.is_empty() {
        flight.simple(control.to_owned());
    }
    if pending.runnable > 0 {
        flight.query("SELECT pg_notify($1, '')", vec![val(CHANNEL, Type::TEXT)]).await?;
    }
    if !pending.events.is_empty() {
        let e = &pending.events;
        let col = |f: fn(&ops::PendingEvent) -> String| val(e.iter().map(f).collect::<Vec<String>>(), Type::TEXT_ARRAY);
        let opt = |f: fn(&ops::PendingEvent) -> Option<String>| {
            val(e.iter().map(f).collect::<Vec<Option<String>>>(), Type::TEXT_ARRAY)
        };
        let params = vec![
            val(e.len() as i64, Type::INT8),
            col(|e| e.run_id.clone()),
            val(e.iter().map(|e| e.seq).collect::<Vec<i64>>(), Type::INT8_ARRAY),
            col(|e| e.event_id.clone()),
            val(e.iter().map(|e| e.ts).collect::<Vec<i64>>(), Type::INT8_ARRAY),
            col(|e| e.event_type.clone()),
            col(|e| e.actor.to_owned()),
            col(|e| e.actor_id.clone()),
            col(|e| e.trace_id.clone()),
            col(|e| e.job_id.clone()),
            opt(|e| e.step_id.clone()),
            opt(|e| e.mt_id.clone()),
            opt(|e| e.model_id.clone()),
            opt(|e| e.capability_id.clone()),
            col(|e| e.payload.clone()),
        ];
        flight.query(INSERT_EVENTS, params).await?;
    }
    for answer in flight.send().await {
        answer?;
    }
    Ok(())
}

/// Ids come from the ordinality of each row, so they follow the order the writes made them in,
/// whatever order the server evaluates rows in; `event_ids` is raised (and locked) once.
const INSERT_EVENTS: &str = "WITH ids AS (UPDATE event_ids SET last_id = last_id + $1 RETURNING last_id)
     INSERT INTO events (id, run_id, seq, event_id, ts, event_type, actor, actor_id, trace_id, job_id,
         step_id, mt_id, model_id, capability_id, payload)
     SELECT (SELECT last_id FROM ids) - $1 + u.ord, u.run_id, u.seq, u.event_id, u.ts, u.event_type,
         u.actor, u.actor_id, u.trace_id, u.job_id, u.step_id, u.mt_id, u.model_id, u.capability_id,
         u.payload
     FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
         $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
         WITH ORDINALITY AS u(run_id, seq, event_id, ts, event_type, actor, actor_id, trace_id, job_id,
             step_id, mt_id, model_id, capability_id, payload, ord)";
