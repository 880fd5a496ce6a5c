//! What the server's tests share: a server on a real SQLite file, on a free loopback port,
//! and a client for its API.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use steward_core::ids::SeqIds;
use steward_runtime::{Engine, EngineConfig, SystemClock};
use steward_server::{Readiness, Server, ServerConfig};
use steward_store_sqlite::{Options, SqliteStore};
use steward_tools::bus::ToolBus;
use steward_tools::redact::Redactor;
use steward_tools::registry::EngineRegistry;
use steward_tools::terminal::TerminalPolicy;
use tokio_util::sync::CancellationToken;

pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) token: Option<String>,
    pub(crate) engine: Engine<SqliteStore>,
    pub(crate) ready: Readiness,
    pub(crate) stop: CancellationToken,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn engine(dir: &std::path::Path) -> Engine<SqliteStore> {
    let store = SqliteStore::open(&dir.join("steward.db"), Options::default(), Arc::new(SeqIds::new("ev"))).unwrap();
    let bus = ToolBus::new(
        EngineRegistry::builtin().unwrap(),
        TerminalPolicy::default(),
        Redactor::new(Vec::new()),
        Arc::new(steward_artifacts::FsArtifacts::in_data_dir(dir)),
        steward_tools::sandbox::Sandbox::off(),
    );
    Engine::new(
        store,
        Arc::new(bus),
        Arc::new(SystemClock),
        Arc::new(SeqIds::new("t")),
        EngineConfig::new("test".into()),
    )
}

/// A server on a free loopback port (or `listen`), answering until the test ends.
pub(crate) async fn start(listen: &str, token: Option<&str>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let mut config = ServerConfig::new(listen.parse().unwrap(), dir.path().to_owned());
    config.token = token.map(str::to_owned);
    config.max_body_bytes = 64 * 1024;
    let server = Server::bind(config).await.unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let (ready, stop) = (Readiness::default(), CancellationToken::new());
    tokio::spawn(server.run(engine.clone(), ready.clone(), stop.clone()));
    let base = format!("http://127.0.0.1:{}", addr.port());
    Api { base, http: reqwest::Client::new(), token: token.map(str::to_owned), engine, ready, stop, dir }
}

impl Api {
    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}
