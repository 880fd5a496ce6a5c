//! Micro-task jobs as engine runs on a real SQLite file: the job contract, the hard gate as
//! `awaiting_user` answered by `gate`, and a `micro_tasks` step inside a workflow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use steward_artifacts::{ArtifactStore, MemArtifacts};
use steward_core::event::Actor;
use steward_core::ids::SeqIds;
use steward_core::job::{JobContract, JobKind, MICRO_TASK_PROFILE};
use steward_core::state::HumanDecision;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::{CreateRun, Engine, EngineConfig, Error, SystemClock};
use steward_store::{NewRun, Store};
use steward_store_sqlite::SqliteStore;
use steward_test_support::{ModelServer, Reply};
use tokio::sync::Notify;

use crate::micro_tasks::{CLAIM, FIX, Project, calc, project};
use crate::support::{bus_at, bus_with, sqlite};

const JOB: &str = "id: mt\nversion: 1\nsteps:\n  - {id: micro_tasks, type: micro_tasks, packet: packet.yaml}\n";

fn micro_task_contract() -> JobContract {
    JobContract {
        job_kind: JobKind::MicroTaskExecution,
        profile_id: MICRO_TASK_PROFILE.into(),
        protocol_id: MICRO_TASK_PROFILE.into(),
    }
}

/// A booted engine whose data directory (and so its micro-task state) is inside the project.
async fn booted(p: &Project) -> (SqliteStore, Engine<SqliteStore>) {
    booted_with_env(p, &[]).await
}

async fn booted_with_env(p: &Project, env: &[(&str, &str)]) -> (SqliteStore, Engine<SqliteStore>) {
    let data = p.dir.path().join(".steward");
    std::fs::create_dir_all(&data).unwrap();
    let store = sqlite(&data);
    let mut config = EngineConfig::new("me".into());
    config.data_dir = data.clone();
    config.watch_interval = std::time::Duration::from_millis(50);
    config.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let bus = Arc::new(bus_at(&data));
    let engine = Engine::new(store.clone(), bus, Arc::new(SystemClock), Arc::new(SeqIds::new("id")), config);
    engine.boot().await.unwrap();
    (store, engine)
}

fn request(p: &Project, source: &str, contract: JobContract) -> CreateRun {
    CreateRun {
        source: source.into(),
        inputs: Default::default(),
        workdir: p.dir.path().display().to_string(),
        actor_id: "test".into(),
        contract,
    }
}

/// DG-JOB-06/07: a broken or misfitting contract is refused when the job is created, and again
/// when it is dispatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_contract_is_checked_at_creation_and_at_dispatch() {
    let p = project(vec![], "").await;
    let (store, engine) = booted(&p).await;
    let mut wrong_profile = micro_task_contract();
    wrong_profile.profile_id = "default".into();
    let e = engine.create_run(request(&p, JOB, wrong_profile)).await.unwrap_err();
    assert!(matches!(&e, Error::Contract(m) if m.contains("DG-JOB-06")), "{e}");
    let shell = "id: mt\nversion: 1\nsteps:\n  - {id: s, type: shell, run: 'true'}\n";
    let e = engine.create_run(request(&p, shell, micro_task_contract())).await.unwrap_err();
    assert!(matches!(&e, Error::Contract(m) if m.contains("exactly one `micro_tasks` step")), "{e}");
    assert!(store.list_runs(Default::default()).await.unwrap().is_empty(), "nothing was recorded");

    // A run that reached the store another way is refused when it is dispatched.
    let source = shell.to_owned();
    let now = steward_core::Timestamp(1_800_000_000_000);
    store
        .create_run(NewRun {
            run_id: "r-forged".into(),
            workflow_id: "mt".into(),
            workflow_version: 1,
            definition_hash: steward_core::workflow::definition_hash(&source),
            definition_source: source,
            inputs: Default::default(),
            workdir: p.dir.path().display().to_string(),
            job_id: "job-forged".into(),
            trace_id: "trace-forged".into(),
            contract: micro_task_contract(),
            actor: Actor::Human,
            actor_id: "test".into(),
            now,
            lineage: None,
        })
        .await
        .unwrap();
    let run = engine.start("r-forged").await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.terminal_reason.unwrap().contains("exactly one `micro_tasks` step"));
    assert!(store.list_attempts("r-forged").await.unwrap().is_empty(), "nothing ran");
}

/// The hard gate is `awaiting_user` on the run, not a failed attempt; only `gate` moves it on,
/// recorded as a human decision; `continue` finishes the job, `abort` fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_gate_waits_in_awaiting_user_until_a_person_decides() {
    let nothing = || Reply::openai("I looked at it.");
    let p =
        project(vec![nothing(), nothing(), Reply::openai(&format!("{FIX}{CLAIM}"))], "  max_iterations_per_mt: 1\n")
            .await;
    let (store, engine) = booted(&p).await;
    let created = engine.create_run(request(&p, JOB, micro_task_contract())).await.unwrap();
    let run = engine.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::AwaitingUser, "{}", run.summary);
    assert_eq!(run.owner, None, "nobody executes a waiting run");
    assert!(run.summary.contains("steward gate"), "{}", run.summary);
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, AttemptStatus::AwaitingUser);
    assert_eq!(attempts[0].output.as_ref().unwrap()["pause"]["reason"], "escalation_exhausted");
    let state_dir = p.dir.path().join(".steward/micro_task_executor").join(&run.job_id);
    assert!(state_dir.join("progress_artifact.json").is_file(), "the run's job is the micro-task job");

    let e = engine.resume(&run.run_id, "test").await.unwrap_err();
    assert!(matches!(e, Error::WrongState { state: RunState::AwaitingUser, .. }), "{e}");

    let run = engine.gate(&run.run_id, "ada", HumanDecision::Continue, Some("one more pass")).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    assert!(calc(&p).contains("a + b"));
    assert_eq!(p.server.received().len(), 3, "no recorded iteration was asked again");
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    let ends: Vec<(AttemptStatus, Option<HumanDecision>)> = attempts.iter().map(|a| (a.status, a.answer)).collect();
    assert_eq!(ends, [(AttemptStatus::AwaitingUser, Some(HumanDecision::Continue)), (AttemptStatus::Completed, None)]);
    assert_eq!(attempts[1].input["decision"], "continue", "the attempt after the gate reads the answer");
    let events = store.list_events(&run.run_id, 0).await.unwrap();
    let decision = events.iter().find(|e| e.event_type == "human_decision").unwrap();
    assert_eq!((decision.actor, decision.actor_id.as_str()), (Actor::Human, "ada"));
    assert_eq!(decision.step_id.as_deref(), Some("micro_tasks"));
    assert_eq!(
        decision.payload,
        json!({"decision": "continue", "gate": "hard_gate", "reason": "one more pass", "decided_by": "ada",
            "step_id": "micro_tasks", "attempt": 1})
    );
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let at = |t: &str| types.iter().position(|x| *x == t).unwrap();
    assert!(at("micro_task_hard_gate") < at("human_decision") && at("human_decision") < at("micro_task_resumed"));
    let e = engine.gate(&run.run_id, "ada", HumanDecision::Continue, None).await.unwrap_err();
    assert!(matches!(e, Error::WrongState { state: RunState::Completed, .. }), "{e}");

    let q = project(vec![nothing(), nothing()], "  max_iterations_per_mt: 1\n").await;
    let (_store, engine) = booted(&q).await;
    let created = engine.create_run(request(&q, JOB, micro_task_contract())).await.unwrap();
    assert_eq!(engine.start(&created.run_id).await.unwrap().state, RunState::AwaitingUser);
    let run = engine.gate(&created.run_id, "ada", HumanDecision::Abort, None).await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.terminal_reason.unwrap().contains("aborted by a person"));
    assert!(calc(&q).contains("a - b"), "nothing was changed");
}

/// In a workflow run, each visit of a `micro_tasks` step is its own job, and its status is an
/// output the next step can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_micro_tasks_step_hands_its_status_to_the_next_step() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let (store, engine) = booted(&p).await;
    let source = "id: fix-then-report\nversion: 1\nsteps:\n  - {id: fix, type: micro_tasks, packet: packet.yaml}\n  - {id: report, type: shell, run: 'echo fix {{steps.fix.outputs.status}}'}\n";
    let created = engine.create_run(request(&p, source, JobContract::workflow_run())).await.unwrap();
    let run = engine.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    assert_eq!(attempts[1].output.as_ref().unwrap()["stdout"], "fix completed");
    let job = attempts[0].output.as_ref().unwrap()["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job, format!("{}-fix-1", run.job_id));
    assert!(p.dir.path().join(".steward/micro_task_executor").join(&job).join("run_ledger.json").is_file());
    let metrics = &attempts[0].output.as_ref().unwrap()["metrics"];
    assert_eq!((metrics["completed_mts"].as_u64(), metrics["total_iterations"].as_u64()), (Some(1), Some(1)));
}

/// A job goes on with the tasks it started with: a packet edited while the job waits is refused
/// with the reason, instead of mixing new tasks with recorded progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_edited_during_a_pause_is_refused() {
    let nothing = || Reply::openai("I looked at it.");
    let p = project(vec![nothing(), nothing()], "  max_iterations_per_mt: 1\n").await;
    let (_store, engine) = booted(&p).await;
    let created = engine.create_run(request(&p, JOB, micro_task_contract())).await.unwrap();
    assert_eq!(engine.start(&created.run_id).await.unwrap().state, RunState::AwaitingUser);
    let packet = p.dir.path().join("packet.yaml");
    let edited = std::fs::read_to_string(&packet).unwrap().replace("the unit tests pass", "all tests pass");
    std::fs::write(&packet, edited).unwrap();
    let run = engine.gate(&created.run_id, "ada", HumanDecision::Continue, None).await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.terminal_reason.unwrap().contains("changed since this job started"));
    assert_eq!(p.server.received().len(), 2, "no model was asked");
}

/// A chain level's API key is a secret wherever a provider might echo it: in the model error,
/// the iteration's error summary, the events and the job's state files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_api_key_never_reaches_the_log_or_the_state() {
    const KEY: &str = "plain-key-0042";
    let echo = || Reply::status(401, &format!("{{\"error\": \"invalid key {KEY}\"}}"));
    let p = project(vec![echo(), echo()], "  max_iterations_per_mt: 1\n").await;
    let packet = p.dir.path().join("packet.yaml");
    let keyed =
        std::fs::read_to_string(&packet).unwrap().replace("model: small}", "model: small, api_key_env: MT_KEY}");
    std::fs::write(&packet, keyed).unwrap();
    let (store, engine) = booted_with_env(&p, &[("MT_KEY", KEY)]).await;
    let created = engine.create_run(request(&p, JOB, micro_task_contract())).await.unwrap();
    let run = engine.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::AwaitingUser, "{}", run.summary);
    let sent = p.server.received();
    assert_eq!(sent[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()), "the key was used");

    let events = serde_json::to_string(&store.list_events(&run.run_id, 0).await.unwrap()).unwrap();
    assert!(events.contains("401") && events.contains("***REDACTED***"), "the error is recorded, scrubbed");
    assert!(!events.contains(KEY), "the key reached the log");
    let state_dir = p.dir.path().join(".steward/micro_task_executor").join(&run.job_id);
    for entry in walk(&state_dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert!(!text.contains(KEY), "the key reached {}", entry.display());
    }
}

/// Issue 12 (point 6): a micro-task job's state is in the artifact store, not in a data
/// directory. A job interrupted on one worker is continued by another worker whose data
/// directory is a different one, reaching the same database and the same artifact store: from
/// where the first stopped, and no saved answer is asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_on_one_worker_continues_on_another_with_another_data_directory() {
    let p = project(vec![], "").await;
    // Iteration 1 claims nothing (a retry); iteration 2 is in flight when the first worker stops;
    // the second worker asks it again and gets the fix.
    let asked = Arc::new(Notify::new());
    let server = ModelServer::answering({
        let (asked, n) = (asked.clone(), AtomicUsize::new(0));
        move |_| match n.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::openai("I looked at it."),
            1 => {
                asked.notify_one();
                Reply::openai("too late").after(Duration::from_secs(60))
            }
            _ => Reply::openai(&format!("{FIX}{CLAIM}")),
        }
    })
    .await;
    let packet = p.dir.path().join("packet.yaml");
    let text = std::fs::read_to_string(&packet).unwrap().replace(&p.server.url, &server.url);
    std::fs::write(&packet, text).unwrap();

    // What every worker reaches: the database and the artifact store.
    let db = tempfile::tempdir().unwrap();
    let store = sqlite(db.path());
    let shared = Arc::new(MemArtifacts::new());
    let worker = |owner: &str, data: &std::path::Path| {
        let mut config = EngineConfig::new(owner.into());
        config.data_dir = data.to_owned();
        config.watch_interval = Duration::from_millis(50);
        let bus = Arc::new(bus_with(shared.clone()));
        Engine::new(store.clone(), bus, Arc::new(SystemClock), Arc::new(SeqIds::new(owner)), config)
    };
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let a = worker("worker-a", data_a.path());
    a.boot().await.unwrap();
    let created = a.create_run(request(&p, JOB, micro_task_contract())).await.unwrap();
    let driving = tokio::spawn({
        let (a, id) = (a.clone(), created.run_id.clone());
        async move { a.start(&id).await }
    });
    asked.notified().await;
    a.interrupt("SIGTERM");
    let stopped = driving.await.unwrap().unwrap();
    assert_eq!(stopped.state, RunState::Stalled, "{}", stopped.summary);
    let job = stopped.job_id.clone();
    let ledger: Value =
        serde_json::from_slice(&shared.read_document(&job, "run_ledger.json").await.unwrap().unwrap()).unwrap();
    assert_eq!(
        (ledger["steps"][0]["status"].as_str(), ledger["steps"][1]["status"].as_str()),
        (Some("completed"), Some("in_progress")),
        "the step in flight was in progress before its model call"
    );
    drop(a);

    let b = worker("worker-b", data_b.path());
    b.boot().await.unwrap();
    let run = b.resume(&created.run_id, "test").await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    assert!(calc(&p).contains("a + b"));
    assert_eq!(server.received().len(), 3, "iteration 1's saved answer was not asked for again");
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    let statuses: Vec<AttemptStatus> = attempts.iter().map(|a| a.status).collect();
    let why: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    assert_eq!(statuses, [AttemptStatus::Interrupted, AttemptStatus::Completed], "{why:?}");
    let events = store.list_events(&run.run_id, 0).await.unwrap();
    let started: Vec<u64> = events
        .iter()
        .filter(|e| e.event_type == "micro_task_iteration_started")
        .map(|e| e.payload["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(started, [1, 2, 2], "the second worker went on at iteration 2");
    // The job's own recovery (the run's is recorded too, by the store, on resume).
    let recovery = events.iter().find(|e| e.event_type == "workflow_recovery" && e.payload["wp_id"] == "WP-1").unwrap();
    assert_eq!(recovery.payload["steps_to_retry"], json!(["MT-001_iter-002"]));
    let progress: Value =
        serde_json::from_slice(&shared.read_document(&job, "progress_artifact.json").await.unwrap().unwrap()).unwrap();
    assert_eq!(progress["status"], "completed");
    assert_eq!(progress["micro_tasks"][0]["iterations"].as_array().unwrap().len(), 2);
    for data in [data_a.path(), data_b.path()] {
        assert!(!data.join("micro_task_executor").exists(), "no job state in the data directory {}", data.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}
