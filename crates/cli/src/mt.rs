//! `steward mt`: the micro-task executor's commands.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use steward_core::micro_task::definition::Verification;
use steward_core::micro_task::validate::Finding;
use steward_runtime::micro_task::{Plan, plan as make_plan};

use crate::config::Settings;
use crate::{print_json, print_text};

/// `steward mt plan PACKET`: the generated tasks and the full MT-VAL report.
pub(crate) fn plan(
    cfg: &Settings,
    packet: &Path,
    policy: Option<&Path>,
    root: Option<&Path>,
    profile: &str,
    json: bool,
) -> Result<ExitCode> {
    let bus = cfg.bus()?;
    let plan = make_plan(packet, policy, root, &bus, profile)?;
    if json {
        print_json(&json!({
            "wp_id": plan.packet.wp_id,
            "root": plan.root.display().to_string(),
            "valid": !plan.report.has_errors(),
            "execution_policy": plan.policy,
            "micro_tasks": plan.mts,
            "execution_waves": plan.waves,
            "report": plan.report,
        }))?;
    } else {
        print_text(&plan_text(&plan))?;
    }
    Ok(if plan.report.has_errors() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn plan_text(plan: &Plan) -> String {
    let mut s = format!(
        "work packet {}: {} micro-task(s) in {} wave(s), root {}\n",
        plan.packet.wp_id,
        plan.mts.len(),
        plan.waves.len(),
        plan.root.display()
    );
    for mt in &plan.mts {
        s.push_str(&format!("\n{}  {}\n", mt.mt_id, mt.name));
        if !mt.depends_on.is_empty() {
            s.push_str(&format!("  depends on: {}\n", mt.depends_on.join(", ")));
        }
        for (what, files) in [("read", &mt.files.read), ("modify", &mt.files.modify), ("create", &mt.files.create)] {
            if !files.is_empty() {
                s.push_str(&format!("  {what:<7} {}\n", files.join(", ")));
            }
        }
        for v in &mt.verify {
            let blocking = if v.blocking { "" } else { ", non-blocking" };
            s.push_str(&format!("  verify  `{}` ({}{blocking})\n", v.command, v.expect.as_str()));
        }
        for d in &mt.done {
            let how = match d.verification {
                Verification::Automated => "automated",
                Verification::EvidenceRequired => "evidence",
            };
            s.push_str(&format!("  done    [{how}] {}\n", d.description));
        }
        s.push_str(&format!(
            "  budget  {} tokens, tier {}, tags {}\n",
            mt.token_budget,
            mt.execution_tier.as_str(),
            mt.task_tags.join(",")
        ));
    }
    let section = |s: &mut String, title: &str, items: &[Finding]| {
        if !items.is_empty() {
            s.push_str(&format!("\n{title}:\n"));
            for f in items {
                s.push_str(&format!("  {f}\n"));
            }
        }
    };
    section(&mut s, "errors", &plan.report.errors);
    section(&mut s, "warnings", &plan.report.warnings);
    section(&mut s, "info", &plan.report.infos);
    s.push_str(if plan.report.has_errors() { "\nMT-VAL: blocked (fix the errors above)\n" } else { "\nMT-VAL: ok\n" });
    s
}
