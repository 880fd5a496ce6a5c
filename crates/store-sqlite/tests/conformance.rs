//! The SQLite store passes the whole conformance suite, each case on a fresh file.

use std::sync::Arc;

use steward_core::ids::SeqIds;
use steward_store_sqlite::{Options, SqliteStore};

async fn fresh_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("steward.db"), Options::default(), Arc::new(SeqIds::new("ev")))
        .expect("open store");
    (store, dir)
}

steward_store_testkit::store_conformance!(fresh_store);
