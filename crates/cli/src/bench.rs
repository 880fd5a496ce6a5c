//! `steward bench`: durable step latency (B1), throughput under concurrency (B2), the same
//! throughput through workers claiming from the database with their claim-to-start latency (W),
//! the cost of a step as one run grows long (L), and recovery and listing at scale (R).
//!
//! Every figure comes from the real engine on a real database (a fresh SQLite file with the
//! chosen durability, or the PostgreSQL database `--database-url` names), running `noop` steps
//! so that what is measured is the engine and its commits, not the steps.

use crate::outln;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};
use steward_core::state::RunState;
use steward_runtime::{CreateRun, Engine, EngineConfig, Handoff, SystemClock, UuidIds, WorkerOptions};
use steward_store::Store;
use steward_store_sqlite::{Durability, Options, SqliteStore};
use tokio_util::sync::CancellationToken;

use crate::app::Db;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DurabilityArg {
    /// synchronous=FULL: survives power loss (the default everywhere).
    Full,
    /// synchronous=NORMAL: survives a process crash only.
    ProcessCrash,
}

#[derive(Debug, Clone, Args)]
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
    /// Which workloads: all, b1, b2, w (workers) or l (one long run).
    #[arg(long, default_value = "all")]
    only: String,
    /// R: runs left `running` by a killed process, for the recovery scan to find.
    #[arg(long, default_value_t = 10_000)]
    recovery_runs: usize,
    /// R: runs in the database in all when `steward list` is timed (the rest are queued).
    #[arg(long, default_value_t = 100_000)]
    list_runs: usize,
    /// L: no-op steps in the one long run.
    #[arg(long, default_value_t = 10_000)]
    long_steps: usize,
    /// W: worker counts, comma-separated; each claims from the database and drives up to
    /// `--worker-concurrency` runs at once.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// W: runs each worker drives at once.
    #[arg(long, default_value_t = 32)]
    worker_concurrency: usize,
    /// W: runs submitted one at a time to idle workers, for the claim-to-start latency.
    #[arg(long, default_value_t = 100)]
    latency_runs: usize,
    /// Write durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Full)]
    durability: DurabilityArg,
    /// Keep the benchmark database here instead of a temporary directory.
    #[arg(long)]
    bench_dir: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Set from the global `--database-url` / `STEWARD_DATABASE_URL`.
    #[arg(skip)]
    database_url: Option<String>,
}

fn workflow_source(steps: usize) -> String {
    let mut s = format!("id: bench\nversion: 1\nlimits: {{max_total_iterations: {}}}\nsteps:\n", steps.max(1));
    for i in 0..steps.max(1) {
        s.push_str(&format!("  - {{id: s{i}, type: noop}}\n"));
    }
    s
}

/// Where a workload's runs are recorded.
struct Target {
    /// The SQLite file's directory, removed afterwards (artifacts live there on both backends).
    dir: tempfile::TempDir,
    /// PostgreSQL's URL, when the runs go there.
    url: Option<String>,
    durability: Durability,
}

impl Target {
    /// A new connection to the workload's database, as another process would open.
    async fn open(&self) -> Result<Db> {
        Ok(match &self.url {
            Some(url) => Db::Postgres(
                steward_store_postgres::PgStore::connect(url, Default::default(), Arc::new(UuidIds)).await?,
            ),
            None => Db::Sqlite(SqliteStore::open(
                &self.dir.path().join(crate::app::DB_FILE),
                Options { durability: self.durability, read_only: false },
                Arc::new(UuidIds),
            )?),
        })
    }

    /// A booted engine on a new connection.
    async fn engine(&self, owner: String, handoff: Handoff) -> Result<Engine<Db>> {
        let bus = steward_tools::bus::ToolBus::new(
            steward_tools::registry::EngineRegistry::builtin()?,
            steward_tools::terminal::TerminalPolicy::default(),
            steward_tools::redact::Redactor::default(),
            Arc::new(steward_artifacts::FsArtifacts::in_data_dir(self.dir.path())),
            // The workload's steps run no commands.
            steward_tools::sandbox::Sandbox::off(),
        );
        let mut config = EngineConfig::new(owner);
        config.handoff = handoff;
        config.data_dir = self.dir.path().to_owned();
        let engine = Engine::new(self.open().await?, Arc::new(bus), Arc::new(SystemClock), Arc::new(UuidIds), config);
        engine.boot().await?;
        Ok(engine)
    }
}

async fn target(args: &BenchArgs, label: &str) -> Result<Target> {
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
    Ok(Target { dir, url: args.database_url.clone(), durability })
}

async fn setup(args: &BenchArgs, label: &str) -> Result<(Engine<Db>, Target)> {
    let target = target(args, label).await?;
    let engine = target.engine(format!("bench:{}", std::process::id()), Handoff::Person).await?;
    Ok((engine, target))
}

/// A queued run of the bench workflow.
async fn submit(engine: &Engine<Db>, source: &str) -> Result<steward_store::Run> {
    Ok(engine
        .create_run(CreateRun {
            source: source.to_owned(),
            inputs: Map::new(),
            workdir: "/".into(),
            actor_id: "bench".into(),
            contract: steward_core::job::JobContract::workflow_run(),
        })
        .await?)
}

async fn one_run(engine: &Engine<Db>, source: &str) -> Result<()> {
    let run = submit(engine, source).await?;
    let done = engine.start(&run.run_id).await?;
    if done.state != RunState::Completed {
        bail!("bench run {} ended {}: {}", done.run_id, done.state, done.summary);
    }
    Ok(())
}

/// The CPU time this process has used, all its threads together (the engine, the SQLite writer
/// and the runtime), from `/proc/self/stat`; `None` where that is not there. On a shared
/// machine the wall clock also counts other tenants' time, this does not.
fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command's name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime (fields 14 and 15 of the whole line), in USER_HZ ticks: 100 a second.
    Some(std::time::Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// CPU milliseconds per step since `from` (see [`cpu_time`]).
fn cpu_ms_per_step(from: Option<std::time::Duration>, steps: usize) -> Value {
    match (from, cpu_time()) {
        (Some(a), Some(b)) if steps > 0 => {
            json!(round_to(b.saturating_sub(a).as_secs_f64() * 1000.0 / steps as f64, 4))
        }
        _ => Value::Null,
    }
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
    let cpu = cpu_time();
    for _ in 0..args.b1_runs {
        one_run(&engine, &source).await?;
    }
    let elapsed = started.elapsed();
    let steps = args.b1_runs * args.steps;
    let cpu = cpu_ms_per_step(cpu, steps);
    drop(engine);
    let mut samples = collector.await.unwrap_or_default();
    samples.sort_by(f64::total_cmp);
    Ok(json!({
        "runs": args.b1_runs,
        "steps_per_run": args.steps,
        "p50_ms": round(percentile(&samples, 0.50)),
        "p99_ms": round(percentile(&samples, 0.99)),
        "steps_per_sec": round(steps as f64 / elapsed.as_secs_f64()),
        "seconds": round(elapsed.as_secs_f64()),
        "cpu_ms_per_step": cpu,
    }))
}

/// B2: `concurrency` runs in flight at once until `runs` have completed.
async fn b2(args: &BenchArgs, concurrency: usize) -> Result<Value> {
    let (engine, _dir) = setup(args, "b2-").await?;
    let source = Arc::new(workflow_source(args.steps));
    let started = Instant::now();
    let cpu = cpu_time();
    let driver = engine.clone();
    in_flight(args.runs, concurrency, move |_| {
        let (engine, source) = (driver.clone(), source.clone());
        async move { one_run(&engine, &source).await }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "concurrency": concurrency,
        "runs": args.runs,
        "steps_per_run": args.steps,
        "runs_per_sec": round(args.runs as f64 / secs),
        "steps_per_sec": round((args.runs * args.steps) as f64 / secs),
        "seconds": round(secs),
        "cpu_ms_per_step": cpu_ms_per_step(cpu, args.runs * args.steps),
    }))
}

/// W: `runs` runs queued, then `workers` workers (each an engine on its own connection, as a
/// process of its own would have) claim and drive them; then, with the workers idle, runs
/// submitted one at a time, each timed from its creation until its first step is recorded as
/// started (the wake-up, the claim and the first step's commit).
async fn w(args: &BenchArgs, workers: usize) -> Result<Value> {
    let (submitter, target) = setup(args, "w-").await?;
    let source = workflow_source(args.steps);
    let mut ids = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        ids.push(submit(&submitter, &source).await?.run_id);
    }
    let mut engines = Vec::new();
    for i in 0..workers.max(1) {
        engines.push(target.engine(format!("bench-worker-{i}:{}", std::process::id()), Handoff::Workers).await?);
    }
    let opts = |exit_when_idle| WorkerOptions {
        concurrency: args.worker_concurrency.max(1),
        workdirs: Vec::new(),
        resume_stalled: false,
        poll: std::time::Duration::from_millis(50),
        grace: std::time::Duration::from_secs(5),
        exit_when_idle,
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for e in &engines {
        let (e, o) = (e.clone(), opts(true));
        tasks.push(tokio::spawn(async move { e.work(o, CancellationToken::new()).await }));
    }
    for t in tasks {
        t.await.context("bench worker panicked")??;
    }
    let secs = started.elapsed().as_secs_f64();
    for id in &ids {
        let run = submitter.store().get_run(id).await?;
        if run.state != RunState::Completed {
            bail!("bench run {id} ended {}: {}", run.state, run.summary);
        }
    }
    // Claim-to-start latency, with every worker idle and waiting.
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for e in &engines {
        let (e, o, stop) = (e.clone(), opts(false), stop.clone());
        tasks.push(tokio::spawn(async move { e.work(o, stop).await }));
    }
    let mut latency = Vec::new();
    for _ in 0..args.latency_runs {
        let run = submit(&submitter, &source).await?;
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                bail!("bench run {} was not started by an idle worker within 60 s", run.run_id);
            }
            // Until its first step is recorded as started: the wake-up, the claim's commit and
            // the first step's, all on the database.
            if let Some(first) = submitter.store().list_attempts(&run.run_id).await?.first() {
                latency.push(first.started_at.since(run.created_at) as f64);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    stop.cancel();
    for t in tasks {
        t.await.context("bench worker panicked")??;
    }
    latency.sort_by(f64::total_cmp);
    Ok(json!({
        "workers": workers,
        "runs": args.runs,
        "steps_per_run": args.steps,
        "runs_per_sec": round(args.runs as f64 / secs),
        "steps_per_sec": round((args.runs * args.steps) as f64 / secs),
        "seconds": round(secs),
        "claim_to_start_p50_ms": round(percentile(&latency, 0.50)),
        "claim_to_start_p99_ms": round(percentile(&latency, 0.99)),
    }))
}

/// L: one run of `long_steps` no-op steps, one after another; what a step costs (the time
/// between its commit and the one before, the median of the ten steps up to it) at steps 10,
/// 100, 1,000 and 10,000, so that a cost that grows with the run's history shows.
async fn long(args: &BenchArgs) -> Result<Value> {
    let (engine, _dir) = setup(args, "l-").await?;
    let n = args.long_steps.max(1);
    let mut source =
        format!("id: long\nversion: 1\nlimits: {{max_total_iterations: {n}, run_timeout_seconds: 86400}}\nsteps:\n");
    for i in 0..n {
        source.push_str(&format!("  - {{id: s{i}, type: noop}}\n"));
    }
    let run = submit(&engine, &source).await?;
    let mut updates = engine.subscribe();
    let run_id = run.run_id.clone();
    let collector = tokio::spawn(async move {
        // When each step's start was committed, by its index: a summary names the step that
        // its commit started (a lagging receiver loses some updates, never misplaces one).
        let mut at: Vec<Option<Instant>> = vec![None; n + 1];
        loop {
            match updates.recv().await {
                Ok(u) if u.run_id == run_id => {
                    let now = Instant::now();
                    let step = u.summary.strip_prefix("step s").and_then(|r| r.split(' ').next());
                    if let Some(i) = step.and_then(|i| i.parse::<usize>().ok()).filter(|&i| i < n) {
                        at[i + 1] = Some(now);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        at
    });
    let started = Instant::now();
    let cpu = cpu_time();
    let done = engine.start(&run.run_id).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_ms_per_step(cpu, n);
    if done.state != RunState::Completed {
        bail!("bench run {} ended {}: {}", done.run_id, done.state, done.summary);
    }
    drop(engine);
    let at = collector.await.unwrap_or_default();
    let mut points = Vec::new();
    for k in [10usize, 100, 1_000, 10_000, 100_000].into_iter().filter(|&k| k <= n) {
        let mut gaps: Vec<f64> = (k.saturating_sub(9).max(2)..=k)
            .filter_map(|i| Some(at.get(i).copied()??.duration_since(at.get(i - 1).copied()??).as_secs_f64() * 1000.0))
            .collect();
        gaps.sort_by(f64::total_cmp);
        if !gaps.is_empty() {
            points.push(json!({"step": k, "per_step_ms": round(percentile(&gaps, 0.5))}));
        }
    }
    Ok(json!({
        "steps": n,
        "events": done.last_event_seq,
        "seconds": round(elapsed.as_secs_f64()),
        "steps_per_sec": round(n as f64 / elapsed.as_secs_f64()),
        "cpu_ms_per_step": cpu,
        "per_step": points,
    }))
}

/// Does `job(0)` .. `job(total - 1)`, `concurrency` of them at a time: each of `concurrency`
/// tasks takes the next job as soon as its last one is done.
async fn in_flight<F, Fut>(total: usize, concurrency: usize, job: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, job) = (next.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                job(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("bench task panicked")??;
    }
    Ok(())
}

/// Creates `n` queued runs of `source`, many at a time (they share group commits).
async fn submit_many(engine: &Engine<Db>, source: &Arc<String>, n: usize) -> Result<()> {
    let (engine, source) = (engine.clone(), source.clone());
    in_flight(n, 256, move |_| {
        let (engine, source) = (engine.clone(), source.clone());
        async move { submit(&engine, &source).await.map(|_| ()) }
    })
    .await
}

/// R: `recovery_runs` runs are claimed in the name of a process that has been killed
/// (`process::exited`), so they are left `running` with their first step started; an engine's
/// recovery scan (`Engine::recover`, what `steward recover` and every start run first) is timed
/// finding them and marking each `stalled` with its events. Then the database is filled to
/// `list_runs` runs and what `steward list` does is timed over it: open the file read-only,
/// read the newest page, make its table.
async fn recovery(args: &BenchArgs) -> Result<Value> {
    let target = target(args, "r-").await?;
    let engine = target.engine(format!("bench:{}", std::process::id()), Handoff::Person).await?;
    let source = Arc::new(workflow_source(args.steps));
    let doomed_runs = args.recovery_runs;
    submit_many(&engine, &source, doomed_runs).await?;
    let identity = steward_tools::process::exited().context("cannot make a process to kill")?;
    let owner = steward_store::Owner { id: format!("bench-killed:{}", identity.pid), process: Some(identity) };
    let store = engine.store();
    let mut claimed = 0;
    while claimed < doomed_runs {
        let got = store
            .claim(steward_store::Claim {
                owner: owner.clone(),
                lease_ms: 3_600_000,
                limit: 1_000,
                run_id: None,
                workdirs: Vec::new(),
                resume_stalled: false,
                spare_owners: Vec::new(),
                now: steward_store::host_now(),
            })
            .await?;
        if got.is_empty() {
            bail!("only {claimed} of {doomed_runs} runs could be claimed");
        }
        claimed += got.len();
        // Each with its first step started, as a process killed mid-run leaves it.
        let (got, store, owner) = (Arc::new(got), store.clone(), Arc::new(owner.id.clone()));
        in_flight(got.len(), 256, move |i| {
            let (got, store, owner) = (got.clone(), store.clone(), owner.clone());
            async move {
                let c = &got[i];
                let mut commit = steward_store::Commit::new(
                    &c.run.run_id,
                    steward_store::Expect::held(c.run.lease_epoch),
                    steward_store::host_now(),
                    steward_core::event::Actor::System,
                    &owner,
                );
                commit.started.push(steward_store::AttemptStart {
                    step_id: "s0".into(),
                    attempt: 1,
                    visit: 1,
                    input: json!({"type": "noop"}),
                });
                store.commit(commit).await.map(|_| ()).map_err(Into::into)
            }
        })
        .await?;
    }
    let started = Instant::now();
    let recovered = engine.recover().await?;
    let recover_secs = started.elapsed().as_secs_f64();
    if recovered.len() != doomed_runs {
        bail!("the recovery scan found {} of the {doomed_runs} runs", recovered.len());
    }
    submit_many(&engine, &source, args.list_runs.saturating_sub(doomed_runs)).await?;
    drop(engine);
    let mut list_ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let store = SqliteStore::open(
            &target.dir.path().join(crate::app::DB_FILE),
            Options { durability: target.durability, read_only: true },
            Arc::new(UuidIds),
        )?;
        let filter = steward_store::RunFilter { limit: Some(crate::LIST_PAGE.saturating_add(1)), ..Default::default() };
        let table = crate::output::list_text(&store.list_runs(filter).await?);
        list_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if table.lines().count() < 2 {
            bail!("the list of {} runs came back empty", args.list_runs);
        }
    }
    list_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "recovered_runs": recovered.len(),
        "recover_seconds": round_to(recover_secs, 3),
        "list_runs": args.list_runs.max(doomed_runs),
        "list_ms_p50": round(percentile(&list_ms, 0.5)),
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
    round_to(x, 2)
}

fn round_to(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

pub(crate) async fn run(args: &BenchArgs, database_url: Option<String>) -> Result<std::process::ExitCode> {
    let args = &BenchArgs { database_url, ..args.clone() };
    let (want_b1, want_b2, want_w, want_l, want_r) = match args.only.as_str() {
        "all" => (true, true, true, true, true),
        "b1" => (true, false, false, false, false),
        "b2" => (false, true, false, false, false),
        "w" => (false, false, true, false, false),
        "l" => (false, false, false, true, false),
        "r" => (false, false, false, false, true),
        other => bail!("--only must be all, b1, b2, w, l or r, not `{other}`"),
    };
    let durability = match args.durability {
        DurabilityArg::Full => "full",
        DurabilityArg::ProcessCrash => "process-crash",
    };
    let backend = match &args.database_url {
        Some(_) => "PostgreSQL (--database-url)".to_owned(),
        None => format!("a fresh SQLite file per workload, durability {durability}"),
    };
    if !args.json {
        eprintln!("steward bench: {} steps per run, noop steps, on {backend}", args.steps);
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
        outln!("fsync of a small file here: {fsync} ms (the floor for one durable commit)")?;
    }
    let mut report = json!({
        "backend": if args.database_url.is_some() { "postgres" } else { "sqlite" },
        "durability": durability,
        "fsync_ms": fsync,
    });
    if want_b1 {
        let r = b1(args).await?;
        if !args.json {
            outln!(
                "B1  {} runs x {} steps, one at a time: per-step p50 {} ms, p99 {} ms ({} steps/s, {} ms of CPU a step)",
                r["runs"],
                r["steps_per_run"],
                r["p50_ms"],
                r["p99_ms"],
                r["steps_per_sec"],
                r["cpu_ms_per_step"]
            )?;
        }
        report["b1"] = r;
    }
    if want_b2 {
        let mut rows = Vec::new();
        for &c in &args.concurrency {
            let r = b2(args, c).await?;
            if !args.json {
                outln!(
                    "B2  {} runs x {} steps, concurrency {:>3}: {:>9} runs/s {:>10} steps/s ({} s, {} ms of CPU a step)",
                    r["runs"],
                    r["steps_per_run"],
                    c,
                    r["runs_per_sec"],
                    r["steps_per_sec"],
                    r["seconds"],
                    r["cpu_ms_per_step"]
                )?;
            }
            rows.push(r);
        }
        report["b2"] = Value::Array(rows);
    }
    if want_w {
        let mut rows = Vec::new();
        for &n in &args.workers {
            let r = w(args, n).await?;
            if !args.json {
                outln!(
                    "W   {} runs x {} steps, {n} workers x {}: {:>9} runs/s {:>10} steps/s ({} s); claim-to-start p50 {} ms, p99 {} ms",
                    r["runs"],
                    r["steps_per_run"],
                    args.worker_concurrency,
                    r["runs_per_sec"],
                    r["steps_per_sec"],
                    r["seconds"],
                    r["claim_to_start_p50_ms"],
                    r["claim_to_start_p99_ms"]
                )?;
            }
            rows.push(r);
        }
        report["w"] = Value::Array(rows);
    }
    if want_l {
        let r = long(args).await?;
        if !args.json {
            let points: Vec<String> = r["per_step"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("step {}: {} ms", p["step"], p["per_step_ms"]))
                .collect();
            outln!(
                "L   one run of {} steps ({} events): {} steps/s ({} s, {} ms of CPU a step); per step at {}",
                r["steps"],
                r["events"],
                r["steps_per_sec"],
                r["seconds"],
                r["cpu_ms_per_step"],
                points.join(", ")
            )?;
        }
        report["l"] = r;
    }
    if want_r && args.database_url.is_some() && args.only == "r" {
        bail!("--only r runs on SQLite only: `steward list` is timed on the bench's own data directory");
    }
    if want_r && args.database_url.is_none() {
        let r = recovery(args).await?;
        if !args.json {
            outln!(
                "R   {} runs left running by a killed process, found and stalled in {} s; `steward list` over {} runs: {} ms (p50 of 5, the process's start not counted)",
                r["recovered_runs"],
                r["recover_seconds"],
                r["list_runs"],
                r["list_ms_p50"]
            )?;
        }
        report["r"] = r;
    }
    if args.json {
        crate::print_json(&report)?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
