//! Restart and fork (issue 13 point 6): a new run linked to its parent that reuses the
//! parent's completed work before the step it restarts from, on a real SQLite file.

use serde_json::json;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::Error;
use steward_store::Store;

use crate::support::env;

const FLOW: &str = "id: flow\nversion: 1\ninputs:\n  who: {type: string, default: ada}\nsteps:\n  - {id: a, type: shell, run: 'echo a >> effects.log'}\n  - id: b\n    type: shell\n    retry: {max_attempts: 1}\n    run: 'test -f ok'\n  - {id: c, type: shell, run: 'echo c-{{inputs.who}} >> effects.log'}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reuses_the_work_before_its_step_and_leaves_the_parent_alone() {
    let e = env().await;
    let parent = e.run(FLOW, json!({})).await;
    assert_eq!(parent.state, RunState::Failed, "{}", parent.summary);
    let before = e.attempts(&parent).await;
    let effects = || std::fs::read_to_string(e.dir.path().join("effects.log")).unwrap_or_default();
    assert_eq!(effects(), "a\n");

    std::fs::write(e.dir.path().join("ok"), "").unwrap();
    let child = e.engine.fork(&parent.run_id, Some("b"), Default::default(), "test").await.unwrap();
    assert_eq!((child.state, child.parent_run_id.as_deref()), (RunState::Queued, Some(parent.run_id.as_str())));
    let done = e.engine.start(&child.run_id).await.unwrap();
    assert_eq!(done.state, RunState::Completed, "{}", done.summary);
    assert_eq!(effects(), "a\nc-ada\n", "`a` took effect once, in the parent; `c` ran in the restart");

    let attempts = e.store.list_attempts(&child.run_id).await.unwrap();
    let shown: Vec<(&str, AttemptStatus, Option<&str>)> =
        attempts.iter().map(|a| (a.step_id.as_str(), a.status, a.reused_from.as_deref())).collect();
    let original = format!("{}:a:1", parent.run_id);
    assert_eq!(
        shown,
        [
            ("a", AttemptStatus::Completed, Some(original.as_str())),
            ("b", AttemptStatus::Completed, None),
            ("c", AttemptStatus::Completed, None)
        ]
    );
    let events = e.store.list_events(&child.run_id, 0).await.unwrap();
    let reused: Vec<_> = events.iter().filter(|ev| ev.event_type == "step_attempt_reused").collect();
    assert_eq!(reused.len(), 1);
    assert_eq!(
        (reused[0].payload["from"].as_str(), reused[0].step_id.as_deref()),
        (Some(original.as_str()), Some("a"))
    );

    assert_eq!(e.store.get_run(&parent.run_id).await.unwrap().state, RunState::Failed, "the parent is untouched");
    assert_eq!(e.attempts(&parent).await, before);

    // A fork with other inputs and no step runs everything again, with them.
    let fork = e.engine.fork(&parent.run_id, None, json!({"who": "bob"}).as_object().unwrap().clone(), "test").await;
    let fork = e.engine.start(&fork.unwrap().run_id).await.unwrap();
    assert_eq!(fork.state, RunState::Completed, "{}", fork.summary);
    assert_eq!(effects(), "a\nc-ada\na\nc-bob\n");

    let err = e.engine.fork(&parent.run_id, Some("zzz"), Default::default(), "test").await.unwrap_err();
    assert!(matches!(&err, Error::Contract(m) if m.contains("no step `zzz`") && m.contains("a, b, c")), "{err}");
    let err = e.engine.fork(&parent.run_id, None, json!({"nope": 1}).as_object().unwrap().clone(), "t").await;
    assert!(matches!(err, Err(Error::Inputs(_))), "{err:?}");
}
