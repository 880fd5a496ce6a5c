//! Agent steps: one fresh prompt per attempt, a model's answer read only inside its
//! `[workflow_result]` block, outputs written to their files, reviews routed by decision.
//!
//! HTTP providers are reached through `steward-models`; agent CLIs (`claude`,
//! `codex`) are processes, so they run as `engine.shell` operations through
//! the tool bus like any command. The prompt and the raw answer are kept as
//! artifacts and every call is an `llm_inference` event (FR-EVT-006) that
//! holds their hashes, never the prompt itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use steward_artifacts::hash;
use steward_core::event::Payload;
use steward_core::result_block;
use steward_core::state::AttemptStatus;
use steward_core::workflow::{AgentDecl, OutputDecl, Provider, Step, StepKind, Workflow};
use steward_models::http::HttpConfig;
use steward_models::ollama::OllamaClient;
use steward_models::openai::OpenAiClient;
use steward_models::scripted::ScriptedClient;
use steward_models::{ChatRequest, ChatResponse, Message, ModelClient, Role, Usage, UsageSource};
use steward_tools::bus::{CallContext, ToolBus};
use steward_tools::exec::{Ending, ProcessRecorder};
use steward_tools::redact::Redactor;

use crate::files::write_atomic;
use crate::step::StepDone;

/// Default OpenAI-compatible endpoint.
const OPENAI_URL: &str = "https://api.openai.com/v1";
/// Default Ollama server.
const OLLAMA_URL: &str = "http://127.0.0.1:11434";

/// An agent attempt, rendered and ready to ask.
pub(crate) struct AgentWork {
    pub(crate) agent: AgentDecl,
    pub(crate) review: bool,
    pub(crate) prompt: String,
    pub(crate) prompt_ref: String,
    /// Declared output key → the file it is written to.
    pub(crate) output_files: Vec<(String, PathBuf)>,
    /// Where the agent works and the prompt file lives.
    pub(crate) attempt_dir: PathBuf,
    pub(crate) workdir: PathBuf,
    pub(crate) ctx: CallContext,
    /// Variables seen before the process environment.
    pub(crate) env: Arc<std::collections::BTreeMap<String, String>>,
    /// The workflow's capability profile: an agent CLI runs under it like any command.
    pub(crate) profile: String,
}

impl AgentWork {
    fn var(&self, name: &str) -> Option<String> {
        env_var(&self.env, name)
    }
}

/// A variable from the engine's own environment first (embedding, tests), then the process's.
pub(crate) fn env_var(env: &BTreeMap<String, String>, name: &str) -> Option<String> {
    env.get(name).cloned().or_else(|| std::env::var(name).ok())
}

/// The output contract appended to every agent prompt.
pub(crate) fn contract(review: bool, outputs: &[OutputDecl], files: &[(String, PathBuf)]) -> String {
    let mut s = String::from(
        "\n\n---\nAnswer with exactly one block, and nothing inside it but JSON:\n[workflow_result]{\"status\": \"complete\", \"summary\": \"<one line>\", \"outputs\": {",
    );
    let keys: Vec<String> = outputs.iter().map(|o| format!("\"{}\": \"...\"", o.key)).collect();
    s.push_str(&keys.join(", "));
    s.push('}');
    if review {
        s.push_str(", \"decision\": \"approve\" or \"reject\"");
    }
    s.push_str("}[/workflow_result]\nUse \"status\": \"failed\" if you cannot do the task.");
    for o in outputs {
        let file = files
            .iter()
            .find(|(k, _)| k == &o.key)
            .map(|(_, p)| format!(" (it is saved to {})", p.display()))
            .unwrap_or_default();
        let optional = if o.optional { " (optional)" } else { "" };
        s.push_str(&format!("\n- `{}`{optional}{file}", o.key));
    }
    s
}

fn done(
    step: &Step,
    attempt: u32,
    status: AttemptStatus,
    error: Option<String>,
    retryable: bool,
    output: Option<Value>,
    events: Vec<Payload>,
) -> StepDone {
    StepDone { finish: crate::step::finish(&step.id, attempt, status, error, retryable, output), events }
}

/// Builds the client for an HTTP or scripted agent.
fn client(work: &AgentWork, timeout: Duration) -> Result<(Arc<dyn ModelClient>, Option<String>), String> {
    let (agent, workdir) = (&work.agent, &work.workdir);
    // The step's timeout bounds the whole call, retries included (the caller enforces it); a
    // single request gets at most the default, so a stalled request is retried within it.
    let defaults = HttpConfig::default();
    let config = HttpConfig { timeout: timeout.min(defaults.timeout), ..defaults };
    let key =
        match &agent.api_key_env {
            Some(var) => Some(work.var(var).ok_or_else(|| {
                format!("agent `{}`: the environment variable {var} (api_key_env) is not set", agent.id)
            })?),
            None => None,
        };
    let script = agent.script.as_deref().map(|s| workdir.join(s));
    let c = connect(agent.provider, agent.base_url.as_deref(), script.as_deref(), key.clone(), config)?;
    Ok((c, key))
}

/// A client for an HTTP or scripted provider; the defaults are OpenAI's API and a local Ollama.
pub(crate) fn connect(
    provider: Provider,
    base_url: Option<&str>,
    script: Option<&Path>,
    key: Option<String>,
    config: HttpConfig,
) -> Result<Arc<dyn ModelClient>, String> {
    Ok(match provider {
        Provider::OpenAi => {
            Arc::new(OpenAiClient::new(base_url.unwrap_or(OPENAI_URL), key, config).map_err(|e| e.to_string())?)
        }
        Provider::Ollama => {
            Arc::new(OllamaClient::new(base_url.unwrap_or(OLLAMA_URL), config).map_err(|e| e.to_string())?)
        }
        Provider::Scripted => {
            let path = script.ok_or("a scripted provider needs a script file")?;
            Arc::new(ScriptedClient::from_file(path).map_err(|e| e.to_string())?)
        }
        Provider::Command => return Err("command agents run through the tool bus".into()),
    })
}

/// The agent CLI a `command` agent runs (`claude` unless it says `codex`), the variable that may
/// name another program for it, and the program it is run as.
fn cli_program(agent: &AgentDecl, env: &BTreeMap<String, String>) -> (&'static str, &'static str, String) {
    let (cli, var) = match agent.cli.as_deref() {
        Some("codex") => ("codex", "STEWARD_CODEX_BIN"),
        _ => ("claude", "STEWARD_CLAUDE_BIN"),
    };
    (cli, var, env_var(env, var).unwrap_or_else(|| cli.to_owned()))
}

/// Why each agent CLI the workflow's steps run cannot be found here, one line per agent: checked
/// before a run starts, so that a missing `claude` or `codex` is said plainly and not as a
/// failed attempt. A program named with a `/` must be that file; a bare name is looked up on
/// `PATH`, as the shell that runs it looks it up.
pub fn missing_agent_clis(wf: &Workflow, env: &BTreeMap<String, String>) -> Vec<String> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let path = env_var(env, "PATH").unwrap_or_default();
    let mut missing = Vec::new();
    let used =
        |agent: &AgentDecl| wf.steps.iter().any(|s| matches!(&s.kind, StepKind::Agent(a) if a.agent == agent.id));
    for agent in wf.agents.iter().filter(|a| a.provider == Provider::Command && used(a)) {
        let (cli, var, program) = cli_program(agent, env);
        let found = if program.contains('/') {
            executable(Path::new(&program))
        } else {
            std::env::split_paths(&path).any(|dir| executable(&dir.join(&program)))
        };
        if !found {
            missing.push(format!(
                "agent `{}` runs the `{cli}` CLI, which is not installed here: no `{program}` {}; install it, or set {var} to its path",
                agent.id,
                if program.contains('/') { "executable file" } else { "on PATH" },
            ));
        }
    }
    missing
}

/// The shell command an agent CLI is run with (DireClaw §8.2), the prompt passed as a file.
fn cli_command(work: &AgentWork, prompt_file: &Path) -> (String, Vec<(String, String)>) {
    let agent = &work.agent;
    let (cli, _, bin) = cli_program(agent, &work.env);
    let message = format!("Read the prompt file at {} and do exactly what it says.", prompt_file.display());
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let command = if cli == "codex" {
        format!(
            "{} exec --model \"$STEWARD_MODEL\" --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox --json \"$STEWARD_PROMPT_MESSAGE\"",
            quoted(&bin)
        )
    } else {
        format!(
            "{} --dangerously-skip-permissions --model \"$STEWARD_MODEL\" -p \"$STEWARD_PROMPT_MESSAGE\"",
            quoted(&bin)
        )
    };
    (command, vec![("STEWARD_MODEL".into(), agent.model.clone()), ("STEWARD_PROMPT_MESSAGE".into(), message)])
}

/// Codex prints JSONL; its answer is the last completed `agent_message` item.
fn codex_answer(stdout: &str) -> Result<String, String> {
    let mut answer = None;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("codex printed a line that is not JSON: {e}"))?;
        if v["type"] == "item.completed" && v["item"]["type"] == "agent_message" {
            let item = &v["item"];
            let text = item["text"].as_str().or_else(|| item["message"].as_str()).map(str::to_owned).or_else(|| {
                match &item["content"] {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(parts) => {
                        Some(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
                    }
                    _ => None,
                }
            });
            answer = text.or(answer);
        }
    }
    answer.ok_or_else(|| "codex printed no completed agent_message".to_owned())
}

/// Asks the agent CLI through the tool bus.
async fn ask_cli(
    work: &AgentWork,
    step: &Step,
    bus: &ToolBus,
    cancel: &CancellationToken,
    recorder: &dyn ProcessRecorder,
    events: &mut Vec<Payload>,
) -> Result<ChatResponse, (String, bool)> {
    let prompt_file = work.attempt_dir.join("prompt.md");
    write_atomic(&prompt_file, work.prompt.as_bytes())
        .map_err(|e| (format!("cannot write the prompt file: {e}"), false))?;
    let (command, env) = cli_command(work, &prompt_file);
    let mut op = bus.shell_op(
        &format!("{}:cli", work.ctx.idempotency_key),
        &command,
        None,
        &env,
        Duration::from_secs(step.timeout_seconds),
        &work.profile,
    );
    // The prompt file lives in the attempt's directory, inside the data directory the sandbox
    // hides; the agent is granted reading that one file.
    op.capabilities_requested.push(format!("fs.read:{}", prompt_file.display()));
    let executed = bus.execute(&op, &work.ctx, cancel, recorder).await;
    // The file holds the prompt as the CLI must read it; one that holds a secret (a secret
    // input it names) is removed once the CLI is done, so only the redacted artifact stays.
    if bus.redactor().redact(&work.prompt).1 {
        let _ = std::fs::remove_file(&prompt_file);
    }
    events.extend(executed.events);
    let Some(out) = executed.output else {
        return Err((executed.refusal.map_or_else(|| "the agent CLI was refused".into(), |r| r.to_string()), false));
    };
    match out.ending {
        Ending::Exited(0) => {}
        Ending::TimedOut => return Err((format!("the agent CLI timed out after {}s", step.timeout_seconds), true)),
        Ending::Cancelled => return Err(("cancelled".into(), false)),
        other => {
            return Err((format!("the agent CLI failed ({other:?}): {}", crate::step::last_line(&out.stderr)), true));
        }
    }
    let content = if work.agent.cli.as_deref() == Some("codex") {
        codex_answer(&out.raw_stdout).map_err(|e| (e, true))?
    } else {
        out.raw_stdout.trim().to_owned()
    };
    if content.is_empty() {
        return Err(("the agent CLI printed nothing".into(), true));
    }
    let messages = [Message { role: Role::User, content: work.prompt.clone() }];
    let (usage, warning) = steward_models::tokens::usage_without_server(&work.agent.model, &messages, &content);
    Ok(ChatResponse {
        content: content.clone(),
        usage,
        model: work.agent.model.clone(),
        provider: "command".into(),
        raw: content,
        requests: 1,
        warning,
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens})
}

/// One model call as the Flight Recorder sees it, before its answer is known.
pub(crate) struct Inference<'a> {
    pub(crate) trace_id: &'a str,
    /// The model asked for (the answer names the model that answered).
    pub(crate) model_id: &'a str,
    /// The provider asked.
    pub(crate) provider: &'a str,
    pub(crate) prompt_hash: String,
    pub(crate) response_hash: Option<String>,
    pub(crate) latency_ms: u64,
    pub(crate) scripted: bool,
}

/// The FR-EVT-006 `llm_inference` event of a call: counts, hashes and timing, never the text;
/// `answer` is the response or why there is none.
pub(crate) fn inference_event(
    call: Inference<'_>,
    answer: Result<&ChatResponse, &str>,
    redactor: &Redactor,
) -> Payload {
    let (model_id, provider, token_usage, usage_source_, requests, note) = match answer {
        Ok(r) => (
            r.model.clone(),
            r.provider.clone(),
            usage_json(&r.usage),
            usage_source(&r.usage.source),
            r.requests,
            r.warning.as_deref().map(|w| redactor.redact(w).0),
        ),
        Err(why) => (
            call.model_id.to_owned(),
            call.provider.to_owned(),
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
            "none".to_owned(),
            0,
            Some(redactor.redact(why).0),
        ),
    };
    Payload::LlmInference {
        trace_id: call.trace_id.to_owned(),
        model_id,
        provider,
        token_usage,
        usage_source: usage_source_,
        latency_ms: call.latency_ms,
        prompt_hash: call.prompt_hash,
        response_hash: call.response_hash,
        requests,
        scripted: call.scripted,
        ok: answer.is_ok(),
        note,
    }
}

fn usage_source(s: &UsageSource) -> String {
    match s {
        UsageSource::Server => "server".into(),
        UsageSource::Tokenizer(enc) => format!("tokenizer:{enc}"),
        UsageSource::Estimate => "estimate".into(),
    }
}

/// Runs one agent attempt to its end. Never fails: every outcome is an attempt ending.
pub(crate) async fn execute(
    step: &Step,
    attempt: u32,
    work: AgentWork,
    bus: &ToolBus,
    cancel: &CancellationToken,
    recorder: &dyn ProcessRecorder,
) -> StepDone {
    let mut events = Vec::new();
    let started = Instant::now();
    let timeout = Duration::from_secs(step.timeout_seconds);
    let request = ChatRequest {
        model: work.agent.model.clone(),
        messages: vec![Message { role: Role::User, content: work.prompt.clone() }],
        options: work.agent.options.clone(),
        step_id: step.id.clone(),
        attempt,
        idempotency_key: work.ctx.idempotency_key.clone(),
    };
    // The API key is a secret wherever it might surface (errors, echoed bodies).
    let mut redactor: Redactor = bus.redactor().clone();
    let answer = match work.agent.provider {
        Provider::Command => ask_cli(&work, step, bus, cancel, recorder, &mut events).await,
        _ => match client(&work, timeout) {
            Err(e) => Err((e, false)),
            Ok((client, key)) => {
                if let Some(k) = key {
                    redactor = redactor.with_secret(k);
                }
                let call = client.chat(&request, cancel);
                match tokio::time::timeout(timeout, call).await {
                    Err(_) => Err((format!("the model did not answer within {}s", step.timeout_seconds), true)),
                    Ok(Err(e)) => {
                        let retryable = e.is_retryable();
                        Err((redactor.redact(&e.to_string()).0, retryable))
                    }
                    Ok(Ok(r)) => Ok(r),
                }
            }
        },
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let scripted = work.agent.provider == Provider::Scripted;
    let response = match answer {
        Err((why, retryable)) => {
            let call = Inference {
                trace_id: &work.ctx.trace_id,
                model_id: &work.agent.model,
                provider: work.agent.provider.as_str(),
                prompt_hash: work.prompt_ref.clone(),
                response_hash: None,
                latency_ms,
                scripted,
            };
            events.push(inference_event(call, Err(&why), &redactor));
            let status = if cancel.is_cancelled() { AttemptStatus::Cancelled } else { AttemptStatus::Failed };
            return done(
                step,
                attempt,
                status,
                Some(format!("model call failed: {why}")),
                retryable,
                Some(json!({"prompt_ref": work.prompt_ref})),
                events,
            );
        }
        Ok(r) => r,
    };
    let (raw, _) = redactor.redact(&response.raw);
    let response_ref = match bus.artifacts().put(raw.as_bytes(), "application/json").await {
        Ok(h) => h.hash,
        Err(e) => {
            return done(
                step,
                attempt,
                AttemptStatus::Failed,
                Some(format!("cannot store the response: {e}")),
                true,
                None,
                events,
            );
        }
    };
    let call = Inference {
        trace_id: &work.ctx.trace_id,
        model_id: &work.agent.model,
        provider: work.agent.provider.as_str(),
        prompt_hash: work.prompt_ref.clone(),
        response_hash: Some(response_ref.clone()),
        latency_ms,
        scripted,
    };
    events.push(inference_event(call, Ok(&response), &redactor));
    let mut output = json!({
        "provider": response.provider,
        "model": response.model,
        "scripted": scripted,
        "usage": usage_json(&response.usage),
        "usage_source": usage_source(&response.usage.source),
        "prompt_ref": work.prompt_ref,
        "response_ref": response_ref,
        "latency_ms": latency_ms,
    });
    let fail = |output: Value, why: String, events: Vec<Payload>| {
        done(step, attempt, AttemptStatus::Failed, Some(why), true, Some(output), events)
    };
    // Only the block counts; text around it is ignored.
    let envelope = match result_block::parse(&response.content) {
        Ok(Some(e)) => e,
        Ok(None) => return fail(output, "the answer has no [workflow_result] block".into(), events),
        Err(e) => return fail(output, format!("malformed answer: {e}"), events),
    };
    if let Some(why) = crate::step::record_summary(&envelope, &redactor, &mut output, "agent") {
        return fail(output, format!("the agent reported failure: {why}"), events);
    }
    if work.review {
        match result_block::review_decision(envelope.decision.as_deref()) {
            Ok(approved) => output["decision"] = json!(if approved { "approve" } else { "reject" }),
            Err(e) => return fail(output, e, events),
        }
    }
    // Outputs from the block; a declared output the agent wrote to its file instead is read back.
    let mut outputs: Map<String, Value> = envelope.outputs.clone();
    for (key, path) in &work.output_files {
        if outputs.get(key).is_none_or(Value::is_null)
            && let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            outputs.insert(key.clone(), Value::String(text));
        }
    }
    let missing = result_block::missing_outputs(&step.outputs, &outputs);
    if !missing.is_empty() {
        return fail(
            output,
            format!("missing required outputs in the [workflow_result] block: {}", missing.join(", ")),
            events,
        );
    }
    let outputs = redactor.redact_json(&Value::Object(outputs));
    let mut files = Map::new();
    for (key, path) in &work.output_files {
        let Some(v) = outputs.get(key) else { continue };
        let text = match v {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        };
        if let Err(e) = write_atomic(path, text.as_bytes()) {
            return fail(output, format!("cannot write output `{key}` to {}: {e}", path.display()), events);
        }
        files.insert(key.clone(), json!(path.display().to_string()));
    }
    output["outputs"] = outputs;
    output["output_files"] = Value::Object(files);
    output["answer_hash"] = json!(hash(response.content.as_bytes()));
    done(step, attempt, AttemptStatus::Completed, None, false, Some(output), events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DireClaw §8.2: the last completed agent_message of codex's JSONL is the answer.
    #[test]
    fn codex_answers_come_from_the_last_agent_message() {
        let jsonl = r#"{"type":"thread.started"}
{"type":"item.completed","item":{"type":"agent_message","text":"first"}}
{"type":"item.completed","item":{"type":"reasoning","text":"hmm"}}
{"type":"item.completed","item":{"type":"agent_message","content":[{"text":"a"},{"text":"b"}]}}
"#;
        assert_eq!(codex_answer(jsonl), Ok("a\nb".into()));
        assert!(codex_answer("{\"type\":\"turn.completed\"}").unwrap_err().contains("no completed agent_message"));
        assert!(codex_answer("not json").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn the_contract_names_every_output_and_the_decision() {
        let outputs = vec![
            OutputDecl { key: "plan".into(), optional: false },
            OutputDecl { key: "notes".into(), optional: true },
        ];
        let c = contract(true, &outputs, &[("plan".into(), PathBuf::from("/x/plan.md"))]);
        assert!(c.contains("[workflow_result]") && c.contains("\"decision\": \"approve\" or \"reject\""));
        assert!(c.contains("- `plan` (it is saved to /x/plan.md)") && c.contains("- `notes` (optional)"));
    }
}
