//! Differential test: seeded random operation sequences applied to PostgreSQL and to the
//! in-memory reference store give the same answers and the same histories.

use std::sync::Arc;

use steward_core::ids::SeqIds;
use steward_store::mem::MemStore;
use steward_store_postgres::{PgOptions, PgStore};
use steward_store_testkit::differential::{same_history, seeds};
use steward_test_support::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_the_reference_store_agree() {
    let Some(cluster) = PgCluster::shared() else { return };
    for seed in seeds(20) {
        let url = cluster.create_database();
        let pg = PgStore::connect(&url, PgOptions::default(), Arc::new(SeqIds::new("ev"))).await.expect("connect");
        let mem = MemStore::new(Arc::new(SeqIds::new("ev")));
        same_history(seed, &pg, &mem).await;
    }
}
