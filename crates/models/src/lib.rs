//! Steward's model providers: how a step asks a model for an answer, over the model's own protocol.
//!
//! One trait, [`ModelClient`], and its providers:
//! - [`openai::OpenAiClient`]: OpenAI-compatible `/v1/chat/completions` (llama.cpp server, vLLM,
//!   LM Studio, hosted APIs);
//! - [`ollama::OllamaClient`]: Ollama's `/api/chat`;
//! - [`scripted::ScriptedClient`]: answers replayed from a YAML file keyed by step and attempt,
//!   for tests and offline demos, always labelled `scripted`.
//!
//! Agent CLIs (`claude`, `codex`) are processes, so they run through the tool bus in the
//! runtime, not here: this crate opens sockets, never processes.
//!
//! HTTP providers share one request loop ([`http`]): a per-request timeout, cancellation,
//! and retries with exponential backoff on 429, 5xx and connection errors (honouring
//! `Retry-After`). Token usage comes from the server when it reports it, else from a
//! tokenizer for the model's family, else from an estimate that says so ([`tokens`]).
#![warn(missing_docs)]

pub mod http;
pub mod ollama;
pub mod openai;
pub mod scripted;
pub mod tokens;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The request.
    User,
    /// The model.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// A request for one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model name as the server knows it.
    pub model: String,
    /// The conversation; Steward sends one fresh prompt per attempt.
    pub messages: Vec<Message>,
    /// Provider options passed through (`temperature`, `max_tokens`, `seed`, ...).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The step asking (the scripted provider's key).
    pub step_id: String,
    /// Its attempt number (the scripted provider's key).
    pub attempt: u32,
    /// The attempt's idempotency key, sent as `Idempotency-Key`.
    pub idempotency_key: String,
}

/// Where a token count came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The server reported it.
    Server,
    /// A tokenizer for the model's family counted it.
    Tokenizer(String),
    /// Estimated from characters; not exact.
    Estimate,
}

/// Tokens used by one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
    /// How they were counted.
    pub source: UsageSource,
}

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The answer text.
    pub content: String,
    /// Token usage.
    pub usage: Usage,
    /// The model that answered, as the server names it.
    pub model: String,
    /// `openai`, `ollama`, `scripted`.
    pub provider: String,
    /// The raw response body, for evidence.
    pub raw: String,
    /// HTTP requests made (1 + retries).
    pub requests: u32,
    /// Why the usage is only an estimate, when it is.
    pub warning: Option<String>,
}

/// Provider errors, split by whether retrying may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{provider} returned HTTP {status}: {body}")]
    Status {
        /// Which provider.
        provider: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// The request took longer than its timeout.
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    /// The server could not be reached.
    #[error("{0}: cannot reach {1}: {2}")]
    Connect(String, String, String),
    /// The call was cancelled.
    #[error("the model call was cancelled")]
    Cancelled,
    /// The answer did not follow the protocol.
    #[error("{0} answered something that is not a chat response: {1}")]
    Protocol(String, String),
    /// The provider is misconfigured.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Whether the same request may succeed later (429, 5xx, connection errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::Connect(..) | Error::Timeout(..) => true,
            Error::Cancelled | Error::Protocol(..) | Error::Config(..) => false,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed future, so clients can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a model server says about itself, where it says: llama.cpp's server reports its
/// context window (`GET /props`) and the LoRA adapters it has loaded (`GET /lora-adapters`); a
/// hosted API or Ollama says neither here, and the configured values stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// The context window one request gets, in tokens.
    pub context_window: Option<u32>,
    /// The LoRA adapters it can apply per request.
    pub lora_adapters: Vec<LoraAdapter>,
}

/// A LoRA adapter a server has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraAdapter {
    /// The id a request applies it by (`"lora": [{"id": 0, "scale": 1.0}]`).
    pub id: u32,
    /// Its file, as the server was started with it.
    pub path: String,
}

/// A model provider.
pub trait ModelClient: Send + Sync {
    /// `openai`, `ollama`, `scripted`.
    fn provider(&self) -> &str;

    /// One answer to `req`; stops early when `cancel` fires.
    fn chat<'a>(&'a self, req: &'a ChatRequest, cancel: &'a CancellationToken) -> BoxFuture<'a, Result<ChatResponse>>;

    /// What the server says about itself; nothing, unless the provider knows how to ask. Never
    /// an error: a server that does not answer says nothing.
    fn server_info<'a>(&'a self, cancel: &'a CancellationToken) -> BoxFuture<'a, ServerInfo> {
        let _ = cancel;
        Box::pin(async { ServerInfo::default() })
    }
}
