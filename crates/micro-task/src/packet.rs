//! Work packets: the one input a person writes for the micro-task executor (YAML or JSON), read
//! into a checked [`WorkPacket`] with every error located.

use serde::{Deserialize, Serialize};

use super::definition::{DEFAULT_VERIFY_TIMEOUT_MS, Expect, MAX_VERIFY_TIMEOUT_MS, VerifySpec};
use super::policy::{ExecutionPolicy, PolicyError};
use steward_core::yaml::{self, Node, NodeKind, Pos};

/// A checked work packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkPacket {
    /// The packet id (`WP-...`), used in every event and artifact.
    pub wp_id: String,
    /// What the work is, in plain words.
    pub description: String,
    /// The only files the executor may write (relative paths).
    pub in_scope_paths: Vec<String>,
    /// What must not be touched, told to the model as-is.
    pub out_of_scope: Vec<String>,
    /// Extra files given to the model as context, never written.
    pub read_paths: Vec<String>,
    /// What "done" means, one criterion each.
    pub done_means: Vec<String>,
    /// The commands that prove it, run through the tool bus.
    pub test_plan: Vec<VerifySpec>,
    /// Tags describing the work (language, area), used to pick adapters.
    pub task_tags: Vec<String>,
    /// The prompt token budget of each generated task.
    pub token_budget: Option<u32>,
    /// The packet's own execution policy, if it carries one.
    pub execution_policy: Option<ExecutionPolicy>,
}

/// A packet that cannot be used: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct PacketError {
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

fn err(pos: Pos, message: impl Into<String>) -> PacketError {
    PacketError { pos, message: message.into() }
}

const KNOWN_KEYS: &[&str] = &[
    "wp_id",
    "description",
    "in_scope_paths",
    "out_of_scope",
    "read_paths",
    "done_means",
    "test_plan",
    "task_tags",
    "token_budget",
    "execution_policy",
];

#[derive(Deserialize)]
#[serde(untagged)]
enum TestPlanItem {
    Command(String),
    Spec(TestPlanSpec),
}

/// The mapping form of a `test_plan` item.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPlanSpec {
    command: String,
    #[serde(default)]
    expect: Option<Expect>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    blocking: Option<bool>,
}

/// Reads a packet from YAML or JSON text (JSON is valid YAML flow syntax).
pub fn parse(source: &str) -> Result<WorkPacket, Vec<PacketError>> {
    let root = yaml::parse(source).map_err(|es| es.into_iter().map(|e| err(e.pos, e.message)).collect::<Vec<_>>())?;
    let NodeKind::Map(entries) = &root.kind else {
        return Err(vec![err(root.pos, format!("a work packet is a mapping, found a {}", root.kind_name()))]);
    };
    let mut errors = Vec::new();
    let get = |key: &str| entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v);
    for (k, _) in entries {
        let name = k.as_str().unwrap_or_default();
        if name == "mt_definitions" || name == "mt_definitions_ref" {
            errors.push(err(
                k.pos,
                format!(
                    "`{name}`: mt_definitions must not be provided; micro-tasks are generated from the packet's scope (DG-MT-01)"
                ),
            ));
        } else if !KNOWN_KEYS.contains(&name) {
            errors.push(err(k.pos, format!("unknown key `{name}` (expected one of: {})", KNOWN_KEYS.join(", "))));
        }
    }
    let wp_id = required_str(get("wp_id"), "wp_id", root.pos, &mut errors);
    let description = required_str(get("description"), "description", root.pos, &mut errors);
    let in_scope_paths = str_list(get("in_scope_paths"), "in_scope_paths", &mut errors);
    let out_of_scope = str_list(get("out_of_scope"), "out_of_scope", &mut errors);
    let read_paths = str_list(get("read_paths"), "read_paths", &mut errors);
    let done_means = str_list(get("done_means"), "done_means", &mut errors);
    let task_tags = str_list(get("task_tags"), "task_tags", &mut errors);
    let before_plan = errors.len();
    let test_plan = test_plan(get("test_plan"), &mut errors);
    let plan_items_refused = errors.len() > before_plan;
    let token_budget = get("token_budget").and_then(|n| match serde_json::from_value::<u32>(n.to_json()) {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(err(n.pos, "`token_budget` must be a whole number"));
            None
        }
    });
    let execution_policy = get("execution_policy").and_then(|n| match ExecutionPolicy::from_json(&n.to_json()) {
        Ok(p) => Some(p),
        Err(PolicyError { field, message }) => {
            errors.push(err(n.pos, format!("`execution_policy.{field}`: {message}")));
            None
        }
    });
    if get("in_scope_paths").is_some() && in_scope_paths.is_empty() {
        errors.push(err(root.pos, "`in_scope_paths` must name at least one file"));
    } else if get("in_scope_paths").is_none() {
        errors.push(err(root.pos, "missing `in_scope_paths`: the files the work may change"));
    }
    if done_means.is_empty() {
        errors.push(err(root.pos, "`done_means` must list at least one criterion"));
    }
    if test_plan.is_empty() && !plan_items_refused {
        errors.push(err(root.pos, "`test_plan` must list at least one command: a claim is only checked by running it"));
    }
    for (key, paths) in [("in_scope_paths", &in_scope_paths), ("read_paths", &read_paths)] {
        for p in paths.iter() {
            if let Some(why) = unsafe_path(p) {
                let pos = get(key).map_or(root.pos, |n| n.pos);
                errors.push(err(pos, format!("`{key}`: `{p}`: {why}")));
            }
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.pos);
        return Err(errors);
    }
    Ok(WorkPacket {
        wp_id,
        description,
        in_scope_paths,
        out_of_scope,
        read_paths,
        done_means,
        test_plan,
        task_tags,
        token_budget,
        execution_policy,
    })
}

/// Why a path cannot be in scope: scope is a list of files under the project root, checked by
/// the same rule the change planner applies to what a model writes.
pub fn unsafe_path(p: &str) -> Option<&'static str> {
    if p.starts_with("./") {
        return Some("must be written without a leading `./`");
    }
    steward_core::relative_path::problem(p).or_else(|| p.contains(':').then_some("must not contain `:`"))
}

fn required_str(node: Option<&Node>, key: &str, at: Pos, errors: &mut Vec<PacketError>) -> String {
    match node {
        None => {
            errors.push(err(at, format!("missing `{key}`")));
            String::new()
        }
        Some(n) => match n.as_str().map(str::trim) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                errors.push(err(n.pos, format!("`{key}` must be a non-empty string")));
                String::new()
            }
        },
    }
}

fn str_list(node: Option<&Node>, key: &str, errors: &mut Vec<PacketError>) -> Vec<String> {
    let Some(n) = node else { return Vec::new() };
    let NodeKind::Seq(items) = &n.kind else {
        errors.push(err(n.pos, format!("`{key}` must be a list, found a {}", n.kind_name())));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_str().map(str::trim) {
            Some(s) if !s.is_empty() => out.push(s.to_owned()),
            _ => errors.push(err(item.pos, format!("`{key}` items must be non-empty strings"))),
        }
    }
    out
}

fn test_plan(node: Option<&Node>, errors: &mut Vec<PacketError>) -> Vec<VerifySpec> {
    let Some(n) = node else { return Vec::new() };
    let NodeKind::Seq(items) = &n.kind else {
        errors.push(err(n.pos, format!("`test_plan` must be a list, found a {}", n.kind_name())));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let spec = match serde_json::from_value::<TestPlanItem>(item.to_json()) {
            Ok(TestPlanItem::Command(command)) => VerifySpec {
                command,
                expect: Expect::Exit0,
                pattern: None,
                timeout_ms: DEFAULT_VERIFY_TIMEOUT_MS,
                blocking: true,
            },
            Ok(TestPlanItem::Spec(TestPlanSpec { command, expect, pattern, timeout_ms, blocking })) => VerifySpec {
                command,
                expect: expect.unwrap_or(Expect::Exit0),
                pattern,
                timeout_ms: timeout_ms.unwrap_or(DEFAULT_VERIFY_TIMEOUT_MS),
                blocking: blocking.unwrap_or(true),
            },
            Err(e) => {
                // Untagged: serde says only that no form fitted; say what the mapping form
                // found wrong when it is one.
                let why = match item.to_json() {
                    serde_json::Value::Object(_) => serde_json::from_value::<TestPlanSpec>(item.to_json())
                        .err()
                        .map_or_else(|| e.to_string(), |e| e.to_string()),
                    _ => e.to_string(),
                };
                errors.push(err(
                    item.pos,
                    format!(
                        "`test_plan[{i}]` must be a command string or {{command, expect: exit_0|exit_nonzero|contains|not_contains, pattern, timeout_ms, blocking}}: {why}"
                    ),
                ));
                continue;
            }
        };
        if spec.command.trim().is_empty() {
            errors.push(err(item.pos, format!("`test_plan[{i}]`: the command is empty")));
        }
        if matches!(spec.expect, Expect::Contains | Expect::NotContains) && spec.pattern.is_none() {
            errors.push(err(item.pos, format!("`test_plan[{i}]`: `{}` needs a `pattern`", spec.expect.as_str())));
        }
        if !(1000..=MAX_VERIFY_TIMEOUT_MS).contains(&spec.timeout_ms) {
            errors.push(err(item.pos, format!("`test_plan[{i}].timeout_ms` must be within 1000..=300000")));
        }
        out.push(spec);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: &str = r#"
wp_id: WP-001
description: Make add() add.
in_scope_paths: [src/lib.rs]
read_paths: [tests/add.rs]
out_of_scope: [Cargo.toml]
done_means:
  - add(2, 2) returns 4
test_plan:
  - cargo test -q
  - {command: "grep -c fn src/lib.rs", expect: contains, pattern: "1"}
execution_policy:
  max_iterations_per_mt: 3
"#;

    #[test]
    fn a_packet_reads_with_defaults() {
        let p = parse(PACKET).unwrap();
        assert_eq!(p.wp_id, "WP-001");
        assert_eq!(p.in_scope_paths, ["src/lib.rs"]);
        assert_eq!(p.test_plan.len(), 2);
        assert_eq!(p.test_plan[0].expect, Expect::Exit0);
        assert!(p.test_plan[0].blocking);
        assert_eq!(p.test_plan[1].pattern.as_deref(), Some("1"));
        assert_eq!(p.execution_policy.map(|x| x.max_iterations_per_mt), Some(3));
    }

    /// Every spelling the README and the catalogue document is the one accepted (issue 14 point 7).
    #[test]
    fn every_documented_expectation_reads() {
        for (spelling, want) in [
            ("exit_0", Expect::Exit0),
            ("exit_nonzero", Expect::ExitNonzero),
            ("contains", Expect::Contains),
            ("not_contains", Expect::NotContains),
        ] {
            let src = PACKET.replace("expect: contains", &format!("expect: {spelling}"));
            let p = parse(&src).unwrap_or_else(|e| panic!("{spelling}: {e:?}"));
            assert_eq!((p.test_plan[1].expect, p.test_plan[1].expect.as_str()), (want, spelling));
            let stored = serde_json::to_value(p.test_plan[1].expect).unwrap();
            assert_eq!(stored, serde_json::json!(spelling), "documents say it the same way");
        }
        // Job documents written before the spelling was fixed still read.
        assert_eq!(serde_json::from_value::<Expect>(serde_json::json!("exit0")).unwrap(), Expect::Exit0);
    }

    #[test]
    fn json_packets_read_too() {
        let p = parse(
            r#"{"wp_id": "WP-2", "description": "d", "in_scope_paths": ["a.py"], "done_means": ["x"], "test_plan": ["python3 -m pytest"]}"#,
        )
        .unwrap();
        assert_eq!(p.in_scope_paths, ["a.py"]);
    }

    /// DG-MT-01: supplied definitions are refused, with the line.
    #[test]
    fn supplied_definitions_are_refused() {
        let e = parse(&format!("{PACKET}mt_definitions: []\n")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("mt_definitions must not be provided"), "{}", e[0]);
        assert_eq!(e[0].pos.line, 14);
    }

    #[test]
    fn bad_packets_name_every_problem_and_where() {
        let e = parse(
            "wp_id: W\ndescription: ''\nin_scope_paths: [../x, /etc/passwd]\ntest_plan: [{expect: bogus}]\nextra: 1\n",
        )
        .unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        for needle in [
            "`description` must be",
            "`../x`: the path contains a `..`",
            "`/etc/passwd`: the path is absolute",
            "test_plan[0]",
            "unknown key `extra`",
            "`done_means`",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
        assert!(parse("- a\n").is_err());
        let e = parse(&PACKET.replace("max_iterations_per_mt: 3", "max_iterations_per_mt: 30")).unwrap_err();
        assert!(e[0].to_string().contains("execution_policy.max_iterations_per_mt"), "{}", e[0]);
    }
}
