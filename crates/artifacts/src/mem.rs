//! `MemArtifacts`: the artifact store in memory, for tests and embedding; shared between
//! engines through an `Arc`, it stands in for a database every worker reaches.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{ArtifactStore, BoxFuture, Error, Handle, Result, check_name, check_scope, hash, hash_hex};

/// Blobs and documents in memory. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemArtifacts {
    /// Hash → (media type, bytes).
    blobs: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// (scope, name) → bytes; ordered, so a listing is a range.
    documents: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

/// A lock whose holder panicked still guards plain maps that are never left half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemArtifacts {
    /// An empty store.
    pub fn new() -> MemArtifacts {
        MemArtifacts::default()
    }

    fn put_now(&self, bytes: &[u8], media_type: &str) -> Handle {
        let hash = hash(bytes);
        lock(&self.blobs).entry(hash.clone()).or_insert_with(|| (media_type.to_owned(), bytes.to_vec()));
        Handle { hash, size: bytes.len() as u64, media_type: media_type.to_owned() }
    }

    fn get_now(&self, hash: &str) -> Result<Vec<u8>> {
        hash_hex(hash)?;
        match lock(&self.blobs).get(hash) {
            Some((_, bytes)) => Ok(bytes.clone()),
            None => Err(Error::NotFound { hash: hash.to_owned(), location: "memory".into() }),
        }
    }

    fn list_now(&self, scope: &str, prefix: &str) -> Result<Vec<String>> {
        check_scope(scope)?;
        let docs = lock(&self.documents);
        let from = (scope.to_owned(), prefix.to_owned());
        Ok(docs
            .range(from..)
            .take_while(|((s, n), _)| s == scope && n.starts_with(prefix))
            .map(|((_, n), _)| n.clone())
            .collect())
    }
}

impl ArtifactStore for MemArtifacts {
    fn put<'a>(&'a self, bytes: &'a [u8], media_type: &'a str) -> BoxFuture<'a, Result<Handle>> {
        Box::pin(async move { Ok(self.put_now(bytes, media_type)) })
    }

    fn get<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move { self.get_now(hash) })
    }

    fn write_document<'a>(&'a self, scope: &'a str, name: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_name(scope, name)?;
            lock(&self.documents).insert((scope.to_owned(), name.to_owned()), bytes.to_vec());
            Ok(())
        })
    }

    fn read_document<'a>(&'a self, scope: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            check_name(scope, name)?;
            Ok(lock(&self.documents).get(&(scope.to_owned(), name.to_owned())).cloned())
        })
    }

    fn list_documents<'a>(&'a self, scope: &'a str, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move { self.list_now(scope, prefix) })
    }

    fn location(&self, scope: &str) -> String {
        format!("memory:{scope}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_contract() {
        crate::conformance::check(&MemArtifacts::new()).await.unwrap();
    }
}
