//! Identifier generation behind a trait, so tests can make IDs predictable.

use std::sync::atomic::{AtomicU64, Ordering};

/// Makes unique identifiers (UUIDs in production, counters in tests).
pub trait IdGen: Send + Sync {
    /// A new unique identifier.
    fn next_id(&self) -> String;
}

/// Sequential IDs `<prefix>-1`, `<prefix>-2`, ... for deterministic tests.
#[derive(Debug, Default)]
pub struct SeqIds {
    prefix: String,
    next: AtomicU64,
}

impl SeqIds {
    /// A generator whose IDs start with `prefix`.
    pub fn new(prefix: &str) -> SeqIds {
        SeqIds { prefix: prefix.to_owned(), next: AtomicU64::new(1) }
    }
}

impl IdGen for SeqIds {
    fn next_id(&self) -> String {
        format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}
