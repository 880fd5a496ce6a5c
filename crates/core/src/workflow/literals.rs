//! Secrets written literally in a workflow file: found anywhere in it, reported as located warnings.
//!
//! A definition is stored in clear with every run and read by whoever reads the file, so a
//! token written into it has leaked whatever the engine later redacts. What counts as a
//! secret is the redactor's knowledge (`steward-tools`), which this pure crate cannot hold:
//! the caller passes it in as `detect`.

use super::Diagnostic;
use crate::yaml::{self, Node, NodeKind};

/// Warnings for every value of `source` that `detect` calls a secret, each naming the step
/// (when the value is inside one) and the dotted field, like errors do.
///
/// `detect(key, text)` gets a scalar and the mapping key it is the value of (if any), and
/// answers what kind of secret it holds (`"a GitHub token"`), or `None`. Keys are checked
/// too, without a key of their own. A source that is not valid YAML has no warnings: its
/// errors come from [`super::parse`].
pub fn literal_secrets(source: &str, detect: &dyn Fn(Option<&str>, &str) -> Option<String>) -> Vec<Diagnostic> {
    let Ok(root) = yaml::parse(source) else { return Vec::new() };
    let mut out = Vec::new();
    Walk { detect, out: &mut out }.node(&root, "", None, None);
    out.sort_by_key(|d| d.line);
    out
}

struct Walk<'a> {
    detect: &'a dyn Fn(Option<&str>, &str) -> Option<String>,
    out: &'a mut Vec<Diagnostic>,
}

impl Walk<'_> {
    fn node(&mut self, node: &Node, field: &str, key: Option<&str>, step: Option<&str>) {
        match &node.kind {
            NodeKind::Scalar(s) => self.check(node.pos.line, field, key, &s.text, step),
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let f = format!("{field}[{i}]");
                    // A step's warnings name the step, as its errors do.
                    let id = (field == "steps").then(|| step_id(item)).flatten();
                    self.node(item, &f, None, id.or(step));
                }
            }
            NodeKind::Map(entries) => {
                for (k, v) in entries {
                    let Some(name) = k.as_str() else { continue };
                    let f = if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") };
                    self.check(k.pos.line, &f, None, name, step);
                    // Under `inputs`, a key names an input (`api_token: string` declares one);
                    // only elsewhere does a key say what its value is.
                    let key = (f.split(['.', '[']).next() != Some("inputs")).then_some(name);
                    self.node(v, &f, key, step);
                }
            }
        }
    }

    fn check(&mut self, line: usize, field: &str, key: Option<&str>, text: &str, step: Option<&str>) {
        if let Some(what) = (self.detect)(key, text) {
            self.out.push(Diagnostic::warning(
                line,
                step.map(str::to_owned),
                field,
                format!(
                    "{what} is written literally in the workflow file, which every run stores in clear; declare a `secret: true` input or pass it in an environment variable"
                ),
            ));
        }
    }
}

fn step_id(node: &Node) -> Option<&str> {
    match &node.kind {
        NodeKind::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some("id")).and_then(|(_, v)| v.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 (point 6): a literal secret is located by line, step and field.
    #[test]
    fn literal_values_are_located_by_step_and_field() {
        let src = "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: echo fine\n    env:\n      KEY: SECRET-1\n  - {id: b, type: shell, run: 'curl SECRET-2'}\nagents:\n  x: {provider: openai, model: m, options: {k: SECRET-3}}\n";
        let detect = |key: Option<&str>, text: &str| text.contains("SECRET-").then(|| format!("a thing ({key:?})"));
        let got: Vec<String> = literal_secrets(src, &detect)
            .iter()
            .map(|d| format!("{} {} {:?} {}", d.line, d.severity.as_str(), d.step, d.describe()))
            .collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].starts_with("8 warning Some(\"a\") step `a`, field `steps[0].env.KEY`: a thing (Some(\"KEY\"))")
        );
        assert!(got[1].starts_with("9 warning Some(\"b\") step `b`, field `steps[1].run`: a thing (Some(\"run\"))"));
        assert!(got[2].starts_with("11 warning None field `agents.x.options.k`"), "{}", got[2]);
        assert!(literal_secrets("id: [", &detect).is_empty());
        let keyed = |key: Option<&str>, _: &str| key.filter(|k| k.contains("token")).map(str::to_owned);
        let src = "inputs:\n  api_token: string\nsteps:\n  - {id: a, env: {api_token: x}}\n";
        let got = literal_secrets(src, &keyed);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].field, "steps[0].env.api_token");
    }
}
