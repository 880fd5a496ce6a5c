//! Steward's Flight Recorder analytics: the store's events mirrored into a DuckDB file.
//!
//! The store stays the source of truth; [`Mirror`] copies its events, in
//! store order, into a DuckDB table `events` with one column per envelope
//! field and the payload as JSON. Each batch and the watermark that records
//! it commit in one DuckDB transaction, so a crash mid-copy leaves the
//! previous watermark and the batch is copied again on the next sync: every
//! event lands exactly once. [`query`] opens the file read-only, so SQL
//! that tries to write is refused by DuckDB itself.
#![warn(missing_docs)]

use std::path::Path;

use duckdb::types::{TimeUnit, ValueRef};
use duckdb::{AccessMode, Config, Connection, params};
use serde_json::{Value, json};
use steward_core::event::Event;

/// The DuckDB file under a data directory.
pub const FILE: &str = "flight_recorder.duckdb";

/// Analytics errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DuckDB refused or failed.
    #[error("flight recorder database {path}: {detail}")]
    DuckDb {
        /// The file.
        path: String,
        /// What DuckDB said.
        detail: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    event_type VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    actor_id VARCHAR NOT NULL,
    trace_id VARCHAR NOT NULL,
    job_id VARCHAR NOT NULL,
    workflow_run_id VARCHAR NOT NULL,
    step_id VARCHAR,
    mt_id VARCHAR,
    model_id VARCHAR,
    capability_id VARCHAR,
    payload JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS mirror_state (id INTEGER PRIMARY KEY, watermark BIGINT NOT NULL);
INSERT INTO mirror_state VALUES (1, 0) ON CONFLICT DO NOTHING;
";

/// The writable mirror.
pub struct Mirror {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("path", &self.path).finish()
    }
}

fn err(path: &str) -> impl Fn(duckdb::Error) -> Error + '_ {
    move |e| Error::DuckDb { path: path.to_owned(), detail: e.to_string() }
}

impl Mirror {
    /// Opens (creating if needed) the mirror file.
    pub fn open(path: &Path) -> Result<Mirror> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(err(&shown))?;
        conn.execute_batch(SCHEMA).map_err(err(&shown))?;
        Ok(Mirror { conn, path: shown })
    }

    /// The store-wide id of the last event copied.
    pub fn watermark(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT watermark FROM mirror_state WHERE id = 1", [], |r| r.get(0))
            .map_err(err(&self.path))
    }

    /// Copies a batch (in store order, after the watermark) and moves the watermark, atomically.
    pub fn append(&mut self, events: &[Event]) -> Result<()> {
        let Some(last) = events.last() else { return Ok(()) };
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(err(&path))?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO events VALUES (?, ?, ?, make_timestamptz(? * 1000), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT DO NOTHING",
                )
                .map_err(err(&path))?;
            for e in events {
                insert
                    .execute(params![
                        e.id,
                        e.seq,
                        e.event_id,
                        e.ts.millis(),
                        e.event_type,
                        e.actor.as_str(),
                        e.actor_id,
                        e.trace_id,
                        e.job_id,
                        e.workflow_run_id,
                        e.step_id,
                        e.mt_id,
                        e.model_id,
                        e.capability_id,
                        e.payload.to_string(),
                    ])
                    .map_err(err(&path))?;
            }
        }
        tx.execute("UPDATE mirror_state SET watermark = ? WHERE id = 1", params![last.id]).map_err(err(&path))?;
        tx.commit().map_err(err(&path))
    }

    /// Removes events the store pruned.
    pub fn forget(&mut self, ids: &[i64]) -> Result<usize> {
        let mut n = 0;
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            n += self
                .conn
                .execute(&format!("DELETE FROM events WHERE id IN ({})", list.join(",")), [])
                .map_err(err(&self.path))?;
        }
        Ok(n)
    }
}

/// A result table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, values as JSON.
    pub rows: Vec<Vec<Value>>,
}

fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Boolean(b) => json!(b),
        ValueRef::TinyInt(n) => json!(n),
        ValueRef::SmallInt(n) => json!(n),
        ValueRef::Int(n) => json!(n),
        ValueRef::BigInt(n) => json!(n),
        ValueRef::HugeInt(n) => json!(n.to_string()),
        ValueRef::UTinyInt(n) => json!(n),
        ValueRef::USmallInt(n) => json!(n),
        ValueRef::UInt(n) => json!(n),
        ValueRef::UBigInt(n) => json!(n),
        ValueRef::Float(f) => json!(f),
        ValueRef::Double(f) => json!(f),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t).into_owned();
            // JSON columns come back as text; give them back as JSON.
            serde_json::from_str::<Value>(&s).ok().filter(|v| v.is_object() || v.is_array()).unwrap_or(Value::String(s))
        }
        ValueRef::Timestamp(unit, n) => {
            let ms = match unit {
                TimeUnit::Second => n.saturating_mul(1000),
                TimeUnit::Millisecond => n,
                TimeUnit::Microsecond => n / 1000,
                TimeUnit::Nanosecond => n / 1_000_000,
            };
            json!(steward_core::Timestamp(ms).to_rfc3339())
        }
        other => json!(format!("{other:?}")),
    }
}

/// Runs SQL on a read-only connection: writes are refused by DuckDB.
pub fn query(path: &Path, sql: &str) -> Result<Table> {
    let shown = path.display().to_string();
    // Issue 11: a query reads the mirror and nothing else. External access off means no other
    // file is read or written (`read_csv`, `COPY ... TO`, `ATTACH`), no extension is installed or
    // loaded, and the locked configuration cannot be switched back by the query itself.
    let config = Config::default()
        .access_mode(AccessMode::ReadOnly)
        .and_then(|c| c.enable_external_access(false))
        .and_then(|c| c.enable_autoload_extension(false))
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .and_then(|c| c.with("allow_community_extensions", "false"))
        .and_then(|c| c.with("lock_configuration", "true"))
        .map_err(err(&shown))?;
    let conn = Connection::open_with_flags(path, config).map_err(err(&shown))?;
    let mut stmt = conn.prepare(sql).map_err(err(&shown))?;
    let mut rows = stmt.query([]).map_err(err(&shown))?;
    let mut out = Vec::new();
    let mut columns = Vec::new();
    while let Some(row) = rows.next().map_err(err(&shown))? {
        if columns.is_empty() {
            let stmt = row.as_ref();
            columns = (0..stmt.column_count())
                .map(|i| stmt.column_name(i).map_or_else(|_| format!("col{i}"), ToString::to_string))
                .collect();
        }
        out.push((0..columns.len()).map(|i| row.get_ref(i).map_or(Value::Null, to_json)).collect());
    }
    if columns.is_empty() {
        columns = (0..stmt.column_count())
            .map(|i| stmt.column_name(i).map_or_else(|_| format!("col{i}"), ToString::to_string))
            .collect();
    }
    Ok(Table { columns, rows: out })
}
