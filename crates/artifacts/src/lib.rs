//! Steward's artifact store seam: what a run needs besides the store's records, reachable from
//! whichever worker drives the run.
//!
//! Two kinds of things live behind one object-safe trait, [`ArtifactStore`]:
//!
//! - **Blobs**, content-addressed and immutable: a command's stdout and stderr (evidence), large
//!   environment values, an agent's prompt and response. [`ArtifactStore::put`] names bytes by
//!   their SHA-256 (`sha256:<hex>`), so the same bytes written twice are one blob, and
//!   [`ArtifactStore::get`] checks that what it returns still hashes to its name.
//! - **Documents**, named and mutable, grouped under a *scope* (a micro-task job's id, or a
//!   run's): the micro-task executor's progress artifact, run ledger, saved model answers and
//!   step outputs. A write replaces a document whole and atomically: a reader sees the old bytes
//!   or the new ones, never a mix of both.
//!
//! Design decisions, and why:
//! - One seam for both, because both must be reachable from the worker that continues a run: a
//!   micro-task job interrupted on one machine resumes on another from the same documents, and
//!   the evidence its attempts recorded is readable there. Only the files a step *edits* (the
//!   run's workspace) stay outside it; a worker serves the workspaces it can reach.
//! - Object-safe with boxed futures and no async-trait crate, so the tool bus and the runtime
//!   hold an `Arc<dyn ArtifactStore>` and only the composition root (the CLI) picks the
//!   implementation, as it picks the store's backend.
//! - Names are checked here ([`check_scope`], [`check_name`]) so that every implementation
//!   accepts and refuses the same ones, and a valid name is always a safe relative path.
//! - Implementations: [`FsArtifacts`], the embedded default, which keeps the data directory's
//!   layout from before this seam existed, and [`MemArtifacts`], for tests and embedding. A SQL
//!   backend maps onto two tables (see [`ArtifactStore`]). [`conformance::check`] is the contract
//!   as code; every implementation passes it.
//!
//! This crate knows nothing of runs, steps or the store's records, and imports no other
//! `steward-*` crate.
#![warn(missing_docs)]

pub mod conformance;
mod fs;
mod mem;

use std::future::Future;
use std::pin::Pin;

pub use fs::FsArtifacts;
pub use mem::MemArtifacts;

/// A boxed, sendable future: what the trait's methods return, so that it stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of an artifact store, each naming what it was about and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is not a `sha256:<64 lowercase hex digits>` hash.
    #[error("`{0}` is not an artifact hash (sha256:<64 lowercase hex digits>)")]
    BadHash(String),
    /// A scope or document name the seam refuses (see [`check_name`]).
    #[error("`{scope}` / `{name}` is not a valid document name: {why}")]
    BadName {
        /// The scope given.
        scope: String,
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No blob has that hash.
    #[error("artifact {hash} is not in {location}")]
    NotFound {
        /// The hash asked for.
        hash: String,
        /// Where it was looked for.
        location: String,
    },
    /// What is stored is not what was written (a blob that no longer hashes to its name, a file
    /// where a directory belongs).
    #[error("{location}: {what}")]
    Corrupt {
        /// Where.
        location: String,
        /// What is wrong.
        what: String,
    },
    /// A symbolic link inside the store's own directories: never followed, so that nothing
    /// planted there can redirect a read or a write.
    #[error("{location} is a symlink; the artifact store never follows one")]
    Symlink {
        /// The link.
        location: String,
    },
    /// The file system refused or failed.
    #[error("cannot {action} {location}: {source}")]
    Io {
        /// What was being done (`write`, `read`, `create directory`...).
        action: &'static str,
        /// The path.
        location: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backend cannot be reached now (a database connection lost); the call changed
    /// nothing it reports as done, and retrying may succeed.
    #[error("the artifact store at {location} is unavailable: {message}")]
    Unavailable {
        /// The backend.
        location: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stored blob: its content address, size and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// `sha256:<hex>` of the bytes.
    pub hash: String,
    /// Length in bytes.
    pub size: u64,
    /// What the bytes are (`text/plain; charset=utf-8`...), as the writer said.
    pub media_type: String,
}

/// SHA-256 of bytes as `sha256:<hex>`: a blob's name.
pub fn hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    Sha256::digest(bytes).iter().fold(String::with_capacity(71), |mut s, b| {
        if s.is_empty() {
            s.push_str("sha256:");
        }
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The 64 hex digits of a well-formed hash, or [`Error::BadHash`].
pub fn hash_hex(hash: &str) -> Result<&str> {
    hash.strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or_else(|| Error::BadHash(hash.to_owned()))
}

/// Longest part of a scope or name, in bytes (a file name on every common file system).
const MAX_PART_BYTES: usize = 255;
/// Longest document name, in bytes.
const MAX_NAME_BYTES: usize = 1024;

/// Why one part of a scope or name is refused, if it is.
fn part_problem(part: &str) -> Option<&'static str> {
    if part.is_empty() {
        Some("it has an empty part")
    } else if part.len() > MAX_PART_BYTES {
        Some("a part is longer than 255 bytes")
    } else if part.starts_with('.') {
        // Also rules out `.` and `..`; a leading dot marks the file system's temporary files.
        Some("a part starts with `.`")
    } else if part.chars().any(|c| c == '\\' || c.is_control()) {
        Some("it holds a backslash or a control character")
    } else {
        None
    }
}

/// Checks a scope: one non-empty part without `/`, `\`, control characters or a leading `.`.
pub fn check_scope(scope: &str) -> Result<()> {
    let why = if scope.contains('/') { Some("the scope holds a `/`") } else { part_problem(scope) };
    match why {
        Some(why) => Err(Error::BadName { scope: scope.to_owned(), name: String::new(), why }),
        None => Ok(()),
    }
}

/// Checks a document name under `scope`: parts separated by `/`, each non-empty, without `\`,
/// control characters or a leading `.`, at most 1024 bytes in all. Such a name is a relative
/// path that stays below its scope on any file system, and the same string in a SQL column.
pub fn check_name(scope: &str, name: &str) -> Result<()> {
    check_scope(scope)?;
    let why = if name.len() > MAX_NAME_BYTES {
        Some("the name is longer than 1024 bytes")
    } else {
        name.split('/').find_map(part_problem)
    };
    match why {
        Some(why) => Err(Error::BadName { scope: scope.to_owned(), name: name.to_owned(), why }),
        None => Ok(()),
    }
}

/// Where Steward keeps blobs and documents; see the crate docs for what each is.
///
/// Contract, for every implementation (checked by [`conformance::check`]):
/// - `put` is idempotent: the same bytes give the same [`Handle`] and are stored once. It
///   returns only once the bytes are durable.
/// - `get` returns exactly the bytes put, or [`Error::NotFound`]; bytes that no longer hash to
///   their name are [`Error::Corrupt`], never content.
/// - `write_document` replaces the document whole, atomically and durably before it returns; a
///   concurrent or later `read_document` sees the old bytes or the new ones.
/// - `write_documents` does the same for several documents of a scope, every name checked
///   before any is written. Each is replaced whole; a crash part way may leave some replaced and
///   others not, so a caller whose documents depend on one another writes them in separate
///   calls, the depended-on first.
/// - `read_document` returns `None` for a document never written.
/// - `list_documents` returns the names under a scope that start with a prefix, sorted by
///   their bytes.
/// - Scopes and names are checked with [`check_scope`] and [`check_name`] before anything is
///   touched ([`Error::BadName`]).
///
/// Writes are not fenced here: a caller that may have lost its run (the micro-task executor)
/// asks whether it still holds it before each write, as it does for every other write.
///
/// A SQL backend implements it over two tables, one statement per call (so each is atomic):
///
/// ```text
/// CREATE TABLE artifacts (hash TEXT PRIMARY KEY, media_type TEXT NOT NULL, bytes BYTEA NOT NULL);
/// CREATE TABLE documents (scope TEXT NOT NULL, name TEXT NOT NULL, bytes BYTEA NOT NULL,
///                         updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (scope, name));
///
/// put            INSERT INTO artifacts VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING
/// get            SELECT bytes FROM artifacts WHERE hash = $1        -- then compare hash(bytes)
/// write_document INSERT INTO documents (scope, name, bytes) VALUES ($1, $2, $3)
///                ON CONFLICT (scope, name) DO UPDATE SET bytes = excluded.bytes, updated_at = now()
/// read_document  SELECT bytes FROM documents WHERE scope = $1 AND name = $2
/// list_documents SELECT name FROM documents WHERE scope = $1 AND starts_with(name, $2)
///                ORDER BY name COLLATE "C"                          -- byte order, as here
/// ```
///
/// A lost connection is [`Error::Unavailable`]; everything else the database says is mapped
/// inside the backend and never leaks its driver's types.
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` under their hash, unless they are already there.
    fn put<'a>(&'a self, bytes: &'a [u8], media_type: &'a str) -> BoxFuture<'a, Result<Handle>>;

    /// The bytes of the blob named `hash`, checked against it.
    fn get<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Vec<u8>>>;

    /// Whether the blob of `handle` is there, intact and of its size.
    fn verify<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.get(&handle.hash).await.is_ok_and(|b| b.len() as u64 == handle.size) })
    }

    /// Replaces (or creates) the document `name` of `scope` with `bytes`.
    fn write_document<'a>(&'a self, scope: &'a str, name: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<()>>;

    /// Replaces (or creates) several documents of `scope`, each as [`Self::write_document`]
    /// would; durable when it returns. The default writes them one by one; a backend that can
    /// make one batch cheaper than its parts (one directory sync, one transaction) does so.
    fn write_documents<'a>(&'a self, scope: &'a str, docs: &'a [(&'a str, &'a [u8])]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for (name, _) in docs {
                check_name(scope, name)?;
            }
            for (name, bytes) in docs {
                self.write_document(scope, name, bytes).await?;
            }
            Ok(())
        })
    }

    /// The document `name` of `scope`, or `None` if it was never written.
    fn read_document<'a>(&'a self, scope: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;

    /// The names of `scope`'s documents that start with `prefix` (`""`: all), sorted.
    fn list_documents<'a>(&'a self, scope: &'a str, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;

    /// Where `scope`'s documents are, for people: a directory, or a table and key.
    fn location(&self, scope: &str) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_names_are_checked() {
        let h = hash(b"hello");
        assert_eq!(h, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(hash_hex(&h).unwrap().len(), 64);
        for bad in ["sha256:zz", "md5:00", &h.to_uppercase(), &h[..70]] {
            assert!(matches!(hash_hex(bad), Err(Error::BadHash(_))), "{bad}");
        }
        assert!(check_name("job-1", "step_outputs/abc/response.txt").is_ok());
        for (scope, name) in [
            ("job-1", "../x"),
            ("job-1", "a//b"),
            ("job-1", "/abs"),
            ("job-1", ".hidden"),
            ("job-1", "a/./b"),
            ("job-1", "a\\b"),
            ("job-1", ""),
            ("a/b", "x"),
            ("..", "x"),
            ("", "x"),
            ("job-1", "nul\0"),
        ] {
            assert!(matches!(check_name(scope, name), Err(Error::BadName { .. })), "{scope:?} {name:?}");
        }
        assert!(check_name("j", &"x/".repeat(600)).is_err(), "too long");
    }
}
