//! The engine envelope (MEX v1.2 §5.2/§5.3): `poe-1.0` PlannedOperation in, EngineResult out.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only envelope version this bus accepts (DG-MEX-02).
pub const POE_SCHEMA_VERSION: &str = "poe-1.0";

/// Payloads larger than this travel as artifacts, never inline (DG-MEX-03).
pub const MAX_INLINE_BYTES: usize = 32 * 1024;

/// How reproducible an engine's result is (§5.4); serialised `d0`..`d3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Determinism {
    /// Live: not replayable without evidence.
    D0,
    /// Best effort: replay uses captured evidence.
    D1,
    /// Structural: same semantics.
    D2,
    /// Bitwise.
    D3,
}

impl Determinism {
    /// D0 = 0 < D1 < D2 < D3.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// Whether results at this level must carry evidence (DG-MEX-05).
    pub fn needs_evidence(self) -> bool {
        self <= Determinism::D1
    }
}

impl fmt::Display for Determinism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.rank())
    }
}

/// Resource caps for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// CPU time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// Wall-clock time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Output bytes per stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl BudgetSpec {
    /// Whether no cap is set.
    pub fn is_empty(&self) -> bool {
        self.cpu_time_ms.is_none()
            && self.wall_time_ms.is_none()
            && self.memory_bytes.is_none()
            && self.output_bytes.is_none()
    }
}

/// Whether the operation must leave evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidencePolicy {
    /// Evidence is required.
    pub required: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// What the operation is expected to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Artifact types.
    #[serde(default)]
    pub expected_types: Vec<String>,
    /// Upper bound on output size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// A content-addressed artifact (DG-MEX-04).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactHandle {
    /// `sha256:<64 hex>`.
    pub hash: String,
    /// Size in bytes.
    pub bytes: u64,
    /// What it holds, e.g. `text/plain`.
    pub media_type: String,
}

impl From<steward_artifacts::Handle> for ArtifactHandle {
    fn from(h: steward_artifacts::Handle) -> ArtifactHandle {
        ArtifactHandle { hash: h.hash, bytes: h.size, media_type: h.media_type }
    }
}

impl From<&ArtifactHandle> for steward_artifacts::Handle {
    fn from(a: &ArtifactHandle) -> steward_artifacts::Handle {
        steward_artifacts::Handle { hash: a.hash.clone(), size: a.bytes, media_type: a.media_type.clone() }
    }
}

/// The engine envelope an operation is planned in (`poe-1.0`, §11.8.4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedOperation {
    /// Must be `poe-1.0`.
    pub schema_version: String,
    /// Unique per operation.
    pub op_id: String,
    /// Which engine, e.g. `engine.shell`.
    pub engine_id: String,
    /// A version requirement on the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version_req: Option<String>,
    /// Which operation of the engine, e.g. `exec`.
    pub operation: String,
    /// Input artifacts.
    #[serde(default)]
    pub inputs: Vec<ArtifactHandle>,
    /// Engine-specific parameters, validated against the operation's schema.
    pub params: Value,
    /// Capability ids the operation needs.
    pub capabilities_requested: Vec<String>,
    /// The profile that must grant them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability_profile_id: Option<String>,
    /// A recorded human consent for what needs one.
    #[serde(default)]
    pub human_consent_obtained: bool,
    /// Resource caps.
    pub budget: BudgetSpec,
    /// Requested determinism.
    pub determinism: Determinism,
    /// Evidence requirement (required for D0/D1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_policy: Option<EvidencePolicy>,
    /// Expected output.
    pub output_spec: OutputSpec,
}

impl PlannedOperation {
    /// `mex.<engine segments>.<operation segments>`.
    pub fn tool_id(&self) -> String {
        format!("mex.{}.{}", self.engine_id.trim_start_matches("engine."), self.operation)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineStatus {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed.
    Failed,
    /// A gate or guard refused it; it did not run.
    Denied,
}

/// A typed error of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineError {
    /// Machine-readable, e.g. `G-CAP` or `HSK-TERM-003`.
    pub code: String,
    /// For a person.
    pub message: String,
    /// An artifact with details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_ref: Option<String>,
}

/// Where a result came from (§5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceRecord {
    /// The engine.
    pub engine_id: String,
    /// Its version.
    pub engine_version: String,
    /// Its implementation.
    pub implementation: String,
    /// The determinism it ran at.
    pub determinism: Determinism,
    /// SHA-256 of the redacted parameters.
    pub config_hash: String,
    /// Input artifact hashes.
    pub inputs: Vec<String>,
    /// Output artifact hashes.
    pub outputs: Vec<String>,
    /// Capabilities that were granted.
    pub capabilities_granted: Vec<String>,
    /// Environment identifiers (host, working directory).
    pub environment: Value,
}

/// What an engine returns (§11.8.4.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineResult {
    /// The operation.
    pub op_id: String,
    /// How it ended.
    pub status: EngineStatus,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: String,
    /// Output artifacts.
    pub outputs: Vec<ArtifactHandle>,
    /// Evidence artifacts (required for D0/D1).
    pub evidence: Vec<ArtifactHandle>,
    /// Where it came from; absent when it did not run.
    pub provenance: Option<ProvenanceRecord>,
    /// Errors, typed.
    pub errors: Vec<EngineError>,
    /// An artifact with logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_ref: Option<String>,
}
