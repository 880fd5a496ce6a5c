//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::http::{self, HttpConfig};
use crate::{BoxFuture, ChatRequest, ChatResponse, Error, ModelClient, Result, Usage, UsageSource, tokens};

/// A client for one OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    base_url: String,
    api_key: Option<String>,
    http: reqwest::Client,
    config: HttpConfig,
}

impl OpenAiClient {
    /// `base_url` is up to and including `/v1`; the key, if any, is sent as a bearer token.
    pub fn new(base_url: &str, api_key: Option<String>, config: HttpConfig) -> Result<OpenAiClient> {
        Ok(OpenAiClient { base_url: base_url.trim_end_matches('/').to_owned(), api_key, http: http::client()?, config })
    }
}

/// Reads an OpenAI chat completion body.
pub fn parse(model: &str, req: &ChatRequest, raw: &str) -> Result<(String, Usage, String, Option<String>)> {
    let bad = |why: &str| Error::Protocol("openai".into(), why.to_owned());
    let v: Value = serde_json::from_str(raw).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no choices[0].message.content"))?
        .to_owned();
    let answered_by = v.get("model").and_then(Value::as_str).unwrap_or(model).to_owned();
    let reported = v.get("usage").and_then(|u| {
        let p = u.get("prompt_tokens")?.as_u64()?;
        let c = u.get("completion_tokens")?.as_u64()?;
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: u.get("total_tokens").and_then(Value::as_u64).unwrap_or(p + c),
            source: UsageSource::Server,
        })
    });
    let (usage, warning) = match reported {
        Some(u) => (u, None),
        None => tokens::usage_without_server(model, &req.messages, &content),
    };
    Ok((content, usage, answered_by, warning))
}

impl ModelClient for OpenAiClient {
    fn provider(&self) -> &str {
        "openai"
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<ChatResponse>> {
        Box::pin(async move {
            let mut body = json!({"model": req.model, "messages": req.messages, "stream": false});
            for (k, v) in &req.options {
                body[k] = v.clone();
            }
            let mut headers = vec![("Idempotency-Key", req.idempotency_key.clone())];
            if let Some(key) = &self.api_key {
                headers.push(("Authorization", format!("Bearer {key}")));
            }
            let url = format!("{}/chat/completions", self.base_url);
            let (raw, requests) =
                http::post_json(&self.http, "openai", &url, &headers, &body, &self.config, cancel).await?;
            let (content, usage, model, warning) = parse(&req.model, req, &raw)?;
            Ok(ChatResponse { content, usage, model, provider: "openai".into(), raw, requests, warning })
        })
    }
}
