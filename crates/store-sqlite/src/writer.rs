//! The single writer thread and its group commit.
//!
//! Every write is a job sent to one thread that owns the write connection.
//! The thread takes the first waiting job, then every job already queued
//! behind it (up to [`MAX_BATCH`]), runs each inside its own savepoint of one
//! `BEGIN IMMEDIATE` transaction, and commits once. With `synchronous=FULL`
//! that one commit is one fsync of the WAL shared by the whole batch, so many
//! concurrent step completions cost one fsync instead of one each (design
//! decision 3). A job whose savepoint fails is rolled back alone; its
//! neighbours still commit. No caller hears back before the commit is
//! durable.

use std::sync::{Arc, mpsc};
use std::thread;

use rusqlite::Connection;
use steward_store::stats::CommitRecorder;
use steward_store::{Error, Result};

use crate::map_err;

/// The most jobs one transaction takes.
pub(crate) const MAX_BATCH: usize = 512;

type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;
/// A job runs against the open transaction, or hears why none could be opened.
type Job = Box<dyn FnOnce(std::result::Result<&Connection, &Error>) -> Option<Reply> + Send>;

/// Handle to the writer thread. Dropping it lets the thread finish the
/// queued writes and close the connection (checkpointing the WAL).
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Each group commit's size and duration.
    pub(crate) stats: Arc<CommitRecorder>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    pub(crate) fn spawn(conn: Connection, path: String) -> Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(CommitRecorder::default());
        let recorder = stats.clone();
        let thread = thread::Builder::new()
            .name("steward-sqlite-writer".into())
            .spawn(move || run(conn, rx, path, &recorder))
            .map_err(|e| Error::Unavailable { detail: format!("cannot start the writer thread: {e}") })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread), stats })
    }

    /// Runs `f` in the next group commit and resolves once that commit is durable.
    pub(crate) async fn submit<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = reply_tx.send(Err(e.clone()));
                    return None;
                }
            };
            let result = in_savepoint(conn, f);
            Some(Box::new(move |commit_error: Option<&Error>| {
                let result = match (commit_error, result) {
                    (Some(e), Ok(_)) => Err(e.clone()),
                    (_, r) => r,
                };
                let _ = reply_tx.send(result);
            }))
        });
        let stopped = || Error::Unavailable { detail: "the SQLite writer thread has stopped".into() };
        self.tx.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())?;
        reply_rx.await.map_err(|_| Error::Unavailable { detail: "the SQLite writer thread dropped a write".into() })?
    }
}

/// Runs one of the writer's own statements, kept prepared (`execute_batch` would parse it again
/// on every job).
fn run_statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    run_statement(conn, "SAVEPOINT job").map_err(map_err(""))?;
    match f(conn) {
        Ok(v) => {
            run_statement(conn, "RELEASE job").map_err(map_err(""))?;
            Ok(v)
        }
        Err(e) => {
            // Undo this job only; the batch's other jobs still commit.
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Job>, path: String, stats: &CommitRecorder) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = std::time::Instant::now();
        let size = batch.len();
        if let Err(e) = run_statement(&conn, "BEGIN IMMEDIATE").map_err(map_err(&path)) {
            // Nothing ran; every job hears why.
            for job in batch {
                job(Err(&e));
            }
            continue;
        }
        let replies: Vec<Reply> = batch.into_iter().filter_map(|job| job(Ok(&conn))).collect();
        let commit = run_statement(&conn, "COMMIT").map_err(map_err(&path));
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        stats.record(size, began.elapsed());
        let err = commit.err();
        for reply in replies {
            reply(err.as_ref());
        }
    }
}
