//! Terminal guards (§7, TERM-*): command policy, working-directory containment, session kinds.
//!
//! The policy is checked before anything is spawned. A denial is an explicit
//! capability failure with a code, never a silent no-op (TERM-SEC-002).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Serialize;

use crate::exec::{DEFAULT_KILL_GRACE, DEFAULT_OUTPUT_LIMIT, DEFAULT_TIMEOUT};

/// A guard's refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Denial {
    /// `HSK-TERM-00x`.
    pub code: String,
    /// Why, for a person.
    pub reason: String,
}

fn denial(code: &str, reason: impl Into<String>) -> Denial {
    Denial { code: code.to_owned(), reason: reason.into() }
}

/// Commands refused unless the operator's configuration says otherwise:
/// destructive version-control resets, deleting the filesystem or home
/// directory, and tampering with Steward's own data directory.
pub const DEFAULT_DENYLIST: &[&str] = &[
    r"(?i)\bgit\s+reset\s+--hard\b",
    r"(?i)\bgit\s+clean\s+(-[a-z]*f[a-z]*d|-[a-z]*d[a-z]*f)\b",
    r"(?i)\brm\s+(-[^\s]+\s+)*-[a-z]*r[a-z]*f?[a-z]*\s+(/|~|\$HOME)(\s|/?$|/\*)",
    r"(?i)\bmkfs(\.\w+)?\b",
    r"(?i)\b(shutdown|reboot|halt|poweroff)\b",
    r":\(\)\s*\{\s*:\|:&\s*\};:",
    r"\.steward[\\/]",
];

/// The operator's terminal policy.
#[derive(Debug, Clone)]
pub struct TerminalPolicy {
    /// Checked first: a match anywhere in the command denies it.
    pub denylist: Vec<Regex>,
    /// If not empty, a command must match one of these.
    pub allowlist: Vec<Regex>,
    /// If not empty, workspace-relative directories a command may run in.
    pub allowed_cwd_roots: Vec<PathBuf>,
    /// Default timeout (TERM-API-002: 180,000 ms).
    pub timeout: Duration,
    /// Grace between SIGTERM and SIGKILL (10,000 ms).
    pub kill_grace: Duration,
    /// Bytes kept per output stream (TERM-API-003: 1.5 MB).
    pub max_output_bytes: usize,
}

impl Default for TerminalPolicy {
    fn default() -> Self {
        TerminalPolicy {
            denylist: DEFAULT_DENYLIST.iter().filter_map(|p| Regex::new(p).ok()).collect(),
            allowlist: Vec::new(),
            allowed_cwd_roots: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            max_output_bytes: DEFAULT_OUTPUT_LIMIT,
        }
    }
}

/// Compiles patterns, naming the one that does not compile.
pub fn compile(patterns: &[String]) -> Result<Vec<Regex>, String> {
    patterns.iter().map(|p| Regex::new(p).map_err(|e| format!("invalid pattern `{p}`: {e}"))).collect()
}

impl TerminalPolicy {
    /// Denylist first, then allowlist (TERM-SEC-002).
    pub fn check_command(&self, command: &str) -> Result<(), Denial> {
        let command = command.trim();
        if command.is_empty() {
            return Err(denial("HSK-TERM-001", "the command is empty"));
        }
        if let Some(re) = self.denylist.iter().find(|re| re.is_match(command)) {
            return Err(denial(
                "HSK-TERM-002",
                format!("command denied by policy (matches denylist `{}`)", re.as_str()),
            ));
        }
        if !self.allowlist.is_empty() && !self.allowlist.iter().any(|re| re.is_match(command)) {
            return Err(denial("HSK-TERM-002", "command not allowed by policy (matches no allowlist pattern)"));
        }
        Ok(())
    }

    /// Resolves a workspace-relative `cwd` inside `root` (HSK-TERM-003):
    /// absolute paths, `..` escapes and symlinks that lead outside are refused.
    pub fn resolve_cwd(&self, root: &Path, cwd: &str) -> Result<PathBuf, Denial> {
        let rel = Path::new(cwd);
        if rel.is_absolute() {
            return Err(denial(
                "HSK-TERM-003",
                format!("cwd `{cwd}` is absolute; it must be relative to the workspace"),
            ));
        }
        let root = root.canonicalize().map_err(|e| {
            denial("HSK-TERM-003", format!("workspace root {} cannot be resolved: {e}", root.display()))
        })?;
        let target = root
            .join(rel)
            .canonicalize()
            .map_err(|e| denial("HSK-TERM-003", format!("cwd `{cwd}` cannot be resolved inside the workspace: {e}")))?;
        if !target.starts_with(&root) {
            return Err(denial(
                "HSK-TERM-003",
                format!("cwd `{cwd}` resolves to {}, outside the workspace {}", target.display(), root.display()),
            ));
        }
        if !self.allowed_cwd_roots.is_empty() {
            let inside = self.allowed_cwd_roots.iter().any(|allowed| {
                allowed.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
                    && allowed.components().all(|c| !matches!(c, Component::ParentDir))
                    && target.starts_with(root.join(allowed))
            });
            if !inside {
                return Err(denial("HSK-TERM-003", format!("cwd `{cwd}` is not under an allowed directory")));
            }
        }
        Ok(target)
    }
}

/// Who a terminal session belongs to (TERM-UX-001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SessionKind {
    /// A person's shell.
    #[serde(rename = "HUMAN_DEV")]
    HumanDev,
    /// A job's commands (workflow steps, verify commands).
    #[serde(rename = "AI_JOB")]
    AiJob,
    /// A plugin's tool.
    #[serde(rename = "PLUGIN_TOOL")]
    PluginTool,
}

impl SessionKind {
    /// `HUMAN_DEV`, `AI_JOB`, `PLUGIN_TOOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::HumanDev => "HUMAN_DEV",
            SessionKind::AiJob => "AI_JOB",
            SessionKind::PluginTool => "PLUGIN_TOOL",
        }
    }
}

/// TERM-UX-002: an AI actor reaches into a human session only with
/// `terminal.attach_human` granted *and* a recorded human consent.
/// Returns whether the capability was granted (for the audit) and the decision.
pub fn authorize_attach(
    actor_is_ai: bool,
    session: SessionKind,
    attach_granted: bool,
    consent_recorded: bool,
) -> Result<(), Denial> {
    if !actor_is_ai || session != SessionKind::HumanDev {
        return Ok(());
    }
    match (attach_granted, consent_recorded) {
        (true, true) => Ok(()),
        (false, _) => Err(denial(
            "HSK-TERM-009",
            "an AI actor may not attach to a HUMAN_DEV session without terminal.attach_human",
        )),
        (true, false) => Err(denial("HSK-TERM-009", "attaching to a HUMAN_DEV session needs a recorded human consent")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TERM-SEC-002: denylist is checked before allowlist.
    #[test]
    fn denylist_wins_over_allowlist() {
        let p = TerminalPolicy { allowlist: compile(&["^git ".into()]).unwrap(), ..TerminalPolicy::default() };
        assert!(p.check_command("git status").is_ok());
        let e = p.check_command("git reset --hard HEAD").unwrap_err();
        assert_eq!(e.code, "HSK-TERM-002");
        assert!(e.reason.contains("denylist"), "{e}");
        assert!(p.check_command("ls").unwrap_err().reason.contains("allowlist"));
        assert_eq!(p.check_command("  ").unwrap_err().code, "HSK-TERM-001");
    }

    #[test]
    fn the_default_denylist_blocks_destruction_but_not_builds() {
        let p = TerminalPolicy::default();
        for bad in [
            "rm -rf /",
            "rm -rf ~",
            "sudo rm -fr / ",
            "git clean -fd",
            "mkfs.ext4 /dev/sda",
            "cat .steward/steward.db",
            "shutdown -h now",
        ] {
            assert!(p.check_command(bad).is_err(), "{bad}");
        }
        for ok in ["rm -rf build", "rm -rf ./target/tmp", "cargo test", "git status", "echo rebooted-ish"] {
            assert!(p.check_command(ok).is_ok(), "{ok}");
        }
    }

    /// HSK-TERM-003: `..`, absolute paths and symlinks cannot leave the workspace.
    #[test]
    fn cwd_stays_inside_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("src/deep")).unwrap();
        std::fs::create_dir_all(ws.path().join("tests")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("escape")).unwrap();
        let mut p = TerminalPolicy::default();
        assert!(p.resolve_cwd(ws.path(), "src/deep").is_ok());
        assert!(p.resolve_cwd(ws.path(), ".").is_ok());
        for (cwd, why) in [
            ("../", "outside"),
            ("src/../../", "outside"),
            ("/tmp", "absolute"),
            ("escape", "outside"),
            ("nope", "cannot be resolved"),
        ] {
            let e = p.resolve_cwd(ws.path(), cwd).unwrap_err();
            assert_eq!(e.code, "HSK-TERM-003");
            assert!(e.reason.contains(why), "{cwd}: {e}");
        }
        p.allowed_cwd_roots = vec!["src".into()];
        assert!(p.resolve_cwd(ws.path(), "src/deep").is_ok());
        assert!(p.resolve_cwd(ws.path(), "tests").is_err());
    }

    /// TERM-UX-002.
    #[test]
    fn ai_attaches_to_human_sessions_only_with_capability_and_consent() {
        assert!(authorize_attach(true, SessionKind::HumanDev, true, true).is_ok());
        assert!(authorize_attach(true, SessionKind::HumanDev, true, false).is_err());
        assert!(authorize_attach(true, SessionKind::HumanDev, false, true).is_err());
        assert!(authorize_attach(true, SessionKind::AiJob, false, false).is_ok());
        assert!(authorize_attach(false, SessionKind::HumanDev, false, false).is_ok());
    }
}
