//! The PostgreSQL store passes the whole conformance suite, each case in a fresh database of
//! one throwaway cluster this test binary starts (skipped, with the reason printed, when
//! PostgreSQL is not installed, unless `STEWARD_REQUIRE_POSTGRES` is set).

use std::sync::Arc;

use steward_core::ids::SeqIds;
use steward_store_postgres::{PgOptions, PgStore};
use steward_test_support::PgCluster;

async fn fresh_store() -> Option<(PgStore, ())> {
    let url = PgCluster::shared()?.create_database();
    let store = PgStore::connect(&url, PgOptions::default(), Arc::new(SeqIds::new("ev"))).await.expect("connect");
    Some((store, ()))
}

steward_store_testkit::store_conformance!(fresh_store);
