//! The README's path: run the example, inspect it, and the read-only commands stay read-only.

use serde_json::json;

use crate::support::*;

#[test]
fn hello_runs_and_every_view_of_it_agrees() {
    let s = Steward::new();
    let wf = s.write("hello.yaml", HELLO);
    let wf = wf.to_str().unwrap();

    let out = s.run(&["run", wf, "--input", "name=world"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| HELLO WORLD"), "{stdout}");
    assert!(stdout.contains("completed"), "{stdout}");

    let run = s.json(&["run", wf, "--input", "name=ada", "--json"]);
    assert_eq!((run["state"].as_str(), run["summary"].as_str()), (Some("completed"), Some("workflow completed")));
    assert_eq!(run["outputs"]["shout"]["stdout"], "HELLO ADA");
    let id = run["run_id"].as_str().unwrap().to_owned();

    let before = s.db_bytes();
    let status = s.json(&["status", &id, "--json"]);
    assert_eq!(status["run_id"], id.as_str());
    assert_eq!(status["state"], "completed");
    assert_eq!(status["inputs"], json!({"name": "ada"}));
    assert_eq!((status["input_count"].as_u64(), status["input_keys"].clone()), (Some(1), json!(["name"])));
    assert_eq!(status["job"]["job_kind"], "workflow_run");
    let steps = status["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let greet = &steps[0]["attempts"][0];
    assert_eq!(
        (greet["status"].as_str(), greet["idempotency_key"].as_str()),
        (Some("completed"), Some(format!("{id}:greet:1").as_str()))
    );
    assert!(greet["started_at"].is_string() && greet["finished_at"].is_string());
    assert_eq!(greet["output"]["stdout"], "hello ada");

    let progress = s.json(&["progress", &id, "--json"]);
    for key in [
        "runId",
        "workflowId",
        "state",
        "inputCount",
        "inputKeys",
        "currentStepId",
        "currentAttempt",
        "startedAt",
        "updatedAt",
        "lastProgressAt",
        "summary",
        "pendingHumanInput",
        "nextExpectedAction",
    ] {
        assert!(progress.get(key).is_some(), "progress lacks {key}: {progress}");
    }
    assert_eq!((progress["inputCount"].as_u64(), progress["pendingHumanInput"].as_bool()), (Some(1), Some(false)));

    let list = s.json(&["list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(s.json(&["list", "--state", "failed", "--json"]), json!([]));

    let events = s.json(&["events", &id, "--json"]);
    let types: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    // Each shell step: started, its command's process recorded (when it is spawned, before
    // the command may run), then with its end: six gates, a capability check per capability,
    // the sandbox it ran in, the command, the tool call, finished.
    let step = |caps: usize| {
        let mut v = vec!["step_attempt_started", "attempt_process_started"];
        v.extend(["gate_outcome"; 6]);
        v.extend(std::iter::repeat_n("capability_action", caps));
        v.extend(["sandbox_applied", "terminal_command", "tool_call", "step_attempt_finished"]);
        v
    };
    let mut expected = vec!["run_created", "run_state_changed", "run_claimed"];
    expected.extend(step(3)); // greet: fs.read, fs.write, proc.exec:echo
    expected.extend(step(4)); // shout: fs.read, fs.write, proc.exec:echo, proc.exec:tr
    expected.push("run_state_changed");
    assert_eq!(types, expected);
    let n = expected.len() as u64;
    let seqs: Vec<u64> = events.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    for e in events.as_array().unwrap() {
        for key in ["event_id", "ts", "actor", "actor_id", "trace_id", "job_id", "workflow_run_id", "payload"] {
            assert!(!e[key].is_null(), "event lacks {key}: {e}");
        }
    }
    for args in [vec!["status", id.as_str()], vec!["progress", id.as_str()], vec!["list"], vec!["events", id.as_str()]]
    {
        let out = s.run(&args);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(s.db_bytes() == before, "a read-only command changed the database");
}

/// Issue 12 point 4: on PostgreSQL every command works as it does on SQLite: a foreground run,
/// a submitted one driven by a worker and followed by `wait`, and every read command; nothing
/// lands in the data directory's database.
#[test]
fn every_command_works_on_postgres() {
    let Some(pg) = steward_test_support::pg::PgCluster::shared() else { return };
    let s = Steward::on_postgres(pg.create_database());
    let wf = s.write("hello.yaml", HELLO);
    let wf = wf.to_str().unwrap();
    let run = s.json(&["run", wf, "--input", "name=ada", "--json"]);
    assert_eq!(
        (run["state"].as_str(), run["outputs"]["shout"]["stdout"].as_str()),
        (Some("completed"), Some("HELLO ADA"))
    );
    let id = run["run_id"].as_str().unwrap().to_owned();

    let out = s.run(&["submit", wf, "--input", "name=bo"]);
    assert!(out.status.success(), "{}", text(&out));
    let queued = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(s.json(&["status", &queued, "--json"])["state"], "queued");
    let out = s.run(&["worker", "--exit-when-idle"]);
    assert!(out.status.success(), "{}", text(&out));
    let waited = s.json(&["wait", &queued, "--json"]);
    assert_eq!(
        (waited["state"].as_str(), waited["outputs"]["shout"]["stdout"].as_str()),
        (Some("completed"), Some("HELLO BO"))
    );

    let status = s.json(&["status", &id, "--json"]);
    assert_eq!((status["state"].as_str(), status["lease"]["epoch"].as_u64()), (Some("completed"), Some(1)));
    assert_eq!(s.json(&["progress", &id, "--json"])["runId"], id.as_str());
    let listed = s.json(&["list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let events = s.json(&["events", &id, "--json"]);
    let seqs: Vec<u64> = events.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let counted = s.json(&["events", "query", "SELECT count(*) AS n FROM events", "--json"]);
    assert_eq!(counted[0]["n"].as_u64(), Some((seqs.len() + waited_events(&s, &queued)) as u64), "{counted}");
    let out = s.run(&["bundle", &id, "-o", "bundle.tar"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!s.data_dir().join("steward.db").exists(), "a SQLite database was made beside PostgreSQL");
}

fn waited_events(s: &Steward, id: &str) -> usize {
    s.json(&["events", id, "--json"]).as_array().unwrap().len()
}

#[test]
fn typed_inputs_from_flags_and_files() {
    let s = Steward::new();
    let wf = s.write(
        "typed.yaml",
        "id: typed\nversion: 1\ninputs:\n  n: {type: number, required: true}\n  on: {type: bool, default: false}\n  cfg: {type: json}\nsteps:\n  - {id: a, type: shell, run: 'echo \"{{inputs.n}} {{inputs.on}} {{inputs.cfg.k}}\"'}\n",
    );
    s.write("in.json", r#"{"cfg": {"k": "v"}, "n": 1}"#);
    let run = s.json(&["run", wf.to_str().unwrap(), "--input-file", "in.json", "--input", "n=42", "--json"]);
    assert_eq!(run["inputs"], json!({"n": 42, "on": false, "cfg": {"k": "v"}}));
    assert_eq!(run["outputs"]["a"]["stdout"], "42 false v");
}

/// Starts `hello.yaml` for `name` with `--detach` (after `extra` flags, with `env`) and returns
/// the run's final status.
fn detached_final_state(s: &Steward, extra: &[&str], name: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let wf = s.write("hello.yaml", HELLO);
    let input = format!("name={name}");
    let mut args = extra.to_vec();
    args.extend(["run", wf.to_str().unwrap(), "--input", &input, "--detach"]);
    let out = s.cmd(&args).envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.starts_with("run-"), "{id}");
    // The background driver has no channel back to us; poll its record, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = s.json(&["status", &id, "--json"]);
        if status["state"] != "queued" && status["state"] != "running" {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "detached run did not finish: {status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn detached_runs_finish_in_the_background() {
    let s = Steward::new();
    assert_eq!(detached_final_state(&s, &[], "bg", &[])["state"], "completed");
}

/// The background driver runs under the `--config` the run was started with: here its
/// `secret_env` makes the driver redact a secret the steps print.
#[test]
fn detached_runs_keep_their_configuration() {
    let s = Steward::new();
    let secret = "bg-secret-value-4711";
    let cfg = s.write("ops.toml", "[terminal]\nsecret_env = ['BG_SECRET']\n");
    let status = detached_final_state(&s, &["--config", cfg.to_str().unwrap()], secret, &[("BG_SECRET", secret)]);
    assert_eq!(status["state"], "completed", "{status}");
    let text = status["steps"].to_string();
    assert!(!text.contains(secret) && text.contains("***REDACTED***"), "{status}");
}

#[test]
fn cancel_stops_a_run_driven_by_another_process() {
    let s = Steward::new();
    let wf = s.write(
        "long.yaml",
        "id: long\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'awk ''{print $4}'' /proc/self/stat > pid.tmp && mv pid.tmp pid; exec sleep 60'}\n",
    );
    let mut child = s
        .cmd(&["run", wf.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = s.path("pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(&pid_file).map_or(true, |p| p.trim().is_empty()) {
        assert!(std::time::Instant::now() < deadline, "the step never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let id = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let out = s.json(&["cancel", &id, "--json"]);
    assert_eq!(out["state"], "cancelled");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the driving process exits 1: its run did not complete");
    let proc_stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(proc_stat.is_empty() || proc_stat.contains(") Z"), "the step's process survived: {proc_stat}");
    let st = s.json(&["status", &id, "--json"]);
    assert_eq!(st["steps"][0]["attempts"][0]["status"], "cancelled");
}

#[test]
fn bench_prints_the_documented_json_shape() {
    let s = Steward::new();
    let b = s.json(&[
        "bench",
        "--runs",
        "20",
        "--b1-runs",
        "5",
        "--steps",
        "3",
        "--concurrency",
        "1,4",
        "--workers",
        "1,2",
        "--latency-runs",
        "3",
        "--bench-dir",
        "bench",
        "--json",
    ]);
    assert!(b["b1"]["p50_ms"].is_number() && b["b1"]["p99_ms"].is_number(), "{b}");
    let rows = b["b2"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["concurrency"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 4]);
    assert!(
        rows.iter().all(|r| r["runs_per_sec"].as_f64().unwrap() > 0.0 && r["steps_per_sec"].as_f64().unwrap() > 0.0)
    );
    assert_eq!((b["durability"].as_str(), b["backend"].as_str()), (Some("full"), Some("sqlite")));
    let w = b["w"].as_array().unwrap();
    assert_eq!(w.iter().map(|r| r["workers"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    for r in w {
        assert!(r["steps_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["claim_to_start_p99_ms"].as_f64().unwrap() >= r["claim_to_start_p50_ms"].as_f64().unwrap(), "{r}");
    }
}

/// Output into a pipe nobody reads any more (`steward status RUN --json | head -1`) is not an
/// error: the command stops writing and exits 0, whichever way it prints (JSON, text, a line).
#[test]
fn a_reader_that_went_away_is_not_an_error() {
    let s = Steward::new();
    let wf = s.write("hello.yaml", HELLO);
    let run = s.json(&["run", wf.to_str().unwrap(), "--input", "name=pipe", "--json"]);
    let id = run["run_id"].as_str().unwrap();
    for args in [
        vec!["status", id, "--json"],
        vec!["status", id],
        vec!["progress", id, "--json"],
        vec!["list", "--json"],
        vec!["workflow", "progress", id],
        vec!["workflow", "status", id],
        vec!["validate", "hello.yaml"],
        vec!["recover"],
    ] {
        // The reading end is closed before the command starts: every write it makes fails.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = s.cmd(&args).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "steward {args:?}: {:?} {err}", out.status);
    }
}
