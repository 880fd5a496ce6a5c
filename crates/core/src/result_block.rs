//! The `[workflow_result]` envelope: the only part of a step's output that routes or produces outputs.
//!
//! The block is `[workflow_result]{json}[/workflow_result]`, exactly once. Its
//! JSON object may carry `status` (`complete` or `failed`), `summary`, and
//! `outputs` (an object); without `outputs`, the object itself is the outputs (DireClaw's
//! reference shape). Text outside the block is ignored.

use serde_json::{Map, Value};

use crate::workflow::OutputDecl;

const OPEN: &str = "[workflow_result]";
const CLOSE: &str = "[/workflow_result]";

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    /// `complete` unless the block says `failed`.
    pub failed: bool,
    /// The block's summary line.
    pub summary: Option<String>,
    /// Declared outputs.
    pub outputs: Map<String, Value>,
    /// A review's `decision`, from the block or its outputs.
    pub decision: Option<String>,
}

/// Finds and parses the block. `Ok(None)` when there is none.
pub fn parse(text: &str) -> Result<Option<Envelope>, String> {
    let Some(start) = text.find(OPEN) else {
        if text.contains(CLOSE) {
            return Err(format!("found `{CLOSE}` without `{OPEN}`"));
        }
        return Ok(None);
    };
    let body_start = start + OPEN.len();
    let Some(len) = text[body_start..].find(CLOSE) else {
        return Err(format!("`{OPEN}` is not closed by `{CLOSE}`"));
    };
    if text[body_start + len + CLOSE.len()..].contains(OPEN) {
        return Err(format!("more than one `{OPEN}` block"));
    }
    let body = text[body_start..body_start + len].trim();
    let value: Value = serde_json::from_str(body).map_err(|e| format!("the `{OPEN}` block is not valid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err(format!("the `{OPEN}` block must be a JSON object"));
    };
    let failed = match obj.remove("status") {
        None => false,
        Some(Value::String(s)) if s == "complete" => false,
        Some(Value::String(s)) if s == "failed" => true,
        Some(other) => {
            return Err(format!("`status` must be \"complete\" or \"failed\", found {other}"));
        }
    };
    // DireClaw's agents write the outputs themselves as the object (its reference code's
    // shape): without an `outputs` key, every key but `status` is an output.
    let flat = (!obj.contains_key("outputs")).then(|| obj.clone());
    let summary = match obj.remove("summary") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    let outputs = match (obj.remove("outputs"), flat) {
        (Some(Value::Object(m)), _) => m,
        (Some(_), _) => return Err("`outputs` must be a JSON object".into()),
        (None, flat) => flat.unwrap_or_default(),
    };
    let decision = obj.remove("decision").or_else(|| outputs.get("decision").cloned()).map(|d| match d {
        Value::String(s) => s,
        other => other.to_string(),
    });
    Ok(Some(Envelope { failed, summary, outputs, decision }))
}

/// Checks that every required declared output is present; returns the missing keys.
pub fn missing_outputs(declared: &[OutputDecl], outputs: &Map<String, Value>) -> Vec<String> {
    declared
        .iter()
        .filter(|d| !d.optional && outputs.get(&d.key).is_none_or(Value::is_null))
        .map(|d| d.key.clone())
        .collect()
}

/// A review's decision: `approve` or `reject`, case and whitespace ignored (DireClaw §2.10).
pub fn review_decision(raw: Option<&str>) -> Result<bool, String> {
    match raw.map(|d| d.trim().trim_matches(['"', '\'']).to_ascii_lowercase()).as_deref() {
        Some("approve") => Ok(true),
        Some("reject") => Ok(false),
        Some(other) => Err(format!("the review decision must be `approve` or `reject`, found `{other}`")),
        None => Err("the review gave no `decision` (approve or reject) in its [workflow_result] block".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_envelope_and_ignores_surrounding_text() {
        let env =
            parse("noise\n[workflow_result]{\"summary\": \"ok\", \"outputs\": {\"n\": 2}}[/workflow_result]\nmore")
                .unwrap()
                .unwrap();
        assert_eq!(
            env,
            Envelope {
                failed: false,
                summary: Some("ok".into()),
                outputs: json!({"n": 2}).as_object().unwrap().clone(),
                decision: None
            }
        );
        assert_eq!(parse("no block").unwrap(), None);
    }

    /// DireClaw's reference shape: the object is the outputs (its `decision` and `summary`
    /// among them, read as well).
    #[test]
    fn without_outputs_the_object_is_the_outputs() {
        let env = parse(
            "[workflow_result]{\"plan_doc\": \"p\", \"decision\": \"approve\", \"summary\": \"s\"}[/workflow_result]",
        )
        .unwrap()
        .unwrap();
        assert_eq!(env.outputs, *json!({"plan_doc": "p", "decision": "approve", "summary": "s"}).as_object().unwrap());
        assert_eq!((env.decision.as_deref(), env.summary.as_deref()), (Some("approve"), Some("s")));
        let env = parse("[workflow_result]{\"status\": \"complete\", \"outputs\": {}, \"x\": 1}[/workflow_result]")
            .unwrap()
            .unwrap();
        assert!(env.outputs.is_empty(), "with `outputs`, other keys are not outputs");
    }

    #[test]
    fn malformed_blocks_are_named() {
        assert!(parse("[workflow_result]{").unwrap_err().contains("not closed"));
        assert!(parse("[workflow_result]nope[/workflow_result]").unwrap_err().contains("not valid JSON"));
        assert!(parse("[workflow_result][1][/workflow_result]").unwrap_err().contains("must be a JSON object"));
        assert!(
            parse("[workflow_result]{}[/workflow_result][workflow_result]{}[/workflow_result]")
                .unwrap_err()
                .contains("more than one")
        );
        assert!(parse("[workflow_result]{\"status\":\"meh\"}[/workflow_result]").unwrap_err().contains("`status`"));
    }

    #[test]
    fn review_decisions_are_read_loosely_but_strictly_valued() {
        let env = parse("[workflow_result]{\"decision\": \" Approve \"}[/workflow_result]").unwrap().unwrap();
        assert_eq!(review_decision(env.decision.as_deref()), Ok(true));
        let env =
            parse("[workflow_result]{\"outputs\": {\"decision\": \"reject\"}}[/workflow_result]").unwrap().unwrap();
        assert_eq!(review_decision(env.decision.as_deref()), Ok(false));
        assert!(review_decision(Some("maybe")).unwrap_err().contains("found `maybe`"));
        assert!(review_decision(None).is_err());
    }

    #[test]
    fn required_outputs_must_be_present() {
        let decl =
            vec![OutputDecl { key: "a".into(), optional: false }, OutputDecl { key: "b".into(), optional: true }];
        assert_eq!(missing_outputs(&decl, json!({"b": 1}).as_object().unwrap()), ["a"]);
        assert!(missing_outputs(&decl, json!({"a": "x"}).as_object().unwrap()).is_empty());
    }
}
