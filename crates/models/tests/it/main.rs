//! Providers over real HTTP on loopback against a scripted server speaking each protocol.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steward_models::http::HttpConfig;
use steward_models::ollama::OllamaClient;
use steward_models::openai::OpenAiClient;
use steward_models::{ChatRequest, Error, Message, ModelClient, Role, UsageSource};
use steward_test_support::{ModelServer, Reply};
use tokio_util::sync::CancellationToken;

fn fast() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_millis(300),
        max_retries: 2,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

fn ask() -> ChatRequest {
    let mut options = serde_json::Map::new();
    options.insert("temperature".into(), 0.into());
    ChatRequest {
        model: "small".into(),
        messages: vec![Message { role: Role::User, content: "say hi".into() }],
        options,
        step_id: "s".into(),
        attempt: 1,
        idempotency_key: "run:s:1".into(),
    }
}

#[tokio::test]
async fn openai_sends_the_protocol_and_reads_usage() {
    let server = ModelServer::start(vec![Reply::openai("hi there")]).await;
    let client =
        OpenAiClient::new(&format!("{}/v1", server.url), Some("sk-test-key-123456789012345".into()), fast()).unwrap();
    let r = client.chat(&ask(), &CancellationToken::new()).await.unwrap();
    assert_eq!(
        (r.content.as_str(), r.provider.as_str(), r.model.as_str(), r.requests),
        ("hi there", "openai", "fake-model", 1)
    );
    assert_eq!(
        (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.source.clone()),
        (11, 7, UsageSource::Server)
    );
    let got = &server.received()[0];
    assert_eq!(got.request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(got.header("authorization"), Some("Bearer sk-test-key-123456789012345"));
    assert_eq!(got.header("idempotency-key"), Some("run:s:1"));
    let body = got.json();
    assert_eq!(
        (body["model"].as_str(), body["messages"][0]["role"].as_str(), body["temperature"].as_i64()),
        (Some("small"), Some("user"), Some(0))
    );
}

#[tokio::test]
async fn ollama_sends_the_protocol_and_reads_counts() {
    let server = ModelServer::start(vec![Reply::ollama("hello")]).await;
    let client = OllamaClient::new(&server.url, fast()).unwrap();
    let r = client.chat(&ask(), &CancellationToken::new()).await.unwrap();
    assert_eq!((r.content.as_str(), r.provider.as_str(), r.usage.total_tokens), ("hello", "ollama", 18));
    let got = &server.received()[0];
    assert_eq!(got.request_line, "POST /api/chat HTTP/1.1");
    assert_eq!((got.json()["stream"].as_bool(), got.json()["options"]["temperature"].as_i64()), (Some(false), Some(0)));
}

/// 429 and 5xx are retried with backoff (Retry-After honoured); 4xx is not.
#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let server = ModelServer::start(vec![
        Reply::status(429, "slow down").header("retry-after", "0"),
        Reply::status(503, "busy"),
        Reply::openai("finally"),
    ])
    .await;
    let client = OpenAiClient::new(&format!("{}/v1", server.url), None, fast()).unwrap();
    let r = client.chat(&ask(), &CancellationToken::new()).await.unwrap();
    assert_eq!((r.content.as_str(), r.requests), ("finally", 3));

    let server = ModelServer::start(vec![Reply::status(401, "bad key")]).await;
    let client = OpenAiClient::new(&format!("{}/v1", server.url), None, fast()).unwrap();
    let err = client.chat(&ask(), &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 401, .. }) && !err.is_retryable(), "{err}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn timeouts_malformed_answers_and_dead_servers_are_named() {
    let server = ModelServer::start(vec![Reply::openai("late").after(Duration::from_secs(2)); 3]).await;
    let client =
        OpenAiClient::new(&format!("{}/v1", server.url), None, HttpConfig { max_retries: 0, ..fast() }).unwrap();
    let err = client.chat(&ask(), &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err}");

    let server = ModelServer::start(vec![Reply::json(serde_json::json!({"choices": []}))]).await;
    let client = OpenAiClient::new(&format!("{}/v1", server.url), None, fast()).unwrap();
    let err = client.chat(&ask(), &CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.to_string(), "openai answered something that is not a chat response: no choices[0].message.content");

    let client = OllamaClient::new("http://127.0.0.1:9", HttpConfig { max_retries: 1, ..fast() }).unwrap();
    let err = client.chat(&ask(), &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Connect(..)), "{err}");

    let token = CancellationToken::new();
    token.cancel();
    let server = ModelServer::start(vec![Reply::openai("x").after(Duration::from_secs(5))]).await;
    let client = OpenAiClient::new(&format!("{}/v1", server.url), None, fast()).unwrap();
    assert_eq!(client.chat(&ask(), &token).await.unwrap_err(), Error::Cancelled);
}
