//! Running the real binary in a scratch workspace with its own data directory.

use std::path::PathBuf;
use std::process::{Child, Command, Output};

use serde_json::Value;

pub(crate) const HELLO: &str = include_str!("../../../../examples/hello.yaml");

/// A scratch workspace (the current directory of every command) and data directory, and the
/// PostgreSQL database its commands use instead of the embedded SQLite file, if one is given.
pub(crate) struct Steward {
    pub(crate) work: tempfile::TempDir,
    /// The commands' `TMPDIR` (so their micro-task stages are this workspace's alone).
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) database_url: Option<String>,
}

impl Steward {
    pub(crate) fn new() -> Steward {
        Steward { work: tempfile::tempdir().unwrap(), tmp: tempfile::tempdir().unwrap(), database_url: None }
    }

    /// A workspace whose commands record runs in the PostgreSQL database at `url`.
    pub(crate) fn on_postgres(url: String) -> Steward {
        Steward { database_url: Some(url), ..Steward::new() }
    }

    /// Removes inherited Steward settings from `c` and gives it this workspace's database.
    pub(crate) fn isolate(&self, c: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("STEWARD_") {
                c.env_remove(k);
            }
        }
        if let Some(url) = &self.database_url {
            c.env("STEWARD_DATABASE_URL", url);
        }
        // This workspace's own temporary directory: where its micro-tasks are staged.
        c.env("TMPDIR", self.tmp.path());
    }

    /// A file named `name` in any micro-task stage of this workspace (see `isolate`).
    pub(crate) fn staged(&self, name: &str) -> Option<PathBuf> {
        fn find(dir: &std::path::Path, name: &str) -> Option<PathBuf> {
            for entry in std::fs::read_dir(dir).ok()?.flatten() {
                let path = entry.path();
                if entry.file_name() == name {
                    return Some(path);
                }
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(found) = find(&path, name)
                {
                    return Some(found);
                }
            }
            None
        }
        find(self.tmp.path(), name)
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.work.path().join(".steward")
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `steward ARGS` in the workspace, with no inherited Steward settings.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_steward"));
        c.args(args).current_dir(self.work.path());
        self.isolate(&mut c);
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed and print JSON.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "steward {args:?} failed: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("steward {args:?}: not JSON ({e}): {}", text(&out)))
    }

    /// The bytes of the database and its WAL: what "never writes" must leave alone.
    pub(crate) fn db_bytes(&self) -> Vec<Vec<u8>> {
        ["steward.db", "steward.db-wal"]
            .iter()
            .map(|f| std::fs::read(self.data_dir().join(f)).unwrap_or_default())
            .collect()
    }
}

/// stdout and stderr, for assertion messages.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A process a test started that must not outlive the test: killed with SIGKILL (which even a
/// stopped process cannot ignore) when dropped, as by a failing assertion, so that a failed test
/// leaves no worker or stopped driver behind to weigh on the tests after it.
pub(crate) struct Spawned(Option<Child>);

impl Spawned {
    pub(crate) fn new(child: Child) -> Spawned {
        Spawned(Some(child))
    }

    pub(crate) fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a process that was not waited for yet")
    }

    pub(crate) fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits for it to exit; then it is no longer this guard's to kill.
    pub(crate) fn wait(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.0.take().expect("a process that was not waited for yet");
        let status = child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The attempts of a run's first step, as `(attempt, status)`.
pub(crate) fn first_step_attempts(s: &Steward, id: &str) -> Vec<(u64, String)> {
    let status = s.json(&["status", id, "--json"]);
    status["steps"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["attempt"].as_u64().unwrap(), a["status"].as_str().unwrap().to_owned()))
        .collect()
}
