//! Versioned migrations, applied on connect under a session advisory lock.
//!
//! `schema_migrations(version, applied_at)` records each migration applied. Several processes
//! may connect to a new database at once (workers starting together): each takes the same
//! advisory lock before reading what was applied, so each migration runs exactly once, and a
//! process that waited finds the work done. A migration and its row commit together.

use tokio_postgres::Client;

use steward_store::{Error, Result};

use crate::conn::Target;

/// The migrations, in order; the version of each is its position, from 1.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/001_initial.sql"),
    include_str!("../migrations/002_artifacts.sql"),
    include_str!("../migrations/003_typed_answers.sql"),
    include_str!("../migrations/004_lineage.sql"),
    include_str!("../migrations/005_answer_detail.sql"),
];

/// The advisory lock key migrations run under ("STEWMIGR").
const LOCK: i64 = 0x5354_4557_4d49_4752;

/// Brings the schema up to date.
pub(crate) async fn migrate(client: &Client, target: &Target) -> Result<()> {
    let err = |what: &'static str| move |e: tokio_postgres::Error| target.error(what, &e);
    client
        .batch_execute(&format!("SELECT pg_advisory_lock({LOCK})"))
        .await
        .map_err(err("waiting for the migration lock"))?;
    let applied = apply(client, target).await;
    // Also released if the connection drops; an error here hides nothing the caller needs.
    let unlocked = client.batch_execute(&format!("SELECT pg_advisory_unlock({LOCK})")).await;
    applied?;
    unlocked.map_err(err("releasing the migration lock"))
}

async fn apply(client: &Client, target: &Target) -> Result<()> {
    let err = |what: &'static str| move |e: tokio_postgres::Error| target.error(what, &e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at BIGINT NOT NULL
             )",
        )
        .await
        .map_err(err("creating schema_migrations"))?;
    let rows = client
        .query_typed("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .map_err(err("reading schema_migrations"))?;
    let applied: Vec<i32> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
    let known = MIGRATIONS.len() as i32;
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        return Err(Error::Corrupt {
            path: target.shown.clone(),
            detail: format!("schema version {newer} is newer than this steward understands ({known}); upgrade steward"),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if applied.contains(&version) {
            continue;
        }
        // One simple-protocol message: the server runs it as one transaction, so the schema
        // change and its row land together or not at all.
        let script = format!(
            "{sql}\n;INSERT INTO schema_migrations (version, applied_at)
             VALUES ({version}, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);"
        );
        client.batch_execute(&script).await.map_err(|e| target.error(&format!("applying migration {version}"), &e))?;
    }
    Ok(())
}
