//! `steward mt plan`: packets are decomposed, checked and refused with their reasons.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Steward, text};

pub(crate) const PACKET: &str = include_str!("../../../../examples/mt-demo/packet.yaml");

/// The answer that fixes the demo's `calc.py`, with its completion claim.
pub(crate) const DEMO_FIX: &str = "<edit path=\"calc.py\">\n<search>\n    return a - b\n</search>\n<replace>\n    return a + b\n</replace>\n</edit>\n<mt_complete>\nMT_ID: MT-001\nEVIDENCE:\n- \"the unit tests in test_calc.py pass\" → calc.py:4-6\n</mt_complete>\n";

#[test]
fn the_demo_packet_plans_into_one_checked_task() {
    let s = Steward::new();
    s.write("packet.yaml", PACKET);
    s.write("calc.py", "def add(a, b):\n    return a - b\n");
    let plan = s.json(&["mt", "plan", "packet.yaml", "--json"]);
    assert_eq!(plan["valid"], true, "{plan}");
    assert_eq!(plan["wp_id"], "WP-demo-add");
    let mt = &plan["micro_tasks"][0];
    assert_eq!(mt["mt_id"], "MT-001");
    assert_eq!(mt["files"]["modify"], serde_json::json!(["calc.py"]));
    assert_eq!(mt["verify"][0]["command"], "python3 -m unittest -q test_calc");
    assert_eq!(plan["execution_waves"], serde_json::json!([["MT-001"]]));
    assert_eq!(plan["execution_policy"]["max_iterations_per_mt"], 5, "DG-MT-04 defaults");
    assert_eq!(plan["report"]["infos"][0]["rule"], "MT-VAL-010");
    let out = s.run(&["mt", "plan", "packet.yaml"]);
    assert!(out.status.success());
    assert!(text(&out).contains("MT-VAL: ok"), "{}", text(&out));
    // The demo's policies are valid as shipped.
    for (name, text) in [("scripted-policy.yaml", SCRIPTED_POLICY), ("local-policy.yaml", LOCAL_POLICY)] {
        s.write(name, text);
        let plan = s.json(&["mt", "plan", "packet.yaml", "--policy", name, "--json"]);
        assert_eq!(plan["valid"], true, "{name}: {plan}");
    }
}

const LOCAL_POLICY: &str = include_str!("../../../../examples/mt-demo/local-policy.yaml");

/// DG-MT-01: a packet that carries definitions is refused, with the line.
#[test]
fn supplied_definitions_are_refused() {
    let s = Steward::new();
    s.write("packet.yaml", &format!("{PACKET}mt_definitions:\n  - mt_id: MT-001\n"));
    let out = s.run(&["mt", "plan", "packet.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 18: `mt_definitions`: mt_definitions must not be provided"), "{}", text(&out));
}

/// DG-MT-19 and MT-VAL errors block with the full report (exit 1); a bad policy names its field.
#[test]
fn blocking_findings_and_bad_policies_are_reported() {
    let s = Steward::new();
    s.write("calc.py", "");
    s.write(
        "packet.yaml",
        &PACKET.replace("  - python3 -m unittest -q test_calc", "  - python3 -m unittest -q test_calc\n  - rm -rf /"),
    );
    s.write("policy.yaml", "pause_points: [MT-007]\n");
    let out = s.run(&["mt", "plan", "packet.yaml", "--policy", "policy.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&str> =
        plan["report"]["errors"].as_array().unwrap().iter().filter_map(|f| f["rule"].as_str()).collect();
    assert!(rules.contains(&"DG-MT-19"), "{plan}");
    assert!(rules.contains(&"MT-POLICY"), "{plan}");
    assert!(text(&out).contains("HSK-TERM-002"), "{}", text(&out));

    s.write("policy.yaml", "max_iterations_per_mt: 21\n");
    let out = s.run(&["mt", "plan", "packet.yaml", "--policy", "policy.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("execution policy: max_iterations_per_mt: 21 is outside 1..=20"), "{}", text(&out));
}

/// §2.6.6.8.15: a scope path through a symlinked directory is refused before anything runs.
#[test]
fn scope_through_a_symlink_is_refused() {
    let s = Steward::new();
    std::fs::create_dir(s.path("real")).unwrap();
    std::os::unix::fs::symlink(s.path("real"), s.path("link")).unwrap();
    s.write("packet.yaml", &PACKET.replace("  - calc.py\nread_paths", "  - link/calc.py\nread_paths"));
    let out = s.run(&["mt", "plan", "packet.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("MT-VAL-005: `link/calc.py` goes through a symlink"), "{}", text(&out));
}

const CALC: &str = include_str!("../../../../examples/mt-demo/calc.py");
const TESTS: &str = include_str!("../../../../examples/mt-demo/test_calc.py");
const SCRIPTED_POLICY: &str = include_str!("../../../../examples/mt-demo/scripted-policy.yaml");
const SCRIPTED_ANSWERS: &str = include_str!("../../../../examples/mt-demo/scripted-answers.yaml");

/// The demo project: the buggy module, its tests and the packet.
pub(crate) fn demo() -> Steward {
    let s = Steward::new();
    s.write("packet.yaml", PACKET);
    s.write("calc.py", CALC);
    s.write("test_calc.py", TESTS);
    s
}

fn events_of(s: &Steward, run: &str) -> Vec<serde_json::Value> {
    s.json(&["events", run, "--json"]).as_array().unwrap().clone()
}

/// The README demo: a refuted claim, a fresh prompt, the fix verified by the task's own tests;
/// the run is a micro_task_execution job and `status` shows its metrics.
#[test]
fn mt_run_fixes_the_demo_with_scripted_answers() {
    let s = demo();
    s.write("scripted-policy.yaml", SCRIPTED_POLICY);
    s.write("scripted-answers.yaml", SCRIPTED_ANSWERS);
    let out = s.run(&["mt", "run", "packet.yaml", "--policy", "scripted-policy.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("completed") && shown.contains("[scripted answers]"), "{shown}");
    assert!(shown.contains("iterations:  2 (level 0: 2)"), "{shown}");
    assert!(std::fs::read_to_string(s.path("calc.py")).unwrap().contains("return a + b"));

    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let status = s.json(&["status", &run, "--json"]);
    assert_eq!(status["state"], "completed");
    assert_eq!(status["job"]["job_kind"], "micro_task_execution");
    assert_eq!(
        (status["job"]["profile_id"].as_str(), status["job"]["protocol_id"].as_str()),
        (Some(PROFILE), Some(PROFILE))
    );
    let job = &status["micro_task_jobs"][0];
    assert_eq!(job["job_id"], status["job"]["job_id"], "the run's job is the micro-task job");
    assert_eq!(job["metrics"]["total_iterations"], 2);
    assert_eq!(job["metrics"]["completed_mts"], 1);
    assert!(s.data_dir().join("micro_task_executor").join(job["job_id"].as_str().unwrap()).is_dir());
    let out = s.run(&["status", &run]);
    assert!(text(&out).contains("MT-001  completed    2 iteration(s), final level 0"), "{}", text(&out));

    let events = events_of(&s, &run);
    let inferences: Vec<_> = events.iter().filter(|e| e["event_type"] == "llm_inference").collect();
    assert_eq!(inferences.len(), 2);
    assert!(inferences.iter().all(|e| e["payload"]["scripted"] == true));
    let validations: Vec<_> = events.iter().filter(|e| e["event_type"] == "micro_task_validation").collect();
    assert_eq!(validations.len(), 2, "the first claim was checked too, and refuted");
}

const PROFILE: &str = "micro_task_executor_v1";

/// Answers that never fix anything, then a fix: the chain runs out at the hard gate.
fn gate_project() -> Steward {
    let s = demo();
    s.write(
        "answers.yaml",
        "MT-001:\n  3: |\n    <edit path=\"calc.py\">\n    <search>\n        return a - b\n    </search>\n    <replace>\n        return a + b\n    </replace>\n    </edit>\n    <mt_complete>\n    MT_ID: MT-001\n    EVIDENCE:\n    - \"the unit tests in test_calc.py pass\" → calc.py:4-6\n    </mt_complete>\n  default: I could not find it.\n",
    );
    s.write(
        "policy.yaml",
        "max_iterations_per_mt: 1\nescalation_chain:\n  - {level: 0, provider: scripted, script: answers.yaml, model: s}\n  - {level: 1, provider: scripted, script: answers.yaml, model: l}\n  - {level: 2, hard_gate: true}\n",
    );
    s
}

/// MT-011: `steward cancel` of a job waiting at the hard gate (no loop runs to notice) records
/// `micro_task_loop_cancelled` with the cancel and leaves the progress artifact `cancelled`; the
/// workspace keeps nothing of the task.
#[test]
fn cancel_at_the_gate_records_mt_011_and_the_progress_says_cancelled() {
    let s = gate_project();
    let out = s.run(&["mt", "run", "packet.yaml", "--policy", "policy.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let out = s.run(&["cancel", &run]);
    assert!(out.status.success(), "{}", text(&out));
    let events = events_of(&s, &run);
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    let cancelled = types.iter().position(|t| *t == "micro_task_loop_cancelled").expect("MT-011");
    assert_eq!(events[cancelled]["payload"]["wp_id"], "WP-demo-add");
    let to_cancelled = events.iter().position(|e| e["payload"]["to_state"] == "cancelled").unwrap();
    assert!(cancelled < to_cancelled, "recorded with the cancel: {types:?}");
    let status = s.json(&["status", &run, "--json"]);
    let state_dir = std::path::PathBuf::from(status["micro_task_jobs"][0]["state_dir"].as_str().unwrap());
    let progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("progress_artifact.json")).unwrap()).unwrap();
    assert_eq!(progress["status"], "cancelled");
    assert!(std::fs::read_to_string(s.path("calc.py")).unwrap().contains("return a - b"));
}

/// MT-016: `steward gate RUN skip` sets the task that stopped at the hard gate aside; the job
/// goes on and completes with issues, and the events and the progress artifact say so.
#[test]
fn gate_skip_sets_the_waiting_task_aside() {
    let s = gate_project();
    let out = s.run(&["mt", "run", "packet.yaml", "--policy", "policy.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let out = s.run(&["gate", &run, "skip", "--reason", "not worth a person's time", "--json"]);
    assert_eq!(out.status.code(), Some(1), "completed with issues is not a success: {}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "completed_with_issues", "{done}");
    assert_eq!(done["micro_task_jobs"][0]["metrics"]["mt_metrics"]["MT-001"]["status"], "skipped", "{done}");
    assert_eq!(done["micro_task_jobs"][0]["metrics"]["skipped_mts"], 1);
    let events = events_of(&s, &run);
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    let decided = types.iter().position(|t| *t == "human_decision").unwrap();
    let skipped = types.iter().position(|t| *t == "micro_task_skipped").unwrap();
    assert!(decided < skipped, "{types:?}");
    assert_eq!(events[decided]["payload"]["decision"], "skip");
    assert!(types.contains(&"micro_task_loop_completed"), "{types:?}");
    assert!(
        std::fs::read_to_string(s.path("calc.py")).unwrap().contains("return a - b"),
        "nothing of the task applied"
    );
}

/// §2.6.6.8 HARD_GATE: the run waits in awaiting_user, `resume` refuses it, `gate continue`
/// finishes it and `gate abort` fails it, each recorded as a human decision.
#[test]
fn the_hard_gate_waits_for_steward_gate() {
    let s = gate_project();
    let out = s.run(&["mt", "run", "packet.yaml", "--policy", "policy.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("waiting:     hard_gate (escalation_exhausted) at MT-001"), "{}", text(&out));
    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(s.json(&["status", &run, "--json"])["state"], "awaiting_user");
    let out = s.run(&["resume", &run]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("steward gate"), "{}", text(&out));

    let out = s
        .cmd(&["gate", &run, "continue", "--reason", "one more pass", "--json"])
        .env("USER", "impostor")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "completed", "{done}");
    assert!(std::fs::read_to_string(s.path("calc.py")).unwrap().contains("return a + b"));
    let events = events_of(&s, &run);
    let decision = events.iter().find(|e| e["event_type"] == "human_decision").unwrap();
    assert_eq!(
        (decision["actor"].as_str(), decision["payload"]["decision"].as_str()),
        (Some("human"), Some("continue"))
    );
    // Issue 11 point 4: who decided is the operating-system user, not whatever `$USER` says.
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").and_then(|r| r.split_whitespace().next().map(str::to_owned)))
        .unwrap();
    let name = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&uid.as_str())).then(|| f[0].to_owned())
        })
        .unwrap_or(format!("uid-{uid}"));
    assert_eq!(decision["payload"]["decided_by"], format!("cli:{name}"), "{decision}");
    let out = s.run(&["gate", &run, "abort"]);
    assert_eq!(out.status.code(), Some(2), "a finished run takes no decision: {}", text(&out));

    let s = gate_project();
    let out = s.run(&["mt", "run", "packet.yaml", "--policy", "policy.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let out = s.run(&["gate", &run, "abort", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let status = s.json(&["status", &run, "--json"]);
    assert_eq!(status["state"], "failed");
    assert!(status["terminal_reason"].as_str().unwrap().contains("aborted by a person"), "{status}");
    assert_eq!(std::fs::read_to_string(s.path("calc.py")).unwrap(), CALC, "nothing was changed");
}

/// §2.6.6.8.17: a job that reaches `max_total_tokens` stops at its hard gate, and `steward
/// status` shows the limits in force, what was spent, and each cap reached.
#[test]
fn status_shows_the_caps_a_job_reached() {
    let s = gate_project();
    s.write(
        "policy.yaml",
        &format!(
            "max_total_tokens: 1000
{}",
            std::fs::read_to_string(s.path("policy.yaml")).unwrap()
        ),
    );
    let out = s.run(&["mt", "run", "packet.yaml", "--policy", "policy.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("waiting:     hard_gate (max_total_tokens) at MT-001"), "{shown}");
    assert!(shown.contains("cap reached: max_total_tokens at MT-001:"), "{shown}");
    assert!(shown.contains("of 1000 tokens (hard gate)"), "{shown}");
    assert!(shown.contains("limits:      1/100 iterations,"), "{shown}");
    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let job = &s.json(&["status", &run, "--json"])["micro_task_jobs"][0];
    assert_eq!(job["caps_reached"][0]["cap"], "max_total_tokens", "{job}");
    assert_eq!(job["limits"]["tokens"]["limit"], 1000, "{job}");
    assert!(job["limits"]["tokens"]["used"].as_u64().unwrap() >= 1000, "{job}");
    let events = events_of(&s, &run);
    let cap = events.iter().find(|e| e["event_type"] == "micro_task_cap_reached").expect("the cap's event");
    assert_eq!(cap["payload"]["effect"], "hard_gate");
}

/// §2.6.6.8.16 / DG-WF-12: a job that runs past twice its `max_duration_ms` ends the run
/// `poisoned`; nothing retries or resumes it. (A millisecond's budget: the first iteration,
/// which spawns its verify command, is always longer than two.)
#[test]
fn a_job_past_twice_its_duration_poisons_its_run() {
    let s = demo();
    s.write("answers.yaml", &format!("MT-001:\n  default: |\n{}", indent(DEMO_FIX)));
    s.write(
        "policy.yaml",
        "max_duration_ms: 1\nescalation_chain:\n  - {level: 0, provider: scripted, script: answers.yaml, model: s}\n  - {level: 1, hard_gate: true}\n",
    );
    let out = s.run(&["mt", "run", "packet.yaml", "--policy", "policy.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "poisoned", "{done}");
    assert_eq!(done["micro_task_jobs"][0]["status"], "poisoned", "{done}");
    let run = done["run_id"].as_str().unwrap().to_owned();
    let types: Vec<String> = events_of(&s, &run).iter().map(|e| e["event_type"].as_str().unwrap().to_owned()).collect();
    assert!(types.iter().any(|t| t == "micro_task_loop_poisoned"), "{types:?}");
    let out = s.run(&["resume", &run]);
    assert_eq!(out.status.code(), Some(2), "a poisoned run is not resumed: {}", text(&out));
    assert!(std::fs::read_to_string(s.path("calc.py")).unwrap().contains("return a - b"));
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// MT-VAL errors block the job before a run exists.
#[test]
fn a_blocked_packet_never_becomes_a_run() {
    let s = demo();
    s.write("packet.yaml", &PACKET.replace("  - python3 -m unittest -q test_calc", "  - rm -rf /"));
    let out = s.run(&["mt", "run", "packet.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("MT-VAL: blocked") && text(&out).contains("HSK-TERM-002"), "{}", text(&out));
    assert_eq!(s.json(&["list", "--json"]), serde_json::json!([]));
    let out = s.run(&["mt", "run", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "said once: {err}");
    assert!(err.contains("cannot read") && err.contains("missing.yaml"), "{err}");
}

/// SIGKILL of the real binary while an iteration's verify command runs, then `resume`: the
/// executor's recovery finds the step in progress, reuses the saved answer (the model is asked
/// once), does not apply the changes twice, and finishes with one recorded iteration (§3.17).
#[test]
fn a_kill_in_the_middle_of_an_iteration_loses_nothing_and_asks_no_model_twice() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use steward_test_support::{ModelServer, Reply};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start(vec![Reply::openai(DEMO_FIX)]));
    let s = demo();
    let slow_verify = "  - touch verify.started && sleep 1 && python3 -m unittest -q test_calc";
    s.write(
        "packet.yaml",
        &format!(
            "{}execution_policy:\n  escalation_chain:\n    - {{level: 0, provider: openai, base_url: \"{}/v1\", model: small}}\n    - {{level: 1, hard_gate: true}}\n",
            PACKET.replace("  - python3 -m unittest -q test_calc", slow_verify),
            server.url
        ),
    );
    let mut child = s.cmd(&["mt", "run", "packet.yaml"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.staged("verify.started").is_none() {
        assert!(Instant::now() < deadline, "the verify command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(server.received().len(), 1);
    assert!(
        std::fs::read_to_string(s.path("calc.py")).unwrap().contains("a - b"),
        "DG-WF-08: not in the workspace before the task is done"
    );
    assert!(
        std::fs::read_to_string(s.staged("calc.py").unwrap()).unwrap().contains("a + b"),
        "applied in its stage before the kill"
    );

    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    // No waiting for a stall threshold: the killed process is seen to be gone.
    let out = s.run(&["resume", &run]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.received().len(), 1, "the recorded answer was reused, not asked for again");

    let status = s.json(&["status", &run, "--json"]);
    let state_dir = std::path::PathBuf::from(status["micro_task_jobs"][0]["state_dir"].as_str().unwrap());
    let read =
        |f: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(state_dir.join(f)).unwrap()).unwrap() };
    let ledger = read("run_ledger.json");
    assert_eq!(ledger["steps"].as_array().unwrap().len(), 1, "{ledger}");
    assert_eq!(
        (ledger["steps"][0]["step_id"].as_str(), ledger["steps"][0]["status"].as_str()),
        (Some("MT-001_iter-001"), Some("completed"))
    );
    assert_eq!(read("progress_artifact.json")["micro_tasks"][0]["iterations"].as_array().unwrap().len(), 1);
    let calc = std::fs::read_to_string(s.path("calc.py")).unwrap();
    assert_eq!(calc.matches("return a + b").count(), 1, "applied once: {calc}");

    let events = events_of(&s, &run);
    let recovery: Vec<_> = events
        .iter()
        .filter(|e| e["event_type"] == "workflow_recovery" && e["payload"]["resume_point"].is_string())
        .collect();
    assert_eq!(recovery.len(), 1, "FR-EVT-WF-RECOVERY from the run ledger");
    assert_eq!(recovery[0]["payload"]["resume_point"], "MT-001_iter-001");
    assert_eq!(events.iter().filter(|e| e["event_type"] == "llm_inference").count(), 1);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
}

/// Issue 10 point 3: Ctrl-C on `steward mt run` while a verify command runs stops it, leaves
/// the job resumable (not cancelled), releases the run, and `resume` finishes the job at once
/// without asking the model again or recording a failed iteration.
#[test]
fn ctrl_c_on_mt_run_leaves_the_job_resumable() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use steward_test_support::{ModelServer, Reply};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start(vec![Reply::openai(DEMO_FIX)]));
    let s = demo();
    // Slow the first time only: the resumed iteration runs its verify command again.
    let slow_once = "  - \"{ [ -e verify.once ] || { touch verify.once verify.started; sleep 30; }; } && python3 -m unittest -q test_calc\"";
    s.write(
        "packet.yaml",
        &format!(
            "{}execution_policy:\n  escalation_chain:\n    - {{level: 0, provider: openai, base_url: \"{}/v1\", model: small}}\n    - {{level: 1, hard_gate: true}}\n",
            PACKET.replace("  - python3 -m unittest -q test_calc", slow_once),
            server.url
        ),
    );
    let child = s.cmd(&["mt", "run", "packet.yaml"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.staged("verify.started").is_none() {
        assert!(Instant::now() < deadline, "the verify command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();

    let status = s.json(&["status", &run, "--json"]);
    assert_eq!(status["state"], "stalled", "{status}");
    assert_eq!(status["steps"][0]["attempts"][0]["status"], "interrupted");
    let state_dir = std::path::PathBuf::from(status["micro_task_jobs"][0]["state_dir"].as_str().unwrap());
    let read =
        |f: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(state_dir.join(f)).unwrap()).unwrap() };
    assert_eq!(read("progress_artifact.json")["status"], "in_progress", "an interrupt is not a cancel");

    let out = s.run(&["resume", &run]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.received().len(), 1, "the saved answer was reused");
    let progress = read("progress_artifact.json");
    assert_eq!(progress["status"], "completed");
    assert_eq!(progress["micro_tasks"][0]["iterations"].as_array().unwrap().len(), 1, "no failed iteration recorded");
    let it = &progress["micro_tasks"][0]["iterations"][0];
    assert_eq!(
        (it["tokens_prompt"].as_u64(), it["tokens_completion"].as_u64()),
        (Some(11), Some(7)),
        "the replayed answer's cost: {it}"
    );
    assert_eq!(read("metrics.json")["total_tokens_prompt"], 11);
    let calc = std::fs::read_to_string(s.path("calc.py")).unwrap();
    assert_eq!(calc.matches("return a + b").count(), 1, "applied once: {calc}");
}

/// Issue 12 point 6: a micro-task job killed on one machine continues on another. Its state
/// (progress artifact, run ledger, saved answer) is in PostgreSQL with the run, not in a data
/// directory: a worker with a data directory of its own takes the run over, reuses the saved
/// answer (the model is asked once) and finishes the job.
#[test]
fn a_micro_task_job_killed_on_one_worker_finishes_on_another_with_another_data_directory() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use steward_test_support::{ModelServer, Reply};

    let Some(pg) = steward_test_support::pg::PgCluster::shared() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start(vec![Reply::openai(DEMO_FIX)]));
    let s = Steward::on_postgres(pg.create_database());
    s.write("calc.py", CALC);
    s.write("test_calc.py", TESTS);
    let slow_verify = "  - touch verify.started && sleep 1 && python3 -m unittest -q test_calc";
    s.write(
        "packet.yaml",
        &format!(
            "{}execution_policy:\n  escalation_chain:\n    - {{level: 0, provider: openai, base_url: \"{}/v1\", model: small}}\n    - {{level: 1, hard_gate: true}}\n",
            PACKET.replace("  - python3 -m unittest -q test_calc", slow_verify),
            server.url
        ),
    );
    let leases = ["--stall-threshold", "3", "--heartbeat-secs", "1"];
    let mut first: Vec<&str> = vec!["--data-dir", "machine-a"];
    first.extend(leases);
    first.extend(["mt", "run", "packet.yaml"]);
    let mut child = s.cmd(&first).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.staged("verify.started").is_none() {
        assert!(Instant::now() < deadline, "the verify command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(server.received().len(), 1);

    assert!(std::fs::read_to_string(s.path("calc.py")).unwrap().contains("a - b"), "nothing in the workspace yet");

    // Another machine: another data directory and another temporary directory, so the task's
    // stage is made again there from the workspace and the job's documents.
    let machine_b_tmp = tempfile::tempdir().unwrap();
    let mut second: Vec<&str> = vec!["--data-dir", "machine-b"];
    second.extend(leases);
    second.extend(["worker", "--exit-when-idle", "--poll", "0.2"]);
    let out = s.cmd(&second).env("TMPDIR", machine_b_tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let status = s.json(&["status", &run, "--json"]);
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(server.received().len(), 1, "the saved answer was reused, not asked for again");
    let calc = std::fs::read_to_string(s.path("calc.py")).unwrap();
    assert_eq!(calc.matches("return a + b").count(), 1, "applied once: {calc}");
    let job = status["micro_task_jobs"][0]["job_id"].as_str().unwrap().to_owned();
    for dir in ["machine-a", "machine-b"] {
        assert!(!s.path(dir).join("micro_task_executor").join(&job).exists(), "job state left in {dir}");
    }
    let events = events_of(&s, &run);
    let resumed =
        events.iter().filter(|e| e["event_type"] == "workflow_recovery" && e["payload"]["resume_point"].is_string());
    assert_eq!(resumed.count(), 1, "FR-EVT-WF-RECOVERY from the run ledger in PostgreSQL");
    assert_eq!(events.iter().filter(|e| e["event_type"] == "llm_inference").count(), 1);
}
