//! The six global MEX gates (§5.5), run in order; the first denial stops the operation.
//!
//! Gates are pure: they read the operation, the registry and the capability
//! profiles and return outcomes as data. The bus records every outcome and
//! every capability decision as an event.

use serde::Serialize;

use steward_core::capability::{self, CapabilityId};

use crate::op::{MAX_INLINE_BYTES, POE_SCHEMA_VERSION, PlannedOperation};
use crate::registry::EngineRegistry;

/// A global gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Gate {
    /// Envelope and parameters match their schemas.
    #[serde(rename = "G-SCHEMA")]
    Schema,
    /// Capabilities are known, allowed by the engine and granted by the profile (default deny).
    #[serde(rename = "G-CAP")]
    Cap,
    /// Inline payloads are small; artifacts verify; paths are safe.
    #[serde(rename = "G-INTEGRITY")]
    Integrity,
    /// Budgets are set and within the engine's caps.
    #[serde(rename = "G-BUDGET")]
    Budget,
    /// Provenance and evidence requirements are stated.
    #[serde(rename = "G-PROVENANCE")]
    Provenance,
    /// The requested determinism is within the engine's ceiling.
    #[serde(rename = "G-DET")]
    Det,
}

impl Gate {
    /// In evaluation order.
    pub const ALL: [Gate; 6] = [Gate::Schema, Gate::Cap, Gate::Integrity, Gate::Budget, Gate::Provenance, Gate::Det];

    /// `G-SCHEMA`, ...
    pub fn name(self) -> &'static str {
        match self {
            Gate::Schema => "G-SCHEMA",
            Gate::Cap => "G-CAP",
            Gate::Integrity => "G-INTEGRITY",
            Gate::Budget => "G-BUDGET",
            Gate::Provenance => "G-PROVENANCE",
            Gate::Det => "G-DET",
        }
    }

    /// The gate with this name.
    pub fn from_name(name: &str) -> Option<Gate> {
        Gate::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// One gate's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateOutcome {
    /// Which gate.
    pub gate: Gate,
    /// Whether it passed.
    pub pass: bool,
    /// On denial: a machine-readable code (`HSK-4001`, `MEX-CAP-DENIED`, ...).
    pub code: Option<String>,
    /// On denial: why, for a person.
    pub reason: Option<String>,
}

/// One capability check made by G-CAP (DG-CAP-05).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapabilityDecision {
    /// The capability.
    pub capability_id: String,
    /// Allowed or denied.
    pub allowed: bool,
}

/// Every gate run, and the capability checks made.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Evaluation {
    /// Outcomes in order, up to and including the first denial.
    pub outcomes: Vec<GateOutcome>,
    /// Capability checks, allow and deny.
    pub capabilities: Vec<CapabilityDecision>,
}

impl Evaluation {
    /// The denial, if a gate denied.
    pub fn denial(&self) -> Option<&GateOutcome> {
        self.outcomes.iter().find(|o| !o.pass)
    }
}

type Verdict = Result<(), (String, String)>;

fn deny<T>(code: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
    Err((code.to_owned(), reason.into()))
}

/// Runs the gates in order, stopping at the first denial.
///
/// `artifact_ok` verifies an input artifact (present and hashing to its name).
pub fn evaluate(
    op: &PlannedOperation,
    registry: &EngineRegistry,
    artifact_ok: &dyn Fn(&crate::op::ArtifactHandle) -> bool,
) -> Evaluation {
    let mut ev = Evaluation::default();
    for gate in Gate::ALL {
        let verdict = match gate {
            Gate::Schema => schema(op, registry),
            Gate::Cap => cap(op, registry, &mut ev.capabilities),
            Gate::Integrity => integrity(op, artifact_ok),
            Gate::Budget => budget(op, registry),
            Gate::Provenance => provenance(op),
            Gate::Det => det(op, registry),
        };
        let pass = verdict.is_ok();
        let (code, reason) = match verdict {
            Ok(()) => (None, None),
            Err((c, r)) => (Some(c), Some(r)),
        };
        ev.outcomes.push(GateOutcome { gate, pass, code, reason });
        if !pass {
            break;
        }
    }
    ev
}

fn schema(op: &PlannedOperation, registry: &EngineRegistry) -> Verdict {
    if op.schema_version != POE_SCHEMA_VERSION {
        return deny(
            "MEX-SCHEMA-VERSION",
            format!("schema_version must be `{POE_SCHEMA_VERSION}`, found `{}`", op.schema_version),
        );
    }
    for (field, value) in [("op_id", &op.op_id), ("engine_id", &op.engine_id), ("operation", &op.operation)] {
        if value.trim().is_empty() {
            return deny("MEX-SCHEMA-FIELD", format!("`{field}` must not be empty"));
        }
    }
    // Parameters are checked against the operation's schema when it is known;
    // an unknown engine or operation is G-CAP's to refuse (default deny).
    if let Some(spec) = registry.engine(&op.engine_id).and_then(|e| e.op(&op.operation)) {
        if spec.schema_ref != op.schema_version {
            return deny("MEX-SCHEMA-REF", format!("operation `{}` takes `{}`", op.operation, spec.schema_ref));
        }
        let errors = spec.params_schema.check(&op.params);
        if !errors.is_empty() {
            return deny("MEX-SCHEMA-PARAMS", errors.join("; "));
        }
    }
    Ok(())
}

fn cap(op: &PlannedOperation, registry: &EngineRegistry, decisions: &mut Vec<CapabilityDecision>) -> Verdict {
    if op.capabilities_requested.is_empty() {
        return deny("MEX-CAP-NONE", "no capabilities requested (the bus denies by default)");
    }
    let Some(profile_id) = op.capability_profile_id.as_deref() else {
        return deny("MEX-CAP-PROFILE", "no capability profile named");
    };
    let Some(profile) = capability::profile(profile_id) else {
        return deny("MEX-CAP-PROFILE", format!("unknown capability profile `{profile_id}`"));
    };
    let Some(engine) = registry.engine(&op.engine_id) else {
        return deny("MEX-CAP-ENGINE", format!("engine `{}` is not registered or is disabled", op.engine_id));
    };
    let Some(spec) = engine.op(&op.operation) else {
        return deny("MEX-CAP-OPERATION", format!("engine `{}` has no operation `{}`", op.engine_id, op.operation));
    };
    let allowed_by_engine: Vec<CapabilityId> = engine
        .required_caps
        .iter()
        .chain(spec.capabilities.iter())
        .filter_map(|c| CapabilityId::parse(c).ok())
        .collect();
    let mut first_denial: Option<(String, String)> = None;
    for requested in &op.capabilities_requested {
        let id = match CapabilityId::parse(requested) {
            Ok(id) => id,
            Err(e) => {
                decisions.push(CapabilityDecision { capability_id: requested.clone(), allowed: false });
                first_denial.get_or_insert(("HSK-4001".into(), e.to_string()));
                continue;
            }
        };
        let by_engine = allowed_by_engine.iter().any(|g| g.covers(&id));
        let by_profile = profile.grants(&id);
        decisions.push(CapabilityDecision { capability_id: requested.clone(), allowed: by_engine && by_profile });
        if !by_engine {
            first_denial.get_or_insert((
                "MEX-CAP-ENGINE-SCOPE".into(),
                format!("engine `{}` operation `{}` may not use `{id}`", op.engine_id, op.operation),
            ));
        } else if !by_profile {
            first_denial.get_or_insert((
                "MEX-CAP-DENIED".into(),
                format!("capability `{id}` is not granted by profile {profile_id}"),
            ));
        }
    }
    match first_denial {
        Some((code, reason)) => Err((code, reason)),
        None => Ok(()),
    }
}

fn integrity(op: &PlannedOperation, artifact_ok: &dyn Fn(&crate::op::ArtifactHandle) -> bool) -> Verdict {
    let size = op.params.to_string().len();
    if size > MAX_INLINE_BYTES {
        return deny(
            "MEX-INTEGRITY-INLINE",
            format!("params are {size} bytes inline; more than {MAX_INLINE_BYTES} bytes must travel as an artifact"),
        );
    }
    for a in &op.inputs {
        let hex = a.hash.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return deny("MEX-INTEGRITY-HASH", format!("input `{}` is not a sha256 artifact handle", a.hash));
        }
        if !artifact_ok(a) {
            return deny(
                "MEX-INTEGRITY-ARTIFACT",
                format!("input artifact {} is missing or does not match its hash", a.hash),
            );
        }
    }
    // Paths in parameters are workspace-relative and stay inside it.
    if let Some(cwd) = op.params.get("cwd").and_then(|v| v.as_str()) {
        let p = std::path::Path::new(cwd);
        if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return deny("HSK-TERM-003", format!("cwd `{cwd}` must be a workspace-relative path without `..`"));
        }
    }
    Ok(())
}

fn budget(op: &PlannedOperation, registry: &EngineRegistry) -> Verdict {
    let b = &op.budget;
    if b.is_empty() {
        return deny("MEX-BUDGET-NONE", "no budget set (time, memory or output)");
    }
    if let (Some(max), Some(out)) = (op.output_spec.max_bytes, b.output_bytes)
        && max > out
    {
        return deny("MEX-BUDGET-OUTPUT", format!("output_spec.max_bytes {max} exceeds budget.output_bytes {out}"));
    }
    if let Some(engine) = registry.engine(&op.engine_id) {
        let cap = engine.default_budget;
        for (name, asked, limit) in [
            ("cpu_time_ms", b.cpu_time_ms, cap.cpu_time_ms),
            ("wall_time_ms", b.wall_time_ms, cap.wall_time_ms),
            ("memory_bytes", b.memory_bytes, cap.memory_bytes),
            ("output_bytes", b.output_bytes, cap.output_bytes),
        ] {
            if let (Some(asked), Some(limit)) = (asked, limit)
                && asked > limit
            {
                return deny(
                    "MEX-BUDGET-EXCEEDED",
                    format!("budget.{name} {asked} exceeds engine `{}`'s cap {limit}", op.engine_id),
                );
            }
        }
    }
    Ok(())
}

fn provenance(op: &PlannedOperation) -> Verdict {
    if op.determinism.needs_evidence() && !op.evidence_policy.as_ref().is_some_and(|e| e.required) {
        return deny(
            "MEX-PROVENANCE-EVIDENCE",
            format!("{} operations must require evidence (evidence_policy.required = true)", op.determinism),
        );
    }
    if op.capabilities_requested.is_empty() {
        return deny("MEX-PROVENANCE-CAPS", "provenance needs the capabilities requested");
    }
    Ok(())
}

fn det(op: &PlannedOperation, registry: &EngineRegistry) -> Verdict {
    let Some(engine) = registry.engine(&op.engine_id) else {
        return deny("MEX-DET-ENGINE", format!("engine `{}` is not registered", op.engine_id));
    };
    if op.determinism > engine.determinism_ceiling {
        return deny(
            "MEX-DET-CEILING",
            format!(
                "requested {} but engine `{}` promises at most {}",
                op.determinism, op.engine_id, engine.determinism_ceiling
            ),
        );
    }
    Ok(())
}
