//! Typed run inputs: checking given values against a workflow's declarations.
//!
//! A `secret: true` input's value is sealed (encrypted) by the engine before the run is
//! stored; it is then `{"$sealed": "<scheme>:<data>"}` (see [`is_sealed`]), which this module
//! accepts for a secret declaration without reading it, and never quotes in a message.

use serde_json::{Map, Value};

use crate::workflow::{InputDecl, InputType, Workflow};

/// The one key of a sealed secret value as stored: `{"$sealed": "<scheme>:<data>"}`.
pub const SEALED_KEY: &str = "$sealed";

/// Whether a stored value is a sealed secret (an object whose only key is [`SEALED_KEY`],
/// holding a string). Views show such a value as redacted whatever its declaration says.
pub fn is_sealed(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.len() == 1 && m.get(SEALED_KEY).is_some_and(Value::is_string))
}

/// Checks a value against a declaration; a secret's value is never quoted in the error.
pub fn check(decl: &InputDecl, v: &Value) -> Result<Value, String> {
    if decl.secret && is_sealed(v) {
        // Sealed after it was checked; the engine opens it before a step reads it.
        return Ok(v.clone());
    }
    coerce(decl.ty, v).map_err(|e| if decl.secret { hidden(decl.ty) } else { e })
}

/// The error for a secret input of the wrong type: says what was expected, not what was given.
pub fn hidden(ty: InputType) -> String {
    format!("expected a {} (the value given is not shown: the input is secret)", ty.as_str())
}

/// Checks a JSON value against a declared type.
pub fn coerce(ty: InputType, v: &Value) -> Result<Value, String> {
    match (ty, v) {
        (InputType::String, Value::String(_))
        | (InputType::Number, Value::Number(_))
        | (InputType::Bool, Value::Bool(_))
        | (InputType::Json, _) => Ok(v.clone()),
        (_, other) => Err(format!("expected a {}, found {}", ty.as_str(), describe(other))),
    }
}

/// Reads input `name` of `wf`, given as text (`--input k=v`, a console form field), by its
/// declared type. A name the workflow does not declare is kept as text: [`resolve`] reports it
/// with every other problem. A secret's value is never echoed in the error, not even back to
/// whoever typed it.
pub fn named_from_text(wf: &Workflow, name: &str, text: &str) -> Result<Value, String> {
    match wf.input(name) {
        None => Ok(Value::String(text.to_owned())),
        Some(decl) => from_text(decl.ty, text).map_err(|e| {
            let e = if decl.secret { hidden(decl.ty) } else { e };
            format!("{name} (declared at line {}): {e}", decl.line)
        }),
    }
}

/// Reads a value given as text by its type.
pub fn from_text(ty: InputType, text: &str) -> Result<Value, String> {
    match ty {
        InputType::String => Ok(Value::String(text.to_owned())),
        InputType::Number => text
            .trim()
            .parse::<serde_json::Number>()
            .map(Value::Number)
            .map_err(|_| format!("expected a number, found `{text}`")),
        InputType::Bool => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, found `{text}`")),
        },
        InputType::Json => serde_json::from_str(text).map_err(|e| format!("expected JSON: {e}")),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => format!("string `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Checks given inputs against the declarations and fills defaults.
///
/// Returns every problem at once, each naming the input and where it is declared.
pub fn resolve(wf: &Workflow, given: &Map<String, Value>) -> Result<Map<String, Value>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for (name, value) in given {
        match wf.input(name) {
            // Named as a declared input must be: a name with a line break or `=` in it would
            // forge lines of `steward workflow status`'s `key=value` output.
            None if wf.open_inputs && crate::workflow::valid_id(name) => {
                out.insert(name.clone(), value.clone());
            }
            None if wf.open_inputs => {
                errors
                    .push(format!("input name {:?} is not a valid name (letters, digits, `_` and `-`)", name.as_str()));
            }
            None => {
                let known: Vec<&str> = wf.inputs.iter().map(|d| d.name.as_str()).collect();
                errors.push(format!(
                    "unknown input `{name}` (workflow `{}` declares: {})",
                    wf.id,
                    if known.is_empty() { "no inputs".to_owned() } else { known.join(", ") }
                ));
            }
            Some(decl) => match check(decl, value) {
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
                Err(e) => errors.push(format!("input `{name}` (declared at line {}): {e}", decl.line)),
            },
        }
    }
    for decl in &wf.inputs {
        if out.contains_key(&decl.name) || given.contains_key(&decl.name) {
            continue;
        }
        match &decl.default {
            Some(d) => {
                out.insert(decl.name.clone(), d.clone());
            }
            None if decl.required => errors.push(format!(
                "missing required input `{}` (declared at line {}, type {}); pass --input {}=...",
                decl.name,
                decl.line,
                decl.ty.as_str(),
                decl.name
            )),
            None => {}
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The one reading of `name=text` the CLI and the console share.
    #[test]
    fn named_text_is_read_by_its_declaration() {
        let wf = crate::workflow::parse(
            "id: w\nversion: 1\ninputs:\n  n: {type: number}\n  pin: {type: number, secret: true}\nsteps:\n  - {id: a, type: noop}\n",
        )
        .unwrap();
        assert_eq!(named_from_text(&wf, "n", "3"), Ok(json!(3)));
        assert_eq!(named_from_text(&wf, "n", "x"), Err("n (declared at line 4): expected a number, found `x`".into()));
        let secret = named_from_text(&wf, "pin", "12ab").unwrap_err();
        assert!(secret.contains("line 5") && !secret.contains("12ab"), "{secret}");
        assert_eq!(named_from_text(&wf, "other", "1"), Ok(json!("1")), "left for `resolve` to report");
    }

    #[test]
    fn text_values_follow_the_declared_type() {
        assert_eq!(from_text(InputType::Number, "42"), Ok(json!(42)));
        assert_eq!(from_text(InputType::Number, "1.5"), Ok(json!(1.5)));
        assert!(from_text(InputType::Number, "abc").is_err());
        assert_eq!(from_text(InputType::Bool, "true"), Ok(json!(true)));
        assert!(from_text(InputType::Bool, "yes").is_err());
        assert_eq!(from_text(InputType::Json, r#"{"a":1}"#), Ok(json!({"a": 1})));
        assert_eq!(from_text(InputType::String, "42"), Ok(json!("42")));
    }

    #[test]
    fn resolve_reports_every_problem_and_fills_defaults() {
        let wf = crate::workflow::parse(
            "id: w\nversion: 1\ninputs:\n  name: {type: string, required: true}\n  n: {type: number, default: 3}\n  flag: {type: bool}\nsteps:\n  - {id: a, type: noop}\n",
        )
        .unwrap();
        let ok = resolve(&wf, json!({"name": "x"}).as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(ok), json!({"name": "x", "n": 3}));
        let errs = resolve(&wf, json!({"n": "three", "bogus": 1}).as_object().unwrap()).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("unknown input `bogus`")));
        assert!(
            errs.iter()
                .any(|e| { e.contains("input `n` (declared at line 5): expected a number, found string `three`") })
        );
        assert!(errs.iter().any(|e| e.contains("missing required input `name` (declared at line 4")));
    }

    /// Issue 11 (point 6): a secret input accepts its sealed form and never quotes its value.
    #[test]
    fn secret_inputs_accept_sealed_values_and_hide_wrong_ones() {
        let wf = crate::workflow::parse(
            "id: w\nversion: 1\ninputs:\n  pin: {type: number, secret: true}\n  tok: {type: string, secret: true}\nsteps:\n  - {id: a, type: noop}\n",
        )
        .unwrap();
        assert!(wf.inputs.iter().all(|d| d.secret));
        let sealed = json!({SEALED_KEY: "x:00"});
        assert!(is_sealed(&sealed) && !is_sealed(&json!({SEALED_KEY: 1})) && !is_sealed(&json!("x")));
        let ok = resolve(&wf, json!({"pin": sealed.clone(), "tok": sealed}).as_object().unwrap()).unwrap();
        assert_eq!(ok.len(), 2);
        let errs = resolve(&wf, json!({"pin": "hunter2-pin"}).as_object().unwrap()).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("expected a number") && !errs[0].contains("hunter2"), "{errs:?}");
        let defaulted = crate::workflow::parse(
            "id: w\nversion: 1\ninputs:\n  tok: {secret: true, default: abc}\nsteps:\n  - {id: a, type: noop}\n",
        )
        .unwrap_err();
        assert_eq!(defaulted.len(), 1);
        assert!(defaulted[0].message.starts_with("a secret input cannot have a default"), "{defaulted:?}");
    }
}
