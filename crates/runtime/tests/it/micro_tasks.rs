//! The micro-task loop over the real HTTP transport: a scripted OpenAI-compatible server on
//! loopback, real files, verify commands run through the tool bus (§2.6.6.8).

use std::sync::{Arc, Mutex};

use serde_json::Value;
use steward_artifacts::FsArtifacts;
use steward_core::event::{Actor, Payload};
use steward_core::event_registry;
use steward_core::state::HumanDecision;
use steward_micro_task::policy::EscalationLevel;
use steward_micro_task::state::PauseKind;
use steward_models::ModelClient;
use steward_models::http::HttpConfig;
use steward_models::openai::OpenAiClient;
use steward_runtime::micro_task::{BoxFuture, EventSink, ExecError, Executor, Outcome, plan, probe_servers};
use steward_test_support::{LlamaServer, ModelServer, Reply};

use crate::support::{SimClock, T0, bus};

pub(crate) const BUGGY: &str = "def add(a, b):\n    return a - b\n";
pub(crate) const TESTS: &str = "import unittest\n\nfrom calc import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_adds(self):\n        self.assertEqual(add(2, 3), 5)\n";
pub(crate) const FIX: &str = "<edit path=\"calc.py\">\n<search>\n    return a - b\n</search>\n<replace>\n    return a + b\n</replace>\n</edit>\n";
pub(crate) const CLAIM: &str =
    "<mt_complete>\nMT_ID: MT-001\nEVIDENCE:\n- \"the unit tests pass\" → calc.py:1-2\n</mt_complete>\n";

/// Records events after checking each against the registry, as the store does; fails on demand
/// after a given event type to stand in for a crash at that point.
#[derive(Default)]
struct Sink {
    events: Mutex<Vec<(String, Value)>>,
    crash_after: Option<&'static str>,
    /// After this event type, the run is no longer the loop's (taken over elsewhere).
    taken_after: Option<&'static str>,
    /// After this event type, the run is cancelled (its halt stopped, as `steward cancel` does).
    cancel_after: Option<(&'static str, steward_runtime::Halt)>,
    /// Each event of this type moves the clock on by this many seconds (a model call that took
    /// that long).
    tick: Option<(&'static str, Arc<SimClock>, i64)>,
}

impl EventSink for Sink {
    fn emit(&self, events: Vec<Payload>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            for e in events {
                let actor = if e.event_type() == "workflow_recovery" { Actor::System } else { Actor::Agent };
                let body = e.to_json();
                event_registry::validate(e.event_type(), actor, &body).map_err(|err| err.to_string())?;
                let t = e.event_type().to_owned();
                self.events.lock().unwrap().push((t.clone(), body));
                if self.crash_after == Some(t.as_str()) {
                    return Err(format!("simulated crash after {t}"));
                }
                if let Some((after, halt)) = &self.cancel_after
                    && *after == t
                {
                    halt.stop(steward_runtime::Stop::Cancelled);
                }
                if let Some((on, clock, secs)) = &self.tick
                    && *on == t
                {
                    clock.advance_secs(*secs);
                }
            }
            Ok(())
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.taken_after {
                Some(t) if self.types().iter().any(|x| x == t) => Err("run-1 is held by another process".into()),
                _ => Ok(()),
            }
        })
    }
}

impl Sink {
    fn types(&self) -> Vec<String> {
        self.events.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
    }
    fn of(&self, t: &str) -> Vec<Value> {
        self.events.lock().unwrap().iter().filter(|(x, _)| x == t).map(|(_, v)| v.clone()).collect()
    }
}

pub(crate) struct Project {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server: ModelServer,
    /// The job's clock: it moves only when a test moves it.
    pub(crate) clock: Arc<SimClock>,
}

impl Project {
    /// Where the job's documents are: the artifact store's directory of job `job-1`.
    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join(".state").join("job-1")
    }

    /// The job's stages.
    pub(crate) fn stage(&self) -> std::path::PathBuf {
        self.dir.path().join(".stage")
    }
}

pub(crate) async fn project(replies: Vec<Reply>, policy: &str) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start(replies).await;
    std::fs::write(dir.path().join("calc.py"), BUGGY).unwrap();
    std::fs::write(dir.path().join("test_calc.py"), TESTS).unwrap();
    let url = format!("{}/v1", server.url);
    let packet = format!(
        "wp_id: WP-1\ndescription: Fix add().\nin_scope_paths: [calc.py]\nread_paths: [test_calc.py]\n\
         done_means: [the unit tests pass]\ntest_plan: [python3 -m unittest -q test_calc]\n\
         execution_policy:\n  escalation_chain:\n    - {{level: 0, provider: openai, base_url: \"{url}\", model: small}}\n    \
         - {{level: 1, provider: openai, base_url: \"{url}\", model: large}}\n    - {{level: 2, hard_gate: true}}\n{policy}"
    );
    std::fs::write(dir.path().join("packet.yaml"), packet).unwrap();
    Project { dir, server, clock: SimClock::new(T0) }
}

fn models(level: &EscalationLevel) -> Result<Arc<dyn ModelClient>, String> {
    let url = level.base_url.clone().ok_or("no base_url")?;
    Ok(Arc::new(OpenAiClient::new(&url, None, HttpConfig::default()).map_err(|e| e.to_string())?))
}

async fn run(p: &Project, sink: &Sink, decision: Option<HumanDecision>) -> Result<Outcome, ExecError> {
    run_with(p, sink, decision, steward_runtime::Halt::new()).await
}

async fn run_with(
    p: &Project,
    sink: &Sink,
    decision: Option<HumanDecision>,
    halt: steward_runtime::Halt,
) -> Result<Outcome, ExecError> {
    run_as(p, sink, decision, halt, "Coder").await
}

/// Runs the job with its verify commands under `profile` (planned under `Coder`).
async fn run_as(
    p: &Project,
    sink: &Sink,
    decision: Option<HumanDecision>,
    halt: steward_runtime::Halt,
    profile: &str,
) -> Result<Outcome, ExecError> {
    let bus = bus();
    let mut plan = plan(&p.dir.path().join("packet.yaml"), None, None, &bus, "Coder").unwrap();
    // As a job does: the servers say what they can (llama.cpp: window and adapters; others 404).
    let servers = probe_servers(&plan.policy, &models, halt.token()).await;
    plan.apply_server_windows(&servers);
    assert!(!plan.report.has_errors(), "{:?}", plan.report);
    let artifacts = FsArtifacts::new(p.dir.path().join(".blobs"), p.dir.path().join(".state"));
    let exec = Executor {
        plan: &plan,
        job_id: "job-1",
        run_id: "run-1",
        trace_id: "trace-1",
        artifacts: &artifacts,
        bus: &bus,
        models: &models,
        sink,
        clock: p.clock.as_ref(),
        profile,
        workflow_id: "wf",
        halt,
        recorder: &steward_tools::exec::Unrecorded,
        redactor: bus.redactor(),
        // Inside the project, as a data directory would be: left out of every stage, like the
        // job's state.
        stage: &p.stage(),
        engine_dirs: &[p.dir.path().join(".state"), p.dir.path().join(".blobs")],
        servers: &servers,
    };
    exec.run(decision).await
}

pub(crate) fn calc(p: &Project) -> String {
    std::fs::read_to_string(p.dir.path().join("calc.py")).unwrap()
}

fn mt_order(sink: &Sink) -> Vec<String> {
    sink.types().into_iter().filter(|t| t.starts_with("micro_task") || t == "llm_inference").collect()
}

/// DG-MT-06: the events of one successful task, in order; the fix is on disk and verified.
#[tokio::test]
async fn a_task_completes_at_the_first_try() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(
        mt_order(&sink),
        [
            "micro_task_loop_started",
            "micro_task_lora_selection",
            "micro_task_iteration_started",
            "llm_inference",
            "micro_task_validation",
            "micro_task_iteration_complete",
            "micro_task_complete",
            "micro_task_loop_completed"
        ]
    );
    assert!(calc(&p).contains("a + b"));
    assert!(sink.types().contains(&"terminal_command".to_owned()), "DG-MT-14: verify ran through the bus");
    let progress: Value =
        serde_json::from_slice(&std::fs::read(p.state().join("progress_artifact.json")).unwrap()).unwrap();
    assert_eq!(progress["status"], "completed");
    assert_eq!(progress["current_state"]["total_iterations"], 1);
    let ledger: Value = serde_json::from_slice(&std::fs::read(p.state().join("run_ledger.json")).unwrap()).unwrap();
    assert_eq!(ledger["steps"][0]["step_id"], "MT-001_iter-001");
    assert_eq!(ledger["steps"][0]["status"], "completed");
    let metrics: Value = serde_json::from_slice(&std::fs::read(p.state().join("metrics.json")).unwrap()).unwrap();
    assert_eq!((metrics["completed_mts"].as_u64(), metrics["success_rate_level_0"].as_f64()), (Some(1), Some(100.0)));
    let sent = p.server.received()[0].json();
    assert_eq!(sent["model"], "small");
    let prompt = sent["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains("## SYSTEM RULES") && prompt.contains("    2 |     return a - b"), "{prompt}");
}

/// Two refuted claims escalate; the larger model fixes it; a distillation candidate is logged.
#[tokio::test]
async fn two_false_completions_escalate_and_the_teacher_succeeds() {
    let p =
        project(vec![Reply::openai(CLAIM), Reply::openai(CLAIM), Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    let models: Vec<String> =
        p.server.received().iter().map(|r| r.json()["model"].as_str().unwrap().to_owned()).collect();
    assert_eq!(models, ["small", "small", "large"]);
    let esc = sink.of("micro_task_escalated");
    assert_eq!(esc.len(), 1);
    assert_eq!(esc[0]["failure_category"], "false_completion");
    assert_eq!((esc[0]["from_level"].as_u64(), esc[0]["to_level"].as_u64()), (Some(0), Some(1)));
    // DG-MT-18: written at the escalation (no teacher yet), written again with the teacher.
    let cand = sink.of("micro_task_distillation_candidate");
    assert_eq!(cand.len(), 2, "DG-MT-18");
    assert_eq!(cand[0]["candidate_ref"]["path"], cand[1]["candidate_ref"]["path"], "one candidate per escalation");
    let path = p.state().join(cand[1]["candidate_ref"]["path"].as_str().unwrap());
    let c: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(c["student_attempt"]["model_id"], "small");
    assert_eq!(c["student_attempt"]["outcome"], "VALIDATION_FAILED");
    assert_eq!(c["teacher_success"]["model_id"], "large");
    assert_eq!(c["teacher_success"]["outcome"], "VALIDATION_PASSED");
    // Two false completions before the teacher: 1 - 2 × 0.15, eligible (learning::trust).
    assert_eq!((c["data_trust_score"].as_f64(), c["distillation_eligible"].as_bool()), (Some(0.7), Some(true)));
    let id = c["skill_log_entry_id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert!(c["student_attempt"]["output_snapshot_ref"].as_str().unwrap().ends_with("response.txt"), "{c}");
    // Smart drop-back keeps a task escalated after false completions (§2.6.6.8.7.3).
    assert!(!sink.types().contains(&"micro_task_drop_back".to_owned()));
}

/// The chain runs out: hard gate, awaiting a person; `continue` grants a fresh pass; `abort` fails.
#[tokio::test]
async fn an_exhausted_chain_stops_at_the_hard_gate_until_a_person_decides() {
    let nothing = || Reply::openai("I looked at it.");
    let p =
        project(vec![nothing(), nothing(), Reply::openai(&format!("{FIX}{CLAIM}"))], "  max_iterations_per_mt: 1\n")
            .await;
    let sink = Sink::default();
    let Outcome::Paused(pause) = run(&p, &sink, None).await.unwrap() else { panic!("expected a pause") };
    assert_eq!((pause.kind, pause.reason.as_str()), (PauseKind::HardGate, "escalation_exhausted"));
    assert_eq!(sink.of("micro_task_hard_gate")[0]["reason"], "escalation_exhausted");
    // Asking again without a decision changes nothing and calls no model.
    assert!(matches!(run(&p, &sink, None).await.unwrap(), Outcome::Paused(_)));
    assert_eq!(p.server.received().len(), 2);
    assert_eq!(run(&p, &sink, Some(HumanDecision::Continue)).await.unwrap(), Outcome::Completed);
    assert_eq!(p.server.received()[2].json()["model"], "large", "continue retries at the top local level");
    assert_eq!(sink.of("micro_task_resumed").len(), 1);

    let q = project(vec![nothing(), nothing()], "  max_iterations_per_mt: 1\n").await;
    let sink = Sink::default();
    assert!(matches!(run(&q, &sink, None).await.unwrap(), Outcome::Paused(_)));
    assert!(matches!(run(&q, &sink, Some(HumanDecision::Abort)).await.unwrap(), Outcome::Failed { .. }));
    assert_eq!(sink.of("micro_task_loop_failed").len(), 1);
    assert_eq!(calc(&q), BUGGY);
    assert!(!q.stage().exists(), "the job's stages go with it");
    // Every escalation has its candidate, also when the task ends in an abort: no teacher,
    // no trust, not eligible.
    let cand = sink.of("micro_task_distillation_candidate");
    assert_eq!(cand.len(), 2, "one per escalation: {cand:?}");
    for c in cand {
        let doc: Value = serde_json::from_slice(
            &std::fs::read(q.state().join(c["candidate_ref"]["path"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (doc["teacher_success"].clone(), doc["data_trust_score"].as_f64(), doc["distillation_eligible"].as_bool()),
            (Value::Null, Some(0.0), Some(false))
        );
        assert_eq!(doc["student_attempt"]["outcome"], "INCOMPLETE");
    }
}

const FIX_NO_CLAIM: &str = "<edit path=\"calc.py\">\n<search>\n    return a - b\n</search>\n<replace>\n    return a * b\n</replace>\n</edit>\nI changed it.\n";

/// DG-WF-08/09/11, every ending: a task's edits land in its stage (where its verify commands
/// run) and reach the workspace only when it completes. Changes made and then abandoned at the
/// hard gate, skipped, or cancelled leave the workspace as it was and the stage is removed.
#[tokio::test]
async fn edits_reach_the_workspace_only_when_their_task_completes() {
    // Abort at the gate after a wrong change was made: nothing of it in the workspace.
    let wrong = || Reply::openai(FIX_NO_CLAIM);
    let q = project(vec![wrong(), wrong()], "  max_iterations_per_mt: 1\n").await;
    let sink = Sink::default();
    assert!(matches!(run(&q, &sink, None).await.unwrap(), Outcome::Paused(_)));
    assert_eq!(calc(&q), BUGGY, "waiting at the gate, the workspace is as it was");
    assert!(std::fs::read_to_string(q.stage().join("MT-001/calc.py")).unwrap().contains("a * b"));
    assert!(matches!(run(&q, &sink, Some(HumanDecision::Abort)).await.unwrap(), Outcome::Failed { .. }));
    assert_eq!(calc(&q), BUGGY);
    assert!(!q.stage().exists());

    // Skipped at the gate: the same.
    let q = project(vec![wrong(), wrong()], "  max_iterations_per_mt: 1\n").await;
    assert!(matches!(run(&q, &sink, None).await.unwrap(), Outcome::Paused(_)));
    assert_eq!(run(&q, &sink, Some(HumanDecision::Skip)).await.unwrap(), Outcome::CompletedWithIssues);
    assert_eq!(calc(&q), BUGGY);
    assert!(!q.stage().exists());

    // Cancelled while the model thinks: the same.
    let q = project(vec![wrong(), wrong()], "  max_iterations_per_mt: 1\n").await;
    let halt = steward_runtime::Halt::new();
    let cancelling = Sink { cancel_after: Some(("llm_inference", halt.clone())), ..Sink::default() };
    assert_eq!(run_with(&q, &cancelling, None, halt).await.unwrap(), Outcome::Cancelled);
    assert_eq!(calc(&q), BUGGY);
    assert!(!q.stage().exists());
    // Issue 14 point 7: the progress artifact, the ledger and the events agree that nothing was
    // applied: the job is cancelled, its task not completed, nothing promoted or recorded done.
    let progress: Value =
        serde_json::from_slice(&std::fs::read(q.state().join("progress_artifact.json")).unwrap()).unwrap();
    assert_eq!(
        (progress["status"].as_str(), progress["micro_tasks"][0]["status"].as_str()),
        (Some("cancelled"), Some("in_progress"))
    );
    let ledger: Value = serde_json::from_slice(&std::fs::read(q.state().join("run_ledger.json")).unwrap()).unwrap();
    assert!(
        ledger["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] != "completed" || s["output_artifact_ref"].is_string()),
        "{ledger}"
    );
    assert!(!q.state().join("promotions/MT-001.json").exists());
    let types = cancelling.types();
    assert!(!types.iter().any(|t| t == "micro_task_complete" || t == "micro_task_loop_completed"), "{types:?}");

    // Completed: promoted once, recorded, and the stage is gone.
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    assert_eq!(run(&p, &Sink::default(), None).await.unwrap(), Outcome::Completed);
    assert!(calc(&p).contains("a + b"));
    assert!(p.state().join("promotions/MT-001.json.done").exists());
    assert!(!p.stage().exists());
}

/// A crash between a task settled completed and its promotion: the workspace is untouched
/// until the next start finishes the promotion from its document, whole.
#[tokio::test]
async fn a_crash_mid_promotion_is_finished_at_the_next_start() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let crashing = Sink { crash_after: Some("micro_task_iteration_complete"), ..Sink::default() };
    assert!(matches!(run(&p, &crashing, None).await, Err(ExecError::Sink(_))));
    let progress: Value =
        serde_json::from_slice(&std::fs::read(p.state().join("progress_artifact.json")).unwrap()).unwrap();
    assert_eq!(progress["micro_tasks"][0]["status"], "completed");
    assert!(p.state().join("promotions/MT-001.json").exists());
    assert_eq!(calc(&p), BUGGY, "not promoted yet");
    assert_eq!(run(&p, &Sink::default(), None).await.unwrap(), Outcome::Completed);
    assert_eq!(calc(&p).matches("a + b").count(), 1);
    assert_eq!(p.server.received().len(), 1);

    // The crash came in the middle of the renames: some files already have the promoted content.
    // That is the promotion's own write, not someone's change, and it finishes.
    let q = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let crashing = Sink { crash_after: Some("micro_task_iteration_complete"), ..Sink::default() };
    assert!(matches!(run(&q, &crashing, None).await, Err(ExecError::Sink(_))));
    let writes: Value =
        serde_json::from_slice(&std::fs::read(q.state().join("promotions/MT-001.json")).unwrap()).unwrap();
    std::fs::write(q.dir.path().join("calc.py"), writes[0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(run(&q, &Sink::default(), None).await.unwrap(), Outcome::Completed);
    assert!(q.state().join("promotions/MT-001.json.done").exists());
}

/// DG-MT-20: a change outside the task's files is refused, nothing of the answer is applied.
#[tokio::test]
async fn an_edit_outside_scope_is_refused_and_recorded() {
    let cheat = "<file path=\"test_calc.py\">\nimport unittest\n</file>\n".to_owned() + FIX + CLAIM;
    let p = project(vec![Reply::openai(&cheat), Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(std::fs::read_to_string(p.dir.path().join("test_calc.py")).unwrap(), TESTS);
    let first = &sink.of("micro_task_iteration_complete")[0];
    assert_eq!(first["outcome"]["failure_category"], "scope_violation", "{first}");
    assert!(first["outcome"]["error_summary"].as_str().unwrap().contains("scope_violation"), "{first}");
}

/// A blocked signal escalates at once (design decision 10), with MT-017.
#[tokio::test]
async fn a_blocked_signal_escalates() {
    let blocked = "<blocked>\nREASON: the test imports a module I cannot see\nNEED: its source\n</blocked>";
    let p = project(vec![Reply::openai(blocked), Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(sink.of("micro_task_blocked")[0]["reason"], "the test imports a module I cannot see");
    assert_eq!(sink.of("micro_task_escalated")[0]["failure_category"], "blocked");
}

/// A pause point stops before the task (MT-007) and `continue` resumes it (MT-008).
#[tokio::test]
async fn a_pause_point_waits_for_a_person() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "  pause_points: [MT-001]\n").await;
    let sink = Sink::default();
    let Outcome::Paused(pause) = run(&p, &sink, None).await.unwrap() else { panic!("expected a pause") };
    assert_eq!(pause.kind, PauseKind::PausePoint);
    assert!(p.server.received().is_empty());
    assert_eq!(run(&p, &sink, Some(HumanDecision::Continue)).await.unwrap(), Outcome::Completed);
    let order = mt_order(&sink);
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap();
    assert!(pos("micro_task_pause_requested") < pos("micro_task_resumed"));
    assert!(pos("micro_task_resumed") < pos("micro_task_iteration_started"));
}

/// DG-MT-15: a crash after the model answered; the restart recovers the ledger and finishes
/// without asking the model again.
#[tokio::test]
async fn a_crash_after_the_answer_does_not_ask_again() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let crashing = Sink { crash_after: Some("llm_inference"), ..Sink::default() };
    assert!(matches!(run(&p, &crashing, None).await, Err(ExecError::Sink(_))));
    assert_eq!(p.server.received().len(), 1);
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(p.server.received().len(), 1, "the saved answer is reused");
    let rec = &sink.of("workflow_recovery")[0];
    assert_eq!(rec["steps_to_retry"], serde_json::json!(["MT-001_iter-001"]));
    assert!(calc(&p).contains("a + b"));
}

/// A crash after the changes were applied (in the task's stage) and validated but before the
/// iteration's output was written: nothing reached the workspace, and the step is retried from
/// its saved answer, still without a second model call.
#[tokio::test]
async fn a_crash_after_applying_reuses_the_saved_answer() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let crashing = Sink { crash_after: Some("micro_task_validation"), ..Sink::default() };
    assert!(matches!(run(&p, &crashing, None).await, Err(ExecError::Sink(_))));
    assert_eq!(calc(&p), BUGGY, "DG-WF-08: nothing reaches the workspace before the task is done");
    assert!(std::fs::read_to_string(p.stage().join("MT-001/calc.py")).unwrap().contains("a + b"), "the stage has it");
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(p.server.received().len(), 1);
    assert_eq!(sink.of("micro_task_iteration_started").len(), 1);
}

/// A crash after the files were replaced but before they were marked applied: the resumed
/// iteration re-applies the saved contents instead of planning the edits again against the
/// changed files (which would find nothing to replace and fail the task).
#[tokio::test]
async fn a_crash_in_the_middle_of_applying_reapplies_the_saved_contents() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let crashing = Sink { crash_after: Some("micro_task_validation"), ..Sink::default() };
    assert!(matches!(run(&p, &crashing, None).await, Err(ExecError::Sink(_))));
    let outputs = p.state().join("step_outputs");
    let step = std::fs::read_dir(&outputs).unwrap().next().unwrap().unwrap().path();
    // The crash came between the renames and the marker.
    std::fs::remove_file(step.join("applied")).unwrap();
    assert!(step.join("planned_writes.json").exists());
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(p.server.received().len(), 1);
    assert_eq!(calc(&p).matches("a + b").count(), 1);
}

/// A loop whose run was taken over while it waited for the model (say it was SIGSTOPped past
/// the stall threshold, then continued) writes nothing more: not the project's files, not the
/// job's state.
#[tokio::test]
async fn a_loop_that_lost_its_run_writes_nothing() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let stale = Sink { taken_after: Some("llm_inference"), ..Sink::default() };
    let progress = p.state().join("progress_artifact.json");
    let err = run(&p, &stale, None).await.unwrap_err();
    assert!(matches!(&err, ExecError::Fenced(why) if why.contains("another process")), "{err}");
    assert!(calc(&p).contains("a - b"), "the changes were not applied");
    let saved: Value = serde_json::from_slice(&std::fs::read(&progress).unwrap()).unwrap();
    assert!(saved["micro_tasks"][0]["iterations"].as_array().unwrap().is_empty(), "no iteration recorded");
}

/// The loop against the real local model server (SmolLM2-135M behind llama.cpp): it checks the
/// mechanics (prompt over HTTP, server-counted usage, saved answer, ledger, scope), not the
/// model's skill, so either a completion or the hard gate is a pass.
#[tokio::test]
async fn the_loop_runs_against_a_real_local_model() {
    let Some(server) = tokio::task::spawn_blocking(|| LlamaServer::start(4096)).await.unwrap() else {
        eprintln!("skipping: no local model server (run ./scripts/test, which installs one)");
        return;
    };
    let p = project(vec![], "").await;
    let packet = format!(
        "wp_id: WP-local\ndescription: Fix add().\nin_scope_paths: [calc.py]\nread_paths: [test_calc.py]\n\
         done_means: [the unit tests pass]\ntest_plan: [python3 -m unittest -q test_calc]\ntoken_budget: 1024\n\
         execution_policy:\n  max_iterations_per_mt: 1\n  escalation_chain:\n    \
         - {{level: 0, provider: openai, base_url: \"{}\", model: smollm2, options: {{temperature: 0, max_tokens: 64, seed: 7}}}}\n    \
         - {{level: 1, hard_gate: true}}\n",
        server.base_url()
    );
    std::fs::write(p.dir.path().join("packet.yaml"), packet).unwrap();
    let sink = Sink::default();
    let outcome = run(&p, &sink, None).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Completed)
            || matches!(&outcome, Outcome::Paused(g) if g.reason == "escalation_exhausted"),
        "{outcome:?}"
    );
    let inference = &sink.of("llm_inference")[0];
    assert_eq!((inference["ok"].as_bool(), inference["usage_source"].as_str()), (Some(true), Some("server")));
    assert!(inference["token_usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let ledger: Value = serde_json::from_slice(&std::fs::read(p.state().join("run_ledger.json")).unwrap()).unwrap();
    let key = ledger["steps"][0]["idempotency_key"].as_str().unwrap();
    assert_eq!(ledger["steps"][0]["status"], "completed");
    assert!(p.state().join("step_outputs").join(key).join("response.txt").exists());
    assert_eq!(
        std::fs::read_to_string(p.dir.path().join("test_calc.py")).unwrap(),
        TESTS,
        "out of scope stays untouched"
    );
}

/// A file the task created is the task's to fix on the next iteration (not a scope violation).
#[tokio::test]
async fn a_created_file_can_be_rewritten_on_a_retry() {
    let first = "<file path=\"extra.py\">\nX = 1\n</file>\n<mt_complete>\nMT_ID: MT-001\nEVIDENCE:\n- \"X is two\" → extra.py:1-1\n</mt_complete>";
    let second = first.replace("X = 1", "X = 2");
    let p = project(vec![Reply::openai(first), Reply::openai(&second)], "").await;
    let packet = std::fs::read_to_string(p.dir.path().join("packet.yaml"))
        .unwrap()
        .replace("in_scope_paths: [calc.py]", "in_scope_paths: [extra.py]")
        .replace("done_means: [the unit tests pass]", "done_means: [X is two]")
        .replace(
            "test_plan: [python3 -m unittest -q test_calc]",
            "test_plan: [\"python3 -c 'import extra, sys; sys.exit(0 if extra.X == 2 else 1)'\"]",
        );
    std::fs::write(p.dir.path().join("packet.yaml"), packet).unwrap();
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(std::fs::read_to_string(p.dir.path().join("extra.py")).unwrap(), "X = 2\n");
    let outcomes: Vec<Value> =
        sink.of("micro_task_iteration_complete").iter().map(|e| e["outcome"]["status"].clone()).collect();
    assert_eq!(outcomes, [serde_json::json!("RETRY"), serde_json::json!("SUCCESS")]);
}

/// Writes the project's packet again with `test_plan` as given (YAML flow text).
fn with_test_plan(p: &Project, test_plan: &str) {
    let path = p.dir.path().join("packet.yaml");
    let packet = std::fs::read_to_string(&path).unwrap();
    let packet = packet.replace("test_plan: [python3 -m unittest -q test_calc]", &format!("test_plan: {test_plan}"));
    std::fs::write(path, packet).unwrap();
}

/// §2.6.6.8.16 `validation_timeout`: a verify command that times out runs again, once, with
/// twice the time, and only then counts; timing out again escalates the task at once.
#[tokio::test]
async fn a_verify_command_that_times_out_runs_again_with_twice_the_time() {
    // Slow only the first time: the second run, with 2 s, passes.
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    with_test_plan(
        &p,
        r#"[{command: "[ -e slow.once ] || { touch slow.once; sleep 30; }; python3 -m unittest -q test_calc", timeout_ms: 1000}]"#,
    );
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    assert_eq!(sink.of("micro_task_iteration_complete").len(), 1, "one iteration: the timeout did not count");
    let runs: Vec<bool> = sink.of("terminal_command").iter().map(|e| e["timed_out"].as_bool().unwrap()).collect();
    assert_eq!(runs, [true, false], "timed out once, then passed with twice the time");

    // Slow every time: the task escalates straight away, not another try at the same level.
    let q = project(vec![Reply::openai(&format!("{FIX}{CLAIM}")), Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    with_test_plan(&q, r#"[{command: "sleep 30", timeout_ms: 1000}]"#);
    let sink = Sink::default();
    let _ = run(&q, &sink, None).await.unwrap();
    let escalated = sink.of("micro_task_escalated");
    assert_eq!(escalated[0]["failure_category"], "timeout_exceeded", "{escalated:?}");
    assert_eq!(escalated[0]["from_level"], 0);
}

/// §2.6.6.8.16 `capability_violation`: a verify command the tool bus refuses when it is run
/// (here the job runs under a profile that runs no commands) fails the task and the job with
/// MT-010, instead of counting as a failed iteration to retry.
#[tokio::test]
async fn a_refused_verify_command_fails_the_task_and_the_job() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}")), Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let sink = Sink::default();
    let outcome = run_as(&p, &sink, None, steward_runtime::Halt::new(), "Analyst").await.unwrap();
    let Outcome::Failed { reason } = outcome else { panic!("{outcome:?}") };
    assert!(reason.starts_with("capability_violation: `python3 -m unittest -q test_calc`"), "{reason}");
    assert_eq!(sink.of("micro_task_loop_failed").len(), 1);
    assert_eq!(sink.of("micro_task_iteration_started").len(), 1, "no second iteration");
    assert_eq!(p.server.received().len(), 1);
    assert_eq!(calc(&p), BUGGY);
}

/// GenerateMTSummary: the retry's fresh prompt says what the previous answer did and why it
/// failed, instead of "Summary: (none)".
#[tokio::test]
async fn a_retry_prompt_says_what_the_previous_answer_did() {
    let p = project(
        vec![
            Reply::openai(&format!("The function looks right to me.\n{CLAIM}")),
            Reply::openai(&format!("{FIX}{CLAIM}")),
        ],
        "",
    )
    .await;
    assert_eq!(run(&p, &Sink::default(), None).await.unwrap(), Outcome::Completed);
    let asked = p.server.received();
    let prompt = asked[1].json()["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(
        prompt.contains(
            "**Summary:** It changed no file. It claimed the task complete. It said: \"The function looks right to me.\""
        ),
        "{prompt}"
    );
    assert!(prompt.contains("validation failed"), "{prompt}");
}

/// A declared file someone changed in the workspace while the task worked on it is not
/// overwritten by the task's promotion: the job fails saying so, their change stays, and the
/// task's result is kept in its promotion document.
#[tokio::test]
async fn a_promotion_never_overwrites_a_change_made_in_the_workspace_meanwhile() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let crashing = Sink { crash_after: Some("micro_task_iteration_complete"), ..Sink::default() };
    assert!(matches!(run(&p, &crashing, None).await, Err(ExecError::Sink(_))));
    let mine = BUGGY.replace("return a - b", "return b + a  # my own fix");
    std::fs::write(p.dir.path().join("calc.py"), &mine).unwrap();
    let Outcome::Failed { reason } = run(&p, &Sink::default(), None).await.unwrap() else {
        panic!("expected a failure")
    };
    assert!(reason.contains("calc.py changed in the workspace while MT-001 worked on it"), "{reason}");
    assert_eq!(calc(&p), mine, "their change stays");
    assert!(p.state().join("promotions/MT-001.json").exists(), "the task's result is kept");
}

/// §2.6.6.8.17 caps: every model request carries a `max_tokens` (the task's prompt budget unless
/// the level sets one), and a call that runs past the iteration's time cap is cancelled and
/// counted as a failed iteration, not waited for.
#[tokio::test]
async fn model_calls_are_capped_in_tokens_and_in_time() {
    let slow = Reply::openai("too late").after(std::time::Duration::from_secs(30));
    let p = project(vec![slow, Reply::openai(&format!("{FIX}{CLAIM}"))], "  max_iteration_ms: 1000\n").await;
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    let asked = p.server.received();
    assert_eq!(asked.len(), 2);
    assert!(asked[0].json()["max_tokens"].as_u64().is_some_and(|n| n >= 512), "{}", asked[0].json());
    let calls = sink.of("llm_inference");
    assert_eq!(calls[0]["ok"], false);
    let it = sink.of("micro_task_iteration_complete");
    assert!(it[0]["outcome"]["error_summary"].as_str().unwrap().contains("model_timeout"), "{:?}", it[0]);
}

/// Issue 14 point 3: a packet of three tasks; the first escalates (its answer at the base level
/// edits a file outside its scope, a `scope_violation`), the larger model completes it, and
/// smart drop-back returns the next tasks to the base model (§2.6.6.8.7.3: a transient
/// category).
#[tokio::test]
async fn the_first_task_escalates_and_the_next_drop_back() {
    let edit = |path: &str| {
        format!("<edit path=\"{path}\">\n<search>\nx = 1\n</search>\n<replace>\nx = 2\n</replace>\n</edit>\n")
    };
    let claim = |mt: &str| format!("<mt_complete>\nMT_ID: {mt}\n</mt_complete>\n");
    let replies = vec![
        Reply::openai(&format!("{}{}", edit("f06.py"), claim("MT-001"))),
        Reply::openai(&format!("{}{}", edit("f01.py"), claim("MT-001"))),
        Reply::openai(&format!("{}{}", edit("f06.py"), claim("MT-002"))),
        Reply::openai(&format!("{}{}", edit("f11.py"), claim("MT-003"))),
    ];
    let p = project(replies, "  max_iterations_per_mt: 1\n").await;
    let files: Vec<String> = (1..=11).map(|i| format!("f{i:02}.py")).collect();
    for f in &files {
        std::fs::write(p.dir.path().join(f), "x = 1\n").unwrap();
    }
    let path = p.dir.path().join("packet.yaml");
    let packet = std::fs::read_to_string(&path)
        .unwrap()
        .replace("in_scope_paths: [calc.py]", &format!("in_scope_paths: [{}]", files.join(", ")))
        .replace("read_paths: [test_calc.py]\n", "")
        .replace("test_plan: [python3 -m unittest -q test_calc]", "test_plan: [\"grep -q 'x = 2' f01.py || true\"]");
    std::fs::write(&path, packet).unwrap();

    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    let models: Vec<String> =
        p.server.received().iter().map(|r| r.json()["model"].as_str().unwrap().to_owned()).collect();
    assert_eq!(models, ["small", "large", "small", "small"]);
    let escalated = sink.of("micro_task_escalated");
    assert_eq!(escalated.len(), 1);
    assert_eq!(
        (escalated[0]["mt_id"].as_str(), escalated[0]["failure_category"].as_str()),
        (Some("MT-001"), Some("scope_violation"))
    );
    let dropped = sink.of("micro_task_drop_back");
    assert_eq!(
        (dropped.len(), dropped[0]["from_level"].as_u64(), dropped[0]["to_level"].as_u64()),
        (1, Some(1), Some(0))
    );
    for f in ["f01.py", "f06.py", "f11.py"] {
        assert_eq!(std::fs::read_to_string(p.dir.path().join(f)).unwrap(), "x = 2\n", "{f} promoted");
    }
    // DG-MT-09: each move to another model is recorded, there and back (FR-EVT-MODEL-001/002).
    let swaps: Vec<(String, String, String)> = sink
        .of("model_swap_completed")
        .iter()
        .map(|e| {
            let t = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (t("from_model"), t("to_model"), t("reason"))
        })
        .collect();
    assert_eq!(
        swaps,
        [("small".into(), "large".into(), "escalation".into()), ("large".into(), "small".into(), "drop_back".into())]
    );
    assert_eq!(sink.of("model_swap_requested").len(), 2);
}

/// A verify command runs model-written code in the stage; whatever it leaves there is not what
/// is promoted. Here it turns the task's file into a link to a secret outside the workspace:
/// the workspace gets the content the task's answer wrote, and never the secret.
#[tokio::test]
async fn a_promotion_takes_the_recorded_writes_not_what_a_verify_command_left_in_the_stage() {
    let p = project(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("id_rsa");
    std::fs::write(&secret, "-----BEGIN PRIVATE KEY----- not yours\n").unwrap();
    with_test_plan(&p, &format!("[\"python3 -m unittest -q test_calc && ln -sf {} calc.py\"]", secret.display()));
    assert_eq!(run(&p, &Sink::default(), None).await.unwrap(), Outcome::Completed);
    let promoted = calc(&p);
    assert!(promoted.contains("return a + b") && !promoted.contains("PRIVATE KEY"), "{promoted}");
    assert!(!std::fs::symlink_metadata(p.dir.path().join("calc.py")).unwrap().file_type().is_symlink());
}

fn progress_of(p: &Project) -> Value {
    serde_json::from_slice(&std::fs::read(p.state().join("progress_artifact.json")).unwrap()).unwrap()
}

/// The caps of the job's progress artifact, as `cap@effect`.
fn caps_of(p: &Project) -> Vec<String> {
    progress_of(p)["caps_reached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}@{}", c["cap"].as_str().unwrap(), c["effect"].as_str().unwrap()))
        .collect()
}

/// §2.6.6.8.17: a call over twice the task's budget is recorded; a task past ten budgets is
/// warned about once; past twenty it stops at a hard gate, and `continue` grants ten more.
#[tokio::test]
async fn a_task_past_its_token_caps_is_warned_then_stopped_at_a_gate() {
    let talk = || Reply::openai_usage("Let me think about it at length.", 30_000, 15_000);
    let p = project(vec![talk(), talk(), Reply::openai(&format!("{FIX}{CLAIM}"))], "").await;
    let sink = Sink::default();
    let Outcome::Paused(pause) = run(&p, &sink, None).await.unwrap() else { panic!("expected a pause") };
    assert_eq!((pause.kind, pause.reason.as_str()), (PauseKind::HardGate, "task_tokens"));
    assert_eq!(
        caps_of(&p),
        [
            "iteration_tokens@recorded",
            "task_tokens_warning@recorded",
            "iteration_tokens@recorded",
            "task_tokens@hard_gate"
        ]
    );
    let gate = sink.of("micro_task_cap_reached").pop().unwrap();
    assert_eq!(
        (gate["used"].as_u64(), gate["limit"].as_u64(), gate["unit"].as_str()),
        (Some(90_000), Some(20 * 4096), Some("tokens"))
    );
    assert_eq!(sink.of("micro_task_hard_gate")[0]["reason"], "task_tokens");
    assert_eq!(p.server.received().len(), 2, "no call past the cap");
    assert_eq!(run(&p, &sink, Some(HumanDecision::Continue)).await.unwrap(), Outcome::Completed);
    assert!(calc(&p).contains("a + b"));
    assert_eq!(progress_of(&p)["current_state"]["task_token_grants"], 10 * 4096);
}

/// The job's tokens stop at `max_total_tokens`; `continue` grants as much again.
#[tokio::test]
async fn the_job_stops_at_max_total_tokens_until_a_person_continues() {
    let p = project(
        vec![Reply::openai_usage("Hmm.", 900, 200), Reply::openai(&format!("{FIX}{CLAIM}"))],
        "  max_total_tokens: 1000\n",
    )
    .await;
    let sink = Sink::default();
    let Outcome::Paused(pause) = run(&p, &sink, None).await.unwrap() else { panic!("expected a pause") };
    assert_eq!(pause.reason, "max_total_tokens");
    assert_eq!(caps_of(&p), ["max_total_tokens@hard_gate"]);
    assert_eq!(run(&p, &sink, Some(HumanDecision::Continue)).await.unwrap(), Outcome::Completed);
    assert_eq!(progress_of(&p)["current_state"]["job_token_grants"], 1000);
}

/// `max_total_iterations` stops the job at a hard gate before the iteration past it, and
/// `continue` grants as many again.
#[tokio::test]
async fn the_job_stops_at_max_total_iterations_until_a_person_continues() {
    let p =
        project(vec![Reply::openai("Hmm."), Reply::openai(&format!("{FIX}{CLAIM}"))], "  max_total_iterations: 1\n")
            .await;
    // A crash right after the cap is written down: the next session stops at the same gate and
    // writes the cap once.
    let crashing = Sink { crash_after: Some("micro_task_cap_reached"), ..Sink::default() };
    assert!(matches!(run(&p, &crashing, None).await, Err(ExecError::Sink(_))));
    let sink = Sink::default();
    let Outcome::Paused(pause) = run(&p, &sink, None).await.unwrap() else { panic!("expected a pause") };
    assert_eq!(pause.reason, "max_total_iterations");
    assert_eq!(p.server.received().len(), 1);
    assert_eq!(caps_of(&p), ["max_total_iterations@hard_gate"]);
    assert!(sink.of("micro_task_cap_reached").is_empty(), "not written again");
    assert_eq!(run(&p, &sink, Some(HumanDecision::Continue)).await.unwrap(), Outcome::Completed);
    assert_eq!(progress_of(&p)["current_state"]["iteration_allowance"], 2);
}

/// `max_duration_ms` holds inside an iteration: a verify command gets only what is left of the
/// job's time (and is not run again with twice the time, as a command's own timeout would be);
/// the job stops at the `max_duration` gate; `continue` grants as much again; and a job that
/// runs past twice `max_duration_ms` ends `poisoned` (§2.6.6.8.16), never resumed, nothing of
/// its task promoted.
#[tokio::test]
async fn max_duration_holds_during_validation_and_twice_it_poisons_the_job() {
    let p = project(
        vec![Reply::openai(&format!("{FIX}{CLAIM}")), Reply::openai(&format!("{FIX}{CLAIM}"))],
        "  max_duration_ms: 60000\n",
    )
    .await;
    with_test_plan(&p, r#"[{command: "sleep 30; python3 -m unittest -q test_calc", timeout_ms: 50000}]"#);
    // The model call takes 59 s of the job's minute; the verify command gets the last second.
    let sink = Sink { tick: Some(("llm_inference", p.clock.clone(), 59)), ..Sink::default() };
    let Outcome::Paused(pause) = run(&p, &sink, None).await.unwrap() else { panic!("expected a pause") };
    assert_eq!(pause.reason, "max_duration");
    let verify = sink.of("terminal_command");
    assert_eq!(verify.len(), 1, "cut by the job's time: not run again with twice the time");
    assert_eq!(verify[0]["timed_out"], true);
    let why = &sink.of("micro_task_iteration_complete")[0]["outcome"]["error_summary"];
    assert!(why.as_str().unwrap().contains("the job's max_duration_ms ran out"), "{why}");
    assert_eq!(caps_of(&p), ["max_duration@hard_gate"]);

    // Continue: another minute; the next call takes 62 s, and past two minutes of executing
    // time the job is poisoned.
    let sink = Sink { tick: Some(("llm_inference", p.clock.clone(), 62)), ..Sink::default() };
    let outcome = run(&p, &sink, Some(HumanDecision::Continue)).await.unwrap();
    let Outcome::Poisoned { reason } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("2 × max_duration_ms (60000 ms)"), "{reason}");
    assert_eq!(sink.of("micro_task_loop_poisoned").len(), 1);
    assert_eq!(caps_of(&p), ["max_duration@hard_gate", "poison_duration@poisoned"]);
    assert_eq!(progress_of(&p)["status"], "poisoned");
    assert_eq!(calc(&p), BUGGY, "nothing of the unfinished task reaches the workspace");
    assert!(!p.stage().exists());
    // Poisoned is final: another session does nothing.
    assert!(matches!(
        run(&p, &Sink::default(), Some(HumanDecision::Continue)).await.unwrap(),
        Outcome::Poisoned { .. }
    ));
    assert_eq!(p.server.received().len(), 2);
}

/// Issue 14 point 3: failures are classified into the catalogue's categories from what the
/// verify commands printed, and poison prevention escalates the second failure of the same
/// category in a row with that category (here two claims whose code Python cannot read).
#[tokio::test]
async fn the_same_failure_twice_escalates_with_its_category() {
    let whole = |body: &str| format!("<file path=\"calc.py\">\ndef add(a, b):\n{body}\n</file>\n{CLAIM}");
    let p = project(
        vec![
            Reply::openai(&whole("    return a +")),
            Reply::openai(&whole("    return (a + b")),
            Reply::openai(&whole("    return a + b")),
        ],
        "",
    )
    .await;
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    let categories: Vec<Value> =
        sink.of("micro_task_iteration_complete").iter().map(|e| e["outcome"]["failure_category"].clone()).collect();
    assert_eq!(
        categories,
        [serde_json::json!("syntax_error_isolated"), serde_json::json!("syntax_error_isolated"), Value::Null]
    );
    let escalated = sink.of("micro_task_escalated");
    assert_eq!((escalated.len(), escalated[0]["failure_category"].as_str()), (1, Some("syntax_error_isolated")));
    // The retry's prompt names the failure by its category.
    let second = p.server.received()[1].json();
    let prompt = second["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains("FAIL: syntax_error_isolated"), "{prompt}");
    assert!(calc(&p).contains("a + b"));
}

/// A llama.cpp server as the chain's levels see it: it reports its context window and the LoRA
/// adapters it has loaded; answers model calls from `replies` in order.
async fn llama_like(replies: Vec<Reply>, n_ctx: u32) -> ModelServer {
    let replies = Mutex::new(std::collections::VecDeque::from(replies));
    ModelServer::answering_probes(
        move |_| replies.lock().unwrap().pop_front().unwrap_or_else(|| Reply::status(500, "script exhausted")),
        move |req| match req.request_line.split_whitespace().nth(1) {
            Some("/props") => Reply::json(serde_json::json!({"default_generation_settings": {"n_ctx": n_ctx}})),
            Some("/lora-adapters") => Reply::json(serde_json::json!([
                {"id": 0, "path": "/models/general.gguf", "scale": 0.0},
                {"id": 1, "path": "/models/py-fix.gguf", "scale": 0.0}
            ])),
            _ => Reply::status(404, "not found"),
        },
    )
    .await
}

/// Issue 14 points 3 and 4: one model behind a llama.cpp server with two adapters; the `auto`
/// rung applies the adapter the task's tags fit (py-fix, trained on python), the `alternate`
/// rung the other one, each on its own request; the context window is the server's.
#[tokio::test]
async fn the_alternate_rung_applies_another_lora_adapter_of_the_server() {
    let mut p = project(vec![], "").await;
    p.server = llama_like(
        vec![Reply::openai("<blocked>\nI need more context.\n</blocked>\n"), Reply::openai(&format!("{FIX}{CLAIM}"))],
        16384,
    )
    .await;
    let url = format!("{}/v1", p.server.url);
    let packet = format!(
        "wp_id: WP-1\ndescription: Fix add().\nin_scope_paths: [calc.py]\nread_paths: [test_calc.py]\n\
         done_means: [the unit tests pass]\ntest_plan: [python3 -m unittest -q test_calc]\ntask_tags: [python]\n\
         execution_policy:\n  loras:\n    - {{adapter: py-fix.gguf, trained_on_task_types: [python]}}\n  escalation_chain:\n    \
         - {{level: 0, provider: openai, base_url: \"{url}\", model: coder, lora_selector: auto}}\n    \
         - {{level: 1, provider: openai, base_url: \"{url}\", model: coder, lora_selector: alternate}}\n    - {{level: 2, hard_gate: true}}\n"
    );
    std::fs::write(p.dir.path().join("packet.yaml"), packet).unwrap();
    let sink = Sink::default();
    assert_eq!(run(&p, &sink, None).await.unwrap(), Outcome::Completed);
    let applied: Vec<Value> = p.server.received().iter().map(|r| r.json()["lora"].clone()).collect();
    assert_eq!(applied, [serde_json::json!([{"id": 1, "scale": 1.0}]), serde_json::json!([{"id": 0, "scale": 1.0}])]);
    let chosen: Vec<Value> = sink.of("micro_task_lora_selection").iter().map(|e| e["lora_id"].clone()).collect();
    assert_eq!(chosen, [serde_json::json!("py-fix.gguf"), serde_json::json!("general.gguf")]);
    let it = sink.of("micro_task_iteration_complete");
    assert_eq!(
        (it[0]["model"]["lora"].as_str(), it[0]["model"]["context_window"].as_u64()),
        (Some("py-fix.gguf"), Some(16384))
    );
    assert_eq!(sink.of("micro_task_escalated")[0]["failure_category"], "blocked");
    assert!(p.server.probes().iter().any(|r| r.request_line.starts_with("GET /props")));
}

/// MT-VAL-006 with the window the server reports: a task whose budget does not fit a 2,048-token
/// server is refused before any model call, whatever the policy configured.
#[tokio::test]
async fn a_server_window_too_small_for_the_budget_is_refused() {
    let mut p = project(vec![], "").await;
    p.server = llama_like(vec![Reply::openai(&format!("{FIX}{CLAIM}"))], 2048).await;
    // The project's packet names its first server; point it at this one.
    let path = p.dir.path().join("packet.yaml");
    let packet = std::fs::read_to_string(&path).unwrap();
    let old = packet.split("base_url: \"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    std::fs::write(&path, packet.replace(&old, &format!("{}/v1", p.server.url))).unwrap();
    let mut plan = plan(&path, None, None, &bus(), "Coder").unwrap();
    assert!(!plan.report.has_errors(), "configured: the default 8,192");
    let servers = probe_servers(&plan.policy, &models, &tokio_util::sync::CancellationToken::new()).await;
    plan.apply_server_windows(&servers);
    let rules: Vec<&str> = plan.report.errors.iter().map(|f| f.rule).collect();
    assert_eq!(rules, ["MT-VAL-006"], "{:?}", plan.report);
    assert!(plan.report.errors[0].message.contains("context window 2048"), "{:?}", plan.report.errors);
    assert_eq!(servers[&0].context_window, Some(2048));
    assert!(p.server.received().is_empty(), "no model was asked");
}

/// A stage outlives its job only when the job's process was killed and the job ended elsewhere:
/// the next job started on this machine removes the stages of jobs its artifact store knows have
/// ended, and keeps those of jobs still going or unknown to it.
#[tokio::test]
async fn stages_of_ended_jobs_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = FsArtifacts::new(dir.path().join("blobs"), dir.path().join("state"));
    let tag = std::process::id();
    let job = |what: &str| format!("sweep-{tag}-{what}");
    let progress = |status: &str| {
        serde_json::json!({
            "schema_version": "1.0", "wp_id": "WP", "job_id": "j", "created_at": "t", "updated_at": "t",
            "status": status, "policy": {}, "current_state": {"active_model_level": 0, "total_iterations": 0,
            "total_escalations": 0, "total_drop_backs": 0}, "micro_tasks": []
        })
    };
    use steward_artifacts::ArtifactStore;
    for (what, status) in [
        ("done", Some("completed")),
        ("cancelled", Some("cancelled")),
        ("live", Some("in_progress")),
        ("unknown", None),
    ] {
        if let Some(status) = status {
            let body = serde_json::to_vec(&progress(status)).unwrap();
            artifacts.write_document(&job(what), "progress_artifact.json", &body).await.unwrap();
        }
        std::fs::create_dir_all(steward_runtime::micro_task::stage_base(&job(what)).join("MT-001")).unwrap();
    }
    steward_runtime::micro_task::sweep_stages(&artifacts).await;
    let kept = |what: &str| steward_runtime::micro_task::stage_base(&job(what)).exists();
    assert_eq!([kept("done"), kept("cancelled"), kept("live"), kept("unknown")], [false, false, true, true]);
    for what in ["live", "unknown"] {
        std::fs::remove_dir_all(steward_runtime::micro_task::stage_base(&job(what))).unwrap();
    }
}
