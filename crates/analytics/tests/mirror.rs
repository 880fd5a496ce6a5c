//! The mirror copies exactly once and queries are read-only.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use steward_analytics::{Mirror, query};
use steward_core::Timestamp;
use steward_core::event::{Actor, Event};

fn event(id: i64, run: &str, seq: i64, event_type: &str) -> Event {
    Event {
        id,
        seq,
        event_id: format!("e{id}"),
        ts: Timestamp(1_800_000_000_000 + id),
        event_type: event_type.into(),
        actor: Actor::System,
        actor_id: "engine".into(),
        trace_id: "t".into(),
        job_id: "j".into(),
        workflow_run_id: run.into(),
        step_id: (id % 2 == 0).then(|| "s".to_owned()),
        mt_id: None,
        model_id: None,
        capability_id: None,
        payload: json!({"n": id}),
    }
}

#[test]
fn batches_land_once_and_the_watermark_moves_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fr.duckdb");
    let mut m = Mirror::open(&path).unwrap();
    assert_eq!(m.watermark().unwrap(), 0);
    let batch: Vec<Event> = (1..=5).map(|i| event(i, "r1", i, "step_attempt_started")).collect();
    m.append(&batch).unwrap();
    // A crash after commit but before the caller noticed: the same batch again changes nothing.
    m.append(&batch).unwrap();
    assert_eq!(m.watermark().unwrap(), 5);
    drop(m);

    let t = query(&path, "SELECT count(*) AS n, max(seq) AS last, any_value(payload) IS NOT NULL AS json FROM events")
        .unwrap();
    assert_eq!(t.columns, ["n", "last", "json"]);
    assert_eq!(t.rows, [[json!(5), json!(5), json!(true)]]);
    let t = query(&path, "SELECT payload, ts FROM events WHERE id = 3").unwrap();
    assert_eq!(t.rows[0][0], json!({"n": 3}));
    assert_eq!(t.rows[0][1], json!("2027-01-15T08:00:00.003Z"));

    let e = query(&path, "DELETE FROM events").unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(query(&path, "SELECT count(*) FROM events").unwrap().rows, [[json!(5)]]);

    let mut m = Mirror::open(&path).unwrap();
    assert_eq!(m.forget(&[1, 2]).unwrap(), 2);
    drop(m);
    assert_eq!(query(&path, "SELECT count(*) FROM events").unwrap().rows, [[json!(3)]]);
}

/// Every registered event type survives the trip into DuckDB with its payload intact.
#[test]
fn every_registered_event_type_round_trips_through_duckdb() {
    use steward_core::event_registry::{REGISTRY, example};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fr.duckdb");
    let mut m = Mirror::open(&path).unwrap();
    let events: Vec<Event> = REGISTRY
        .iter()
        .enumerate()
        .map(|(i, spec)| Event { payload: example(spec), ..event(i as i64 + 1, "r", i as i64 + 1, spec.event_type) })
        .collect();
    m.append(&events).unwrap();
    drop(m);
    let t = query(&path, "SELECT event_type, payload FROM events ORDER BY id").unwrap();
    assert_eq!(t.rows.len(), REGISTRY.len());
    for (row, spec) in t.rows.iter().zip(REGISTRY) {
        assert_eq!((row[0].as_str(), &row[1]), (Some(spec.event_type), &example(spec)), "{}", spec.event_type);
    }
}

/// Issue 11 point 5: `steward events query` reads the mirror and nothing else. No other file is
/// read or written, no database attached, no extension loaded, and the query cannot switch the
/// configuration back.
#[test]
fn a_query_cannot_reach_outside_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fr.duckdb");
    let mut m = Mirror::open(&path).unwrap();
    m.append(&[event(1, "r1", 1, "step_attempt_started")]).unwrap();
    drop(m);
    let outside = dir.path().join("outside.csv");
    std::fs::write(&outside, "secret\n1\n").unwrap();
    let copied = dir.path().join("copied.csv");
    for sql in [
        format!("SELECT * FROM read_csv('{}')", outside.display()),
        format!("SELECT * FROM '{}'", outside.display()),
        format!("COPY (SELECT * FROM events) TO '{}'", copied.display()),
        format!("ATTACH '{}' AS other", dir.path().join("other.duckdb").display()),
        "INSTALL httpfs".to_owned(),
        "LOAD httpfs".to_owned(),
        "SET enable_external_access = true".to_owned(),
        "SET lock_configuration = false".to_owned(),
    ] {
        assert!(query(&path, &sql).is_err(), "allowed: {sql}");
    }
    assert!(!copied.exists(), "COPY TO wrote a file");
    assert!(!dir.path().join("other.duckdb").exists(), "ATTACH created a database");
    assert_eq!(query(&path, "SELECT count(*) FROM events").unwrap().rows, [[json!(1)]]);
}
