//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::http::{self, HttpConfig};
use crate::{
    BoxFuture, ChatRequest, ChatResponse, Error, LoraAdapter, ModelClient, Result, ServerInfo, Usage, UsageSource,
    tokens,
};

/// How long a question about the server itself may take: it is asked once per job, and a
/// server that does not answer it quickly is taken to say nothing.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

    /// `GET {server root}/{path}` as JSON, or `None` for anything but a 2xx JSON answer in time.
    async fn probe(&self, path: &str, cancel: &CancellationToken) -> Option<Value> {
        let root = self.base_url.strip_suffix("/v1").unwrap_or(&self.base_url);
        let mut req = self.http.get(format!("{root}/{path}")).timeout(PROBE_TIMEOUT);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = tokio::select! {
            r = req.send() => r.ok()?,
            () = cancel.cancelled() => return None,
        };
        if !resp.status().is_success() {
            return None;
        }
        serde_json::from_str(&resp.text().await.ok()?).ok()
    }
}

/// Reads llama.cpp's `/props` and `/lora-adapters` answers (tested against the real server in
/// the CLI's local-model tests, and against its shapes below).
pub fn server_info(props: Option<&Value>, adapters: Option<&Value>) -> ServerInfo {
    let context_window = props
        .and_then(|p| p.pointer("/default_generation_settings/n_ctx").or_else(|| p.get("n_ctx")))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0);
    let lora_adapters = adapters
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    let id = u32::try_from(a.get("id")?.as_u64()?).ok()?;
                    Some(LoraAdapter { id, path: a.get("path")?.as_str()?.to_owned() })
                })
                .collect()
        })
        .unwrap_or_default();
    ServerInfo { context_window, lora_adapters }
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

    fn server_info<'a>(&'a self, cancel: &'a CancellationToken) -> BoxFuture<'a, ServerInfo> {
        Box::pin(async move {
            let props = self.probe("props", cancel).await;
            let adapters = self.probe("lora-adapters", cancel).await;
            server_info(props.as_ref(), adapters.as_ref())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_llama_cpp_server_says_its_window_and_adapters_and_others_say_nothing() {
        let props = json!({"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1});
        let adapters = json!([{"id": 0, "path": "/m/a.gguf", "scale": 0.0}, {"id": "x"}]);
        let info = server_info(Some(&props), Some(&adapters));
        assert_eq!(info.context_window, Some(4096));
        assert_eq!(info.lora_adapters, [LoraAdapter { id: 0, path: "/m/a.gguf".into() }]);
        assert_eq!(server_info(None, None), ServerInfo::default());
        assert_eq!(server_info(Some(&json!({"default_generation_settings": {"n_ctx": 0}})), None).context_window, None);
    }
}
