//! Agent steps over real HTTP on loopback, a scripted provider, and a fake agent CLI.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::SystemClock;
use steward_store::Store;
use steward_test_support::{ModelServer, Reply};

use crate::support::*;

fn block(outputs: serde_json::Value) -> String {
    format!(
        "Sure.\n[workflow_result]{}[/workflow_result]\ntrailing words",
        json!({"status": "complete", "summary": "done", "outputs": outputs})
    )
}

fn task(provider_line: &str) -> String {
    format!(
        "id: t\nversion: 1\nagents:\n  a: {provider_line}\nsteps:\n  - id: write\n    type: agent_task\n    agent: a\n    prompt: \"Write about {{{{inputs.topic}}}}\"\n    outputs: [text]\n    output_files: {{text: \"text.md\"}}\n    limits: {{max_retries: 1}}\n    timeout_seconds: 2\ninputs:\n  topic: {{type: string}}\n"
    )
}

/// The openai protocol end to end: request, parsing, artifacts, events, output files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_agent_task_records_the_whole_protocol_path() {
    let server = ModelServer::start(vec![Reply::openai(&block(json!({"text": "tides rise"})))]).await;
    let e = env().await;
    let src = task(&format!(
        "{{provider: openai, base_url: \"{}/v1\", model: small, options: {{temperature: 0}}}}",
        server.url
    ));
    let run = e.run(&src, json!({"topic": "tides"})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);

    let req = &server.received()[0];
    let body = req.json();
    assert_eq!((body["model"].as_str(), body["temperature"].as_i64()), (Some("small"), Some(0)));
    let prompt = body["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.starts_with("Write about tides") && prompt.contains("[workflow_result]"), "{prompt}");
    assert_eq!(req.header("idempotency-key"), Some(format!("{}:write:1", run.run_id).as_str()));

    let attempt = &e.store.list_attempts(&run.run_id).await.unwrap()[0];
    let out = attempt.output.as_ref().unwrap();
    assert_eq!((out["outputs"]["text"].as_str(), out["summary"].as_str()), (Some("tides rise"), Some("done")));
    assert_eq!((out["usage"]["total_tokens"].as_u64(), out["usage_source"].as_str()), (Some(18), Some("server")));
    let file = out["output_files"]["text"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(file).unwrap(), "tides rise");
    let artifacts = e.engine.bus().artifacts();
    let prompt_art = String::from_utf8(artifacts.get(out["prompt_ref"].as_str().unwrap()).await.unwrap()).unwrap();
    assert_eq!(prompt_art, prompt);
    let raw = String::from_utf8(artifacts.get(out["response_ref"].as_str().unwrap()).await.unwrap()).unwrap();
    assert!(raw.contains("chat.completion"));

    let events = e.store.list_events(&run.run_id, 0).await.unwrap();
    let inference = events.iter().find(|ev| ev.event_type == "llm_inference").unwrap();
    let p = &inference.payload;
    assert_eq!(inference.model_id.as_deref(), Some("fake-model"));
    assert_eq!(
        (p["provider"].as_str(), p["ok"].as_bool(), p["scripted"].as_bool()),
        (Some("openai"), Some(true), Some(false))
    );
    assert_eq!(
        (p["token_usage"]["prompt_tokens"].as_u64(), p["token_usage"]["completion_tokens"].as_u64()),
        (Some(11), Some(7))
    );
    assert_eq!(p["prompt_hash"], out["prompt_ref"]);
    assert!(!p.to_string().contains("Write about tides"), "the raw prompt never goes into the event");
}

/// A malformed answer fails the attempt with the reason, and the step retries within its budget;
/// a 429 is retried by the provider; an answer too slow for the step times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_rate_limits_and_timeouts() {
    let server = ModelServer::start(vec![
        Reply::openai("I forgot the block"),
        Reply::status(429, "slow down").header("retry-after", "0"),
        Reply::openai(&block(json!({"text": "second try"}))),
    ])
    .await;
    let e = env().await;
    let src = task(&format!("{{provider: openai, base_url: \"{}/v1\", model: small}}", server.url));
    let run = e.run(&src, json!({"topic": "x"})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let attempts = e.store.list_attempts(&run.run_id).await.unwrap();
    assert_eq!(attempts[0].error.as_deref(), Some("the answer has no [workflow_result] block"));
    assert!(attempts[0].retryable);
    assert_eq!(attempts[1].status, AttemptStatus::Completed);
    let events = e.store.list_events(&run.run_id, 0).await.unwrap();
    let requests: Vec<u64> = events
        .iter()
        .filter(|ev| ev.event_type == "llm_inference")
        .map(|ev| ev.payload["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(requests, [1, 2], "the 429 was retried inside the second call");

    let slow = ModelServer::start(vec![Reply::openai("late").after(Duration::from_secs(4)); 2]).await;
    let src = task(&format!("{{provider: ollama, base_url: \"{}\", model: small}}", slow.url))
        .replace("max_retries: 1", "max_retries: 0");
    let run = e.run(&src, json!({"topic": "x"})).await;
    assert_eq!(run.state, RunState::Failed);
    assert!(run.terminal_reason.as_deref().unwrap().contains("did not answer within 2"), "{:?}", run.terminal_reason);
}

/// An Ollama server that answers a draft, a rejection, a second draft, then `approve` (as
/// spelled): a write step and a review that sends it back once.
async fn draft_reject_draft_approve(approve: &str) -> ModelServer {
    let review =
        |d: &str| format!("[workflow_result]{}[/workflow_result]", json!({"summary": format!("{d}!"), "decision": d}));
    ModelServer::start(vec![
        Reply::ollama(&block(json!({"text": "draft 1"}))),
        Reply::ollama(&review("reject")),
        Reply::ollama(&block(json!({"text": "draft 2"}))),
        Reply::ollama(&review(approve)),
    ])
    .await
}

/// Ollama's protocol, and a review that rejects then approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_review_rejects_then_approves() {
    let server = draft_reject_draft_approve("Approve").await;
    let e = env().await;
    let src = format!(
        "id: r\nversion: 1\nagents:\n  a: {{provider: ollama, base_url: \"{}\", model: small}}\nsteps:\n  - {{id: write, type: agent_task, agent: a, prompt: \"write; feedback: {{{{state.check_summary}}}}\", outputs: [text]}}\n  - {{id: check, type: agent_review, agent: a, prompt: \"check {{{{steps.write.outputs.text}}}}\", on_reject: write}}\n",
        server.url
    );
    let run = e.run(&src, json!({})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let seen: Vec<(String, u32)> =
        e.store.list_attempts(&run.run_id).await.unwrap().into_iter().map(|a| (a.step_id, a.attempt)).collect();
    assert_eq!(seen, [("write".into(), 1), ("check".into(), 1), ("write".into(), 2), ("check".into(), 2)]);
    let asked = server.received();
    assert_eq!(asked[0].request_line, "POST /api/chat HTTP/1.1");
    assert!(
        asked[2].json()["messages"][0]["content"].as_str().unwrap().starts_with("write; feedback: reject!"),
        "the rejection reaches the next prompt"
    );
    assert!(asked[3].json()["messages"][0]["content"].as_str().unwrap().starts_with("check draft 2"));
}

/// DireClaw's `write_state`: a review sets a state key from its own outputs when it completes,
/// and the next prompt reads it (empty before it was ever set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_state_sets_a_key_the_next_prompt_reads() {
    let server = draft_reject_draft_approve("approve").await;
    let e = env().await;
    let src = format!(
        "id: r\nversion: 1\nagents:\n  a: {{provider: ollama, base_url: \"{}\", model: small}}\nsteps:\n  - {{id: write, type: agent_task, agent: a, prompt: \"write; feedback: [{{{{state.feedback_for_writer}}}}]\", outputs: [text]}}\n  - {{id: check, type: agent_review, agent: a, prompt: \"check {{{{steps.write.outputs.text}}}}\", on_reject: write, write_state: {{feedback_for_writer: \"{{{{outputs.summary}}}} (decided {{{{ outputs.decision }}}})\"}}}}\n",
        server.url
    );
    let run = e.run(&src, json!({})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let asked = server.received();
    let prompt = |i: usize| asked[i].json()["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(prompt(0).starts_with("write; feedback: []"), "not set yet: {}", prompt(0));
    assert!(prompt(2).starts_with("write; feedback: [reject! (decided reject)]"), "{}", prompt(2));
}

/// DireClaw's prompt placeholders: the run's work area (made before the step, refused through
/// a planted link), the step's outputs as a JSON Schema and its output paths as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direclaw_placeholders_render_the_work_area_schema_and_paths() {
    let server = ModelServer::start(vec![Reply::ollama(&block(json!({"plan": "p"})))]).await;
    let e = env().await;
    let src = format!(
        "id: r\nversion: 1\nagents:\n  a: {{provider: ollama, base_url: \"{}\", model: small}}\nsteps:\n  - {{id: write, type: agent_task, agent: a, prompt: \"in {{{{workflow.run_workspace}}}} schema {{{{workflow.output_schema_json}}}} paths {{{{workflow.output_paths_json}}}} end\", outputs: [plan, note?], output_files: {{plan: plan.md, note: note.md}}}}\n",
        server.url
    );
    let run = e.run(&src, json!({})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let area = e.dir.path().join("work").join("runs").join(&run.run_id);
    assert!(area.is_dir(), "the work area is made before the step");
    let prompt = server.received()[0].json()["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(prompt.starts_with(&format!("in {} schema ", area.display())), "{prompt}");
    let schema: serde_json::Value =
        serde_json::from_str(prompt.split(" schema ").nth(1).unwrap().split(" paths ").next().unwrap()).unwrap();
    assert_eq!(
        schema,
        json!({"type": "object", "properties": {"plan": {"type": "string"}, "note": {"type": "string"}}, "required": ["plan"]})
    );
    let paths: serde_json::Value =
        serde_json::from_str(prompt.split(" paths ").nth(1).unwrap().split(" end").next().unwrap()).unwrap();
    assert!(paths["plan"].as_str().unwrap().ends_with("/outputs/plan.md"), "{paths}");

    // A link where the work area goes (an earlier step's doing) is refused, never followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(e.dir.path().join("work")).unwrap();
    std::os::unix::fs::symlink(outside.path(), e.dir.path().join("work")).unwrap();
    let run = e.run(&src, json!({})).await;
    assert_eq!(run.state, RunState::Failed, "{}", run.summary);
    assert!(
        run.terminal_reason.as_deref().unwrap().contains("a symlink is never followed"),
        "{:?}",
        run.terminal_reason
    );
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing was made through the link");
}

/// DireClaw's channel placeholders (`workflow.channel`, `workflow.sender_id`, ...) read the
/// run's inputs of those names (a Steward file declares them; an orchestrator file's runs take
/// any input); a run not given one fails the step saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direclaw_channel_placeholders_read_the_runs_inputs() {
    let server = ModelServer::start(vec![Reply::ollama(&block(json!({"note": "ok"})))]).await;
    let e = env().await;
    let src = format!(
        "id: c\nversion: 1\ninputs:\n  channel: {{type: string}}\n  sender_id: {{type: string}}\nagents:\n  a: {{provider: ollama, base_url: \"{}\", model: small}}\nsteps:\n  - {{id: say, type: agent_task, agent: a, prompt: \"from {{{{workflow.channel}}}} by {{{{workflow.sender_id}}}} end\"}}\n",
        server.url
    );
    let run = e.run(&src, json!({"channel": "slack", "sender_id": "U42"})).await;
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let prompt = server.received()[0].json()["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(prompt.starts_with("from slack by U42 end"), "{prompt}");
    let run = e.run(&src, json!({"channel": "slack"})).await;
    assert_eq!(run.state, RunState::Failed, "{}", run.summary);
    let reason = run.terminal_reason.unwrap();
    assert!(
        reason.contains("workflow.sender_id")
            && reason.contains("reads the run's `sender_id` input, which the run was not given"),
        "{reason}"
    );
}

/// A review that never approves is stopped by `max_total_iterations` with a clear reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_rejections_hit_the_iteration_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("answers.yaml"),
        "write:\n  default: '[workflow_result]{\"outputs\": {}}[/workflow_result]'\ncheck:\n  default: '[workflow_result]{\"decision\": \"reject\"}[/workflow_result]'\n",
    )
    .unwrap();
    let e = env().await;
    let src = "id: loop\nversion: 1\nlimits: {max_total_iterations: 5}\nagents:\n  s: {provider: scripted, script: answers.yaml}\nsteps:\n  - {id: write, type: agent_task, agent: s, prompt: w}\n  - {id: check, type: agent_review, agent: s, prompt: c, on_reject: write}\n";
    let created = e.engine.create_run(create(src, dir.path(), json!({}))).await.unwrap();
    let run = e.engine.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.terminal_reason.as_deref(), Some("workflow execution exceeded max total iterations (5)"));
    assert_eq!(run.total_iterations, 5);
    let events = e.store.list_events(&run.run_id, 0).await.unwrap();
    let inferences: Vec<_> = events.iter().filter(|ev| ev.event_type == "llm_inference").collect();
    assert_eq!(inferences.len(), 5, "one per attempt");
    assert!(inferences.iter().all(|ev| ev.payload["scripted"] == true));
}

/// The API key comes from the environment and never reaches events, artifacts or outputs,
/// even when a server echoes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_reaches_events_artifacts_or_outputs() {
    let key = "sk-live-zzSecretKey0123456789abcdef";
    let var = "STEWARD_IT_OPENAI_KEY";
    let echo =
        format!("[workflow_result]{}[/workflow_result]", json!({"outputs": {"text": format!("the key is {key}")}}));
    let server = ModelServer::start(vec![Reply::openai(&echo)]).await;
    let e = env().await;
    let eng = engine_with_env(e.store.clone(), Arc::new(SystemClock), "keyed", &[(var, key)]);
    eng.boot().await.unwrap();
    let src = task(&format!("{{provider: openai, base_url: \"{}/v1\", model: small, api_key_env: {var}}}", server.url));
    let created = eng.create_run(create(&src, e.dir.path(), json!({"topic": "k"}))).await.unwrap();
    let run = eng.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    assert_eq!(server.received()[0].header("authorization"), Some(format!("Bearer {key}").as_str()));
    let attempts = e.store.list_attempts(&run.run_id).await.unwrap();
    let events = e.store.list_events(&run.run_id, 0).await.unwrap();
    let recorded = format!("{}{}", serde_json::to_string(&attempts).unwrap(), serde_json::to_string(&events).unwrap());
    assert!(!recorded.contains(key), "the key reached the store");
    let out = attempts[0].output.as_ref().unwrap();
    for r in ["prompt_ref", "response_ref"] {
        let bytes = eng.bus().artifacts().get(out[r].as_str().unwrap()).await.unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(key), "the key reached the {r} artifact");
    }
    let file = std::fs::read_to_string(out["output_files"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(file, "the key is ***REDACTED***");
}

/// Agent CLIs run as processes through the tool bus; their answer is read from stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_agents_run_through_the_tool_bus() {
    let e = env().await;
    let bin = e.dir.path().join("fake-claude");
    std::fs::write(
        &bin,
        "#!/bin/sh\n# A stand-in for the claude CLI: reads the prompt file it is pointed at.\nfile=$(echo \"$*\" | sed -n 's/.*prompt file at \\([^ ]*\\) and.*/\\1/p')\nhead -n1 \"$file\" >&2\necho '[workflow_result]{\"outputs\": {\"text\": \"from the cli\"}}[/workflow_result]'\n",
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let eng = engine_with_env(
        e.store.clone(),
        Arc::new(SystemClock),
        "cli",
        &[("STEWARD_CLAUDE_BIN", bin.to_str().unwrap())],
    );
    eng.boot().await.unwrap();
    let src = task("{provider: command, cli: claude, model: sonnet}");
    let created = eng.create_run(create(&src, e.dir.path(), json!({"topic": "cli"}))).await.unwrap();
    let run = eng.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let out = e.store.list_attempts(&run.run_id).await.unwrap()[0].output.clone().unwrap();
    assert_eq!((out["outputs"]["text"].as_str(), out["provider"].as_str()), (Some("from the cli"), Some("command")));
    let events = e.store.list_events(&run.run_id, 0).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|ev| ev.event_type.as_str()).collect();
    assert!(
        kinds.contains(&"terminal_command") && kinds.contains(&"tool_call") && kinds.contains(&"llm_inference"),
        "{kinds:?}"
    );
    let term = events.iter().find(|ev| ev.event_type == "terminal_command").unwrap();
    assert!(term.payload["command"].as_str().unwrap().contains("--dangerously-skip-permissions --model"));

    // The CLI runs under the workflow's profile: one that runs no commands refuses it, before
    // the run starts, as it refuses a shell step.
    let analyst = src.replace("version: 1\n", "version: 1\ncapability_profile: Analyst\n");
    let refused = eng.create_run(create(&analyst, e.dir.path(), json!({"topic": "cli"}))).await.unwrap_err();
    assert!(refused.to_string().contains("G-CAP"), "{refused}");
}

/// Issue 11 (point 6): a secret input an agent CLI's prompt names reaches the CLI, and is left
/// on disk only redacted: the prompt artifact hides it and the prompt file it read is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_an_agent_cli_prompt_is_not_left_on_disk() {
    let e = env().await;
    let bin = e.dir.path().join("fake-claude");
    std::fs::write(
        &bin,
        "#!/bin/sh\nfile=$(echo \"$*\" | sed -n 's/.*prompt file at \\([^ ]*\\) and.*/\\1/p')\necho \"$file\" > prompt-path\nhead -n1 \"$file\" > seen\necho '[workflow_result]{\"outputs\": {\"text\": \"ok\"}}[/workflow_result]'\n",
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let eng = engine_with_env(
        e.store.clone(),
        Arc::new(SystemClock),
        "cli-secret",
        &[("STEWARD_CLAUDE_BIN", bin.to_str().unwrap())],
    );
    eng.boot().await.unwrap();
    let src = task("{provider: command, cli: claude, model: sonnet}")
        .replace("topic: {type: string}", "topic: {type: string, secret: true}");
    let secret = "opaque-topic-secret-31";
    let created = eng.create_run(create(&src, e.dir.path(), json!({"topic": secret}))).await.unwrap();
    let run = eng.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    assert_eq!(std::fs::read_to_string(e.dir.path().join("seen")).unwrap().trim(), format!("Write about {secret}"));
    let prompt_file = std::fs::read_to_string(e.dir.path().join("prompt-path")).unwrap();
    assert!(!std::path::Path::new(prompt_file.trim()).exists(), "{prompt_file} is still there");
    let out = e.store.list_attempts(&run.run_id).await.unwrap()[0].output.clone().unwrap();
    let prompt = eng.bus().artifacts().get(out["prompt_ref"].as_str().unwrap()).await.unwrap();
    assert!(String::from_utf8_lossy(&prompt).starts_with("Write about ***REDACTED***"));
}
