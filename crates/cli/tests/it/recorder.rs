//! The Flight Recorder from the command line: SQL over the DuckDB mirror, filters,
//! following a live run, crash-safe mirroring, retention and debug bundles.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

use crate::support::*;

fn run_hello(s: &Steward, name: &str) -> String {
    let wf = s.write("hello.yaml", HELLO);
    s.json(&["run", wf.to_str().unwrap(), "--input", &format!("name={name}"), "--json"])["run_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn sql_over_the_mirror_counts_a_finished_run_and_refuses_writes() {
    let s = Steward::new();
    let id = run_hello(&s, "ada");
    let store_events = s.json(&["events", &id, "--json"]);
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for e in store_events.as_array().unwrap() {
        *by_type.entry(e["event_type"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let sql =
        format!("SELECT event_type, count(*) AS n FROM events WHERE workflow_run_id = '{id}' GROUP BY 1 ORDER BY 1");
    let rows = s.json(&["events", "query", &sql, "--json"]);
    let mirrored: BTreeMap<String, u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["event_type"].as_str().unwrap().to_owned(), r["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(mirrored, by_type);
    assert_eq!(
        (mirrored["step_attempt_started"], mirrored["terminal_command"], mirrored["run_state_changed"]),
        (2, 2, 2)
    );

    let envelope = s.json(&[
        "events",
        "query",
        &format!("SELECT * FROM events WHERE workflow_run_id = '{id}' AND seq = 1"),
        "--json",
    ]);
    let e = &envelope[0];
    for col in [
        "id",
        "seq",
        "event_id",
        "ts",
        "event_type",
        "actor",
        "actor_id",
        "trace_id",
        "job_id",
        "workflow_run_id",
        "step_id",
        "mt_id",
        "model_id",
        "capability_id",
        "payload",
    ] {
        assert!(e.get(col).is_some(), "mirror lacks column {col}: {e}");
    }
    assert_eq!(e["payload"]["workflow_id"], "hello", "payload is JSON");

    let out = s.run(&["events", "query", "DROP TABLE events"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("read-only"), "{}", text(&out));
    let text_out = s.run(&["events", "query", "SELECT count(*) AS n FROM events"]);
    assert!(String::from_utf8_lossy(&text_out.stdout).starts_with("n\n"), "{}", text(&text_out));
}

#[test]
fn events_filter_by_type_actor_job_and_time() {
    let s = Steward::new();
    let a = run_hello(&s, "a");
    let b = run_hello(&s, "b");
    let job_a = s.json(&["status", &a, "--json"])["job"]["job_id"].as_str().unwrap().to_owned();
    let only = |args: &[&str]| s.json(&[&["events"], args, &["--json"]].concat()).as_array().unwrap().clone();
    let calls = only(&["--type", "tool_call"]);
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|e| e["event_type"] == "tool_call"));
    assert_eq!(only(&["--job", &job_a]).len(), s.json(&["events", &a, "--json"]).as_array().unwrap().len());
    assert!(only(&["--actor", "human"]).iter().all(|e| e["event_type"] == "run_created"));
    assert_eq!(only(&["--actor", "human"]).len(), 2);
    assert!(only(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_eq!(only(&[&b, "--type", "run_created"]).len(), 1);
    let out = s.run(&["events", "--since", "yesterday"]);
    assert!(text(&out).contains("--since `yesterday` is not an RFC 3339 time"), "{}", text(&out));
}

#[test]
fn follow_tails_a_live_run_until_it_ends() {
    let s = Steward::new();
    let wf = s.write("slow.yaml", "id: slow\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'sleep 0.5'}\n  - {id: b, type: shell, run: 'sleep 0.5'}\n");
    let out = s.run(&["run", wf.to_str().unwrap(), "--detach"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let follow = s.run(&["events", &id, "--follow", "--json"]);
    assert!(follow.status.success(), "{}", text(&follow));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&follow.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let last = lines.last().unwrap();
    assert_eq!(
        (last["event_type"].as_str(), last["payload"]["to_state"].as_str()),
        (Some("run_state_changed"), Some("completed"))
    );
}

/// Every event id, in store order, straight from the store.
fn store_ids(s: &Steward) -> Vec<String> {
    s.json(&["events", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_mirror_equals_the_store_after_sigkill_mid_copy() {
    let s = Steward::new();
    let mut src = String::from("id: many\nversion: 1\nlimits: {max_total_iterations: 30}\nsteps:\n");
    for i in 0..25 {
        src.push_str(&format!("  - {{id: s{i}, type: noop}}\n"));
    }
    let wf = s.write("many.yaml", &src);
    for _ in 0..6 {
        s.json(&["run", wf.to_str().unwrap(), "--json"]);
    }
    let in_store = store_ids(&s);
    assert!(in_store.len() > 300);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..4 {
        // Small batches make the copy long enough to be killed halfway.
        let mut child = s
            .cmd(&["events", "query", "SELECT count(*) FROM events"])
            .env("STEWARD_MIRROR_BATCH", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..250)));
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }
    let rows = s.json(&["events", "query", "SELECT event_id FROM events ORDER BY id", "--json"]);
    let mirrored: Vec<String> =
        rows.as_array().unwrap().iter().map(|r| r["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(mirrored, in_store, "every event exactly once, in store order");
}

#[test]
fn gc_prunes_finished_runs_and_spares_unfinished_ones() {
    let s = Steward::new();
    let done = run_hello(&s, "old");
    // A run left running by a killed process.
    let wf = s.write(
        "hang.yaml",
        "id: hang\nversion: 1\nsteps:\n  - {id: wait, type: shell, run: 'echo started > started; sleep 30'}\n",
    );
    let mut child = s.cmd(&["run", wf.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.path("started").exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
    let live = s.json(&["list", "--state", "running", "--json"])[0]["run_id"].as_str().unwrap().to_owned();
    let live_events = s.json(&["events", &live, "--json"]).as_array().unwrap().len();
    assert!(s.run(&["events", "query", "SELECT 1"]).status.success(), "mirror everything first");

    s.write("steward.toml", "[retention]\ndays = 0\n");
    let dry = s.json(&["gc", "--dry-run", "--json"]);
    assert!(dry["items_pruned"].as_u64().unwrap() > 0);
    assert_eq!(
        s.json(&["events", &done, "--json"]).as_array().unwrap().len() as u64,
        dry["items_pruned"].as_u64().unwrap()
    );
    let report = s.json(&["gc", "--json"]);
    assert_eq!(report["items_pruned"], dry["items_pruned"]);
    assert_eq!(report["items_spared"].as_u64(), Some(live_events as u64));
    assert!(s.json(&["events", &done, "--json"]).as_array().unwrap().is_empty());
    assert_eq!(
        s.json(&["events", &live, "--json"]).as_array().unwrap().len(),
        live_events,
        "an unfinished run keeps its events"
    );
    let reports = s.json(&["events", "--type", "prune_report", "--json"]);
    assert_eq!(reports.as_array().unwrap().len(), 1);
    assert_eq!(reports[0]["payload"]["items_pruned"], report["items_pruned"]);
    let mirrored = s.json(&[
        "events",
        "query",
        &format!("SELECT count(*) AS n FROM events WHERE workflow_run_id = '{done}'"),
        "--json",
    ]);
    assert_eq!(mirrored[0]["n"], 0, "the mirror forgets what the store pruned");
    s.write("steward.toml", "[retention]\nmodel_dayz = 3\n");
    let out = s.run(&["gc"]);
    assert!(text(&out).contains("unknown key `retention.model_dayz`"), "{}", text(&out));
}

#[test]
fn a_bundle_holds_every_attempt_event_and_artifact_with_matching_counts() {
    let s = Steward::new();
    let wf = s.write(
        "leaky.yaml",
        "id: leaky\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'echo token=abc123secret'}\n  - {id: b, type: shell, run: 'exit 3', retry: {max_attempts: 2, backoff: {initial_seconds: 0}}}\n",
    );
    let out = s.run(&["run", wf.to_str().unwrap(), "--json"]);
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["run_id"].as_str().unwrap().to_owned();
    let tar = s.path("bundle.tar");
    let out = s.run(&["bundle", &id, "-o", tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = s.path("unpacked");
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("tar").arg("xf").arg(&tar).arg("-C").arg(&dir).status().unwrap();
    assert!(status.success());
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let nodes = std::fs::read_to_string(dir.join("workflow_node_executions.jsonl")).unwrap();
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert_eq!(manifest["included"]["workflow_node_execution_count"].as_u64(), Some(nodes.lines().count() as u64));
    assert_eq!(nodes.lines().count(), 3, "a, and b twice");
    assert_eq!(manifest["included"]["event_count"].as_u64(), Some(events.lines().count() as u64));
    assert_eq!(events.lines().count(), s.json(&["events", &id, "--json"]).as_array().unwrap().len());
    let artifacts: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("artifacts/manifest.json")).unwrap()).unwrap();
    assert_eq!(artifacts.len() as u64, manifest["included"]["artifact_count"].as_u64().unwrap());
    for a in &artifacts {
        let hash = a["hash"].as_str().unwrap().trim_start_matches("sha256:");
        let bytes = std::fs::read(dir.join("artifacts").join(hash)).unwrap();
        use sha2_check::digest;
        assert_eq!(digest(&bytes), hash);
    }
    let everything = format!("{nodes}{events}{}", std::fs::read_to_string(dir.join("run.json")).unwrap());
    assert!(!everything.contains("abc123secret") && everything.contains("token=***REDACTED***"));
    assert_eq!(manifest["scope"], json!({"kind": "workflow_run", "workflow_run_id": id}));
}

/// SHA-256 through the system's `sha256sum`, so the test does not trust the code it checks.
mod sha2_check {
    pub(crate) fn digest(bytes: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
    }
}
