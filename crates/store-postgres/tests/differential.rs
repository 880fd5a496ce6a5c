//! Differential test: seeded random operation sequences applied to PostgreSQL and to the
//! in-memory reference store give the same answers and the same histories.

use std::sync::Arc;

use steward_core::ids::SeqIds;
use steward_store::mem::MemStore;
use steward_store_postgres::{PgOptions, PgStore};
use steward_store_testkit::differential::{clock, same_history, seeds};
use steward_test_support::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_the_reference_store_agree() {
    let Some(cluster) = PgCluster::shared() else { return };
    for seed in seeds(20) {
        // Both stores measure leases on one clock the driver moves.
        let (db_time, clock) = clock();
        let url = cluster.create_database();
        let pg = PgStore::connect(&url, PgOptions::default(), Arc::new(SeqIds::new("ev")))
            .await
            .expect("connect")
            .with_clock(clock.clone());
        let mem = MemStore::with_clock(Arc::new(SeqIds::new("ev")), clock);
        same_history(seed, &pg, &mem, &db_time).await;
    }
}
