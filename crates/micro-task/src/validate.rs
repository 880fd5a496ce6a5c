//! MT-VAL-001..014 (§2.6.6.8.6.2) and the schema limits of §2.6.6.8.6.1: the report that decides
//! whether generated micro-tasks may run. An ERROR blocks the job; warnings and infos do not.

use serde::Serialize;

use super::definition::{ExecutionTier, Expect, MAX_VERIFY_TIMEOUT_MS, MicroTaskDefinition, Verification};

/// The context window assumed for a chain's models when none is configured (MT-VAL-006).
pub const DEFAULT_MODEL_CONTEXT_TOKENS: u32 = 8192;

/// Tokens reserved for the system around a task's budget (MT-VAL-006).
pub const SYSTEM_OVERHEAD_TOKENS: u32 = 512;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Blocks the job.
    Error,
    /// Reported, does not block.
    Warning,
    /// For information.
    Info,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `MT-VAL-0NN`, or `MT-SCHEMA` for a schema limit.
    pub rule: &'static str,
    /// How serious.
    pub severity: Severity,
    /// The task it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mt_id: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mt_id {
            Some(mt) => write!(f, "{} {mt}: {}", self.rule, self.message),
            None => write!(f, "{}: {}", self.rule, self.message),
        }
    }
}

/// The full report: errors, warnings and infos.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    /// Blocking findings.
    pub errors: Vec<Finding>,
    /// Non-blocking findings.
    pub warnings: Vec<Finding>,
    /// Information.
    pub infos: Vec<Finding>,
}

impl Report {
    /// Whether the job may not run.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Adds a finding under its severity.
    pub fn add(&mut self, rule: &'static str, severity: Severity, mt_id: Option<&str>, message: String) {
        let f = Finding { rule, severity, mt_id: mt_id.map(str::to_owned), message };
        match severity {
            Severity::Error => self.errors.push(f),
            Severity::Warning => self.warnings.push(f),
            Severity::Info => self.infos.push(f),
        }
    }
}

/// What the rules check the tasks against.
#[derive(Debug, Clone)]
pub struct Limits<'a> {
    /// The packet's `in_scope_paths` (MT-VAL-005).
    pub in_scope_paths: &'a [String],
    /// The smallest context window among the chain's models (MT-VAL-006).
    pub model_context_tokens: u32,
}

/// Whether `id` has the form `MT-NNN`.
pub fn is_mt_id(id: &str) -> bool {
    id.len() == 6 && id.starts_with("MT-") && id[3..].bytes().all(|b| b.is_ascii_digit())
}

/// MT-VAL-006: the task's prompt budget and the system's share fit the smallest context window
/// of the chain.
fn context_fits(mt: &MicroTaskDefinition, window: u32, r: &mut Report) {
    let room = window.saturating_sub(SYSTEM_OVERHEAD_TOKENS);
    if mt.token_budget > room {
        r.add(
            "MT-VAL-006",
            Severity::Error,
            Some(&mt.mt_id),
            format!(
                "token_budget {} exceeds the model context window {window} minus {SYSTEM_OVERHEAD_TOKENS} system tokens",
                mt.token_budget
            ),
        );
    }
}

/// MT-VAL-006 again over `mts` for the context `window` the chain's servers reported: the
/// findings the configured windows gave are replaced.
pub fn recheck_context(mts: &[MicroTaskDefinition], window: u32, r: &mut Report) {
    for list in [&mut r.errors, &mut r.warnings, &mut r.infos] {
        list.retain(|f| f.rule != "MT-VAL-006");
    }
    for mt in mts {
        context_fits(mt, window, r);
    }
}

/// Runs every rule over `mts`.
pub fn validate(mts: &[MicroTaskDefinition], limits: &Limits<'_>) -> Report {
    use Severity::*;
    let mut r = Report::default();
    if mts.is_empty() {
        r.add("MT-SCHEMA", Error, None, "the packet produced no micro-tasks".into());
    }
    for (i, mt) in mts.iter().enumerate() {
        let id = Some(mt.mt_id.as_str());
        if mts[..i].iter().any(|o| o.mt_id == mt.mt_id) {
            r.add("MT-VAL-001", Error, id, "mt_id is not unique within the work packet".into());
        }
        if !is_mt_id(&mt.mt_id) {
            r.add("MT-VAL-002", Error, id, format!("`{}` does not match MT-[0-9]{{3}}", mt.mt_id));
        }
        schema(mt, &mut r);
        for d in &mt.depends_on {
            if !mts.iter().any(|o| &o.mt_id == d) {
                r.add("MT-VAL-003", Error, id, format!("depends_on `{d}` is not a micro-task of this packet"));
            }
        }
        for path in mt.writable() {
            if !limits.in_scope_paths.contains(path) {
                r.add("MT-VAL-005", Error, id, format!("`{path}` is not in the packet's in_scope_paths"));
            }
        }
        context_fits(mt, limits.model_context_tokens, &mut r);
        if !mt.verify.iter().any(|v| v.blocking) {
            r.add("MT-VAL-007", Warning, id, "no verify spec is blocking, so validation cannot fail".into());
        }
        for (k, d) in mt.done.iter().enumerate() {
            let matched = d.verify_ref.is_some_and(|v| v < mt.verify.len());
            match d.verification {
                Verification::Automated if !matched => r.add(
                    "MT-VAL-008",
                    Warning,
                    id,
                    format!("done[{k}] `{}` is automated but has no valid verify_ref", d.description),
                ),
                Verification::EvidenceRequired => r.add(
                    "MT-VAL-008",
                    Warning,
                    id,
                    format!("done[{k}] `{}` has no matching verify spec; it rests on cited evidence", d.description),
                ),
                Verification::Automated => {}
            }
        }
        if let Some(k) = check_before_change(&mt.actions) {
            r.add("MT-VAL-009", Warning, id, format!("action {k} checks the work before a later action changes it"));
        }
        let writes = !mt.files.modify.is_empty() || !mt.files.create.is_empty();
        if writes && !mt.allowed_tools.iter().any(|t| t == "fs.write") {
            r.add("MT-VAL-011", Error, id, "the task writes files but `allowed_tools` does not list fs.write".into());
        }
        if mt.retry_budget > 5 {
            r.add("MT-VAL-012", Error, id, format!("retry_budget {} is outside 0..=5", mt.retry_budget));
        }
        if mt.expected_output.is_none() {
            r.add("MT-VAL-013", Error, id, "expected_output is not declared".into());
        }
        if mt.execution_tier == ExecutionTier::Cloud && mt.escalation_target.as_deref() != Some("cloud") {
            r.add(
                "MT-VAL-014",
                Warning,
                id,
                "execution_tier is cloud without being marked for cloud; prefer local_small/local_large".into(),
            );
        }
    }
    for cycle_member in cyclic(mts) {
        r.add("MT-VAL-004", Error, Some(&cycle_member), "is on a dependency cycle".into());
    }
    let total: u64 = mts.iter().map(|m| u64::from(m.token_budget)).sum();
    let files: usize = mts.iter().map(|m| m.files.read.len() + m.files.modify.len() + m.files.create.len()).sum();
    r.add(
        "MT-VAL-010",
        Info,
        None,
        format!("{} tasks, token budgets sum to {total} for {files} file references", mts.len()),
    );
    r
}

fn schema(mt: &MicroTaskDefinition, r: &mut Report) {
    let id = Some(mt.mt_id.as_str());
    let mut bad = |msg: String| r.add("MT-SCHEMA", Severity::Error, id, msg);
    let chars = |s: &str| s.chars().count();
    if mt.name.trim().is_empty() || chars(&mt.name) > 100 {
        bad("name must be 1..=100 characters".into());
    }
    if chars(&mt.scope) > 500 {
        bad("scope must be at most 500 characters".into());
    }
    for (what, n, max) in [
        ("files.read", mt.files.read.len(), 10),
        ("files.modify", mt.files.modify.len(), 5),
        ("files.create", mt.files.create.len(), 3),
    ] {
        if n > max {
            bad(format!("{what} has {n} paths, at most {max}"));
        }
    }
    if !(1..=10).contains(&mt.actions.len()) || mt.actions.iter().any(|a| chars(a) > 200) {
        bad("actions must be 1..=10 items of at most 200 characters".into());
    }
    if !(1..=5).contains(&mt.verify.len()) {
        bad(format!("verify has {} specs, expected 1..=5", mt.verify.len()));
    }
    for (k, v) in mt.verify.iter().enumerate() {
        if !(1000..=MAX_VERIFY_TIMEOUT_MS).contains(&v.timeout_ms) {
            bad(format!("verify[{k}].timeout_ms {} is outside 1000..=300000", v.timeout_ms));
        }
        if matches!(v.expect, Expect::Contains | Expect::NotContains) && v.pattern.is_none() {
            bad(format!("verify[{k}] expects `{}` without a pattern", v.expect.as_str()));
        }
    }
    if !(1..=8).contains(&mt.done.len()) {
        bad(format!("done has {} criteria, expected 1..=8", mt.done.len()));
    }
    if !(512..=8192).contains(&mt.token_budget) {
        bad(format!("token_budget {} is outside 512..=8192", mt.token_budget));
    }
    for d in &mt.depends_on {
        if !is_mt_id(d) {
            bad(format!("depends_on `{d}` is not an MT id"));
        }
    }
}

/// MT-VAL-009 as a heuristic: an action that checks ("run", "make sure", "verify") followed by
/// one that changes a file means the order is wrong. Returns the checking action's index.
fn check_before_change(actions: &[String]) -> Option<usize> {
    let is_check = |a: &str| {
        let a = a.to_ascii_lowercase();
        ["run ", "make sure", "verify", "check "].iter().any(|p| a.starts_with(p))
    };
    let is_change = |a: &str| {
        let a = a.to_ascii_lowercase();
        ["change ", "create ", "edit ", "add ", "write ", "fix "].iter().any(|p| a.starts_with(p))
    };
    let first_check = actions.iter().position(|a| is_check(a))?;
    actions[first_check..].iter().any(|a| is_change(a)).then_some(first_check)
}

/// The ids of tasks that sit on a dependency cycle (Kahn's algorithm leaves them over).
fn cyclic(mts: &[MicroTaskDefinition]) -> Vec<String> {
    let known = |d: &String| mts.iter().any(|m| &m.mt_id == d);
    let mut left: Vec<&MicroTaskDefinition> = mts.iter().collect();
    loop {
        let before = left.len();
        let snapshot: Vec<String> = left.iter().map(|m| m.mt_id.clone()).collect();
        left.retain(|m| m.depends_on.iter().any(|d| known(d) && snapshot.contains(d)));
        if left.len() == before {
            break;
        }
    }
    let mut ids: Vec<String> = left.iter().map(|m| m.mt_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{DoneCriterion, ExpectedOutput, FileAccess, RiskLevel, VerifySpec};

    fn mt(id: &str) -> MicroTaskDefinition {
        MicroTaskDefinition {
            mt_id: id.into(),
            name: "n".into(),
            scope: "s".into(),
            files: FileAccess { read: vec![], modify: vec!["src/a.rs".into()], create: vec![] },
            actions: vec!["Change `src/a.rs`.".into(), "Make sure tests pass.".into()],
            verify: vec![VerifySpec {
                command: "cargo test".into(),
                expect: Expect::Exit0,
                pattern: None,
                timeout_ms: 30_000,
                blocking: true,
            }],
            done: vec![DoneCriterion {
                description: "d".into(),
                verification: Verification::Automated,
                verify_ref: Some(0),
            }],
            depends_on: vec![],
            token_budget: 2048,
            execution_tier: ExecutionTier::LocalSmall,
            allowed_tools: vec!["context.read".into(), "fs.write".into()],
            retry_budget: 3,
            escalation_target: None,
            expected_output: Some(ExpectedOutput::Patch),
            task_tags: vec![],
            risk_level: RiskLevel::Low,
            notes: None,
        }
    }

    fn rules_of(mts: &[MicroTaskDefinition]) -> Vec<(&'static str, Severity)> {
        let scope = vec!["src/a.rs".to_owned()];
        let r = validate(mts, &Limits { in_scope_paths: &scope, model_context_tokens: 8192 });
        r.errors.iter().chain(&r.warnings).map(|f| (f.rule, f.severity)).collect()
    }

    #[test]
    fn a_clean_task_only_gets_the_info() {
        assert!(rules_of(&[mt("MT-001")]).is_empty());
    }

    /// One fixture per rule, each with its severity (§2.6.6.8.6.2).
    #[test]
    fn each_rule_fires_with_its_severity() {
        use Severity::*;
        let with = |f: &dyn Fn(&mut MicroTaskDefinition)| {
            let mut m = mt("MT-001");
            f(&mut m);
            m
        };
        let cases: Vec<(Vec<MicroTaskDefinition>, &str, Severity)> = vec![
            (vec![mt("MT-001"), mt("MT-001")], "MT-VAL-001", Error),
            (vec![mt("MT-1")], "MT-VAL-002", Error),
            (vec![with(&|m| m.depends_on = vec!["MT-009".into()])], "MT-VAL-003", Error),
            (
                vec![with(&|m| m.depends_on = vec!["MT-002".into()]), {
                    let mut b = mt("MT-002");
                    b.depends_on = vec!["MT-001".into()];
                    b
                }],
                "MT-VAL-004",
                Error,
            ),
            (vec![with(&|m| m.files.create = vec!["src/b.rs".into()])], "MT-VAL-005", Error),
            (vec![with(&|m| m.token_budget = 8000)], "MT-VAL-006", Error),
            (vec![with(&|m| m.verify[0].blocking = false)], "MT-VAL-007", Warning),
            (vec![with(&|m| m.done[0].verify_ref = Some(3))], "MT-VAL-008", Warning),
            (vec![with(&|m| m.actions.reverse())], "MT-VAL-009", Warning),
            (vec![with(&|m| m.allowed_tools.clear())], "MT-VAL-011", Error),
            (vec![with(&|m| m.retry_budget = 9)], "MT-VAL-012", Error),
            (vec![with(&|m| m.expected_output = None)], "MT-VAL-013", Error),
            (vec![with(&|m| m.execution_tier = ExecutionTier::Cloud)], "MT-VAL-014", Warning),
            (vec![with(&|m| m.token_budget = 100)], "MT-SCHEMA", Error),
        ];
        for (mts, rule, severity) in cases {
            let got = rules_of(&mts);
            assert!(got.contains(&(rule, severity)), "{rule}: got {got:?}");
        }
    }

    #[test]
    fn the_report_always_carries_the_budget_info() {
        let scope = vec!["src/a.rs".to_owned()];
        let r = validate(&[mt("MT-001")], &Limits { in_scope_paths: &scope, model_context_tokens: 8192 });
        assert!(!r.has_errors());
        assert_eq!(r.infos[0].rule, "MT-VAL-010");
        assert!(r.infos[0].message.contains("2048"));
    }
}
