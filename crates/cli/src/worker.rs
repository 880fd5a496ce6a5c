//! `steward worker`: a long-lived process that claims runs from the database and drives them.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use steward_runtime::{Handoff, WorkerOptions};

use crate::args::WorkerArgs;
use crate::config::Settings;

/// Runs a worker until SIGTERM or Ctrl-C, then drains: nothing new is claimed, steps in flight
/// get `--grace` seconds to finish, and every run still held is handed back for a peer. A
/// second signal stops the steps at once.
pub(crate) async fn run(cfg: &Settings, args: &WorkerArgs) -> Result<ExitCode> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = args.concurrency.unwrap_or(4 * cores);
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !(args.poll.is_finite() && args.poll > 0.0) {
        bail!("--poll must be a positive number of seconds, not {}", args.poll);
    }
    let mut workdirs = Vec::new();
    for w in &args.workspaces {
        let dir = std::fs::canonicalize(w).with_context(|| format!("--workspace {}", w.display()))?;
        if !dir.is_dir() {
            bail!("--workspace {} is not a directory", w.display());
        }
        workdirs.push(dir.display().to_string());
    }
    let engine = crate::app::engine_for(cfg, Handoff::Workers).await?;
    for r in engine.boot().await? {
        eprintln!("recovering: run {} was interrupted ({}); claims take it over", r.run_id, r.reason);
    }
    let opts = WorkerOptions {
        concurrency,
        workdirs: workdirs.clone(),
        resume_stalled: !args.no_resume_stalled,
        poll: Duration::from_secs_f64(args.poll),
        grace: Duration::from_secs(args.grace),
        exit_when_idle: args.exit_when_idle,
    };
    let serves = if workdirs.is_empty() { "every workspace".to_owned() } else { workdirs.join(", ") };
    eprintln!("worker {} started: up to {concurrency} runs at once, serving {serves}", std::process::id());

    let stop = CancellationToken::new();
    let signals = drain_on_signals(&engine, &stop)?;
    let mut updates = engine.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(u) = updates.recv().await {
            eprintln!("[{}] {}: {}", u.run_id, u.state, u.summary);
        }
    });
    let report = engine.work(opts, stop).await?;
    printer.abort();
    signals.abort();
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if let Some(last) = &report.last_outage {
        eprintln!("{} rounds could not reach the store (retried); the last: {last}", report.outages);
    }
    eprintln!(
        "worker {} stopped: {} runs claimed, {} driven, {} late writes refused (the run was cancelled or taken over)",
        std::process::id(),
        report.claimed,
        report.driven,
        report.refused_writes
    );
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The first SIGTERM or Ctrl-C cancels `stop` (a drain: nothing new is claimed, steps get
/// their grace); a second one stops the steps at once.
pub(crate) fn drain_on_signals(
    engine: &steward_runtime::Engine<crate::app::Db>,
    stop: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut interrupts = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminates = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(tokio::spawn({
        let (stop, engine) = (stop.clone(), engine.clone());
        async move {
            let mut first = true;
            loop {
                let name = tokio::select! {
                    Some(()) = interrupts.recv() => "SIGINT",
                    Some(()) = terminates.recv() => "SIGTERM",
                    else => return,
                };
                if first {
                    first = false;
                    eprintln!("{name}: claiming nothing more; letting steps finish, then handing runs back");
                    stop.cancel();
                } else {
                    eprintln!("{name}: stopping the steps now");
                    engine.interrupt(name);
                    steward_tools::exec::hurry();
                }
            }
        }
    }))
}
