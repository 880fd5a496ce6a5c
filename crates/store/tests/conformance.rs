//! The reference in-memory store passes the same conformance suite as every backend.

use std::sync::Arc;

use steward_core::ids::SeqIds;
use steward_store::mem::MemStore;

async fn fresh_store() -> (MemStore, ()) {
    (MemStore::new(Arc::new(SeqIds::new("ev"))), ())
}

steward_store_testkit::store_conformance!(fresh_store);
