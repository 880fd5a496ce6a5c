//! Capabilities (§11.1): the registry of valid ids, profiles as whitelists, and the pure check.
//!
//! An id is `axis[:scope]`. A grant of a bare axis covers every scope of that
//! axis; a scoped grant covers only its scope and never the bare axis; an
//! exact match always grants (DG-CAP-01). An id the registry does not know
//! is refused with `HSK-4001` rather than silently denied, so a typo in a
//! profile or a request is an error someone sees.

use std::fmt;

use serde::Serialize;

use crate::job::JobKind;

/// Axes: ids that take a scope (`fs.read:logs`) or stand bare (`fs.read`).
pub const AXES: &[&str] = &["fs.read", "fs.write", "proc.exec", "net.http", "device", "secrets.use", "gpu.compute"];

/// Ids that are complete on their own and take no scope.
pub const FULL_IDS: &[&str] = &[
    "terminal.exec",
    "terminal.attach_human",
    "terminal.interact",
    "doc.summarize",
    "export.debug_bundle",
    "export.governance_pack",
    "export.include_payloads",
    "fr.read",
    "diagnostics.read",
    "jobs.read",
    "locus.read",
    "locus.write",
    "locus.gate",
    "locus.delete",
    "locus.sync",
];

/// A capability id that the registry does not know (HSK-4001).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HSK-4001: UnknownCapability `{0}`")]
pub struct UnknownCapability(pub String);

/// A valid capability id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CapabilityId(String);

impl CapabilityId {
    /// Parses and checks an id against the registry.
    pub fn parse(id: &str) -> Result<CapabilityId, UnknownCapability> {
        let valid = FULL_IDS.contains(&id)
            || AXES.contains(&id)
            || id.split_once(':').is_some_and(|(axis, scope)| {
                AXES.contains(&axis) && !scope.is_empty() && !scope.contains(char::is_whitespace)
            });
        if valid { Ok(CapabilityId(id.to_owned())) } else { Err(UnknownCapability(id.to_owned())) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The axis (the part before `:`), or the whole id.
    pub fn axis(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(a, _)| a)
    }

    /// Whether a grant of `self` covers a request for `requested` (DG-CAP-01).
    pub fn covers(&self, requested: &CapabilityId) -> bool {
        self == requested || (!self.0.contains(':') && requested.0.contains(':') && requested.axis() == self.0)
    }
}

impl fmt::Display for CapabilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named whitelist of capability ids (DG-CAP-02).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// Its name, e.g. `Coder`.
    pub id: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// What it grants.
    pub grants: Vec<CapabilityId>,
}

impl Profile {
    /// Whether the profile grants `requested`.
    pub fn grants(&self, requested: &CapabilityId) -> bool {
        self.grants.iter().any(|g| g.covers(requested))
    }
}

fn ids(list: &[&str]) -> Vec<CapabilityId> {
    // The lists below are written against the registry; `parse` cannot fail for them.
    list.iter().filter_map(|s| CapabilityId::parse(s).ok()).collect()
}

/// The profiles Steward ships.
pub fn profiles() -> Vec<Profile> {
    vec![
        Profile {
            id: "Coder",
            description: "edits files and runs commands in the workspace",
            grants: ids(&[
                "fs.read",
                "fs.write",
                "proc.exec",
                "net.http",
                // Only what the operator grants is ever requested (`[[sandbox.grant]]`).
                "secrets.use",
                "doc.summarize",
                "terminal.exec",
                "locus.read",
                "locus.write",
                "locus.gate",
                "locus.delete",
                "locus.sync",
            ]),
        },
        Profile {
            id: "Analyst",
            description: "reads and reports; runs no commands and writes no files",
            grants: ids(&[
                "fs.read",
                "net.http",
                "doc.summarize",
                "locus.read",
                "export.debug_bundle",
                "fr.read",
                "diagnostics.read",
                "jobs.read",
                "export.include_payloads",
            ]),
        },
        Profile {
            id: "Operator",
            description: "manages files and exports governance records; runs no commands",
            grants: ids(&["fs.read", "fs.write", "export.governance_pack"]),
        },
    ]
}

/// The shipped profile with this id.
pub fn profile(id: &str) -> Option<Profile> {
    profiles().into_iter().find(|p| p.id == id)
}

/// The profile a job of this kind runs under when it names none.
///
/// This follows the Handshake mapping, except that `workflow_run` maps to
/// `Coder`: shell steps are part of Steward's workflow language, so a plain
/// workflow may run commands unless it names a narrower profile.
pub fn default_profile(kind: JobKind) -> &'static str {
    match kind {
        JobKind::DocEdit
        | JobKind::DocRewrite
        | JobKind::MicroTaskExecution
        | JobKind::TerminalExec
        | JobKind::WorkflowRun => "Coder",
        _ => "Analyst",
    }
}

/// The programs a shell command starts, as the shell parser reads it (issue 11).
///
/// Every simple command counts, wherever it is: pipelines, lists, subshells,
/// command and process substitutions, function bodies, and the literal text
/// of `sh -c`, `eval` and the like; wrappers that are programs (`sudo`, `env`,
/// `timeout`, `xargs`, ...) count as well as what they wrap. A program that is
/// computed at run time (`$VAR`, `$(...)`, a template), or a text that does not
/// parse, is `None`: only an unscoped `proc.exec` grant covers it. Calls of
/// functions defined in the text are not programs; their bodies are read.
pub fn shell_programs(command: &str) -> Vec<Option<String>> {
    crate::shell::analyze(command).programs()
}

/// The capabilities a shell command requests: `proc.exec:<program>` for each
/// program (bare `proc.exec` when one cannot be read statically), plus the
/// workspace access every command has.
pub fn shell_capabilities(command: &str) -> Vec<CapabilityId> {
    let mut caps: Vec<CapabilityId> = shell_programs(command)
        .into_iter()
        .filter_map(|p| {
            CapabilityId::parse(&p.map_or_else(|| "proc.exec".to_owned(), |p| format!("proc.exec:{p}"))).ok()
        })
        .collect();
    caps.extend(ids(&["fs.read", "fs.write"]));
    caps.sort();
    caps.dedup();
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CapabilityId {
        CapabilityId::parse(s).unwrap()
    }

    /// HSK-4001 and DG-CAP-01.
    #[test]
    fn ids_parse_against_the_registry_and_scopes_resolve() {
        assert_eq!(
            CapabilityId::parse("magic.wand").unwrap_err().to_string(),
            "HSK-4001: UnknownCapability `magic.wand`"
        );
        assert!(CapabilityId::parse("fs.read:").is_err());
        assert!(CapabilityId::parse("terminal.exec:x").is_err());
        assert!(id("fs.read").covers(&id("fs.read:logs")));
        assert!(id("fs.read:logs").covers(&id("fs.read:logs")));
        assert!(!id("fs.read:logs").covers(&id("fs.read")));
        assert!(!id("fs.read:logs").covers(&id("fs.read:other")));
        assert!(!id("fs.read").covers(&id("fs.write:x")));
        assert!(id("terminal.exec").covers(&id("terminal.exec")));
    }

    #[test]
    fn profiles_are_whitelists_and_job_kinds_map_to_them() {
        let coder = profile("Coder").unwrap();
        let analyst = profile("Analyst").unwrap();
        assert!(coder.grants(&id("proc.exec:cargo")));
        assert!(!analyst.grants(&id("proc.exec:cargo")));
        assert!(!profile("Operator").unwrap().grants(&id("proc.exec")));
        assert_eq!(default_profile(JobKind::WorkflowRun), "Coder");
        assert_eq!(default_profile(JobKind::MicroTaskExecution), "Coder");
        assert_eq!(default_profile(JobKind::DocSummarize), "Analyst");
        for kind in JobKind::ALL {
            assert!(profile(default_profile(kind)).is_some());
        }
    }

    #[test]
    fn programs_are_read_from_shell_commands() {
        let p = |c: &str| shell_programs(c);
        assert_eq!(p("echo \"hi | there\" | tr a-z A-Z"), [Some("echo".into()), Some("tr".into())]);
        assert_eq!(
            p("FOO=1 BAR=2 cargo test && ./scripts/x.sh; (cd a; make)"),
            [Some("cargo".into()), Some("x.sh".into()), Some("cd".into()), Some("make".into())]
        );
        assert_eq!(p("${STEWARD_TPL_0} --flag"), [None]);
        assert_eq!(p("exec sleep 30"), [Some("sleep".into())]);
        assert_eq!(p("sudo -u x timeout 5 rm -f a"), [Some("sudo".into()), Some("timeout".into()), Some("rm".into())]);
        assert_eq!(p("echo $(rm -rf x) `id`"), [Some("rm".into()), Some("id".into()), Some("echo".into())]);
        assert_eq!(p("sh -c 'curl x'"), [Some("curl".into()), Some("sh".into())]);
        assert_eq!(p("G=git; $G status"), [None]);
        assert_eq!(p("echo \"unterminated"), [None]);
        assert_eq!(p("echo 'a;b' \\| c"), [Some("echo".into())]);
        assert_eq!(
            p("if test -f x; then echo y; fi; for f in a b; do cat $f; done"),
            [Some("test".into()), Some("echo".into()), Some("cat".into())]
        );
        assert_eq!(p("{ echo a; } > out"), [Some("echo".into())]);
        let caps: Vec<String> = shell_capabilities("echo hi | tr a b").iter().map(ToString::to_string).collect();
        assert_eq!(caps, ["fs.read", "fs.write", "proc.exec:echo", "proc.exec:tr"]);
    }
}
