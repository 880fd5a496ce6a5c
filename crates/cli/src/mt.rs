//! `steward mt`: the micro-task executor's commands.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use steward_core::job::{JobContract, JobKind, MICRO_TASK_PROFILE};
use steward_micro_task::caps::Effect;
use steward_micro_task::definition::Verification;
use steward_micro_task::validate::Finding;
use steward_runtime::CreateRun;
use steward_runtime::micro_task::{Plan, plan as make_plan};

use crate::config::Settings;
use crate::{print_json, print_text};

/// The profile verify commands of `mt run` run under (the workflow default).
const RUN_PROFILE: &str = "Coder";

/// How long an `mt run` run may take, waits for a person included: the job's own
/// `max_duration_ms` bounds the work (its hard gate), so this only guards against a run left
/// waiting forever.
const RUN_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;

/// `steward mt run PACKET`: checks the packet, then runs it as a `micro_task_execution` job whose
/// workflow is a single `micro_tasks` step.
pub(crate) async fn run(
    cfg: &Settings,
    packet: &Path,
    policy: Option<&Path>,
    detach: bool,
    json: bool,
) -> Result<ExitCode> {
    let absolute = |p: &Path| std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()));
    let packet = absolute(packet)?;
    let policy = policy.map(absolute).transpose()?;
    let bus = cfg.bus()?;
    let plan = make_plan(&packet, policy.as_deref(), None, &bus, RUN_PROFILE)?;
    if plan.report.has_errors() {
        // MT-VAL: an ERROR blocks the job; the full report says why.
        eprint!("{}", plan_text(&plan));
        return Ok(ExitCode::from(1));
    }
    let source = job_workflow(&plan.packet.wp_id, &packet, policy.as_deref());
    let req = CreateRun {
        source,
        inputs: Map::new(),
        workdir: plan.root.display().to_string(),
        actor_id: crate::actor(),
        contract: JobContract {
            job_kind: JobKind::MicroTaskExecution,
            profile_id: MICRO_TASK_PROFILE.to_owned(),
            protocol_id: MICRO_TASK_PROFILE.to_owned(),
        },
    };
    crate::launch(cfg, req, &packet.display().to_string(), detach, json).await
}

/// The one-step workflow a micro-task job runs.
pub(crate) fn job_workflow(wp_id: &str, packet: &Path, policy: Option<&Path>) -> String {
    let id: String = wp_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    // JSON strings are YAML double-quoted scalars: any path survives.
    let quote = |p: &Path| Value::String(p.display().to_string()).to_string();
    let mut s = format!(
        "# The micro-task job of work packet {id}, written by `steward mt run`.\n\
         id: mt-{id}\nversion: 1\nlimits: {{run_timeout_seconds: {RUN_TIMEOUT_SECONDS}}}\nsteps:\n  \
         - id: micro_tasks\n    type: micro_tasks\n    packet: {}\n",
        quote(packet)
    );
    if let Some(p) = policy {
        let _ = writeln!(s, "    policy: {}", quote(p));
    }
    s
}

pub(crate) use steward_server::views::{JobView, micro_task_jobs as jobs, micro_task_jobs_json as jobs_json};

pub(crate) fn jobs_text(jobs: &[JobView], run_id: &str) -> String {
    let mut s = String::new();
    for j in jobs {
        let _ = writeln!(s, "micro-task job {} (step {}):", j.job_id, j.step_id);
        let _ = writeln!(s, "  state:       {}", j.state);
        let (Some(p), Some(m)) = (&j.progress, j.metrics()) else {
            let _ = writeln!(s, "  (no progress recorded yet)");
            continue;
        };
        let _ = writeln!(s, "  status:      {}", p.status.as_str());
        let _ = writeln!(
            s,
            "  tasks:       {} total, {} completed, {} failed, {} skipped",
            m.total_mts, m.completed_mts, m.failed_mts, m.skipped_mts
        );
        let levels: Vec<String> = m.iterations_at_level.iter().map(|(l, n)| format!("level {l}: {n}")).collect();
        let _ = writeln!(
            s,
            "  iterations:  {} ({}), {} escalation(s), {} drop-back(s)",
            m.total_iterations,
            if levels.is_empty() { "none".to_owned() } else { levels.join(", ") },
            m.escalation_count,
            m.drop_back_count
        );
        let _ = writeln!(
            s,
            "  tokens:      {} prompt, {} completion; {:.1}s in iterations",
            m.total_tokens_prompt,
            m.total_tokens_completion,
            m.total_duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "  level 0:     {:.0}% of completed tasks; {} distillation candidate(s)",
            m.success_rate_level_0, m.distillation_candidates_generated
        );
        for t in m.mt_metrics.values() {
            let level = t.final_escalation_level.map_or("-".to_owned(), |l| l.to_string());
            let _ = writeln!(
                s,
                "  {}  {:<12} {} iteration(s), final level {level}",
                t.mt_id,
                t.status.as_str(),
                t.iterations
            );
        }
        let limits = steward_server::views::job_limits(p);
        let pair = |k: &str| (limits[k]["used"].as_u64().unwrap_or(0), limits[k]["limit"].as_u64().unwrap_or(0));
        let ((it, it_max), (tok, tok_max), (ms, ms_max)) = (pair("iterations"), pair("tokens"), pair("executing_ms"));
        let _ = writeln!(
            s,
            "  limits:      {it}/{it_max} iterations, {tok}/{tok_max} tokens, {:.1}s/{:.0}s executing",
            ms as f64 / 1000.0,
            ms_max as f64 / 1000.0
        );
        for c in &p.caps_reached {
            let _ = writeln!(
                s,
                "  cap reached: {} at {}: {} of {} {} ({})",
                c.cap.as_str(),
                c.mt_id,
                c.used,
                c.limit,
                c.cap.unit(),
                match c.effect {
                    Effect::Recorded => "recorded",
                    Effect::HardGate => "hard gate",
                    Effect::Poisoned => "poisoned",
                }
            );
        }
        if let Some(pause) = &p.current_state.pause {
            let _ = writeln!(
                s,
                "  waiting:     {} ({}) at {}: `steward gate {run_id} continue`, `skip` or `abort`",
                pause.kind.as_str(),
                pause.reason,
                pause.mt_id
            );
        }
    }
    s
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use steward_core::workflow::{StepKind, parse};

    /// Any packet path and packet id survive the generated definition.
    #[test]
    fn the_job_workflow_names_any_path_exactly() {
        let packet = Path::new("/tmp/a dir/it's \"quoted\" # not: a comment/ünï/packet.yaml");
        let policy = Path::new("/tmp/p\\olicy.yaml");
        let wf = parse(&job_workflow("WP 1\nid: evil", packet, Some(policy))).unwrap();
        assert_eq!(wf.id, "mt-WP_1_id__evil");
        let [step] = wf.steps.as_slice() else { panic!("one step") };
        let StepKind::MicroTasks(m) = &step.kind else { panic!("a micro_tasks step") };
        assert_eq!(Path::new(&m.packet), packet);
        assert_eq!(m.policy.as_deref().map(Path::new), Some(policy));
    }
}
