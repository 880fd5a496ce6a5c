//! Debug bundles: one tar archive with everything needed to understand a run, secrets redacted.
//!
//! Layout (HSK: `workflow_run` bundle scope):
//! - `manifest.json`: what is inside, with counts (`workflow_node_execution_count` is the number
//!   of lines of `workflow_node_executions.jsonl`: one compact JSON document per attempt);
//! - `run.json`: the run record;
//! - `workflow_node_executions.jsonl`: one line per step attempt;
//! - `events.jsonl`: the run's events in order;
//! - `artifacts/manifest.json` and `artifacts/<hash>`: every artifact the run references, verified.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::{Value, json};

use steward_artifacts::ArtifactStore;
use steward_core::event::Event;
use steward_store::{Attempt, Run};
use steward_tools::redact::Redactor;

/// What went into a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Step attempts.
    pub attempts: usize,
    /// Events.
    pub events: usize,
    /// Artifacts found and included.
    pub artifacts: usize,
}

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Writing the archive failed.
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be put as JSON.
    #[error("writing the bundle: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, BundleError>;

/// Artifact references inside a JSON value: `*_ref`/`*_hash` fields that name an
/// artifact, `evidence` lists, operation `inputs`, and `artifact:` environment values.
fn artifact_refs(v: &Value, key: &str, out: &mut BTreeSet<String>) {
    let names_artifact =
        key.ends_with("_ref") || key == "evidence" || key == "prompt_hash" || key == "response_hash" || key == "hash";
    match v {
        Value::String(s) if names_artifact && s.starts_with("sha256:") && s.len() == 71 => {
            out.insert(s.clone());
        }
        Value::String(s) if s.starts_with("artifact:sha256:") => {
            out.insert(s.trim_start_matches("artifact:").to_owned());
        }
        Value::Array(a) => a.iter().for_each(|x| artifact_refs(x, key, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| artifact_refs(x, k, out)),
        _ => {}
    }
}

fn add<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)?;
    Ok(())
}

/// Writes the bundle for one run to `out` (a file, or memory for the API) and returns `out`.
pub async fn write<W: Write>(
    out: W,
    run: &Run,
    attempts: &[Attempt],
    events: &[Event],
    redactor: &Redactor,
    artifacts: &dyn ArtifactStore,
) -> Result<(W, Written)> {
    let mut tar = tar::Builder::new(out);
    let run_json = redactor.redact_json(&serde_json::to_value(run)?);
    add(&mut tar, "run.json", serde_json::to_string_pretty(&run_json)?.as_bytes())?;

    let mut refs = BTreeSet::new();
    let mut lines = Vec::new();
    for a in attempts {
        let v = redactor.redact_json(&serde_json::to_value(a)?);
        artifact_refs(&v, "", &mut refs);
        writeln!(lines, "{}", serde_json::to_string(&v)?)?;
    }
    add(&mut tar, "workflow_node_executions.jsonl", &lines)?;

    let mut ev = Vec::new();
    for e in events {
        let v = redactor.redact_json(&e.to_json());
        artifact_refs(&v, "", &mut refs);
        writeln!(ev, "{}", serde_json::to_string(&v)?)?;
    }
    add(&mut tar, "events.jsonl", &ev)?;

    let mut manifest_artifacts = Vec::new();
    for hash in &refs {
        match artifacts.get(hash).await {
            Ok(bytes) => {
                add(&mut tar, &format!("artifacts/{}", hash.trim_start_matches("sha256:")), &bytes)?;
                manifest_artifacts.push(json!({"hash": hash, "bytes": bytes.len(), "included": true}));
            }
            Err(e) => manifest_artifacts.push(json!({"hash": hash, "included": false, "missing": e.to_string()})),
        }
    }
    add(&mut tar, "artifacts/manifest.json", serde_json::to_string_pretty(&manifest_artifacts)?.as_bytes())?;

    let included = manifest_artifacts.iter().filter(|a| a["included"] == true).count();
    let manifest = json!({
        "bundle_version": 1,
        "scope": {"kind": "workflow_run", "workflow_run_id": run.run_id},
        "redaction_mode": "SAFE_DEFAULT",
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "state": run.state,
        "included": {
            "workflow_node_execution_count": attempts.len(),
            "event_count": events.len(),
            "artifact_count": included,
        },
        "missing_evidence": manifest_artifacts.iter().filter(|a| a["included"] == false).cloned().collect::<Vec<_>>(),
        "files": ["run.json", "workflow_node_executions.jsonl", "events.jsonl", "artifacts/manifest.json"],
    });
    add(&mut tar, "manifest.json", serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    let out = tar.into_inner()?;
    Ok((out, Written { attempts: attempts.len(), events: events.len(), artifacts: included }))
}
