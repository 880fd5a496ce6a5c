//! Migrations carry what an older engine recorded into today's schema.

use std::sync::Arc;

use serde_json::json;
use steward_core::Timestamp;
use steward_core::event::{Actor, NewEvent, Payload};
use steward_core::ids::SeqIds;
use steward_core::state::{AttemptStatus, HumanDecision, RunState, TransitionCause};
use steward_store::{AttemptFinish, AttemptStart, Commit, Expect, Store, Transition};
use steward_store_sqlite::{Options, SqliteStore};
use steward_store_testkit::running_run;

fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path, Options::default(), Arc::new(SeqIds::new("ev"))).expect("open store")
}

fn finish(step: &str, status: AttemptStatus, output: serde_json::Value) -> AttemptFinish {
    AttemptFinish {
        step_id: step.into(),
        attempt: 1,
        status,
        output: Some(output),
        error: None,
        retryable: false,
        with_issues: false,
        routes: Vec::new(),
    }
}

/// Migration 004: a gate answered before answers were a column (only its `human_decision` event
/// says so) and a job that completed with issues before that was a column (only its output says
/// so) read the same after the upgrade, so an upgraded engine neither asks the person again nor
/// forgets the issues.
#[tokio::test]
async fn answers_and_issues_recorded_before_they_were_columns_are_carried_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("steward.db");
    {
        let s = open(&path);
        let epoch = running_run(&s, "r1", "me", Timestamp(1)).await;
        let mut c = Commit::new("r1", Expect::held(epoch), Timestamp(2), Actor::System, "me");
        c.started = ["a", "b"]
            .map(|step| AttemptStart { step_id: step.into(), attempt: 1, visit: 1, input: json!({}) })
            .to_vec();
        s.commit(c).await.expect("start");
        let mut c = Commit::new("r1", Expect::held(epoch), Timestamp(3), Actor::System, "me");
        c.finished = vec![
            finish("a", AttemptStatus::AwaitingUser, json!({"status": "awaiting_user"})),
            finish("b", AttemptStatus::Completed, json!({"status": "completed_with_issues"})),
        ];
        c.transition =
            Some(Transition { to: RunState::AwaitingUser, cause: TransitionCause::Engine, reason: "gate".into() });
        s.commit(c).await.expect("wait");
        // What `steward gate` wrote before answers were a column: only the event.
        let mut c = Commit::new("r1", Expect::state(RunState::AwaitingUser), Timestamp(4), Actor::Human, "ada");
        c.events = vec![NewEvent {
            actor: Actor::Human,
            actor_id: "ada".into(),
            step_id: Some("a".into()),
            payload: Payload::recorded("human_decision", json!({"decision": "abort", "decided_by": "ada"})),
        }];
        c.transition =
            Some(Transition { to: RunState::Running, cause: TransitionCause::Operator, reason: "abort".into() });
        s.commit(c).await.expect("answer");
    }
    {
        // Back to the schema before migration 004 (and so before every later one).
        let conn = rusqlite::Connection::open(&path).expect("open file");
        conn.execute_batch(
            "ALTER TABLE step_attempts DROP COLUMN answer_detail;
             ALTER TABLE step_attempts DROP COLUMN answer;
             ALTER TABLE step_attempts DROP COLUMN with_issues;
             ALTER TABLE step_attempts DROP COLUMN reused_from;
             ALTER TABLE runs DROP COLUMN parent_run_id;
             PRAGMA user_version = 3;",
        )
        .expect("downgrade");
    }
    let s = open(&path);
    let attempts = s.list_attempts("r1").await.expect("attempts");
    let got: Vec<(&str, Option<HumanDecision>, bool)> =
        attempts.iter().map(|a| (a.step_id.as_str(), a.answer, a.with_issues)).collect();
    assert_eq!(got, [("a", Some(HumanDecision::Abort), false), ("b", None, true)]);
}
