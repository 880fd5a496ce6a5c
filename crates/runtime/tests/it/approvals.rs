//! Approval steps (issue 13 point 5) on a real SQLite file: a run waits for a person's decision
//! holding nothing, only the steps that need the approval wait, the form becomes its outputs,
//! its decision routes it, exactly one of two racing decisions wins, and a timeout wakes the run
//! by itself.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use steward_core::ids::SeqIds;
use steward_core::state::{AttemptStatus, HumanDecision, RunState};
use steward_runtime::{Decision, Engine, EngineConfig, Error, Handoff, SystemClock, WorkerOptions};
use steward_store::Store;
use tokio_util::sync::CancellationToken;

use crate::support::{bus, create, env, sqlite};

const RELEASE: &str = r#"id: release
version: 1
steps:
  - {id: build, type: shell, run: 'echo built >> build.txt'}
  - id: sign_off
    type: approval
    needs: [build]
    prompt: "Ship run {{workflow.run_id}}?"
    form:
      reason: {type: string, required: true}
      budget: {type: number, default: 5}
    approvers: [ada]
    on_reject: build
  - {id: docs, type: shell, needs: [build], run: 'echo docs >> docs.txt'}
  - id: ship
    type: shell
    needs: [sign_off]
    run: 'echo "{{steps.sign_off.outputs.reason}} {{steps.sign_off.outputs.budget}} {{steps.sign_off.outputs.decided_by}}" > ship.txt'
"#;

fn decision(decision: HumanDecision, fields: &[(&str, &str)], comment: Option<&str>) -> Decision {
    Decision {
        decision,
        fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        comment: comment.map(str::to_owned),
    }
}

/// HSK-WF: an approval inside a `needs` DAG holds back only `ship`, which needs it; `docs` runs
/// while it waits. The run then waits in `awaiting_user`, held by nobody. The decision is
/// checked (approvers, form) before it lands; its form becomes the step's outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_holds_back_only_what_needs_it_and_its_form_becomes_outputs() {
    let e = env().await;
    let file = |name: &str| std::fs::read_to_string(e.dir.path().join(name)).ok();
    let run = e.run(RELEASE, json!({})).await;
    assert_eq!(run.state, RunState::AwaitingUser, "{}", run.summary);
    assert_eq!((run.owner.as_deref(), run.ready_at), (None, None), "it holds nothing and waits for ever");
    assert!(run.summary.contains(&format!("steward approve {} sign_off", run.run_id)), "{}", run.summary);
    assert_eq!((file("docs.txt").as_deref(), file("ship.txt")), (Some("docs\n"), None));
    let attempts = e.store.list_attempts(&run.run_id).await.unwrap();
    let asked = attempts.iter().find(|a| a.step_id == "sign_off").unwrap();
    assert_eq!(asked.status, AttemptStatus::AwaitingUser);
    let question = &asked.output.as_ref().unwrap()["approval"];
    assert_eq!(question["prompt"], json!(format!("Ship run {}?", run.run_id)));
    assert_eq!(question["form"][0]["name"], "reason");

    let ok = decision(HumanDecision::Approve, &[("reason", "tested")], Some("looks good"));
    let err = e.engine.record_approval(&run.run_id, "sign_off", "bob", &ok).await.unwrap_err();
    assert!(matches!(&err, Error::NotApprover { who, .. } if who == "bob"), "{err}");
    let err = e
        .engine
        .record_approval(&run.run_id, "sign_off", "ada", &decision(HumanDecision::Approve, &[("budget", "lots")], None))
        .await;
    let Err(Error::Decision(problems)) = err else { panic!("{err:?}") };
    assert!(problems.contains("field `budget`") && problems.contains("field `reason` is required"), "{problems}");
    let err = e.engine.record_approval(&run.run_id, "docs", "ada", &ok).await.unwrap_err();
    assert!(matches!(&err, Error::Decision(m) if m.contains("shell step")), "{err}");
    let err =
        e.engine.record_approval(&run.run_id, "sign_off", "ada", &decision(HumanDecision::Continue, &[], None)).await;
    assert!(matches!(err, Err(Error::Decision(_))), "{err:?}");
    assert_eq!(e.store.get_run(&run.run_id).await.unwrap().state, RunState::AwaitingUser, "refusals change nothing");

    let done = e.engine.approve(&run.run_id, "sign_off", "ada", &ok).await.unwrap();
    assert_eq!(done.state, RunState::Completed, "{}", done.summary);
    assert_eq!(file("ship.txt").as_deref(), Some("tested 5 ada\n"));
    assert_eq!(file("build.txt").as_deref(), Some("built\n"));
    let attempts = e.store.list_attempts(&run.run_id).await.unwrap();
    let decided = attempts.iter().rfind(|a| a.step_id == "sign_off").unwrap();
    assert_eq!(
        decided.output.as_ref().unwrap(),
        &json!({"decision": "approve", "decided_by": "ada", "comment": "looks good", "outputs": {"reason": "tested", "budget": 5}})
    );
    let events = e.store.list_events(&run.run_id, 0).await.unwrap();
    let human = events.iter().find(|ev| ev.event_type == "human_decision").unwrap();
    assert_eq!((human.actor_id.as_str(), human.payload["fields"]["reason"].as_str()), ("ada", Some("tested")));

    let err = e.engine.record_approval(&run.run_id, "sign_off", "ada", &ok).await.unwrap_err();
    assert!(matches!(err, Error::WrongState { state: RunState::Completed, .. }), "{err}");
}

/// Of two decisions that race, exactly one lands; the other is told it lost (`Conflict`). A
/// rejection routes by `on_reject` (back to `build`, whose next run asks again) and does not
/// let `ship`, which needs the approval, go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_decisions_exactly_one_wins_and_a_rejection_routes() {
    let e = env().await;
    let run = e.run(RELEASE, json!({})).await;
    assert_eq!(run.state, RunState::AwaitingUser, "{}", run.summary);
    let no = decision(HumanDecision::Reject, &[("reason", "not yet")], Some("flaky"));
    let yes = decision(HumanDecision::Approve, &[("reason", "fine")], None);
    let (a, b) = tokio::join!(
        e.engine.record_approval(&run.run_id, "sign_off", "ada", &no),
        e.engine.record_approval(&run.run_id, "sign_off", "ada", &yes),
    );
    let lost: Vec<&Error> = [&a, &b].into_iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(lost.len(), 1, "{a:?} {b:?}");
    assert!(matches!(lost[0], Error::Store(steward_store::Error::Conflict { .. })), "{}", lost[0]);
    let rejected = a.is_ok();

    let builds = || std::fs::read_to_string(e.dir.path().join("build.txt")).unwrap().lines().count();
    let mut done = e.engine.resume(&run.run_id, "ada").await.unwrap();
    if rejected {
        assert_eq!(done.state, RunState::AwaitingUser, "asked again after a second build: {}", done.summary);
        assert!(!e.dir.path().join("ship.txt").exists());
        assert_eq!(builds(), 2);
        done = e.engine.approve(&run.run_id, "sign_off", "ada", &yes).await.unwrap();
    }
    assert_eq!(done.state, RunState::Completed, "{}", done.summary);
    assert_eq!(builds(), if rejected { 2 } else { 1 });

    // Rejected with no `on_reject`: the step fails, and the run with it, saying who and why.
    let strict = RELEASE.replace("    on_reject: build\n", "");
    let run = e.run(&strict, json!({})).await;
    let done = e.engine.approve(&run.run_id, "sign_off", "ada", &no).await.unwrap();
    assert_eq!(done.state, RunState::Failed);
    assert!(done.summary.contains("rejected by ada: flaky"), "{}", done.summary);
}

/// An approval whose `timeout_seconds` passes with no decision wakes its run by itself: the run
/// waits in `awaiting_user` with a wake time, a worker claims it when due, and it goes by
/// `on_timeout`. A decision that comes after that is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_wakes_the_run_and_routes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let mut config = EngineConfig::new("worker-1".into());
    config.handoff = Handoff::Workers;
    config.watch_interval = Duration::from_millis(50);
    let worker = Engine::new(store.clone(), Arc::new(bus()), Arc::new(SystemClock), Arc::new(SeqIds::new("w")), config);
    worker.boot().await.unwrap();
    let src = "id: t\nversion: 1\nsteps:\n  - {id: ask, type: approval, prompt: go?, timeout_seconds: 1, on_timeout: late}\n  - {id: go, type: noop}\n  - {id: late, type: shell, run: 'echo late > late.txt', needs: []}\n";
    let src = src.replace(", needs: []}", "}");
    let run = worker.create_run(create(&src, dir.path(), json!({}))).await.unwrap();
    let mut progress = worker.subscribe();
    let stop = CancellationToken::new();
    let opts = WorkerOptions {
        concurrency: 2,
        workdirs: Vec::new(),
        resume_stalled: false,
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(5),
        exit_when_idle: false,
    };
    let working = tokio::spawn({
        let (worker, stop) = (worker.clone(), stop.clone());
        async move { worker.work(opts, stop).await }
    });
    let mut waited_with_wake = false;
    loop {
        let update = match tokio::time::timeout(Duration::from_secs(60), progress.recv()).await.unwrap() {
            Ok(update) if update.run_id == run.run_id => update,
            _ => continue,
        };
        if update.state == RunState::AwaitingUser {
            waited_with_wake = store.get_run(&run.run_id).await.unwrap().ready_at.is_some();
        }
        if update.state.is_terminal() {
            break;
        }
    }
    stop.cancel();
    working.await.unwrap().unwrap();
    let done = store.get_run(&run.run_id).await.unwrap();
    assert_eq!(done.state, RunState::Completed, "{}", done.summary);
    assert!(waited_with_wake, "the run waited for a person with a wake time");
    assert_eq!(std::fs::read_to_string(dir.path().join("late.txt")).unwrap(), "late\n");
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    let shown: Vec<(&str, AttemptStatus)> = attempts.iter().map(|a| (a.step_id.as_str(), a.status)).collect();
    assert_eq!(
        shown,
        [("ask", AttemptStatus::AwaitingUser), ("ask", AttemptStatus::Completed), ("late", AttemptStatus::Completed)]
    );
    assert_eq!(attempts[1].output.as_ref().unwrap()["decision"], "timeout");
    let waited = attempts[1].started_at.since(attempts[0].finished_at.unwrap());
    assert!(waited >= 1_000, "woken {waited} ms after it began to wait");
    let events = store.list_events(&run.run_id, 0).await.unwrap();
    assert!(events.iter().any(|ev| ev.event_type == "run_claimed" && ev.payload["from_state"] == "awaiting_user"));

    let late = decision(HumanDecision::Approve, &[], None);
    let err = worker.record_approval(&run.run_id, "ask", "ada", &late).await.unwrap_err();
    assert!(matches!(err, Error::WrongState { .. }), "{err}");
}

/// A decision that lands while other steps of the run still run does not wait for them: the
/// driver picks it up, and what needs the approval runs beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_running_run_is_picked_up_by_its_driver() {
    let e = env().await;
    let src = RELEASE.replace("run: 'echo docs >> docs.txt'", "run: 'while [ ! -f go ]; do sleep 0.02; done'");
    let run = e.engine.create_run(create(&src, e.dir.path(), json!({}))).await.unwrap();
    let mut progress = e.engine.subscribe();
    let driving = tokio::spawn({
        let engine = e.engine.clone();
        let id = run.run_id.clone();
        async move { engine.start(&id).await }
    });
    let waits = |attempts: &[steward_store::Attempt], step: &str, status| {
        attempts.iter().any(|a| a.step_id == step && a.status == status)
    };
    loop {
        // Any update (or a lag, which says there were several) is a moment to look again.
        let _ = tokio::time::timeout(Duration::from_secs(60), progress.recv()).await.unwrap();
        if waits(&e.store.list_attempts(&run.run_id).await.unwrap(), "sign_off", AttemptStatus::AwaitingUser) {
            break;
        }
    }
    assert_eq!(e.store.get_run(&run.run_id).await.unwrap().state, RunState::Running, "docs still runs");
    let ok = decision(HumanDecision::Approve, &[("reason", "now")], None);
    let after = e.engine.record_approval(&run.run_id, "sign_off", "ada", &ok).await.unwrap();
    assert_eq!((after.state, after.owner.as_deref()), (RunState::Running, Some("me")), "the run stays with its driver");
    loop {
        // Any update (or a lag, which says there were several) is a moment to look again.
        let _ = tokio::time::timeout(Duration::from_secs(60), progress.recv()).await.unwrap();
        if waits(&e.store.list_attempts(&run.run_id).await.unwrap(), "ship", AttemptStatus::Completed) {
            break;
        }
    }
    assert!(waits(&e.store.list_attempts(&run.run_id).await.unwrap(), "docs", AttemptStatus::Running));
    std::fs::write(e.dir.path().join("go"), "").unwrap();
    let done = driving.await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Completed, "{}", done.summary);
}
