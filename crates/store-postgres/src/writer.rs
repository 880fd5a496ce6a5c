//! The writer task: one connection, group commit, the store-wide event order.
//!
//! Every write is a job sent to one task that owns the write connection. The task takes the
//! first waiting job and every job already queued behind it (up to `max_batch`), runs each in
//! its own savepoint of one transaction, and commits once: one WAL flush for many step
//! completions, as in the SQLite backend. A job whose savepoint fails is rolled back alone; its
//! neighbours still commit. No caller hears back before the COMMIT returned.
//!
//! Event ids. Writes do not insert their events; they leave them in `Pending`, and the batch
//! inserts them all as its last statement, with ids taken from the `event_ids` row, whose lock
//! it then holds until COMMIT. Transactions that append events (from this process or any
//! other) therefore do so one at a time, and ids are handed out in commit order: a reader of
//! `list_events_since(after_id)` can never see id 12 while id 11 is still to commit. Taking the
//! lock last keeps it held only for that one statement and the commit; group commit is what
//! keeps that serial section from limiting throughput.
//!
//! Failures. A job that is refused (or picked as a deadlock victim, which is retried) is a
//! savepoint's business. A broken connection before COMMIT was sent means the transaction is
//! gone: the task reconnects (with backoff, for up to `reconnect_patience`) and runs the whole
//! batch again, since jobs are data. A connection that breaks during COMMIT leaves the outcome
//! unknown: every caller hears `Unavailable`, and a commit repeated with its id lands once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use steward_core::ids::IdGen;
use steward_store::{Error, Result};

use crate::conn::{Target, connection_lost, is_transient};
use crate::ops::{self, Ctx, Done, Op, OpError, Pending};

/// The channel LISTEN/NOTIFY wakes idle workers on.
pub(crate) const CHANNEL: &str = "steward_runnable";

/// How often a job picked as a deadlock or serialization victim is tried again.
const JOB_TRIES: usize = 5;

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

/// Handle to the writer task. Dropping it lets the task finish the queued writes and close
/// its connection.
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Writer {
    pub(crate) fn spawn(
        client: Client,
        target: Arc<Target>,
        ids: Arc<dyn IdGen>,
        max_batch: usize,
        local_wake: Option<Arc<watch::Sender<u64>>>,
    ) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task { client: Some(client), target, ids, max_batch: max_batch.max(1), local_wake };
        tokio::spawn(task.run(rx));
        Writer { tx }
    }

    /// Runs `op` in the next group commit and resolves once that commit returned.
    pub(crate) async fn submit(&self, op: Op) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable { detail: "the PostgreSQL writer task has stopped".into() };
        self.tx.send(Job { op, reply }).map_err(|_| stopped())?;
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
}

struct Task {
    /// `None` after the connection broke, until the next batch reconnects.
    client: Option<Client>,
    target: Arc<Target>,
    ids: Arc<dyn IdGen>,
    max_batch: usize,
    /// In poll-only mode nobody LISTENs, so this process's own waiters are woken directly.
    local_wake: Option<Arc<watch::Sender<u64>>>,
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
            let answers = self.run_batch(&batch).await;
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
        loop {
            match self.try_batch(batch, deadline).await {
                Ok((answers, runnable)) => {
                    if let Some(wake) = self.local_wake.as_ref().filter(|_| runnable) {
                        wake.send_modify(|n| *n += 1);
                    }
                    return answers;
                }
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
    ) -> std::result::Result<(Vec<Result<Done>>, bool), Failed> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => self.target.connect_until(deadline).await.map_err(Failed::Final)?,
        };
        let outcome = self.transaction(&client, batch).await;
        if !client.is_closed() {
            self.client = Some(client);
        }
        outcome
    }

    async fn transaction(
        &self,
        client: &Client,
        batch: &[Job],
    ) -> std::result::Result<(Vec<Result<Done>>, bool), Failed> {
        let target = self.target.as_ref();
        let mut pending = Pending::default();
        let result = async {
            client.batch_execute("BEGIN").await.map_err(|e| ("beginning a transaction", e))?;
            let mut answers = Vec::with_capacity(batch.len());
            for job in batch {
                answers.push(run_job(client, target, self.ids.as_ref(), &job.op, &mut pending).await?);
            }
            insert_events(client, &pending).await.map_err(|e| ("appending events", e))?;
            Ok(answers)
        }
        .await;
        let answers = match result {
            Ok(answers) => answers,
            Err((what, e)) => {
                // Ends the failed transaction; if even that fails, the connection is dropped.
                if !client.is_closed() {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                return Err(failed(target, what, &e));
            }
        };
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok((answers, pending.runnable > 0)),
            // The server refused to commit: nothing was written.
            Err(e) if !connection_lost(client, &e) => Err(failed(target, "committing", &e)),
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

/// Classifies a failure of a statement that is not a job's own answer (BEGIN, savepoints, the
/// event insert, COMMIT, or a job's statement whose connection broke).
fn failed(target: &Target, what: &str, e: &tokio_postgres::Error) -> Failed {
    let err = target.error(what, e);
    if is_transient(e) { Failed::Retry(err) } else { Failed::Final(err) }
}

/// Runs one job in its own savepoint. The outer error is the batch's (the connection broke);
/// the inner result is the job's answer.
async fn run_job(
    client: &Client,
    target: &Target,
    ids: &dyn IdGen,
    op: &Op,
    pending: &mut Pending,
) -> std::result::Result<Result<Done>, (&'static str, tokio_postgres::Error)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mark = pending.mark();
        client.batch_execute("SAVEPOINT job").await.map_err(|e| ("opening a savepoint", e))?;
        let outcome = ops::run(&mut Ctx { client, ids, pending }, op).await;
        let refusal = match outcome {
            Ok(done) => {
                client.batch_execute("RELEASE SAVEPOINT job").await.map_err(|e| ("releasing a savepoint", e))?;
                return Ok(Ok(done));
            }
            Err(OpError::Refused(e)) => Err(e),
            Err(OpError::Pg(what, e)) => {
                if client.is_closed() || e.as_db_error().is_none() {
                    return Err((what, e));
                }
                Ok((what, e))
            }
        };
        // Undo this job only; the batch's other jobs still commit.
        pending.rollback(mark);
        client
            .batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
            .await
            .map_err(|e| ("rolling back a savepoint", e))?;
        match refusal {
            Err(e) => return Ok(Err(e)),
            Ok((what, e)) if is_transient(&e) && connection_lost(client, &e) => return Err((what, e)),
            Ok((_, e)) if is_transient(&e) && tries < JOB_TRIES => continue,
            Ok((what, e)) => return Ok(Err(target.error(what, &e))),
        }
    }
}

/// Appends the batch's events under the `event_ids` row lock, and notifies idle workers when a
/// write made a run claimable (the notification is delivered at COMMIT, or never).
async fn insert_events(client: &Client, pending: &Pending) -> std::result::Result<(), tokio_postgres::Error> {
    if pending.runnable > 0 {
        client.query_typed("SELECT pg_notify($1, '')", &[(&CHANNEL, Type::TEXT)]).await?;
    }
    if pending.events.is_empty() {
        return Ok(());
    }
    let e = &pending.events;
    let n = e.len() as i64;
    let col = |f: fn(&ops::PendingEvent) -> String| e.iter().map(f).collect::<Vec<String>>();
    let opt = |f: fn(&ops::PendingEvent) -> Option<String>| e.iter().map(f).collect::<Vec<Option<String>>>();
    let run_id = col(|e| e.run_id.clone());
    let seq: Vec<i64> = e.iter().map(|e| e.seq).collect();
    let event_id = col(|e| e.event_id.clone());
    let ts: Vec<i64> = e.iter().map(|e| e.ts).collect();
    let event_type = col(|e| e.event_type.clone());
    let actor = col(|e| e.actor.to_owned());
    let actor_id = col(|e| e.actor_id.clone());
    let trace_id = col(|e| e.trace_id.clone());
    let job_id = col(|e| e.job_id.clone());
    let step_id = opt(|e| e.step_id.clone());
    let mt_id = opt(|e| e.mt_id.clone());
    let model_id = opt(|e| e.model_id.clone());
    let capability_id = opt(|e| e.capability_id.clone());
    let payload = col(|e| e.payload.clone());
    // Ids come from the ordinality of each row, so they follow the order the writes made them
    // in, whatever order the server evaluates rows in.
    client
        .execute_typed(
            "WITH ids AS (UPDATE event_ids SET last_id = last_id + $1 RETURNING last_id)
             INSERT INTO events (id, run_id, seq, event_id, ts, event_type, actor, actor_id, trace_id, job_id,
                 step_id, mt_id, model_id, capability_id, payload)
             SELECT (SELECT last_id FROM ids) - $1 + u.ord, u.run_id, u.seq, u.event_id, u.ts, u.event_type,
                 u.actor, u.actor_id, u.trace_id, u.job_id, u.step_id, u.mt_id, u.model_id, u.capability_id,
                 u.payload
             FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
                 WITH ORDINALITY AS u(run_id, seq, event_id, ts, event_type, actor, actor_id, trace_id, job_id,
                     step_id, mt_id, model_id, capability_id, payload, ord)",
            &[
                (&n, Type::INT8),
                (&run_id, Type::TEXT_ARRAY),
                (&seq, Type::INT8_ARRAY),
                (&event_id, Type::TEXT_ARRAY),
                (&ts, Type::INT8_ARRAY),
                (&event_type, Type::TEXT_ARRAY),
                (&actor, Type::TEXT_ARRAY),
                (&actor_id, Type::TEXT_ARRAY),
                (&trace_id, Type::TEXT_ARRAY),
                (&job_id, Type::TEXT_ARRAY),
                (&step_id, Type::TEXT_ARRAY),
                (&mt_id, Type::TEXT_ARRAY),
                (&model_id, Type::TEXT_ARRAY),
                (&capability_id, Type::TEXT_ARRAY),
                (&payload, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(())
}
