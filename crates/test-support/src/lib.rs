//! Test doubles that speak the real protocol over the real transport (dev-dependency only).
//!
//! [`ModelServer`] is an HTTP/1.1 server on 127.0.0.1 that answers each request with the
//! next scripted reply (status, headers, body, optional delay) and records what it was
//! asked, so provider tests exercise real sockets, real JSON and real retries.
//! [`LlamaServer`] starts the real local model server when one is installed.
//! [`PgCluster`] starts a throwaway PostgreSQL cluster on a free loopback port, and
//! [`CutProxy`] forwards to it while cutting every connection on command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod cut;
mod llama;
pub mod pg;

pub use cut::CutProxy;
pub use llama::LlamaServer;
pub use pg::PgCluster;

/// One scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// Wait this long before answering (to provoke timeouts).
    pub delay: Duration,
}

impl Reply {
    /// A 200 with a JSON body.
    pub fn json(body: Value) -> Reply {
        Reply { status: 200, headers: Vec::new(), body: body.to_string(), delay: Duration::ZERO }
    }

    /// An error status with a text body.
    pub fn status(status: u16, body: &str) -> Reply {
        Reply { status, headers: Vec::new(), body: body.to_owned(), delay: Duration::ZERO }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Answers only after `d`.
    pub fn after(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// An OpenAI chat completion whose message is `content`, with usage.
    pub fn openai(content: &str) -> Reply {
        Reply::openai_usage(content, 11, 7)
    }

    /// An OpenAI chat completion whose message is `content`, saying it used these tokens.
    pub fn openai_usage(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Reply {
        Reply::json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        }))
    }

    /// An Ollama chat answer whose message is `content`, with counts.
    pub fn ollama(content: &str) -> Reply {
        Reply::json(json!({
            "model": "fake-model", "created_at": "2026-11-21T00:00:00Z",
            "message": {"role": "assistant", "content": content}, "done": true,
            "prompt_eval_count": 13, "eval_count": 5
        }))
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: std::time::Instant,
    /// `POST /v1/chat/completions`.
    pub request_line: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// How the server picks a reply.
type Responder = dyn Fn(&Received) -> Reply + Send + Sync;

/// A scripted HTTP server on loopback.
#[derive(Clone)]
pub struct ModelServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    probes: Arc<Mutex<Vec<Received>>>,
}

impl std::fmt::Debug for ModelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelServer").field("url", &self.url).finish_non_exhaustive()
    }
}

impl ModelServer {
    /// Starts a server that answers with `replies` in order, then 500s.
    pub async fn start(replies: Vec<Reply>) -> ModelServer {
        let replies = Mutex::new(VecDeque::from(replies));
        ModelServer::answering(move |_| {
            replies.lock().unwrap().pop_front().unwrap_or_else(|| Reply::status(500, "script exhausted"))
        })
        .await
    }

    /// Starts a server that answers each request with what `respond` makes of it. Questions
    /// about the server itself (`GET`s: llama.cpp's `/props`, `/lora-adapters`) are answered 404,
    /// as a hosted API does.
    pub async fn answering(respond: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> ModelServer {
        ModelServer::answering_probes(respond, |_| Reply::status(404, "not found")).await
    }

    /// As [`ModelServer::answering`], with `probe` answering the `GET`s (a llama.cpp server's
    /// `/props` and `/lora-adapters`); they are kept apart from the model calls ([`Self::probes`]).
    pub async fn answering_probes(
        respond: impl Fn(&Received) -> Reply + Send + Sync + 'static,
        probe: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> ModelServer {
        let respond: Arc<Responder> = Arc::new(respond);
        let probe: Arc<Responder> = Arc::new(probe);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = ModelServer { url, received: Arc::default(), probes: Arc::default() };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let s = s.clone();
                let (respond, probe) = (respond.clone(), probe.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut conn).await else { return };
                    let is_probe = req.request_line.starts_with("GET ");
                    let reply = if is_probe { probe(&req) } else { respond(&req) };
                    if is_probe { &s.probes } else { &s.received }.lock().unwrap().push(req);
                    tokio::time::sleep(reply.delay).await;
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&reply.body);
                    let _ = conn.write_all(out.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        server
    }

    /// The model calls it has been asked so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The questions about itself (`GET`s) it has been asked so far.
    pub fn probes(&self) -> Vec<Received> {
        self.probes.lock().unwrap().clone()
    }
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while buf.len() < header_end + len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..(header_end + len).min(buf.len())]).into_owned();
    Some(Received { at: std::time::Instant::now(), request_line, headers, body })
}
