//! The conformance harness (§5.7): a table of negative cases every callable engine must refuse.
//!
//! Each case mutates a valid base operation for the engine and names the gate
//! that must deny it. An engine is callable only when the base passes every
//! gate and every case is denied by the expected gate.

use serde::Serialize;
use serde_json::json;

use crate::gates::{Gate, evaluate};
use crate::op::{BudgetSpec, Determinism, EvidencePolicy, OutputSpec, POE_SCHEMA_VERSION, PlannedOperation};
use crate::registry::EngineRegistry;

/// One row of the harness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// The case (`SchemaValidation`, ...).
    pub case: &'static str,
    /// The gate that must deny it (`None` for the valid base).
    pub expected: Option<Gate>,
    /// The gate that did.
    pub denied_by: Option<Gate>,
}

impl CaseResult {
    /// Whether the engine behaved as required.
    pub fn passed(&self) -> bool {
        self.expected == self.denied_by
    }
}

/// A valid operation for `engine.shell`/`exec`, as the harness starts from.
pub fn base_op() -> PlannedOperation {
    PlannedOperation {
        schema_version: POE_SCHEMA_VERSION.into(),
        op_id: "conformance-base".into(),
        engine_id: "engine.shell".into(),
        engine_version_req: None,
        operation: "exec".into(),
        inputs: Vec::new(),
        params: json!({"command": "true"}),
        capabilities_requested: vec!["fs.read".into(), "fs.write".into(), "proc.exec:true".into()],
        capability_profile_id: Some("Coder".into()),
        human_consent_obtained: false,
        budget: BudgetSpec {
            cpu_time_ms: Some(1000),
            wall_time_ms: Some(1000),
            memory_bytes: Some(1 << 20),
            output_bytes: Some(1 << 16),
        },
        determinism: Determinism::D1,
        evidence_policy: Some(EvidencePolicy { required: true, notes: None }),
        output_spec: OutputSpec { expected_types: vec!["artifact.terminal_output".into()], max_bytes: Some(1 << 16) },
    }
}

type Mutation = fn(&mut PlannedOperation);

/// The negative cases, each with the gate that must deny it.
pub fn cases() -> Vec<(&'static str, Gate, Mutation)> {
    vec![
        ("SchemaValidation", Gate::Schema, |op| op.schema_version = "invalid".into()),
        ("ParamsSchema", Gate::Schema, |op| op.params = json!({"cmd": "true"})),
        ("CapabilityDenial", Gate::Cap, |op| op.capabilities_requested.clear()),
        ("UnknownCapability", Gate::Cap, |op| op.capabilities_requested.push("magic.wand".into())),
        ("ProfileWithoutGrant", Gate::Cap, |op| op.capability_profile_id = Some("Analyst".into())),
        ("UnknownEngine", Gate::Cap, |op| op.engine_id = "engine.nope".into()),
        ("ArtifactOnlyIo", Gate::Integrity, |op| op.params = json!({"command": "x".repeat(33 * 1024)})),
        ("PathEscape", Gate::Integrity, |op| op.params = json!({"command": "true", "cwd": "../outside"})),
        ("BudgetEnforcement", Gate::Budget, |op| op.budget = BudgetSpec::default()),
        ("BudgetOverCap", Gate::Budget, |op| op.budget.wall_time_ms = Some(u64::MAX)),
        ("ProvenanceCompleteness", Gate::Provenance, |op| {
            op.determinism = Determinism::D0;
            op.evidence_policy = None;
        }),
        ("DeterminismEvidence", Gate::Det, |op| op.determinism = Determinism::D3),
    ]
}

/// Runs the base and every case through the gates of `registry`.
pub fn run(registry: &EngineRegistry) -> Vec<CaseResult> {
    let first_denial = |op: &PlannedOperation| evaluate(op, registry, &|_| true).denial().map(|d| d.gate);
    let mut out = vec![CaseResult { case: "ValidBase", expected: None, denied_by: first_denial(&base_op()) }];
    for (case, gate, mutate) in cases() {
        let mut op = base_op();
        mutate(&mut op);
        out.push(CaseResult { case, expected: Some(gate), denied_by: first_denial(&op) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §5.7: the shipped registry passes the whole harness, one negative fixture per gate.
    #[test]
    fn the_shell_engine_passes_the_conformance_harness() {
        let results = run(&EngineRegistry::builtin().unwrap());
        let failed: Vec<&CaseResult> = results.iter().filter(|r| !r.passed()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        for gate in Gate::ALL {
            assert!(results.iter().any(|r| r.expected == Some(gate)), "no negative fixture for {}", gate.name());
        }
    }

    #[test]
    fn denials_carry_codes_and_capability_decisions_are_recorded() {
        let r = EngineRegistry::builtin().unwrap();
        let mut op = base_op();
        op.capabilities_requested.push("magic.wand".into());
        let ev = evaluate(&op, &r, &|_| true);
        let d = ev.denial().unwrap();
        assert_eq!((d.gate, d.code.as_deref()), (Gate::Cap, Some("HSK-4001")));
        assert_eq!(ev.outcomes.len(), 2, "stops at the first denial");
        let allowed: Vec<(&str, bool)> =
            ev.capabilities.iter().map(|c| (c.capability_id.as_str(), c.allowed)).collect();
        assert_eq!(allowed, [("fs.read", true), ("fs.write", true), ("proc.exec:true", true), ("magic.wand", false)]);

        let mut op = base_op();
        op.capability_profile_id = Some("Analyst".into());
        let ev = evaluate(&op, &r, &|_| true);
        assert_eq!(
            ev.denial().unwrap().reason.as_deref(),
            Some("capability `fs.write` is not granted by profile Analyst")
        );
        assert!(evaluate(&base_op(), &r, &|_| true).denial().is_none());
        assert_eq!(evaluate(&base_op(), &r, &|_| true).outcomes.len(), 6);
    }
}
