//! The deterministic generator (DG-MT-01): decomposes a work packet into micro-task definitions
//! that each touch a handful of files, verify with the packet's test plan, and run in order.

use super::definition::{
    DoneCriterion, ExecutionTier, ExpectedOutput, FileAccess, MicroTaskDefinition, RiskLevel, Verification,
};
use super::packet::WorkPacket;

/// The prompt token budget of a generated task when the packet names none.
pub const DEFAULT_TOKEN_BUDGET: u32 = 4096;
const MAX_MODIFY: usize = 5;
const MAX_CREATE: usize = 3;
const MAX_READ: usize = 10;
const MAX_VERIFY: usize = 5;
const MAX_DONE: usize = 8;
const MAX_ACTIONS: usize = 10;

/// The tools a patch task uses: it reads its context and writes its declared files; verify
/// commands are run by the executor, never by the model.
pub const PATCH_TOOLS: &[&str] = &["context.read", "fs.write"];

/// Generates the micro-tasks for `packet`. `exists(path)` tells whether an in-scope file exists
/// already (it is then modified, otherwise created); it is the only thing read from outside.
///
/// Files are taken in the packet's order and grouped so that a task modifies at most five and
/// creates at most three; each task depends on the one before, so every task must leave the
/// test plan passing. Done criteria pair with the test plan by position; a criterion without a
/// command of its own needs file:line evidence.
pub fn generate(packet: &WorkPacket, retry_budget: u32, exists: impl Fn(&str) -> bool) -> Vec<MicroTaskDefinition> {
    let mut groups: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for path in &packet.in_scope_paths {
        let existing = exists(path);
        let fits =
            groups.last().is_some_and(|(m, c)| if existing { m.len() < MAX_MODIFY } else { c.len() < MAX_CREATE });
        if !fits {
            groups.push((Vec::new(), Vec::new()));
        }
        if let Some((modify, create)) = groups.last_mut() {
            if existing { modify.push(path.clone()) } else { create.push(path.clone()) }
        }
    }
    let verify: Vec<_> = packet.test_plan.iter().take(MAX_VERIFY).cloned().collect();
    let done: Vec<DoneCriterion> = packet
        .done_means
        .iter()
        .take(MAX_DONE)
        .enumerate()
        .map(|(i, d)| DoneCriterion {
            description: d.clone(),
            verification: if i < verify.len() { Verification::Automated } else { Verification::EvidenceRequired },
            verify_ref: (i < verify.len()).then_some(i),
        })
        .collect();
    let tags =
        if packet.task_tags.is_empty() { inferred_tags(&packet.in_scope_paths) } else { packet.task_tags.clone() };
    let n = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (modify, create))| {
            let mt_id = format!("MT-{:03}", i + 1);
            let name = if n == 1 {
                truncate(first_line(&packet.description), 100)
            } else {
                let suffix = format!(" (part {} of {n})", i + 1);
                format!("{}{suffix}", truncate(first_line(&packet.description), 100 - suffix.len()))
            };
            let files_note = modify.iter().chain(&create).map(String::as_str).collect::<Vec<_>>().join(", ");
            let scope = truncate(&format!("{} Files: {files_note}.", packet.description.trim()), 500);
            let read: Vec<String> = packet
                .read_paths
                .iter()
                .filter(|p| !modify.contains(p) && !create.contains(p))
                .take(MAX_READ)
                .cloned()
                .collect();
            let mut actions: Vec<String> = Vec::new();
            if !read.is_empty() {
                actions.push(truncate(&format!("Read {} for context.", read.join(", ")), 200));
            }
            for f in &modify {
                actions.push(truncate(&format!("Change `{f}` so the done criteria hold."), 200));
            }
            for f in &create {
                actions.push(truncate(&format!("Create `{f}`."), 200));
            }
            for v in &verify {
                if actions.len() + 1 < MAX_ACTIONS {
                    actions.push(truncate(&format!("Make sure `{}` passes ({}).", v.command, v.expect.as_str()), 200));
                }
            }
            actions.truncate(MAX_ACTIONS);
            let changed = modify.len() + create.len();
            MicroTaskDefinition {
                mt_id,
                name,
                scope,
                files: FileAccess { read, modify, create },
                actions,
                verify: verify.clone(),
                done: done.clone(),
                depends_on: if i == 0 { Vec::new() } else { vec![format!("MT-{i:03}")] },
                token_budget: packet.token_budget.unwrap_or(DEFAULT_TOKEN_BUDGET),
                execution_tier: ExecutionTier::LocalSmall,
                allowed_tools: PATCH_TOOLS.iter().map(|s| (*s).to_owned()).collect(),
                retry_budget: retry_budget.min(5),
                escalation_target: Some("local_large".to_owned()),
                expected_output: Some(ExpectedOutput::Patch),
                task_tags: tags.clone(),
                risk_level: if changed > 3 { RiskLevel::Medium } else { RiskLevel::Low },
                notes: (!packet.out_of_scope.is_empty())
                    .then(|| truncate(&format!("Out of scope: {}", packet.out_of_scope.join("; ")), 500)),
            }
        })
        .collect()
}

/// Execution waves (§2.6.6.8.7.1 step 1.3): a topological layering by `depends_on`, ids sorted
/// within a wave. Tasks on a cycle or with unknown dependencies are left out (MT-VAL-003/004
/// report them).
pub fn execution_waves(mts: &[MicroTaskDefinition]) -> Vec<Vec<String>> {
    let mut done: Vec<&str> = Vec::new();
    let mut waves = Vec::new();
    loop {
        let mut wave: Vec<String> = mts
            .iter()
            .filter(|m| !done.contains(&m.mt_id.as_str()))
            .filter(|m| m.depends_on.iter().all(|d| done.contains(&d.as_str())))
            .map(|m| m.mt_id.clone())
            .collect();
        if wave.is_empty() {
            return waves;
        }
        wave.sort();
        wave.dedup();
        for id in &wave {
            if let Some(m) = mts.iter().find(|m| &m.mt_id == id) {
                done.push(&m.mt_id);
            }
        }
        waves.push(wave);
    }
}

fn inferred_tags(paths: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for p in paths {
        let tag = match p.rsplit_once('.').map(|(_, ext)| ext) {
            Some("rs") => "rust",
            Some("py") => "python",
            Some("ts" | "tsx") => "typescript",
            Some("js" | "mjs") => "javascript",
            Some("go") => "go",
            Some("md") => "docs",
            _ => continue,
        };
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or_default()
}

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet;

    fn packet(paths: &[&str]) -> WorkPacket {
        let doc = serde_json::json!({
            "wp_id": "WP-1", "description": "Fix the adder.\nMore words.",
            "in_scope_paths": paths, "read_paths": ["tests/t.rs"],
            "done_means": ["tests pass", "no panics"], "test_plan": ["cargo test -q"],
        });
        packet::parse(&doc.to_string()).unwrap()
    }

    #[test]
    fn a_small_packet_is_one_task() {
        let mts = generate(&packet(&["src/lib.rs", "src/new.rs"]), 4, |p| p == "src/lib.rs");
        assert_eq!(mts.len(), 1);
        let mt = &mts[0];
        assert_eq!(mt.mt_id, "MT-001");
        assert_eq!(mt.name, "Fix the adder.");
        assert_eq!(mt.files.modify, ["src/lib.rs"]);
        assert_eq!(mt.files.create, ["src/new.rs"]);
        assert_eq!(mt.files.read, ["tests/t.rs"]);
        assert_eq!(mt.done[0].verify_ref, Some(0));
        assert_eq!(mt.done[1].verification, Verification::EvidenceRequired);
        assert_eq!(mt.task_tags, ["rust"]);
        assert!(mt.depends_on.is_empty());
    }

    #[test]
    fn large_packets_split_into_ordered_tasks_deterministically() {
        let paths: Vec<String> = (0..12).map(|i| format!("src/m{i}.rs")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let a = generate(&packet(&refs), 4, |_| true);
        let b = generate(&packet(&refs), 4, |_| true);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].depends_on, ["MT-001"]);
        assert_eq!(a[2].files.modify.len(), 2);
        assert!(a[2].name.ends_with("(part 3 of 3)"));
        assert_eq!(execution_waves(&a), vec![vec!["MT-001"], vec!["MT-002"], vec!["MT-003"]]);
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("ééé", 2), "é…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
