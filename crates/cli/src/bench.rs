//! `steward bench`: durable step latency (B1) and throughput under concurrency (B2).
//!
//! Every figure comes from the real engine on a real SQLite file with the
//! chosen durability, running `noop` steps so that what is measured is the
//! engine and its commits, not the steps.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};
use steward_core::state::RunState;
use steward_runtime::{CreateRun, Engine, EngineConfig, SystemClock, UuidIds};
use steward_store_sqlite::{Durability, Options, SqliteStore};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DurabilityArg {
    /// synchronous=FULL: survives power loss (the default everywhere).
    Full,
    /// synchronous=NORMAL: survives a process crash only.
    ProcessCrash,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Runs per B2 workload.
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Runs for B1.
    #[arg(long, default_value_t = 300)]
    b1_runs: usize,
    /// No-op steps per run.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// B2 concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Which workloads: b1, b2 or both.
    #[arg(long, default_value = "all")]
    only: String,
    /// Write durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Full)]
    durability: DurabilityArg,
    /// Keep the benchmark database here instead of a temporary directory.
    #[arg(long)]
    bench_dir: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn workflow_source(steps: usize) -> String {
    let mut s = format!("id: bench\nversion: 1\nlimits: {{max_total_iterations: {}}}\nsteps:\n", steps.max(1));
    for i in 0..steps.max(1) {
        s.push_str(&format!("  - {{id: s{i}, type: noop}}\n"));
    }
    s
}

async fn setup(args: &BenchArgs, label: &str) -> Result<(Engine<SqliteStore>, tempfile::TempDir)> {
    let dir = match &args.bench_dir {
        Some(base) => {
            std::fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
            tempfile::Builder::new().prefix(label).tempdir_in(base)?
        }
        None => tempfile::Builder::new().prefix("steward-bench-").tempdir()?,
    };
    let durability = match args.durability {
        DurabilityArg::Full => Durability::Full,
        DurabilityArg::ProcessCrash => Durability::ProcessCrash,
    };
    let store =
        SqliteStore::open(&dir.path().join("bench.db"), Options { durability, read_only: false }, Arc::new(UuidIds))?;
    let bus = steward_tools::bus::ToolBus::new(
        steward_tools::registry::EngineRegistry::builtin()?,
        steward_tools::terminal::TerminalPolicy::default(),
        steward_tools::redact::Redactor::default(),
        Arc::new(steward_artifacts::FsArtifacts::in_data_dir(dir.path())),
        // The workload's steps run no commands.
        steward_tools::sandbox::Sandbox::off(),
    );
    let engine = Engine::new(
        store,
        Arc::new(bus),
        Arc::new(SystemClock),
        Arc::new(UuidIds),
        EngineConfig { data_dir: dir.path().to_owned(), ..EngineConfig::new(format!("bench:{}", std::process::id())) },
    );
    engine.boot().await?;
    Ok((engine, dir))
}

async fn one_run(engine: &Engine<SqliteStore>, source: &str) -> Result<()> {
    let run = engine
        .create_run(CreateRun {
            source: source.to_owned(),
            inputs: Map::new(),
            workdir: "/".into(),
            actor_id: "bench".into(),
            contract: steward_core::job::JobContract::workflow_run(),
        })
        .await?;
    let done = engine.start(&run.run_id).await?;
    if done.state != RunState::Completed {
        bail!("bench run {} ended {}: {}", done.run_id, done.state, done.summary);
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// B1: one run at a time; per-step latency from consecutive step commits.
async fn b1(args: &BenchArgs) -> Result<Value> {
    let (engine, _dir) = setup(args, "b1-").await?;
    let source = workflow_source(args.steps);
    let mut updates = engine.subscribe();
    let collector = tokio::spawn(async move {
        let mut last: HashMap<String, Instant> = HashMap::new();
        let mut samples = Vec::new();
        while let Ok(u) = updates.recv().await {
            let now = Instant::now();
            if let Some(prev) = last.insert(u.run_id.clone(), now) {
                samples.push(now.duration_since(prev).as_secs_f64() * 1000.0);
            }
        }
        samples
    });
    let started = Instant::now();
    for _ in 0..args.b1_runs {
        one_run(&engine, &source).await?;
    }
    let elapsed = started.elapsed();
    drop(engine);
    let mut samples = collector.await.unwrap_or_default();
    samples.sort_by(f64::total_cmp);
    let steps = args.b1_runs * args.steps;
    Ok(json!({
        "runs": args.b1_runs,
        "steps_per_run": args.steps,
        "p50_ms": round(percentile(&samples, 0.50)),
        "p99_ms": round(percentile(&samples, 0.99)),
        "steps_per_sec": round(steps as f64 / elapsed.as_secs_f64()),
        "seconds": round(elapsed.as_secs_f64()),
    }))
}

/// B2: `concurrency` runs in flight at once until `runs` have completed.
async fn b2(args: &BenchArgs, concurrency: usize) -> Result<Value> {
    let (engine, _dir) = setup(args, "b2-").await?;
    let source = Arc::new(workflow_source(args.steps));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (engine, source, next, total) = (engine.clone(), source.clone(), next.clone(), args.runs);
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                one_run(&engine, &source).await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await.context("bench worker panicked")??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "concurrency": concurrency,
        "runs": args.runs,
        "steps_per_run": args.steps,
        "runs_per_sec": round(args.runs as f64 / secs),
        "steps_per_sec": round((args.runs * args.steps) as f64 / secs),
        "seconds": round(secs),
    }))
}

/// Milliseconds per fsync of a small file in `dir`: the floor for one durable commit.
fn fsync_ms(dir: &std::path::Path) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let n = 100;
    let started = Instant::now();
    for _ in 0..n {
        f.write_all(&[0u8; 128])?;
        f.sync_all()?;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(ms)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) async fn run(args: &BenchArgs) -> Result<std::process::ExitCode> {
    let (want_b1, want_b2) = match args.only.as_str() {
        "all" => (true, true),
        "b1" => (true, false),
        "b2" => (false, true),
        other => bail!("--only must be all, b1 or b2, not `{other}`"),
    };
    let durability = match args.durability {
        DurabilityArg::Full => "full",
        DurabilityArg::ProcessCrash => "process-crash",
    };
    if !args.json {
        eprintln!(
            "steward bench: {} steps per run, durability {durability} (noop steps, fresh SQLite file per workload)",
            args.steps
        );
    }
    let probe_dir = match &args.bench_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let fsync = round(fsync_ms(probe_dir.path())?);
    if !args.json {
        println!("fsync of a small file here: {fsync} ms (the floor for one durable commit)");
    }
    let mut report = json!({"durability": durability, "fsync_ms": fsync});
    if want_b1 {
        let r = b1(args).await?;
        if !args.json {
            println!(
                "B1  {} runs x {} steps, one at a time: per-step p50 {} ms, p99 {} ms ({} steps/s)",
                r["runs"], r["steps_per_run"], r["p50_ms"], r["p99_ms"], r["steps_per_sec"]
            );
        }
        report["b1"] = r;
    }
    if want_b2 {
        let mut rows = Vec::new();
        for &c in &args.concurrency {
            let r = b2(args, c).await?;
            if !args.json {
                println!(
                    "B2  {} runs x {} steps, concurrency {:>3}: {:>9} runs/s {:>10} steps/s ({} s)",
                    r["runs"], r["steps_per_run"], c, r["runs_per_sec"], r["steps_per_sec"], r["seconds"]
                );
            }
            rows.push(r);
        }
        report["b2"] = Value::Array(rows);
    }
    if args.json {
        crate::print_json(&report)?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
