//! `steward serve`: the HTTP API over this machine's engine, with an embedded worker.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use steward_runtime::{Handoff, WorkerOptions};
use steward_server::{Readiness, Server, ServerConfig};

use crate::args::ServeArgs;
use crate::config::Settings;

/// The address `steward serve` listens on unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:8420";

/// Binds (refusing a non-loopback address without a token before anything else), answers
/// `/healthz` at once and `/readyz` once the recovery scan has run, then works with the
/// embedded worker until SIGTERM or Ctrl-C, which drains it and stops the server.
pub(crate) async fn run(cfg: &Settings, args: &ServeArgs) -> Result<ExitCode> {
    let listen: SocketAddr = match args.listen {
        Some(l) => l,
        None => cfg.server_listen()?.map_or_else(|| DEFAULT_LISTEN.parse(), Ok)?,
    };
    let workspace = std::env::current_dir().context("cannot read the current directory")?;
    let mut config = ServerConfig::new(listen, workspace.clone());
    config.token = cfg.api_token().map(str::to_owned);
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    let engine = crate::app::engine_for(cfg, Handoff::Workers).await?;
    let (ready, stop) = (Readiness::default(), CancellationToken::new());
    let http = tokio::spawn(server.run(engine.clone(), ready.clone(), stop.clone()));
    eprintln!("serving http://{addr} (workspace {})", workspace.display());
    for r in engine.boot().await? {
        eprintln!("recovering: run {} was interrupted ({}); claims take it over", r.run_id, r.reason);
    }
    ready.set_ready();
    let draining = CancellationToken::new();
    let signals = crate::worker::drain_on_signals(&engine, &draining)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(4 * cores);
    let mut code = ExitCode::SUCCESS;
    if workers > 0 {
        eprintln!("embedded worker: up to {workers} runs at once");
        let opts = WorkerOptions {
            concurrency: workers,
            workdirs: Vec::new(),
            resume_stalled: true,
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(args.grace),
            exit_when_idle: false,
        };
        let report = engine.work(opts, draining.clone()).await?;
        for e in &report.errors {
            eprintln!("error: {e}");
            code = ExitCode::from(1);
        }
    } else {
        draining.cancelled().await;
    }
    signals.abort();
    stop.cancel();
    http.await.context("the HTTP server task failed")??;
    eprintln!("stopped serving http://{addr}");
    Ok(code)
}
