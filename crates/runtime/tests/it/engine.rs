//! Step execution paths: DAG concurrency, retries, failures to start, timeouts, outputs, cancellation.

use std::sync::Arc;

use serde_json::json;
use steward_core::event::Actor;
use steward_core::job::JobContract;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::SystemClock;
use steward_store::{NewRun, Store};

use crate::support::*;

/// Independent steps of a `needs` DAG run at the same time: each waits for the other's flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_run_concurrently_and_joins_wait() {
    let e = env().await;
    let wait_for = |me: &str, other: &str| {
        format!(
            "touch {me}.flag; i=0; while [ ! -e {other}.flag ]; do i=$((i+1)); [ $i -gt 400 ] && exit 1; sleep 0.01; done"
        )
    };
    let src = format!(
        "id: dag\nversion: 1\nsteps:\n  - {{id: a, type: shell, run: 'echo a'}}\n  - {{id: b, type: shell, needs: [a], run: '{}'}}\n  - {{id: c, type: shell, needs: [a], run: '{}'}}\n  - {{id: d, type: shell, needs: [b, c], run: 'ls b.flag c.flag'}}\n",
        wait_for("b", "c"),
        wait_for("c", "b")
    );
    let run = e.run(&src, json!({})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let order: Vec<String> = e.attempts(&run).await.into_iter().map(|a| a.0).collect();
    assert_eq!(order[0], "a");
    assert_eq!(order[3], "d");
}

/// A failing attempt is retried within `retry.max_attempts`, then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_retry_and_outputs_flow_downstream() {
    let e = env().await;
    let src = r#"id: retry
version: 1
steps:
  - id: flaky
    type: shell
    retry: {max_attempts: 3, backoff: {initial_seconds: 0}}
    outputs: [count]
    run: |
      n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
      [ $n -ge 2 ] || { echo "not yet" >&2; exit 4; }
      echo "[workflow_result]{\"outputs\": {\"count\": $n}}[/workflow_result]"
  - id: use
    type: shell
    run: echo "count={{steps.flaky.outputs.count}} attempt={{workflow.attempt}}"
"#;
    let run = e.run(src, json!({})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let attempts = e.store.list_attempts(&run.run_id).await.unwrap();
    assert_eq!(attempts[0].status, AttemptStatus::Failed);
    assert_eq!(attempts[0].error.as_deref(), Some("exit code 4: not yet"));
    assert!(attempts[0].retryable);
    assert_eq!(attempts[1].status, AttemptStatus::Completed);
    assert_eq!(attempts[2].output.as_ref().unwrap()["stdout"], "count=2 attempt=1");
    // The rendered command and its template values are the recorded input.
    let params = &attempts[2].input["params"];
    assert_eq!(params["command"], r#"echo "count=${STEWARD_TPL_0} attempt=${STEWARD_TPL_1}""#);
    assert_eq!(
        (params["env"]["STEWARD_TPL_0"].as_str(), params["env"]["STEWARD_TPL_1"].as_str()),
        (Some("2"), Some("1"))
    );
    assert_eq!(
        (attempts[2].input["engine_id"].as_str(), attempts[2].input["schema_version"].as_str()),
        (Some("engine.shell"), Some("poe-1.0"))
    );
}

/// P09-T03: failures to start fail the run at once with an actionable reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_to_start_fail_the_run_with_the_reason() {
    let e = env().await;
    let run = e
        .run("id: nf\nversion: 1\nsteps:\n  - {id: a, type: shell, run: definitely-not-a-command --x}\n", json!({}))
        .await;
    assert_eq!(run.state, RunState::Failed);
    let reason = run.terminal_reason.clone().unwrap();
    assert!(reason.starts_with("step `a` failed: command not found (exit 127)"), "{reason}");
    assert_eq!(e.attempts(&run).await.len(), 1, "a missing command is not retried");

    let src = "id: tpl\nversion: 1\ninputs:\n  cfg: {type: json}\nsteps:\n  - {id: a, type: shell, run: 'echo \"{{inputs.cfg.missing}}\"'}\n";
    let run = e.run(src, json!({"cfg": {"present": 1}})).await;
    assert_eq!(run.state, RunState::Failed);
    assert!(
        run.terminal_reason
            .unwrap()
            .contains("cannot start: template `{{inputs.cfg.missing}}`: input `cfg` has no `missing`")
    );

    let run = e
        .run("id: cwd\nversion: 1\nsteps:\n  - {id: a, type: shell, cwd: no/such/dir, run: 'true'}\n", json!({}))
        .await;
    let reason = run.terminal_reason.unwrap();
    assert!(reason.contains("denied by terminal (HSK-TERM-003): cwd `no/such/dir` cannot be resolved"), "{reason}");

    // Inputs that no longer hold at start (here: recorded without a required one).
    let source =
        "id: need\nversion: 1\ninputs:\n  name: {type: string, required: true}\nsteps:\n  - {id: a, type: noop}\n";
    let created = e
        .store
        .create_run(NewRun {
            run_id: "run-bad-inputs".into(),
            workflow_id: "need".into(),
            workflow_version: 1,
            definition_hash: steward_core::workflow::definition_hash(source),
            definition_source: source.into(),
            inputs: serde_json::Map::new(),
            workdir: e.dir.path().display().to_string(),
            job_id: "j".into(),
            trace_id: "t".into(),
            contract: JobContract::workflow_run(),
            actor: Actor::Human,
            actor_id: "test".into(),
            now: T0,
            lineage: None,
        })
        .await
        .unwrap();
    let run = e.engine.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.summary.starts_with("engine start failed: missing required input `name`"), "{}", run.summary);
}

/// Timeouts kill the step; missing declared outputs fail the attempt; limits end the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_output_contracts_and_iteration_limits() {
    let e = env().await;
    let run = e.run("id: slow\nversion: 1\nsteps:\n  - {id: a, type: shell, timeout_seconds: 1, retry: {max_attempts: 1}, run: 'sleep 30'}\n", json!({})).await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.terminal_reason.as_deref(), Some("step `a` failed after 1 attempt: timed out after 1s"));
    assert_eq!(e.attempts(&run).await, [("a".into(), 1, AttemptStatus::TimedOut)]);

    let src = "id: out\nversion: 1\nsteps:\n  - {id: a, type: shell, outputs: [plan, note?], retry: {max_attempts: 2, backoff: {initial_seconds: 0}}, run: 'echo no block'}\n";
    let run = e.run(src, json!({})).await;
    assert_eq!(
        run.terminal_reason.as_deref(),
        Some("step `a` failed after 2 attempts: missing required outputs in the [workflow_result] block: plan")
    );

    let src = "id: lim\nversion: 1\nlimits: {max_total_iterations: 2}\nsteps:\n  - {id: a, type: shell, retry: {max_attempts: 5, backoff: {initial_seconds: 0}}, run: 'exit 1'}\n";
    let run = e.run(src, json!({})).await;
    assert_eq!(run.terminal_reason.as_deref(), Some("workflow execution exceeded max total iterations (2)"));
    assert_eq!(run.total_iterations, 2);
}

/// Cancelling a running run kills its command's process group and records why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_commands() {
    let e = env().await;
    let src = "id: long\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'echo $$ > pid; exec sleep 30'}\n";
    let created = e.engine.create_run(create(src, e.dir.path(), json!({}))).await.unwrap();
    let mut updates = e.engine.subscribe();
    let driver = tokio::spawn({
        let engine = e.engine.clone();
        let id = created.run_id.clone();
        async move { engine.start(&id).await }
    });
    // The step is recorded as running before its process starts.
    while updates.recv().await.unwrap().summary != "step a attempt 1 running" {}
    let pid_file = e.dir.path().join("pid");
    let pid = loop {
        if let Ok(p) = std::fs::read_to_string(&pid_file)
            && !p.trim().is_empty()
        {
            break p.trim().to_owned();
        }
        tokio::task::yield_now().await;
    };
    let cancelled = e.engine.cancel(&created.run_id, "operator").await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    let finished = driver.await.unwrap().unwrap();
    assert_eq!(finished.state, RunState::Cancelled);
    assert_eq!(finished.terminal_reason.as_deref(), Some("cancelled by operator"));
    assert_eq!(e.attempts(&finished).await, [("a".into(), 1, AttemptStatus::Cancelled)]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
    );
    let err = e.engine.cancel(&created.run_id, "operator").await.unwrap_err();
    assert_eq!(err.to_string(), format!("run `{}` is cancelled; there is nothing to cancel", created.run_id));
}

/// P09-T02: `execute_next` advances one round at a time from persisted state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_next_steps_through_a_run() {
    let e = env().await;
    let src = "id: steps\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'echo one'}\n  - {id: b, type: noop, needs: []}\n  - {id: c, type: shell, needs: [a, b], run: 'echo \"{{steps.a.outputs.stdout}} two\"'}\n";
    let created = e.engine.create_run(create(src, e.dir.path(), json!({}))).await.unwrap();

    let run = e.engine.execute_next(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Running);
    assert_eq!(
        e.attempts(&run).await,
        [("a".into(), 1, AttemptStatus::Completed), ("b".into(), 1, AttemptStatus::Completed)]
    );
    assert!(run.summary.ends_with("attempt 1 completed"), "{}", run.summary);

    // A fresh engine (another process) sees the same persisted state and continues from it.
    let other = engine(e.store.clone(), Arc::new(SystemClock), "me");
    other.boot().await.unwrap();
    // The round that finishes the last step also records the run's completion.
    let run = other.execute_next(&created.run_id).await.unwrap();
    assert_eq!((run.state, run.summary.as_str()), (RunState::Completed, "workflow completed"));
    let attempts = e.store.list_attempts(&run.run_id).await.unwrap();
    assert_eq!(attempts[2].output.as_ref().unwrap()["stdout"], "one two");
    assert!(matches!(other.execute_next(&created.run_id).await, Err(steward_runtime::Error::WrongState { .. })));

    // Held by another live owner: refused.
    let created = e.engine.create_run(create(src, e.dir.path(), json!({}))).await.unwrap();
    e.engine.execute_next(&created.run_id).await.unwrap();
    let stranger = engine(e.store.clone(), Arc::new(SystemClock), "stranger");
    stranger.boot().await.unwrap();
    assert!(matches!(
        stranger.execute_next(&created.run_id).await,
        Err(steward_runtime::Error::RunningElsewhere { .. })
    ));
}
