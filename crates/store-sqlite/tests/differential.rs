//! Differential test: seeded random operation sequences applied to SQLite and to the
//! in-memory reference store must give the same answers and the same histories (the driver is
//! `steward_store_testkit::differential`, shared with every backend).

use std::sync::Arc;

use steward_core::ids::SeqIds;
use steward_store::mem::MemStore;
use steward_store_sqlite::{Options, SqliteStore};
use steward_store_testkit::differential::{clock, same_history, seeds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_the_reference_store_agree() {
    for seed in seeds(20) {
        // Both stores measure leases on one clock the driver moves.
        let (db_time, clock) = clock();
        let dir = tempfile::tempdir().unwrap();
        let sql = SqliteStore::open(&dir.path().join("d.db"), Options::default(), Arc::new(SeqIds::new("ev")))
            .unwrap()
            .with_clock(clock.clone());
        let mem = MemStore::with_clock(Arc::new(SeqIds::new("ev")), clock);
        same_history(seed, &sql, &mem, &db_time).await;
    }
}
