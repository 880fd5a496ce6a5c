//! `steward mt bench DIR`: every work packet of a directory run as a micro-task job on a fresh
//! copy, with what it cost and whether its ending was right.
//!
//! A packet is a directory holding `packet.yaml`; its `bench.yaml` (optional) says which ending
//! is right (`expect: completed | hard_gate`) and gives the hidden oracle (`check`: commands run
//! in the copy after the job, through the tool bus, never shown to the model). A completion the
//! oracle refutes, or one where the right ending was the hard gate, is a *false completion
//! accepted*: the figure that must stay 0. Each copy has its own data directory, so a bench
//! never writes into the runs of the directory it is started from.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use steward_core::job::{JobContract, JobKind, MICRO_TASK_PROFILE};
use steward_core::state::RunState;
use steward_micro_task::caps;
use steward_micro_task::decide::IterationOutcome;
use steward_micro_task::state::{PauseKind, ProgressArtifact};
use steward_runtime::CreateRun;
use steward_store::Store;
use steward_tools::bus::CallContext;
use steward_tools::exec::{Ending, Unrecorded};
use steward_tools::terminal::SessionKind;

use crate::config::Settings;
use crate::{mt, print_json, print_text};

/// The profile verify and check commands run under, as with `mt run`.
const PROFILE: &str = "Coder";

/// How long one oracle command may run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// A packet's `bench.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Expectation {
    /// What the packet is written in (reported, not interpreted).
    kind: Option<String>,
    /// The right ending.
    expect: Expected,
    /// The oracle.
    check: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expected {
    #[default]
    Completed,
    HardGate,
}

/// One packet's figures.
#[derive(Debug, Default, Serialize)]
struct Figures {
    packet: String,
    kind: Option<String>,
    expected: Expected,
    /// `completed`, `completed_with_issues`, `hard_gate:<reason>`, `pause_point`, `failed`,
    /// `poisoned`, or `error` (the job could not be run).
    ending: String,
    completed: bool,
    /// The ending is the expected one and the oracle agrees.
    as_expected: bool,
    /// The oracle's verdict (`None`: it has none).
    check_passed: Option<bool>,
    iterations: u32,
    escalations: u32,
    drop_backs: u32,
    false_completions_caught: u32,
    false_completions_accepted: u32,
    tokens: u64,
    wall_ms: u64,
    model_ms: u64,
    verify_ms: u64,
    /// Wall time less model calls and verify commands: the engine's own time.
    engine_ms: u64,
    engine_ms_per_iteration: f64,
    /// Why the job could not be run, or why it failed.
    error: Option<String>,
}

/// `steward mt bench DIR [--policy F] [--json] [--keep]`.
pub(crate) async fn bench(
    cfg: &Settings,
    dir: &Path,
    policy: Option<&Path>,
    json: bool,
    keep: bool,
) -> Result<ExitCode> {
    let dir = std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let policy = policy.map(std::path::absolute).transpose().context("cannot resolve the policy's path")?;
    let mut packets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the bench directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("packet.yaml").is_file())
        .collect();
    packets.sort();
    if packets.is_empty() {
        bail!("{}: no work packets (a packet is a directory with a packet.yaml)", dir.display());
    }
    let scratch =
        tempfile::Builder::new().prefix("steward-bench-").tempdir().context("cannot make a scratch directory")?;
    let mut all = Vec::new();
    for packet in &packets {
        let name = packet.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let copy = scratch.path().join(&name);
        let figures = match run_one(cfg, packet, &copy, policy.as_deref(), &name).await {
            Ok(f) => f,
            Err(e) => Figures {
                packet: name.clone(),
                ending: "error".into(),
                error: Some(format!("{e:#}")),
                ..Figures::default()
            },
        };
        if !json {
            eprintln!(
                "{name}: {}{} ({} iteration(s), {:.1}s)",
                figures.ending,
                if figures.as_expected { "" } else { " — NOT as expected" },
                figures.iterations,
                figures.wall_ms as f64 / 1000.0
            );
        }
        all.push(figures);
    }
    let total = totals(&all);
    if keep {
        let kept = scratch.keep();
        eprintln!("the copies are kept in {}", kept.display());
    }
    let ok = all.iter().all(|f| f.as_expected) && total.false_completions_accepted == 0;
    if json {
        print_json(&json!({"policy": policy, "packets": all, "total": total}))?;
    } else {
        print_text(&table(&all, &total))?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs one packet on a fresh copy of its directory, with a data directory of its own.
async fn run_one(cfg: &Settings, packet_dir: &Path, copy: &Path, policy: Option<&Path>, name: &str) -> Result<Figures> {
    copy_tree(packet_dir, copy).with_context(|| format!("cannot copy {}", packet_dir.display()))?;
    let expectation = read_expectation(&copy.join("bench.yaml"))?;
    let mut f = Figures {
        packet: name.to_owned(),
        kind: expectation.kind.clone(),
        expected: expectation.expect,
        ..Figures::default()
    };
    let settings = cfg.embedded_at(copy.join(".steward"));
    let engine = crate::booted(&settings).await?;
    let packet = copy.join("packet.yaml");
    let plan = steward_runtime::micro_task::plan(&packet, policy, None, engine.bus(), PROFILE)?;
    if plan.report.has_errors() {
        let errors: Vec<String> = plan.report.errors.iter().map(ToString::to_string).collect();
        bail!("MT-VAL blocked the packet: {}", errors.join("; "));
    }
    let req = CreateRun {
        source: mt::job_workflow(&plan.packet.wp_id, &packet, policy),
        inputs: Map::new(),
        workdir: copy.display().to_string(),
        actor_id: crate::actor(),
        contract: JobContract {
            job_kind: JobKind::MicroTaskExecution,
            profile_id: MICRO_TASK_PROFILE.to_owned(),
            protocol_id: MICRO_TASK_PROFILE.to_owned(),
        },
    };
    let started = Instant::now();
    let created = engine.create_run(req).await.with_context(|| format!("cannot start {name}"))?;
    let run = engine.start(&created.run_id).await?;
    f.wall_ms = millis(started.elapsed());
    let attempts = engine.store().list_attempts(&run.run_id).await?;
    let jobs = mt::jobs(&attempts, engine.bus().artifacts().as_ref()).await;
    let progress = jobs.first().and_then(|j| j.progress.clone());
    f.ending = match (run.state, progress.as_ref().and_then(|p| p.current_state.pause.as_ref())) {
        (RunState::AwaitingUser, Some(p)) if p.kind == PauseKind::HardGate => format!("hard_gate:{}", p.reason),
        (RunState::AwaitingUser, Some(_)) => "pause_point".into(),
        (state, _) => state.to_string(),
    };
    f.completed = matches!(run.state, RunState::Completed | RunState::CompletedWithIssues);
    if matches!(run.state, RunState::Failed | RunState::Poisoned) {
        f.error = run.terminal_reason.clone();
    }
    if let Some(p) = &progress {
        count(p, &mut f);
    }
    for e in engine.store().list_events(&run.run_id, 0).await? {
        let ms = |k: &str| e.payload[k].as_u64().unwrap_or(0);
        match e.event_type.as_str() {
            "llm_inference" => f.model_ms += ms("latency_ms"),
            "terminal_command" => f.verify_ms += ms("duration_ms"),
            _ => {}
        }
    }
    f.engine_ms = f.wall_ms.saturating_sub(f.model_ms + f.verify_ms);
    f.engine_ms_per_iteration = if f.iterations == 0 { 0.0 } else { f.engine_ms as f64 / f64::from(f.iterations) };
    if run.state == RunState::AwaitingUser {
        // The bench answers no gate: the run is set aside (and its stage with it).
        engine.cancel(&run.run_id, "mt-bench").await?;
    }
    if !expectation.check.is_empty() {
        f.check_passed = Some(oracle(engine.bus(), copy, &expectation.check).await);
    }
    let ending_right = match expectation.expect {
        Expected::Completed => f.completed,
        Expected::HardGate => f.ending.starts_with("hard_gate:"),
    };
    let oracle_ok = f.check_passed != Some(false);
    f.as_expected = ending_right && oracle_ok;
    // A completion is accepted falsely when the right ending was the gate, or the oracle refutes it.
    f.false_completions_accepted = u32::from(f.completed && !(ending_right && oracle_ok));
    Ok(f)
}

/// The counts a job's progress artifact holds.
fn count(p: &ProgressArtifact, f: &mut Figures) {
    let cs = &p.current_state;
    f.iterations = cs.total_iterations;
    f.escalations = cs.total_escalations;
    f.drop_backs = cs.total_drop_backs;
    f.tokens = caps::job_tokens(p);
    // A claim the verify commands or the evidence check refuted.
    f.false_completions_caught = p
        .micro_tasks
        .iter()
        .flat_map(|t| &t.iterations)
        .filter(|r| r.claimed_complete && r.validation_passed.is_some() && r.outcome != IterationOutcome::Success)
        .count() as u32;
}

/// Runs the oracle's commands through the tool bus in the packet's copy: all must exit 0.
async fn oracle(bus: &steward_tools::bus::ToolBus, copy: &Path, checks: &[String]) -> bool {
    let ctx = CallContext {
        job_id: "mt-bench".into(),
        trace_id: "mt-bench".into(),
        actor_id: "mt-bench".into(),
        ai_actor: false,
        session: SessionKind::HumanDev,
        session_id: "mt-bench".into(),
        workflow_id: String::new(),
        workspace_root: copy.to_owned(),
        idempotency_key: "mt-bench".into(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    for (i, command) in checks.iter().enumerate() {
        let op = bus.shell_op(&format!("mt-bench-check-{i}"), command, None, &[], CHECK_TIMEOUT, PROFILE);
        let executed = bus.execute(&op, &ctx, &cancel, &Unrecorded).await;
        if !executed.output.is_some_and(|o| o.ending == Ending::Exited(0)) {
            return false;
        }
    }
    true
}

fn read_expectation(path: &Path) -> Result<Expectation> {
    if !path.exists() {
        return Ok(Expectation::default());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc = steward_core::yaml::parse(&text).map_err(|errors| {
        anyhow::anyhow!("{}: {}", path.display(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    })?;
    serde_json::from_value(doc.to_json()).with_context(|| format!("{}: not a bench expectation", path.display()))
}

/// Copies a packet's directory: files and directories; a symbolic link is refused (a packet
/// that links outside itself would not be copied whole).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        } else {
            bail!("{} is not a file or a directory", entry.path().display());
        }
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The sums over every packet (`engine_ms_per_iteration` over every iteration).
fn totals(all: &[Figures]) -> Figures {
    let mut t = Figures { packet: "total".into(), ..Figures::default() };
    for f in all {
        t.iterations += f.iterations;
        t.escalations += f.escalations;
        t.drop_backs += f.drop_backs;
        t.false_completions_caught += f.false_completions_caught;
        t.false_completions_accepted += f.false_completions_accepted;
        t.tokens += f.tokens;
        t.wall_ms += f.wall_ms;
        t.model_ms += f.model_ms;
        t.verify_ms += f.verify_ms;
        t.engine_ms += f.engine_ms;
    }
    t.as_expected = all.iter().all(|f| f.as_expected);
    t.engine_ms_per_iteration = if t.iterations == 0 { 0.0 } else { t.engine_ms as f64 / f64::from(t.iterations) };
    t.ending = format!(
        "{}/{} completed, {}/{} as expected",
        all.iter().filter(|f| f.completed).count(),
        all.len(),
        all.iter().filter(|f| f.as_expected).count(),
        all.len()
    );
    t
}

fn table(all: &[Figures], total: &Figures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:<8} {:<34} {:>4} {:>4} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10}",
        "packet", "kind", "ending", "it", "esc", "caught", "accept", "tokens", "wall ms", "model ms", "engine/it"
    );
    for f in all.iter().chain(std::iter::once(total)) {
        let ending = if f.as_expected || f.packet == "total" {
            f.ending.clone()
        } else {
            format!("{} (expected {:?})", f.ending, f.expected)
        };
        let _ = writeln!(
            s,
            "{:<26} {:<8} {:<34} {:>4} {:>4} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10.1}",
            f.packet,
            f.kind.as_deref().unwrap_or("-"),
            ending,
            f.iterations,
            f.escalations,
            f.false_completions_caught,
            f.false_completions_accepted,
            f.tokens,
            f.wall_ms,
            f.model_ms,
            f.engine_ms_per_iteration
        );
        if let Some(e) = &f.error {
            let _ = writeln!(s, "    {e}");
        }
    }
    s
}
