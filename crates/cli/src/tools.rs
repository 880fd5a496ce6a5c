//! `steward tools check` and `steward capabilities`: the tool bus's decisions, shown without running anything.
//!
//! `tools check --from FILE` checks many commands in one process (the hostile corpus test uses it).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use steward_core::capability::{self, AXES, FULL_IDS};
use steward_core::job::JobKind;
use steward_tools::bus::{CallContext, Checked, ToolBus};
use steward_tools::op::PlannedOperation;
use steward_tools::terminal::SessionKind;

use crate::config::Settings;
use crate::{print_json, print_text};

/// The bus's decision on one command, as a shell step in `workspace` would get it.
fn decide(bus: &ToolBus, profile: &str, cwd: &str, command: &str, workspace: &Path) -> (PlannedOperation, Checked) {
    let cwd_param = (cwd != ".").then_some(cwd);
    let op = bus.shell_op(
        "tools-check",
        command,
        cwd_param,
        &[],
        bus.policy().timeout.min(Duration::from_secs(3600)),
        profile,
    );
    let ctx = CallContext {
        job_id: "tools-check".into(),
        trace_id: "tools-check".into(),
        actor_id: "cli".into(),
        ai_actor: false,
        session: SessionKind::HumanDev,
        session_id: "tools-check".into(),
        workflow_id: String::new(),
        workspace_root: workspace.to_owned(),
        idempotency_key: "tools-check".into(),
    };
    let checked = bus.check(&op, &ctx);
    (op, checked)
}

/// Checks every command read from `from` (`-`: standard input), one per line or NUL-separated,
/// in one process: a line each, `ALLOW`/`DENY`, or a JSON object each with `--json`.
pub(crate) fn check_many(
    cfg: &Settings,
    profile: &str,
    cwd: &str,
    from: &Path,
    null: bool,
    json: bool,
) -> Result<ExitCode> {
    let bus = cfg.bus()?;
    let workspace = std::env::current_dir()?;
    let mut input = Vec::new();
    if from == Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut input).context("cannot read commands from standard input")?;
    } else {
        input = std::fs::read(from).with_context(|| format!("cannot read commands from {}", from.display()))?;
    }
    let input = String::from_utf8(input).map_err(|e| anyhow::anyhow!("the commands are not UTF-8: {e}"))?;
    let separator = if null { '\0' } else { '\n' };
    let (mut allowed, mut denied) = (0usize, 0usize);
    let mut out = String::new();
    for command in input.split(separator).filter(|c| !c.trim().is_empty()) {
        let (_, checked) = decide(&bus, profile, cwd, command, &workspace);
        let shown = bus.redactor().redact(command).0;
        match &checked.refusal {
            None => allowed += 1,
            Some(_) => denied += 1,
        }
        if json {
            let v = json!({
                "command": shown,
                "allowed": checked.refusal.is_none(),
                "refusal": checked.refusal.as_ref().map(|r| json!({"by": r.by, "code": r.code, "reason": r.reason})),
            });
            out.push_str(&serde_json::to_string(&v)?);
            out.push('\n');
        } else {
            match &checked.refusal {
                None => out.push_str(&format!("ALLOW  {}\n", shown.replace('\n', "\\n"))),
                Some(r) => out.push_str(&format!("DENY   {}\n       {r}\n", shown.replace('\n', "\\n"))),
            }
        }
    }
    if !json {
        out.push_str(&format!("{} commands: {allowed} allowed, {denied} denied\n", allowed + denied));
    }
    print_text(&out)?;
    Ok(if denied == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Shows every gate, capability decision and guard for a command under a profile.
pub(crate) fn check(cfg: &Settings, profile: &str, cwd: &str, command: &[String], json: bool) -> Result<ExitCode> {
    let bus = cfg.bus()?;
    let command = command.join(" ");
    let workspace = std::env::current_dir()?;
    let (op, checked) = decide(&bus, profile, cwd, &command, &workspace);
    let allowed = checked.refusal.is_none();
    if json {
        print_json(&json!({
            "command": bus.redactor().redact(&command).0,
            "profile": profile,
            "allowed": allowed,
            "operation": bus.redactor().redact_json(&serde_json::to_value(&op)?),
            "gates": checked.evaluation.outcomes,
            "capabilities": checked.evaluation.capabilities,
            "refusal": checked.refusal.as_ref().map(|r| json!({"by": r.by, "code": r.code, "reason": r.reason})),
            "cwd": checked.cwd.as_ref().map(|p| p.display().to_string()),
        }))?;
    } else {
        let mut s = format!(
            "command:  {}\nprofile:  {profile}\nengine:   {}/{}\n",
            bus.redactor().redact(&command).0,
            op.engine_id,
            op.operation
        );
        s.push_str("gates:\n");
        for o in &checked.evaluation.outcomes {
            let detail =
                o.reason.as_deref().map(|r| format!("  {} {r}", o.code.as_deref().unwrap_or(""))).unwrap_or_default();
            s.push_str(&format!("  {:<13} {}{detail}\n", o.gate.name(), if o.pass { "pass" } else { "DENY" }));
        }
        s.push_str("capabilities:\n");
        for c in &checked.evaluation.capabilities {
            s.push_str(&format!("  {:<24} {}\n", c.capability_id, if c.allowed { "allow" } else { "DENY" }));
        }
        if checked.evaluation.denial().is_none() {
            let guard = match checked.refusal.as_ref() {
                Some(r) => format!("DENY  {} {}", r.code, r.reason),
                None => format!(
                    "pass  (runs in {})",
                    checked.cwd.as_ref().map_or_else(String::new, |p| p.display().to_string())
                ),
            };
            s.push_str(&format!("terminal: {guard}\n"));
        }
        s.push_str(&match &checked.refusal {
            None => "decision: allowed (nothing was run)\n".to_owned(),
            Some(r) => format!("decision: {r}\n"),
        });
        print_text(&s)?;
    }
    Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Lists profiles, what they grant, and which job kinds use them by default.
pub(crate) async fn capabilities(cfg: &Settings, json: bool) -> Result<ExitCode> {
    let profiles = capability::profiles();
    let kinds = |id: &str| -> Vec<&'static str> {
        JobKind::ALL.into_iter().filter(|k| capability::default_profile(*k) == id).map(JobKind::as_str).collect()
    };
    let bus = cfg.bus()?;
    let engines: Vec<Value> = bus
        .registry()
        .engines()
        .map(|e| json!({"engine_id": e.engine_id, "enabled": e.enabled, "ceiling": e.determinism_ceiling, "ops": e.ops.iter().map(|o| &o.name).collect::<Vec<_>>()}))
        .collect();
    let sandbox = bus.sandbox();
    let status = sandbox.status().await;
    let paths = |p: &[std::path::PathBuf]| p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
    let grants: Vec<Value> = sandbox
        .grants
        .iter()
        .map(|g| json!({"profile": g.profile, "workflow": g.workflow, "capabilities": g.capabilities}))
        .collect();
    let sandbox_json = json!({
        "mode": sandbox.mode,
        "available": status.is_ok(),
        "landlock_abi": status.as_ref().ok().and_then(|a| a.as_ref()).map(|a| a.landlock_abi),
        "reason": status.as_ref().err(),
        "hidden": paths(&sandbox.hidden),
        "read_only": paths(&sandbox.read_only),
        "protect_git": sandbox.protect_git,
        "grants": grants,
    });
    if json {
        let list: Vec<Value> = profiles
            .iter()
            .map(|p| json!({"id": p.id, "description": p.description, "grants": p.grants, "default_for_job_kinds": kinds(p.id)}))
            .collect();
        print_json(
            &json!({"profiles": list, "axes": AXES, "full_ids": FULL_IDS, "engines": engines, "sandbox": sandbox_json, "config": cfg.source().map(|p| p.display().to_string())}),
        )?;
    } else {
        let mut s = String::new();
        for p in &profiles {
            s.push_str(&format!(
                "{} — {}\n  grants: {}\n",
                p.id,
                p.description,
                p.grants.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
            s.push_str(&format!("  default for: {}\n", kinds(p.id).join(", ")));
        }
        s.push_str(&format!("\naxes (take a scope, e.g. proc.exec:cargo): {}\n", AXES.join(", ")));
        s.push_str(&format!("ids: {}\n", FULL_IDS.join(", ")));
        s.push_str("engines:\n");
        for e in bus.registry().engines() {
            let ops: Vec<&str> = e.ops.iter().map(|o| o.name.as_str()).collect();
            s.push_str(&format!(
                "  {} ({}, ceiling {}): {}\n",
                e.engine_id,
                if e.enabled { "enabled" } else { "disabled" },
                e.determinism_ceiling,
                ops.join(", ")
            ));
        }
        let mode = serde_json::to_value(sandbox.mode)?;
        let mode = mode.as_str().unwrap_or_default();
        s.push_str(&match &status {
            Ok(Some(a)) => format!("sandbox: {mode}; available (Landlock ABI {})\n", a.landlock_abi),
            Ok(None) => format!("sandbox: {mode}; commands run without one\n"),
            Err(reason) => format!("sandbox: {mode}; NOT available: {reason}\n"),
        });
        s.push_str(&format!("  hidden: {}\n", paths(&sandbox.hidden).join(", ")));
        if !sandbox.read_only.is_empty() {
            s.push_str(&format!("  read-only: {}\n", paths(&sandbox.read_only).join(", ")));
        }
        for g in &sandbox.grants {
            s.push_str(&format!(
                "  grant {} to {}{}\n",
                g.capabilities.join(", "),
                g.profile.as_deref().map_or("every profile".to_owned(), |p| format!("profile {p}")),
                g.workflow.as_deref().map_or(String::new(), |w| format!(", workflow {w}"))
            ));
        }
        print_text(&s)?;
    }
    Ok(ExitCode::SUCCESS)
}
