//! `steward.toml`: one configuration file, every key overridable by a `STEWARD_*` variable.
//!
//! Precedence, highest first: command-line flag, environment variable,
//! `steward.toml` (from `--config`, `STEWARD_CONFIG`, or `./steward.toml`),
//! built-in default. Unknown keys are errors, so a typo never silently
//! leaves a guard at its default.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use steward_artifacts::{ArtifactStore, FsArtifacts};
use steward_tools::bus::ToolBus;
use steward_tools::redact::Redactor;
use steward_tools::registry::EngineRegistry;
use steward_tools::sandbox::{self, Sandbox};
use steward_tools::terminal::{self, TerminalPolicy};

use crate::args::Cli;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    /// PostgreSQL instead of the embedded SQLite file.
    database_url: Option<String>,
    /// Never LISTEN for new work on PostgreSQL (behind a pooler in transaction mode): poll.
    database_poll_only: Option<bool>,
    stall_threshold_secs: Option<u64>,
    heartbeat_secs: Option<u64>,
    #[serde(default)]
    terminal: TerminalFile,
    #[serde(default)]
    engines: EnginesFile,
    #[serde(default)]
    sandbox: SandboxFile,
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    direclaw: DireclawFile,
    /// `days = 30` and `<family>_days = N` (FR-EVT-004).
    #[serde(default)]
    retention: std::collections::BTreeMap<String, u32>,
}

/// `[server]`: `steward serve`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    /// Where to listen [default: 127.0.0.1:8420].
    listen: Option<String>,
    /// The API token (`STEWARD_API_TOKEN` overrides it); required off loopback.
    token: Option<String>,
}

impl std::fmt::Debug for ServerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFile")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminalFile {
    /// Regular expressions matched against the command and each simple command the shell
    /// parser finds in it; a match denies. The structured rules apply as well.
    denylist: Option<Vec<String>>,
    /// If given, every simple command must match one of these.
    #[serde(default)]
    allowlist: Vec<String>,
    /// Structured denylist rules switched off, by id (`steward_core::shell::rules::RULES`).
    #[serde(default)]
    disabled_rules: Vec<String>,
    #[serde(default)]
    allowed_cwd_roots: Vec<PathBuf>,
    timeout_ms: Option<u64>,
    kill_grace_ms: Option<u64>,
    max_output_bytes: Option<usize>,
    /// Names of environment variables whose values are secret everywhere.
    #[serde(default)]
    secret_env: Vec<String>,
}

/// `[sandbox]`: how commands are contained (issue 11).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxFile {
    /// `required` (the default), `if_available` or `off`.
    mode: Option<sandbox::Mode>,
    /// The `steward-sandbox` launcher; by default the one beside `steward`.
    launcher: Option<PathBuf>,
    /// Profiles whose commands see the workspace's `.git` read-only.
    #[serde(default)]
    protect_git: Vec<String>,
    /// More paths hidden from every command.
    #[serde(default)]
    hide: Vec<String>,
    /// Capabilities granted to the commands of a profile or a workflow.
    #[serde(default)]
    grant: Vec<GrantFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    profile: Option<String>,
    workflow: Option<String>,
    capabilities: Vec<String>,
}

/// `[direclaw]`: DireClaw's orchestrator files that `steward workflow` finds by their id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DireclawFile {
    /// Orchestrator files, each known by the `id` it declares.
    #[serde(default)]
    orchestrators: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnginesFile {
    /// A `mechanical_engines.json` that adds, replaces or disables engines.
    file: Option<PathBuf>,
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) data_dir: PathBuf,
    /// PostgreSQL's URL when runs are recorded there; `None` for the embedded SQLite file.
    pub(crate) database_url: Option<String>,
    pub(crate) database_poll_only: bool,
    pub(crate) stall_threshold_secs: u64,
    pub(crate) heartbeat_secs: u64,
    pub(crate) source: Option<PathBuf>,
    /// Whether the configuration was named (`--config`, `STEWARD_CONFIG`) rather than found.
    named: bool,
    terminal: TerminalFile,
    engines_file: Option<PathBuf>,
    sandbox: SandboxFile,
    server: ServerFile,
    retention: steward_store::RetentionPolicy,
    /// `[direclaw] orchestrators`, relative paths taken from the configuration file's directory.
    pub(crate) orchestrators: Vec<PathBuf>,
}

const LIST_KEYS: &[&str] = &[
    "denylist",
    "allowlist",
    "disabled_rules",
    "allowed_cwd_roots",
    "secret_env",
    "protect_git",
    "hide",
    "orchestrators",
];

/// `STEWARD_TERMINAL_<KEY>` and `STEWARD_ENGINES_<KEY>` become keys of their section.
fn env_overrides(table: &mut toml::Table) {
    for (name, value) in std::env::vars() {
        let Some(rest) = name.strip_prefix("STEWARD_") else {
            continue;
        };
        let (section, key) = match rest.split_once('_') {
            Some(("TERMINAL", k)) => ("terminal", k.to_lowercase()),
            Some(("ENGINES", k)) => ("engines", k.to_lowercase()),
            Some(("SANDBOX", k)) => ("sandbox", k.to_lowercase()),
            Some(("RETENTION", k)) => ("retention", k.to_lowercase()),
            Some(("DIRECLAW", k)) => ("direclaw", k.to_lowercase()),
            _ => continue,
        };
        let v = if LIST_KEYS.contains(&key.as_str()) {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.into()))
                    .collect(),
            )
        } else if let Ok(n) = value.parse::<i64>() {
            toml::Value::Integer(n)
        } else {
            toml::Value::String(value)
        };
        let entry = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(key, v);
        }
    }
}

impl Settings {
    /// The same settings over the embedded store in `data_dir` (what `mt bench` gives each
    /// packet's copy, so a bench never writes into the runs it was started beside).
    pub(crate) fn embedded_at(&self, data_dir: PathBuf) -> Settings {
        Settings { data_dir, database_url: None, ..self.clone() }
    }

    /// Reads the configuration the way every command sees it.
    pub(crate) fn load(cli: &Cli) -> Result<Settings> {
        let explicit = cli.config.clone();
        let path = explicit.clone().or_else(|| Some(PathBuf::from("steward.toml")).filter(|p| p.exists()));
        let mut table = match &path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("cannot read configuration {}", p.display()))?;
                text.parse::<toml::Table>().map_err(|e| anyhow::anyhow!("configuration {}: {e}", p.display()))?
            }
            None => toml::Table::new(),
        };
        env_overrides(&mut table);
        let shown = path.as_deref().map_or_else(|| "environment".to_owned(), |p| p.display().to_string());
        let file: File =
            toml::Value::Table(table).try_into().map_err(|e| anyhow::anyhow!("configuration {shown}: {e}"))?;
        let mut retention = steward_store::RetentionPolicy::default();
        for (key, days) in &file.retention {
            let family = key.strip_suffix("_days");
            if key == "days" {
                retention.default_days = *days;
            } else if let Some(f) =
                family.filter(|f| steward_core::event_registry::Family::ALL.iter().any(|x| x.as_str() == *f))
            {
                retention.family_days.insert(f.to_owned(), *days);
            } else {
                let families: Vec<String> =
                    steward_core::event_registry::Family::ALL.iter().map(|f| format!("{}_days", f.as_str())).collect();
                bail!(
                    "configuration {shown}: unknown key `retention.{key}` (expected days or one of: {})",
                    families.join(", ")
                );
            }
        }
        let stall_threshold_secs = cli.stall_threshold_secs.or(file.stall_threshold_secs).unwrap_or(30);
        let heartbeat_secs = cli.heartbeat_secs.or(file.heartbeat_secs).unwrap_or(5);
        steward_core::liveness::check_liveness(heartbeat_secs, stall_threshold_secs).map_err(|e| {
            anyhow::anyhow!(
                "{e} (set by --stall-threshold, STEWARD_STALL_THRESHOLD_SECS or stall_threshold_secs in {shown}; \
                 the heartbeat by --heartbeat-secs, STEWARD_HEARTBEAT_SECS or heartbeat_secs)"
            )
        })?;
        // A registry names files from where it is written, so it reads the same from anywhere.
        let base = path.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let orchestrators = file.direclaw.orchestrators.iter().map(|p| base.join(p)).collect();
        Ok(Settings {
            orchestrators,
            data_dir: cli.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(".steward")),
            database_url: cli.database_url.clone().or(file.database_url).filter(|u| !u.trim().is_empty()),
            database_poll_only: file.database_poll_only.unwrap_or(false),
            stall_threshold_secs,
            heartbeat_secs,
            source: path,
            named: explicit.is_some(),
            terminal: file.terminal,
            engines_file: file.engines.file,
            sandbox: file.sandbox,
            server: ServerFile {
                listen: file.server.listen,
                token: std::env::var("STEWARD_API_TOKEN").ok().filter(|t| !t.is_empty()).or(file.server.token),
            },
            retention,
        })
    }

    /// `[server] listen`, checked.
    pub(crate) fn server_listen(&self) -> Result<Option<std::net::SocketAddr>> {
        let shown = self.source.as_deref().map_or_else(|| "environment".to_owned(), |p| p.display().to_string());
        self.server
            .listen
            .as_deref()
            .map(|l| l.parse().map_err(|e| anyhow::anyhow!("configuration {shown}: `server.listen` = {l:?}: {e}")))
            .transpose()
    }

    /// The API token: `STEWARD_API_TOKEN`, else `[server] token`.
    pub(crate) fn api_token(&self) -> Option<&str> {
        self.server.token.as_deref()
    }

    /// Event retention.
    pub(crate) fn retention(&self) -> steward_store::RetentionPolicy {
        self.retention.clone()
    }

    /// The terminal policy.
    pub(crate) fn policy(&self) -> Result<TerminalPolicy> {
        let mut p = TerminalPolicy::default();
        let t = &self.terminal;
        if let Some(deny) = &t.denylist {
            p.denylist = terminal::compile(deny).map_err(|e| anyhow::anyhow!("terminal.denylist: {e}"))?;
        }
        p.allowlist = terminal::compile(&t.allowlist).map_err(|e| anyhow::anyhow!("terminal.allowlist: {e}"))?;
        terminal::check_rules(&t.disabled_rules).map_err(|e| anyhow::anyhow!("terminal.disabled_rules: {e}"))?;
        p.disabled_rules = t.disabled_rules.clone();
        // Commands may not touch the data directory, wherever it is.
        p.data_dir = Some(self.data_dir.clone());
        for root in &t.allowed_cwd_roots {
            if root.is_absolute() || root.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                bail!(
                    "terminal.allowed_cwd_roots: `{}` must be relative to the workspace, without `..`",
                    root.display()
                );
            }
        }
        p.allowed_cwd_roots = t.allowed_cwd_roots.clone();
        if let Some(ms) = t.timeout_ms {
            p.timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = t.kill_grace_ms {
            p.kill_grace = Duration::from_millis(ms);
        }
        if let Some(n) = t.max_output_bytes {
            p.max_output_bytes = n;
        }
        Ok(p)
    }

    /// The tool bus every command goes through, its artifacts in the data directory (what a
    /// command that runs nothing needs: `validate`, `tools check`, `mt plan`).
    pub(crate) fn bus(&self) -> Result<ToolBus> {
        self.bus_with(self.artifacts())
    }

    /// The tool bus, its artifacts in `artifacts` (those of the store the command works on).
    pub(crate) fn bus_with(&self, artifacts: Arc<dyn ArtifactStore>) -> Result<ToolBus> {
        let mut registry = EngineRegistry::builtin()?;
        if let Some(file) = &self.engines_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read engine registry {}", file.display()))?;
            registry = registry.overlay(&file.display().to_string(), &text)?;
        }
        Ok(ToolBus::new(registry, self.policy()?, self.redactor(), artifacts, self.sandbox()?))
    }

    /// Where evidence, large values and micro-task job state are kept: the data directory
    /// (`artifacts/`, `micro_task_executor/`), the embedded default.
    pub(crate) fn artifacts(&self) -> Arc<dyn ArtifactStore> {
        Arc::new(FsArtifacts::in_data_dir(&self.data_dir))
    }

    /// What hides secrets in what Steward shows and records: the values of the `secret_env`
    /// variables and of this process's variables whose names say secret, and token shapes.
    pub(crate) fn redactor(&self) -> Redactor {
        let secrets: Vec<String> =
            self.terminal.secret_env.iter().filter_map(|name| std::env::var(name).ok()).collect();
        let inherited = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Redactor::new(secrets).with_env_secrets(inherited)
    }

    /// The sandbox every command runs in: the data directory and the credential stores hidden,
    /// the configuration read-only, the operator's grants checked.
    pub(crate) fn sandbox(&self) -> Result<Sandbox> {
        let f = &self.sandbox;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let expand = |p: &str| -> Result<PathBuf> {
            let path = match (p.strip_prefix("~/"), &home) {
                (Some(rest), Some(home)) => home.join(rest),
                (Some(_), None) => bail!("`{p}` starts with ~ but HOME is not set"),
                (None, _) => PathBuf::from(p),
            };
            if !path.is_absolute() {
                bail!("`{p}` must be an absolute path (or start with ~/)");
            }
            Ok(path)
        };
        // The small launcher installed beside this binary, else this binary itself
        // (`steward __sandbox`, slower to start: it loads all of Steward).
        let launcher = match &f.launcher {
            Some(l) => Some(l.clone()),
            None => std::env::current_exe()
                .ok()
                .map(|exe| Some(exe.with_file_name(sandbox::LAUNCHER)).filter(|l| l.is_file()).unwrap_or(exe)),
        };
        let data_dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let mut hidden = vec![data_dir];
        if let Some(home) = &home {
            hidden.extend(sandbox::credential_stores(home));
        }
        for (i, p) in f.hide.iter().enumerate() {
            hidden.push(expand(p).with_context(|| format!("sandbox.hide[{i}]"))?);
        }
        let read_only = self.source.iter().filter_map(|p| std::path::absolute(p).ok()).collect();
        let mut sb = Sandbox::new(f.mode.unwrap_or(sandbox::Mode::Required), launcher, hidden, read_only);
        let profiles: Vec<&str> = steward_core::capability::profiles().iter().map(|p| p.id).collect();
        for p in &f.protect_git {
            if !profiles.contains(&p.as_str()) {
                bail!("sandbox.protect_git: unknown profile `{p}` (expected one of: {})", profiles.join(", "));
            }
        }
        sb.protect_git = f.protect_git.clone();
        for (i, g) in f.grant.iter().enumerate() {
            let at = format!("sandbox.grant[{i}]");
            if let Some(p) = g.profile.as_deref().filter(|p| !profiles.contains(p)) {
                bail!("{at}.profile: unknown profile `{p}` (expected one of: {})", profiles.join(", "));
            }
            let mut capabilities = Vec::new();
            for c in &g.capabilities {
                let granted = match c.split_once(':') {
                    Some((axis @ ("fs.read" | "fs.write"), path)) => {
                        format!(
                            "{axis}:{}",
                            expand(path).with_context(|| format!("{at}.capabilities: `{c}`"))?.display()
                        )
                    }
                    _ if c == "net.http" => c.clone(),
                    Some(("secrets.use", name)) if !name.is_empty() => c.clone(),
                    _ => bail!(
                        "{at}.capabilities: `{c}` is not a grant the sandbox applies (expected net.http, \
                         fs.write:<path>, fs.read:<path> or secrets.use:<VARIABLE>)"
                    ),
                };
                steward_core::capability::CapabilityId::parse(&granted).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
                capabilities.push(granted);
            }
            sb.grants.push(sandbox::Grant { profile: g.profile.clone(), workflow: g.workflow.clone(), capabilities });
        }
        Ok(sb)
    }

    /// Refuses to continue a run that started at `started` under a `./steward.toml` that was
    /// found (not named) and was created or changed since: the run's own commands work in that
    /// directory, and a step may have written it (say, `[sandbox] mode = "off"`). Its change
    /// time is set by the kernel and cannot be set back. Naming it with `--config` is the
    /// operator's word that it is theirs.
    pub(crate) fn check_unchanged_since(&self, run_id: &str, started: steward_core::Timestamp) -> Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        if self.named {
            return Ok(());
        }
        let path = Path::new("steward.toml");
        // The link and what it leads to: a step may have made either.
        let changed_ms = [std::fs::symlink_metadata(path), std::fs::metadata(path)]
            .into_iter()
            .flatten()
            .map(|m| m.ctime().saturating_mul(1000).saturating_add(m.ctime_nsec() / 1_000_000))
            .max();
        if changed_ms.is_some_and(|ms| ms >= started.0) {
            bail!(
                "{} was created or changed after run {run_id} started, and a command of the run may have written it; \
                 check it, then name it with --config {} to continue under it",
                path.display(),
                path.display()
            );
        }
        Ok(())
    }

    /// Where the configuration came from, for `steward capabilities`.
    pub(crate) fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
}
