//! `PgArtifacts`: the artifact store seam on the same database as the runs, so that a worker on
//! any machine reads the evidence, prompts, responses and micro-task job state another wrote.
//!
//! Each call is one statement on a pooled connection (so each is atomic, and durable once it
//! returns: a committed statement under `synchronous_commit`). Every one is safe to repeat, so
//! one whose connection broke runs again on a new one, as the store's reads do.

use std::sync::Arc;

use tokio_postgres::types::Type;

use steward_artifacts::{ArtifactStore, BoxFuture, Error, Handle, Result, check_name, check_scope, hash, hash_hex};

use crate::conn::{Readers, Target};

/// The artifact store in a Steward PostgreSQL database (tables `artifacts` and `documents`).
/// Made by [`crate::PgStore::artifacts`]; shares the store's connections.
#[derive(Clone)]
pub struct PgArtifacts {
    pub(crate) target: Arc<Target>,
    pub(crate) readers: Arc<Readers>,
}

impl std::fmt::Debug for PgArtifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgArtifacts").field("database", &self.target.shown).finish()
    }
}

impl PgArtifacts {
    fn where_(&self, table: &str) -> String {
        format!("{table} in {}", self.target.shown)
    }

    async fn run(&self, what: &str, sql: &str, params: &crate::conn::Params<'_>) -> Result<Vec<tokio_postgres::Row>> {
        self.readers.query(&self.target, what, sql, params).await.map_err(|e| self.mapped(e))
    }

    fn mapped(&self, e: steward_store::Error) -> Error {
        match e {
            steward_store::Error::Unavailable { detail } => {
                Error::Unavailable { location: self.target.shown.clone(), message: detail }
            }
            other => Error::Corrupt { location: self.target.shown.clone(), what: other.to_string() },
        }
    }
}

impl ArtifactStore for PgArtifacts {
    fn put<'a>(&'a self, bytes: &'a [u8], media_type: &'a str) -> BoxFuture<'a, Result<Handle>> {
        Box::pin(async move {
            let h = hash(bytes);
            self.run(
                "store an artifact",
                "INSERT INTO artifacts (hash, media_type, bytes) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
                &[(&h, Type::TEXT), (&media_type, Type::TEXT), (&bytes, Type::BYTEA)],
            )
            .await?;
            Ok(Handle { hash: h, size: bytes.len() as u64, media_type: media_type.to_owned() })
        })
    }

    fn get<'a>(&'a self, wanted: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            hash_hex(wanted)?;
            let rows = self
                .run("read an artifact", "SELECT bytes FROM artifacts WHERE hash = $1", &[(&wanted, Type::TEXT)])
                .await?;
            let Some(row) = rows.first() else {
                return Err(Error::NotFound { hash: wanted.to_owned(), location: self.where_("artifacts") });
            };
            let bytes: Vec<u8> = row
                .try_get(0)
                .map_err(|e| Error::Corrupt { location: self.where_("artifacts"), what: format!("{wanted}: {e}") })?;
            if hash(&bytes) != wanted {
                return Err(Error::Corrupt {
                    location: self.where_("artifacts"),
                    what: format!("{wanted} no longer hashes to its name"),
                });
            }
            Ok(bytes)
        })
    }

    fn write_document<'a>(&'a self, scope: &'a str, name: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_name(scope, name)?;
            self.run(
                "write a document",
                "INSERT INTO documents (scope, name, bytes) VALUES ($1, $2, $3)
                 ON CONFLICT (scope, name) DO UPDATE SET bytes = excluded.bytes, updated_at = now()",
                &[(&scope, Type::TEXT), (&name, Type::TEXT), (&bytes, Type::BYTEA)],
            )
            .await?;
            Ok(())
        })
    }

    fn read_document<'a>(&'a self, scope: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            check_name(scope, name)?;
            let rows = self
                .run(
                    "read a document",
                    "SELECT bytes FROM documents WHERE scope = $1 AND name = $2",
                    &[(&scope, Type::TEXT), (&name, Type::TEXT)],
                )
                .await?;
            rows.first()
                .map(|row| {
                    row.try_get::<_, Vec<u8>>(0)
                        .map_err(|e| Error::Corrupt { location: self.location(scope), what: format!("{name}: {e}") })
                })
                .transpose()
        })
    }

    fn list_documents<'a>(&'a self, scope: &'a str, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            check_scope(scope)?;
            let rows = self
                .run(
                    "list documents",
                    "SELECT name FROM documents WHERE scope = $1 AND starts_with(name, $2) ORDER BY name COLLATE \"C\"",
                    &[(&scope, Type::TEXT), (&prefix, Type::TEXT)],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    row.try_get::<_, String>(0)
                        .map_err(|e| Error::Corrupt { location: self.location(scope), what: e.to_string() })
                })
                .collect()
        })
    }

    fn location(&self, scope: &str) -> String {
        format!("documents of `{scope}` in {}", self.target.shown)
    }
}
