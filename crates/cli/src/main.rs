//! `steward`: the command line, and the one place that picks a store and wires the engine.
//!
//! Exit codes: 0 when the command succeeded (for `run`/`resume`: the run
//! completed), 1 when a run ended any other way, 2 for errors (bad input, a
//! missing run, an unreadable database), 128 + the signal's number when a run
//! was interrupted by SIGINT (130) or SIGTERM (143) and released for `resume`.
// Stdout is written through `print_text`/`print_json`/`outln!` only, which return an error
// where `println!` would panic on a reader gone away; clippy holds the line.
#![allow(clippy::print_stderr)]

mod app;
mod args;
mod bench;
mod config;
mod direclaw;
mod human;
mod mt;
mod mt_bench;
mod output;
mod recorder;
mod serve;
mod tools;
mod worker;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Map, Value, json};

use steward_core::job::JobContract;
use steward_core::state::HumanDecision;
use steward_core::state::RunState;
use steward_core::workflow;
use steward_runtime::{CreateRun, Engine};
use steward_store::{Run, RunFilter, Store};

use args::{Cli, Command};
use config::Settings;

/// How many runs `steward list` shows unless told otherwise.
pub(crate) const LIST_PAGE: u32 = 50;

/// mimalloc instead of glibc's malloc, whose arenas trimmed and refilled themselves with page
/// faults on every burst of allocation: a fifth of a step's CPU at 128 runs in flight
/// (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `steward __sandbox ...` is the sandbox launcher, for where `steward-sandbox` is not
    // installed beside this binary (`cargo run` builds only `steward`). It must run before the
    // async runtime starts threads: user namespaces refuse a multi-threaded caller.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if steward_tools::sandbox::is_launcher_call(&args) {
        std::process::exit(steward_tools::sandbox::launcher_main(args));
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(&cli)) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

pub(crate) fn print_json(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    // As an I/O error, so that a reader gone away is seen as one (`is_broken_pipe`).
    serde_json::to_writer_pretty(&mut out, v).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// `println!` that answers an error (a reader gone away ends the command quietly, see
/// `is_broken_pipe`) where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::print_text(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

pub(crate) fn print_text(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    Ok(())
}

async fn dispatch(cli: &Cli) -> Result<ExitCode> {
    let cfg = &Settings::load(cli)?;
    match &cli.command {
        Command::Run { file, given, detach, json } => run(cfg, file, given, *detach, *json).await,
        Command::Restart { run, from, detach, json } => {
            let engine = booted(cfg).await?;
            let created = engine
                .fork(run, Some(from), Map::new(), &actor())
                .await
                .with_context(|| format!("cannot restart run {run} from step {from}"))?;
            drive_created(cfg, engine, created, *detach, Shown::from_json(*json)).await
        }
        Command::Fork { run, from, given, detach, json } => {
            let engine = booted(cfg).await?;
            let parent = engine.store().get_run(run).await?;
            let source = engine.store().get_definition(&parent.definition_hash).await?;
            let given = gather_inputs(Path::new(run), &source, &given.inputs, given.input_file.as_deref())?;
            let created = engine
                .fork(run, from.as_deref(), given, &actor())
                .await
                .with_context(|| format!("cannot fork run {run}"))?;
            drive_created(cfg, engine, created, *detach, Shown::from_json(*json)).await
        }
        Command::Submit { file, given, json } => {
            let req = request(cfg, file, given)?;
            let engine = booted(cfg).await?;
            let what = file.display().to_string();
            let created = engine.create_run(req).await.with_context(|| format!("cannot submit {what}"))?;
            if *json {
                print_json(
                    &json!({"run_id": created.run_id, "state": created.state, "workflow_id": created.workflow_id}),
                )?;
            } else {
                outln!("{}", created.run_id)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait { run, json } => {
            let store = app::open_db_ro(cfg).await?;
            let done = wait_for(&store, run, *json).await?;
            let attempts = store.list_attempts(run).await?;
            let jobs = mt::jobs(&attempts, app::artifacts_of(cfg, &store).as_ref()).await;
            report_run(&done, &attempts, jobs, &cfg.redactor(), None, Shown::from_json(*json))
        }
        Command::Worker(w) => worker::run(cfg, w).await,
        Command::Serve(a) => serve::run(cfg, a).await,
        Command::Status { run, json } => {
            let store = app::open_db_ro(cfg).await?;
            let r = store.get_run(run).await?;
            if *json {
                print_json(&status_json(cfg, &store, &r).await?)?
            } else {
                let attempts = store.list_attempts(run).await?;
                let jobs = mt::jobs(&attempts, app::artifacts_of(cfg, &store).as_ref()).await;
                // A run of a DireClaw orchestrator file says which file and workflow.
                let origin = steward_server::views::origin_of(&store, &r).await;
                let text = output::status_text(&r, &attempts, origin.as_deref(), &cfg.redactor());
                print_text(&format!("{text}{}", mt::jobs_text(&jobs, &r.run_id)))?
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Progress { run, json } => {
            let store = app::open_db_ro(cfg).await?;
            let r = store.get_run(run).await?;
            if *json {
                print_json(&progress_json(cfg, &r)?)?
            } else {
                let mut p = output::progress_of(&r);
                p.summary = cfg.redactor().redact(&p.summary).0;
                print_text(&output::progress_text(&p))?
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List { state, limit, all, json } => {
            let state = state.as_deref().map(|s| s.parse::<RunState>()).transpose().map_err(|e| {
                anyhow::anyhow!("{e} (expected one of: {})", RunState::ALL.map(|s| s.as_str()).join(", "))
            })?;
            // The newest page by default: a store of a hundred thousand runs answers as fast as
            // one of ten. One run more than shown says whether there are more.
            let limit = (!*all).then(|| limit.unwrap_or(LIST_PAGE));
            let mut runs = match app::open_db_ro_if_any(cfg).await? {
                Some(store) => {
                    let filter = RunFilter { state, limit: limit.map(|l| l.saturating_add(1)), ..Default::default() };
                    store.list_runs(filter).await?
                }
                None => Vec::new(),
            };
            let more = limit.is_some_and(|l| runs.len() > l as usize);
            runs.truncate(limit.map_or(usize::MAX, |l| l as usize));
            if *json {
                print_json(&output::list_json(&runs, &cfg.redactor()))?
            } else {
                print_text(&output::list_text(&runs))?;
                if more {
                    eprintln!(
                        "(the newest {} shown; `steward list --limit N` or `steward list --all` for more)",
                        runs.len()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events(args) => recorder::events(cfg, args).await,
        Command::Gc { dry_run, json } => recorder::gc(cfg, *dry_run, *json).await,
        Command::Bundle { run, output } => recorder::bundle(cfg, run, output).await,
        Command::Validate { file, workflow, json } => validate(cfg, file, workflow.as_deref(), *json),
        Command::Tools(args::ToolsCommand::Check { profile, cwd, json, from: Some(from), null, .. }) => {
            tools::check_many(cfg, profile, cwd, from, *null, *json)
        }
        Command::Tools(args::ToolsCommand::Check { profile, cwd, json, from: None, command, .. }) => {
            tools::check(cfg, profile, cwd, command, *json)
        }
        Command::Capabilities { json } => tools::capabilities(cfg, *json).await,
        Command::Mt(args::MtCommand::Plan { packet, policy, root, profile, json }) => {
            mt::plan(cfg, packet, policy.as_deref(), root.as_deref(), profile, *json)
        }
        Command::Mt(args::MtCommand::Bench { dir, policy, keep, json }) => {
            mt_bench::bench(cfg, dir, policy.as_deref(), *json, *keep).await
        }
        Command::Mt(args::MtCommand::Run { packet, policy, detach, json }) => {
            mt::run(cfg, packet, policy.as_deref(), *detach, *json).await
        }
        Command::Gate { run, decision, reason, json } => {
            let decision = match decision {
                args::GateDecision::Continue => HumanDecision::Continue,
                args::GateDecision::Abort => HumanDecision::Abort,
                args::GateDecision::Skip => HumanDecision::Skip,
            };
            // Issue 11: human decisions come from humans, never from a step's command.
            if let Some(why) = human::inside_a_step() {
                bail!("a human decision cannot be recorded from inside a workflow step ({why})");
            }
            let engine = booted(cfg).await?;
            let started = engine.store().get_run(run).await?.created_at;
            cfg.check_unchanged_since(run, started)?;
            let done = follow(&engine, *json, engine.gate(run, &actor(), decision, reason.as_deref())).await?;
            report(&engine, done, Shown::from_json(*json)).await
        }
        Command::Approve { run, step, fields, comment, json } => {
            decide(cfg, run, step, HumanDecision::Approve, fields, comment.as_deref(), *json).await
        }
        Command::Reject { run, step, fields, comment, json } => {
            decide(cfg, run, step, HumanDecision::Reject, fields, Some(comment), *json).await
        }
        Command::Recover { json } => {
            let engine = app::engine(cfg).await?;
            let recovered = engine.recover().await?;
            if *json {
                print_json(&serde_json::to_value(&recovered)?)?;
            } else if recovered.is_empty() {
                outln!("no stalled runs (threshold {}s)", cfg.stall_threshold_secs)?;
            } else {
                for r in &recovered {
                    let hb = r.last_heartbeat_at.map_or("never".into(), |t| t.to_rfc3339());
                    outln!(
                        "stalled {} ({}), last heartbeat {hb}; resume with `steward resume {}`",
                        r.run_id,
                        r.workflow_id,
                        r.run_id
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { run, json } => {
            let engine = booted(cfg).await?;
            let started = engine.store().get_run(run).await?.created_at;
            cfg.check_unchanged_since(run, started)?;
            let done = follow(&engine, *json, engine.resume(run, &actor())).await?;
            report(&engine, done, Shown::from_json(*json)).await
        }
        Command::Cancel { run, json } => {
            let engine = app::engine(cfg).await?;
            let r = engine.cancel(run, &actor()).await?;
            if *json {
                print_json(&cancelled_json(cfg, &r))?;
            } else {
                outln!("run {} cancelled", r.run_id)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Workflow(command) => direclaw::workflow(cfg, command).await,
        Command::Bench(args) => bench::run(args, cfg.database_url.clone()).await,
        Command::Drive { run } => {
            let engine = booted(cfg).await?;
            let done = follow(&engine, true, engine.start(run)).await?;
            Ok(exit_code(&done))
        }
    }
}

pub(crate) use human::actor;

/// A run's progress snapshot as `steward progress --json` shows it, its summary redacted.
pub(crate) fn progress_json(cfg: &Settings, r: &Run) -> Result<Value> {
    let mut p = output::progress_of(r);
    p.summary = cfg.redactor().redact(&p.summary).0;
    Ok(serde_json::to_value(&p)?)
}

/// What `cancel --json` says of the run it cancelled (or found ended), its summary redacted.
pub(crate) fn cancelled_json(cfg: &Settings, r: &Run) -> Value {
    json!({"run_id": r.run_id, "state": r.state, "summary": cfg.redactor().redact(&r.summary).0})
}

/// A run as `steward status --json` shows it: the API's shape for `GET /api/v1/runs/{id}`.
pub(crate) async fn status_json(cfg: &Settings, store: &app::Db, r: &Run) -> Result<Value> {
    let attempts = store.list_attempts(&r.run_id).await?;
    let artifacts = app::artifacts_of(cfg, store);
    Ok(steward_server::views::run_with_jobs_json(store, r, &attempts, &cfg.redactor(), artifacts.as_ref()).await)
}

/// An engine whose recovery scan has run, so it may accept work.
pub(crate) async fn booted(cfg: &Settings) -> Result<Engine<app::Db>> {
    let engine = app::engine(cfg).await?;
    for r in engine.boot().await? {
        eprintln!(
            "recovered: run {} was interrupted ({}) and is now stalled; resume it with `steward resume {}`",
            r.run_id, r.reason, r.run_id
        );
    }
    Ok(engine)
}

/// `steward approve|reject RUN STEP`: a person's decision on an approval step, then the run
/// continued here if the decision left it for anyone to take.
async fn decide(
    cfg: &Settings,
    run: &str,
    step: &str,
    decision: HumanDecision,
    fields: &[String],
    comment: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    // Issue 11: human decisions come from humans, never from a step's command.
    if let Some(why) = human::inside_a_step() {
        bail!("a human decision cannot be recorded from inside a workflow step ({why})");
    }
    let fields = fields
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(anyhow::anyhow!("--field `{f}`: expected KEY=VALUE")),
        })
        .collect::<Result<Vec<_>>>()?;
    let engine = booted(cfg).await?;
    let started = engine.store().get_run(run).await?.created_at;
    cfg.check_unchanged_since(run, started)?;
    let d = steward_runtime::Decision { decision, fields, comment: comment.map(str::to_owned) };
    let done = follow(&engine, json, engine.approve(run, step, &actor(), &d)).await?;
    report(&engine, done, Shown::from_json(json)).await
}

/// Warnings about a definition that runs but should change: secrets written in it (issue 11),
/// and what a DireClaw file says that Steward reads differently or ignores.
fn warnings(cfg: &Settings, source: &str) -> Vec<workflow::Diagnostic> {
    let redactor = cfg.redactor();
    let mut all = workflow::literal_secrets(source, &|key, text| redactor.literal_secret(key, text));
    all.extend(workflow::compatibility_notes(source));
    all.sort_by_key(|d| d.line);
    all
}

fn validate(cfg: &Settings, file: &Path, workflow: Option<&str>, json: bool) -> Result<ExitCode> {
    let source = app::read_workflow(file, workflow)?;
    if workflow.is_none()
        && let Some(listed) = orchestrator_workflows(&source)
    {
        return validate_orchestrator(file, listed, &warnings(cfg, &source), json);
    }
    let workspace = std::env::current_dir().context("cannot read the current directory")?;
    let name = file.display();
    let warnings = warnings(cfg, &source);
    // The definition first; then what the tool bus would refuse before a run starts.
    let checked = workflow::parse(&source).and_then(|wf| {
        let bus = cfg.bus().map_err(|e| vec![workflow::Diagnostic::error(1, None, "", format!("{e:#}"))])?;
        let refused: Vec<workflow::Diagnostic> = bus
            .preflight(&wf, wf.profile(), &workspace)
            .into_iter()
            .map(|(step, refusal)| {
                let (i, line) =
                    wf.steps.iter().enumerate().find(|(_, s)| s.id == step).map_or((0, 1), |(i, s)| (i, s.line));
                workflow::Diagnostic::error(line, Some(step), format!("steps[{i}].run"), refusal.to_string())
            })
            .collect();
        if refused.is_empty() { Ok(wf) } else { Err(refused) }
    });
    match checked {
        Ok(wf) => {
            let ids: Vec<&str> = wf.steps.iter().map(|s| s.id.as_str()).collect();
            if json {
                let warnings: Vec<Value> = warnings.iter().map(steward_server::views::diagnostic_json).collect();
                print_json(
                    &json!({"file": name.to_string(), "valid": true, "workflow_id": wf.id, "capability_profile": wf.profile(), "steps": ids, "errors": [], "warnings": warnings}),
                )?;
            } else {
                // Warnings do not make a definition invalid: they are printed, and it is ok.
                print_text(&diagnostics(file, &warnings))?;
                outln!(
                    "{name}: ok: workflow {} v{}, {} steps ({}), profile {}",
                    wf.id,
                    wf.version,
                    ids.len(),
                    ids.join(", "),
                    wf.profile()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => invalid(file, errors, &warnings, json, json!({})),
    }
}

/// `validate`'s answer for a file with errors: every problem, warnings among them by line, or
/// the JSON document (with `fields` added); exit code 1.
fn invalid(
    file: &Path,
    mut errors: Vec<workflow::Diagnostic>,
    warnings: &[workflow::Diagnostic],
    json: bool,
    fields: Value,
) -> Result<ExitCode> {
    if json {
        let shown = |d: &[workflow::Diagnostic]| -> Vec<Value> {
            d.iter().map(steward_server::views::diagnostic_json).collect()
        };
        let mut v = json!({"file": file.display().to_string(), "valid": false, "errors": shown(&errors), "warnings": shown(warnings)});
        if let (Value::Object(v), Value::Object(fields)) = (&mut v, fields) {
            v.extend(fields);
        }
        print_json(&v)?;
    } else {
        errors.extend_from_slice(warnings);
        errors.sort_by_key(|d| d.line);
        print_text(&diagnostics(file, &errors))?;
    }
    Ok(ExitCode::from(1))
}

/// An orchestrator file's workflows after checking the whole file, or every problem in it;
/// `None` for a Steward workflow file.
fn orchestrator_workflows(
    source: &str,
) -> Option<Result<workflow::direclaw::OrchestratorFile, Vec<workflow::Diagnostic>>> {
    workflow::direclaw::is_orchestrator_text(source).then(|| workflow::direclaw::read(source))
}

/// `steward validate ORCHESTRATOR.yaml`: every workflow of the file checked, as DireClaw checks
/// it when it loads it.
fn validate_orchestrator(
    file: &Path,
    listed: Result<workflow::direclaw::OrchestratorFile, Vec<workflow::Diagnostic>>,
    warnings: &[workflow::Diagnostic],
    json: bool,
) -> Result<ExitCode> {
    let name = file.display().to_string();
    match listed {
        Ok(listed) => {
            let ids: Vec<&str> = listed.workflows.iter().map(|l| l.id.as_str()).collect();
            if json {
                let warnings_json: Vec<Value> = warnings.iter().map(steward_server::views::diagnostic_json).collect();
                print_json(
                    &json!({"file": name, "valid": true, "orchestrator": true, "workflows": ids, "errors": [], "warnings": warnings_json}),
                )?;
            } else {
                print_text(&diagnostics(file, warnings))?;
                outln!(
                    "{name}: ok: DireClaw orchestrator, {} workflow(s) ({}); run one with --workflow ID",
                    ids.len(),
                    ids.join(", ")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => invalid(file, errors, warnings, json, json!({"orchestrator": true})),
    }
}

/// `FILE:LINE: step, field: message` per problem (`warning: ` before a warning's), then a count.
pub(crate) fn diagnostics(file: &Path, diags: &[workflow::Diagnostic]) -> String {
    let name = file.display();
    let mut out = String::new();
    for d in diags {
        let severity = if d.severity == workflow::Severity::Warning { "warning: " } else { "" };
        out.push_str(&format!("{name}:{}: {severity}{}\n", d.line, d.describe()));
    }
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let warnings = diags.iter().filter(|d| d.severity == workflow::Severity::Warning).count();
    let errors = diags.len() - warnings;
    match (errors, warnings) {
        (0, 0) => {}
        (0, w) => out.push_str(&format!("{name}: {}\n", count(w, "warning"))),
        (e, 0) => out.push_str(&format!("{name}: {}\n", count(e, "error"))),
        (e, w) => out.push_str(&format!("{name}: {}, {}\n", count(e, "error"), count(w, "warning"))),
    }
    out
}

/// Reads `--input-file` and `--input` values, typing each by its declaration.
fn gather_inputs(file: &Path, source: &str, pairs: &[String], input_file: Option<&Path>) -> Result<Map<String, Value>> {
    let wf = workflow::parse(source)
        .map_err(|diags| anyhow::anyhow!("invalid workflow definition:\n{}", diagnostics(file, &diags).trim_end()))?;
    let mut inputs = Map::new();
    if let Some(path) = input_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read input file {}", path.display()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => inputs.extend(m),
            Ok(_) => bail!("input file {} must hold a JSON object", path.display()),
            Err(e) => bail!("input file {} is not valid JSON: {e}", path.display()),
        }
    }
    let mut errors = Vec::new();
    for pair in pairs {
        let Some((key, text)) = pair.split_once('=') else {
            errors.push(format!("--input `{pair}`: expected key=value"));
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            errors.push(format!("--input `{pair}`: the key is empty"));
            continue;
        }
        match steward_core::inputs::named_from_text(&wf, key, text) {
            Ok(v) => {
                inputs.insert(key.to_owned(), v);
            }
            Err(e) => errors.push(format!("--input {e}")),
        }
    }
    if !errors.is_empty() {
        bail!("invalid inputs:\n  {}", errors.join("\n  "));
    }
    Ok(inputs)
}

async fn run(cfg: &Settings, file: &Path, given: &args::InputArgs, detach: bool, json: bool) -> Result<ExitCode> {
    let req = request(cfg, file, given)?;
    check_agent_clis(file, &req.source)?;
    launch(cfg, req, &file.display().to_string(), detach, json).await
}

/// For a run this process drives: an agent CLI it cannot find is said now, before anything is
/// recorded. (`submit` leaves it to the workers, which may have other programs.)
pub(crate) fn check_agent_clis(file: &Path, source: &str) -> Result<()> {
    if let Ok(wf) = workflow::parse(source) {
        let missing = steward_runtime::missing_agent_clis(&wf, &Default::default());
        if !missing.is_empty() {
            bail!("cannot run {}:\n  {}", file.display(), missing.join("\n  "));
        }
    }
    Ok(())
}

/// A request for a run of a workflow file in the current directory, its warnings printed.
pub(crate) fn request(cfg: &Settings, file: &Path, given: &args::InputArgs) -> Result<CreateRun> {
    let source = app::read_workflow(file, given.workflow.as_deref())?;
    let inputs = gather_inputs(file, &source, &given.inputs, given.input_file.as_deref())?;
    // On stderr, so that `--json` output stays one document.
    eprint!("{}", diagnostics(file, &warnings(cfg, &source)));
    let workdir = std::env::current_dir().context("cannot read the current directory")?;
    Ok(CreateRun {
        source,
        inputs,
        workdir: workdir.display().to_string(),
        actor_id: actor(),
        contract: JobContract::workflow_run(),
    })
}

/// Creates a run and drives it in the foreground (or in a background driver with `detach`).
pub(crate) async fn launch(cfg: &Settings, req: CreateRun, what: &str, detach: bool, json: bool) -> Result<ExitCode> {
    let engine = booted(cfg).await?;
    let created = engine.create_run(req).await.with_context(|| format!("cannot start {what}"))?;
    drive_created(cfg, engine, created, detach, Shown::from_json(json)).await
}

/// How a command shows the run it drove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// Text on stdout.
    Text,
    /// One JSON document on stdout.
    Json,
    /// Text on stderr: stdout carries DireClaw's `key=value` lines (`steward workflow run`).
    TextOnStderr,
}

impl Shown {
    pub(crate) fn from_json(json: bool) -> Shown {
        if json { Shown::Json } else { Shown::Text }
    }
}

/// Drives a run just created in the foreground (or in a background driver with `detach`).
pub(crate) async fn drive_created(
    cfg: &Settings,
    engine: steward_runtime::Engine<app::Db>,
    created: Run,
    detach: bool,
    shown: Shown,
) -> Result<ExitCode> {
    let json = shown == Shown::Json;
    if detach {
        detach_drive(cfg, &created.run_id)?;
        match shown {
            Shown::Json => print_json(
                &json!({"run_id": created.run_id, "state": created.state, "summary": "started in the background"}),
            )?,
            Shown::Text => outln!("{}", created.run_id)?,
            Shown::TextOnStderr => {}
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!("run {} started ({})", created.run_id, created.workflow_id);
    }
    let done = follow(&engine, json, engine.start(&created.run_id)).await;
    if let Err(e) = &done
        && let Some(steward_runtime::Error::RunningElsewhere { owner, .. }) = e.downcast_ref()
    {
        // A worker claimed it first: this command follows it instead of driving it.
        if !json {
            eprintln!("run {} is driven by {owner}; following it", created.run_id);
        }
        let run = wait_for(engine.store(), &created.run_id, json).await?;
        let attempts = engine.store().list_attempts(&run.run_id).await?;
        let jobs = mt::jobs(&attempts, engine.bus().artifacts().as_ref()).await;
        return report_run(&run, &attempts, jobs, engine.bus().redactor(), None, shown);
    }
    report(&engine, done?, shown).await
}

/// Follows a run in the store until it no longer runs (or waits for a worker), with the live
/// progress line on a terminal. Reads only.
pub(crate) async fn wait_for<S: Store>(store: &S, run_id: &str, json: bool) -> Result<Run> {
    let live = !json && std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let run = store.get_run(run_id).await?;
        if !matches!(run.state, RunState::Queued | RunState::Running) {
            if live {
                eprint!("\r\x1b[2K");
            }
            return Ok(run);
        }
        let line = format!("[{}] {}: {}", run.run_id, run.state, run.summary);
        if live && line != last {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            last = line;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Starts `steward __drive RUN` in its own session so it outlives this process.
fn detach_drive(cfg: &Settings, run_id: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the steward executable")?;
    let data_dir = std::path::absolute(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    let mut driver = std::process::Command::new(exe);
    // The driver must run under exactly the settings the run was created with: the same
    // configuration file (its terminal policy, engines and secrets) and timings.
    if let Some(config) = cfg.source() {
        driver.arg("--config").arg(std::path::absolute(config).unwrap_or_else(|_| config.to_owned()));
    }
    driver
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--stall-threshold")
        .arg(cfg.stall_threshold_secs.to_string())
        .arg("--heartbeat-secs")
        .arg(cfg.heartbeat_secs.to_string())
        .arg("__drive")
        .arg(run_id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the background driver")?;
    Ok(())
}

/// A run as its driver left it, and the signal that stopped the driver, if one did.
struct Driven {
    run: Run,
    signal: Option<&'static str>,
}

/// Awaits a driven run, showing a live progress line on a terminal. SIGINT (Ctrl-C) or
/// SIGTERM stops the run's commands, records their attempts as interrupted and releases the
/// run for `steward resume`; a second one kills the commands without waiting for their grace.
async fn follow(
    engine: &Engine<app::Db>,
    json: bool,
    drive: impl std::future::Future<Output = steward_runtime::Result<Run>>,
) -> Result<Driven> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupts = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminates = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let live = !json && std::io::stderr().is_terminal();
    let mut updates = engine.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(u) = updates.recv().await {
            if live {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K[{}] {}: {}", u.run_id, u.state, u.summary);
                let _ = err.flush();
            }
        }
    });
    tokio::pin!(drive);
    let mut stopping: Option<&'static str> = None;
    let result = loop {
        let signal = tokio::select! {
            r = &mut drive => break r,
            Some(()) = interrupts.recv() => "SIGINT",
            Some(()) = terminates.recv() => "SIGTERM",
        };
        if stopping.is_some() {
            steward_tools::exec::hurry();
        } else {
            stopping = Some(signal);
            engine.interrupt(signal);
            if !json {
                eprintln!("\r\x1b[2K{signal}: stopping the run's commands (again to kill them at once)");
            }
        }
    };
    printer.abort();
    if live {
        eprint!("\r\x1b[2K");
    }
    Ok(Driven { run: result?, signal: stopping })
}

fn exit_code(done: &Driven) -> ExitCode {
    match (done.run.state, done.signal) {
        (RunState::Completed, _) => ExitCode::SUCCESS,
        (_, Some("SIGTERM")) => ExitCode::from(143),
        (_, Some(_)) => ExitCode::from(130),
        (_, None) => ExitCode::from(1),
    }
}

async fn report(engine: &Engine<app::Db>, done: Driven, shown: Shown) -> Result<ExitCode> {
    let attempts = engine.store().list_attempts(&done.run.run_id).await?;
    let jobs = mt::jobs(&attempts, engine.bus().artifacts().as_ref()).await;
    report_run(&done.run, &attempts, jobs, engine.bus().redactor(), done.signal, shown)
}

/// Prints how a run ended and answers `run`'s exit code for it.
fn report_run(
    run: &Run,
    attempts: &[steward_store::Attempt],
    jobs: Vec<mt::JobView>,
    redactor: &steward_tools::redact::Redactor,
    signal: Option<&'static str>,
    shown: Shown,
) -> Result<ExitCode> {
    if shown == Shown::Json {
        let mut v = output::finished_json(run, attempts, redactor);
        v["micro_task_jobs"] = mt::jobs_json(&jobs);
        if let Some(signal) = signal {
            v["interrupted_by"] = json!(signal);
        }
        print_json(&v)?;
    } else {
        let text = format!("{}{}", output::finished_text(run, attempts), mt::jobs_text(&jobs, &run.run_id));
        if shown == Shown::TextOnStderr {
            eprint!("{text}");
        } else {
            print_text(&text)?;
        }
        if let Some(signal) = signal
            && run.state == RunState::Stalled
        {
            eprintln!(
                "interrupted by {signal}: the stopped steps are recorded as interrupted, with their retries intact"
            );
        }
    }
    Ok(exit_code(&Driven { run: run.clone(), signal }))
}
