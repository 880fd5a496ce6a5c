//! The artifact store in PostgreSQL passes the seam's contract (issue 12 point 6), and what one
//! worker writes another, with its own connections, reads.

use std::sync::Arc;

use steward_artifacts::ArtifactStore;
use steward_core::ids::SeqIds;
use steward_store_postgres::{PgOptions, PgStore};
use steward_test_support::PgCluster;

async fn store(url: &str) -> PgStore {
    PgStore::connect(url, PgOptions::default(), Arc::new(SeqIds::new("ev"))).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifact_store_in_postgres_keeps_the_seams_contract() {
    let Some(pg) = PgCluster::shared() else { return };
    let url = pg.create_database();
    let artifacts = store(&url).await.artifacts();
    steward_artifacts::conformance::check(&artifacts).await.expect("conformance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_worker_writes_another_reads() {
    let Some(pg) = PgCluster::shared() else { return };
    let url = pg.create_database();
    let (one, other) = (store(&url).await.artifacts(), store(&url).await.artifacts());
    let handle = one.put(b"evidence", "text/plain").await.unwrap();
    one.write_document("job-1", "run_ledger.json", b"{\"step\": 2}").await.unwrap();
    assert_eq!(other.get(&handle.hash).await.unwrap(), b"evidence");
    assert_eq!(other.read_document("job-1", "run_ledger.json").await.unwrap().as_deref(), Some(&b"{\"step\": 2}"[..]));
    assert_eq!(other.list_documents("job-1", "").await.unwrap(), ["run_ledger.json"]);
}
