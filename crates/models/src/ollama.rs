//! Ollama's chat API (`POST {base_url}/api/chat`, non-streaming).

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::http::{self, HttpConfig};
use crate::{BoxFuture, ChatRequest, ChatResponse, Error, ModelClient, Result, Usage, UsageSource, tokens};

/// A client for one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base_url: String,
    http: reqwest::Client,
    config: HttpConfig,
}

impl OllamaClient {
    /// `base_url` is the server root, e.g. `http://127.0.0.1:11434`.
    pub fn new(base_url: &str, config: HttpConfig) -> Result<OllamaClient> {
        Ok(OllamaClient { base_url: base_url.trim_end_matches('/').to_owned(), http: http::client()?, config })
    }
}

/// Reads an Ollama chat body.
pub fn parse(model: &str, req: &ChatRequest, raw: &str) -> Result<(String, Usage, String, Option<String>)> {
    let bad = |why: &str| Error::Protocol("ollama".into(), why.to_owned());
    let v: Value = serde_json::from_str(raw).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let content =
        v.pointer("/message/content").and_then(Value::as_str).ok_or_else(|| bad("no message.content"))?.to_owned();
    let answered_by = v.get("model").and_then(Value::as_str).unwrap_or(model).to_owned();
    let reported =
        match (v.get("prompt_eval_count").and_then(Value::as_u64), v.get("eval_count").and_then(Value::as_u64)) {
            (Some(p), Some(c)) => {
                Some(Usage { prompt_tokens: p, completion_tokens: c, total_tokens: p + c, source: UsageSource::Server })
            }
            _ => None,
        };
    let (usage, warning) = match reported {
        Some(u) => (u, None),
        None => tokens::usage_without_server(model, &req.messages, &content),
    };
    Ok((content, usage, answered_by, warning))
}

impl ModelClient for OllamaClient {
    fn provider(&self) -> &str {
        "ollama"
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<ChatResponse>> {
        Box::pin(async move {
            let body = json!({"model": req.model, "messages": req.messages, "stream": false, "options": Value::Object(req.options.clone())});
            let url = format!("{}/api/chat", self.base_url);
            let headers = [("Idempotency-Key", req.idempotency_key.clone())];
            let (raw, requests) =
                http::post_json(&self.http, "ollama", &url, &headers, &body, &self.config, cancel).await?;
            let (content, usage, model, warning) = parse(&req.model, req, &raw)?;
            Ok(ChatResponse { content, usage, model, provider: "ollama".into(), raw, requests, warning })
        })
    }
}
