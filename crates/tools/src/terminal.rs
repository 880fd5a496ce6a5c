//! Terminal guards (§7, TERM-*): command policy, working-directory containment, session kinds.
//!
//! The policy is checked before anything is spawned. A denial is an explicit
//! capability failure with a code, never a silent no-op (TERM-SEC-002). The
//! command policy judges the commands a shell parser finds, not the text
//! (issue 11): see [`steward_core::shell`].

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Serialize;
use steward_core::shell::{self, Command, rules};

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

/// The operator's terminal policy.
///
/// A command is read by the shell parser ([`steward_core::shell`]) into the
/// simple commands it would run, and judged in this order (TERM-SEC-002,
/// HSK-TERM-002, issue 11): the operator's `denylist` patterns, the
/// structured rules of [`steward_core::shell::rules`] (less any the operator
/// disabled), then the operator's `allowlist`, which every simple command must
/// satisfy.
#[derive(Debug, Clone)]
pub struct TerminalPolicy {
    /// Operator patterns, checked first: a match against the whole command, or
    /// against any simple command's normalised text (`program arg ...`, with or
    /// without its wrappers), denies it.
    pub denylist: Vec<Regex>,
    /// If not empty, every simple command's normalised text must match one of these.
    pub allowlist: Vec<Regex>,
    /// Structured rules the operator switched off, by id ([`rules::RULES`]).
    pub disabled_rules: Vec<String>,
    /// Steward's data directory (absolute, or relative to the workspace), which no command may touch.
    pub data_dir: Option<PathBuf>,
    /// The home directory, so that absolute paths into it are recognised.
    pub home: Option<PathBuf>,
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
            denylist: Vec::new(),
            allowlist: Vec::new(),
            disabled_rules: Vec::new(),
            data_dir: Some(PathBuf::from(".steward")),
            home: std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute()),
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

/// Checks rule ids, naming the one that does not exist.
pub fn check_rules(ids: &[String]) -> Result<(), String> {
    match ids.iter().find(|id| !rules::is_rule(id)) {
        Some(id) => Err(format!(
            "unknown rule `{id}` (expected one of: {})",
            rules::RULES.iter().map(|(r, _)| *r).collect::<Vec<_>>().join(", ")
        )),
        None => Ok(()),
    }
}

impl TerminalPolicy {
    /// [`TerminalPolicy::check_command_at`] with nothing known about the workspace.
    pub fn check_command(&self, command: &str) -> Result<(), Denial> {
        self.check_command_at(command, None, ".")
    }

    /// Denylist first, then allowlist (TERM-SEC-002), on the commands the shell parser finds
    /// (HSK-TERM-002, issue 11). `workspace` and `cwd` (relative to it) place relative paths.
    pub fn check_command_at(&self, command: &str, workspace: Option<&Path>, cwd: &str) -> Result<(), Denial> {
        if command.trim().is_empty() {
            return Err(denial("HSK-TERM-001", "the command is empty"));
        }
        let analysis = shell::analyze(command);
        for re in &self.denylist {
            if re.is_match(command) {
                return Err(denial(
                    "HSK-TERM-002",
                    format!("command denied by policy (matches denylist `{}`)", re.as_str()),
                ));
            }
            if let Some(c) = analysis.commands.iter().find(|c| re.is_match(&c.text()) || re.is_match(&c.full_text())) {
                return Err(denial(
                    "HSK-TERM-002",
                    format!("command denied by policy: {} matches denylist `{}`", c.shown(), re.as_str()),
                ));
            }
        }
        let workspace = workspace.map(|w| w.to_string_lossy().into_owned());
        let data_dir = self.data_dir.as_ref().map(|d| d.to_string_lossy().into_owned());
        let home = self.home.as_ref().map(|h| h.to_string_lossy().into_owned());
        let ctx = rules::Context {
            workspace: workspace.as_deref(),
            cwd,
            data_dir: data_dir.as_deref(),
            home: home.as_deref(),
        };
        if let Some(f) =
            rules::judge(&analysis, &ctx).into_iter().find(|f| !self.disabled_rules.iter().any(|d| d == f.rule))
        {
            return Err(denial("HSK-TERM-002", format!("command denied by policy: {f}")));
        }
        if self.allowlist.is_empty() {
            return Ok(());
        }
        if let Some(u) = analysis.unjudgeable.first() {
            return Err(denial(
                "HSK-TERM-002",
                format!("command not allowed by policy: {}, so it cannot be checked against the allowlist", u.reason),
            ));
        }
        let allowed =
            |c: &Command| self.allowlist.iter().any(|re| re.is_match(&c.text()) || re.is_match(&c.full_text()));
        match analysis.commands.iter().find(|c| !c.function_call && !c.program.is_empty() && !allowed(c)) {
            Some(c) => Err(denial(
                "HSK-TERM-002",
                format!("command not allowed by policy: {} matches no allowlist pattern", c.shown()),
            )),
            None => Ok(()),
        }
    }

    /// Resolves a workspace-relative `cwd` inside `root` (HSK-TERM-003):
    /// absolute paths, `..` escapes and symlinks that lead outside are refused.
    pub fn resolve_cwd(&self, root: &Path, cwd: &str) -> Result<PathBuf, Denial> {
        if let Some(escape) = steward_core::shell::paths::CwdEscape::of(cwd) {
            return Err(denial("HSK-TERM-003", escape.reason(cwd)));
        }
        let rel = Path::new(cwd);
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

    /// HSK-TERM-002, issue 11: operator patterns apply to every simple command the parser finds,
    /// normalised; the allowlist must be satisfied by each of them.
    #[test]
    fn operator_patterns_apply_to_each_simple_command() {
        let p = TerminalPolicy { denylist: compile(&[r"^curl\b".into()]).unwrap(), ..TerminalPolicy::default() };
        for bad in ["curl x", "echo $(curl x)", "sh -c 'curl x'", "/usr/bin/curl x", "env A=1 curl x"] {
            let e = p.check_command(bad).unwrap_err();
            assert!(e.reason.contains("denylist `^curl\\b`"), "{bad}: {e}");
        }
        assert!(p.check_command("echo curl").is_ok());
        let p = TerminalPolicy {
            allowlist: compile(&["^cargo ".into(), "^git status$".into()]).unwrap(),
            ..TerminalPolicy::default()
        };
        assert!(p.check_command("cargo build && git status").is_ok());
        assert!(p.check_command("FOO=1 /usr/bin/git status").is_ok());
        let e = p.check_command("cargo build && rm -f x").unwrap_err();
        assert!(e.reason.contains("`rm -f x` matches no allowlist pattern"), "{e}");
        let e = p.check_command("cargo build $(id)").unwrap_err();
        assert!(e.reason.contains("`id`"), "{e}");
        let e = p.check_command("$X build").unwrap_err();
        assert!(e.reason.contains("computed at run time"), "{e}");
    }

    /// An operator can switch a structured rule off by id; unknown ids are refused.
    #[test]
    fn structured_rules_can_be_disabled_by_id() {
        let p = TerminalPolicy { disabled_rules: vec!["git-push-force".into()], ..TerminalPolicy::default() };
        assert!(p.check_command("git push -f origin main").is_ok());
        assert!(p.check_command("git reset --hard").is_err());
        assert!(check_rules(&["git-push-force".into()]).is_ok());
        assert!(check_rules(&["nope".into()]).unwrap_err().contains("unknown rule `nope`"));
    }

    /// The data directory is refused wherever the configuration puts it.
    #[test]
    fn the_configured_data_directory_is_refused() {
        let p = TerminalPolicy { data_dir: Some("/srv/steward-data".into()), ..TerminalPolicy::default() };
        let e = p.check_command("sqlite3 /srv/steward-data/steward.db .dump").unwrap_err();
        assert!(e.reason.contains("data-dir"), "{e}");
        assert!(p.check_command_at("rm -rf ./x", Some(Path::new("/work/ws")), "src").is_ok());
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
