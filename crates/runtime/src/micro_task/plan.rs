//! `plan`: packet file → generated micro-tasks and the full validation report, with the checks
//! that need the filesystem (which files exist, symlinks) and the tool bus (DG-MT-19); and what
//! the chain's model servers say about themselves (their context windows for MT-VAL-006).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use steward_micro_task::definition::MicroTaskDefinition;
use steward_micro_task::generate::{execution_waves, generate};
use steward_micro_task::packet::{self, PacketError, WorkPacket};
use steward_micro_task::policy::{ExecutionPolicy, PolicyError};
use steward_micro_task::validate::{Limits, Report, Severity, recheck_context, validate};
use steward_models::ServerInfo;
use steward_tools::bus::{CallContext, ToolBus};
use steward_tools::terminal::SessionKind;

use super::executor::ModelFactory;

/// A packet read, decomposed and checked. It may run only when `report.has_errors()` is false.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The packet as read.
    pub packet: WorkPacket,
    /// The policy in force: `--policy` file, else the packet's own, else the defaults.
    pub policy: ExecutionPolicy,
    /// The directory the packet's paths are relative to.
    pub root: PathBuf,
    /// The generated micro-tasks.
    pub mts: Vec<MicroTaskDefinition>,
    /// Their execution waves.
    pub waves: Vec<Vec<String>>,
    /// MT-VAL-001..014, DG-MT-19 and the scope checks.
    pub report: Report,
}

/// Why no plan could be made at all.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A file could not be read. The reason is part of the message, not a separate source, so
    /// an error chain prints it once.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The packet is malformed.
    #[error("{path}: invalid work packet:\n{}", errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Packet {
        /// The packet file.
        path: PathBuf,
        /// Every problem, located.
        errors: Vec<PacketError>,
    },
    /// The policy file is malformed.
    #[error("{path}: {error}")]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong.
        error: PolicyError,
    },
}

impl Plan {
    /// Takes the context window each level's server reported over the configured one (issue 14
    /// point 4: the real window where the server says), and checks MT-VAL-006 again with them.
    pub fn apply_server_windows(&mut self, servers: &BTreeMap<u32, ServerInfo>) {
        let mut changed = false;
        for level in &mut self.policy.escalation_chain {
            if let Some(w) = servers.get(&level.level).and_then(|s| s.context_window)
                && level.context_window != Some(w)
            {
                level.context_window = Some(w);
                changed = true;
            }
        }
        if changed {
            recheck_context(&self.mts, self.policy.smallest_context_window(), &mut self.report);
        }
    }
}

/// Asks each model level's server about itself (its context window, its LoRA adapters), once per
/// job; a level whose client could not be built, or whose server says nothing, is absent.
pub async fn probe_servers(
    policy: &ExecutionPolicy,
    models: &ModelFactory,
    cancel: &tokio_util::sync::CancellationToken,
) -> BTreeMap<u32, ServerInfo> {
    let mut servers = BTreeMap::new();
    for level in policy.escalation_chain.iter().filter(|l| !l.stops_for_human()) {
        if let Ok(client) = models(level) {
            let info = client.server_info(cancel).await;
            if info != ServerInfo::default() {
                servers.insert(level.level, info);
            }
        }
    }
    servers
}

fn read(path: &Path) -> Result<String, PlanError> {
    std::fs::read_to_string(path).map_err(|error| PlanError::Io { path: path.to_owned(), error })
}

/// Reads `packet_path` (and `policy_path`, which wins over the packet's own policy), generates the
/// micro-tasks against the files under `root` (default: the packet's directory), and checks them.
/// `profile` is the capability profile the verify commands will run under.
pub fn plan(
    packet_path: &Path,
    policy_path: Option<&Path>,
    root: Option<&Path>,
    bus: &ToolBus,
    profile: &str,
) -> Result<Plan, PlanError> {
    let source = read(packet_path)?;
    let packet = packet::parse(&source).map_err(|errors| PlanError::Packet { path: packet_path.to_owned(), errors })?;
    let policy = match policy_path {
        Some(p) => {
            let text = read(p)?;
            let doc = steward_core::yaml::parse(&text).map_err(|e| PlanError::Policy {
                path: p.to_owned(),
                error: PolicyError {
                    field: "(document)".into(),
                    message: e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                },
            })?;
            ExecutionPolicy::from_json(&doc.to_json())
                .map_err(|error| PlanError::Policy { path: p.to_owned(), error })?
        }
        None => packet.execution_policy.clone().unwrap_or_default(),
    };
    let root = match root {
        Some(r) => r.to_owned(),
        None => packet_path.parent().map_or_else(|| PathBuf::from("."), Path::to_owned),
    };
    let root = if root.as_os_str().is_empty() { PathBuf::from(".") } else { root };
    let retry_budget = policy.max_iterations_per_mt.saturating_sub(1);
    let mts = generate(&packet, retry_budget, |p| root.join(p).is_file());
    let mut report = validate(
        &mts,
        &Limits { in_scope_paths: &packet.in_scope_paths, model_context_tokens: policy.smallest_context_window() },
    );
    // A path through a symlink could land anywhere: refuse it at creation (§2.6.6.8.15); the
    // executor checks again right before every write.
    for path in packet.in_scope_paths.iter().chain(&packet.read_paths) {
        let mut at = root.clone();
        for part in path.split('/') {
            at.push(part);
            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                report.add(
                    "MT-VAL-005",
                    Severity::Error,
                    None,
                    format!("`{path}` goes through a symlink (`{}`); symlinks are denied", at.display()),
                );
                break;
            }
        }
    }
    for point in &policy.pause_points {
        if !mts.iter().any(|m| &m.mt_id == point) {
            report.add(
                "MT-POLICY",
                Severity::Error,
                None,
                format!("pause point `{point}` is not one of the generated tasks ({})", ids(&mts)),
            );
        }
    }
    // DG-MT-19: every verify command must pass the tool bus's gates and guards before the job is
    // created, so a run never stalls on a command it could never have run.
    let ctx = CallContext {
        job_id: packet.wp_id.clone(),
        trace_id: packet.wp_id.clone(),
        actor_id: "micro_task_planner".into(),
        ai_actor: true,
        session: SessionKind::AiJob,
        session_id: packet.wp_id.clone(),
        workflow_id: String::new(),
        workspace_root: root.clone(),
        idempotency_key: packet.wp_id.clone(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for mt in &mts {
        for v in &mt.verify {
            if seen.contains(&v.command.as_str()) {
                continue;
            }
            seen.push(&v.command);
            let op =
                bus.shell_op("mt-plan", &v.command, None, &[], std::time::Duration::from_millis(v.timeout_ms), profile);
            if let Some(refusal) = bus.check(&op, &ctx).refusal {
                report.add(
                    "DG-MT-19",
                    Severity::Error,
                    Some(&mt.mt_id),
                    format!("verify command `{}` would be {refusal}", bus.redactor().redact(&v.command).0),
                );
            }
        }
    }
    let waves = execution_waves(&mts);
    Ok(Plan { packet, policy, root, mts, waves, report })
}

fn ids(mts: &[MicroTaskDefinition]) -> String {
    mts.iter().map(|m| m.mt_id.as_str()).collect::<Vec<_>>().join(", ")
}
