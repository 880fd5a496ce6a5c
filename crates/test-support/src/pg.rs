//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, a free port on
//! 127.0.0.1, stopped and removed when dropped.
//!
//! The server binaries come from `STEWARD_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
//! (Debian's layout), else `PATH`. Without them a test skips, printing why, unless
//! `STEWARD_REQUIRE_POSTGRES` is set (as `scripts/test` does): then it fails and says to run
//! `./scripts/postgres-install`. `initdb` and `postgres` refuse to run as root, so as root they
//! run as the `postgres` user (`runuser`), which then owns the cluster's directory.
//!
//! Every cluster also starts a small watchdog shell that stops it and removes its directory
//! once the test process is gone, so a test binary killed mid-run (or one sharing a cluster
//! through [`PgCluster::shared`], which is never dropped) leaves no server behind.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// A running throwaway cluster; dropping it stops the server (`-m immediate`) and removes its
/// directory.
pub struct PgCluster {
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    port: u16,
    /// The server's options (`pg_ctl -o`), port included.
    opts: String,
    as_postgres: bool,
    watchdog: Mutex<Option<Child>>,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster").field("port", &self.port).field("bin", &self.bin).finish_non_exhaustive()
    }
}

const REQUIRE: &str = "STEWARD_REQUIRE_POSTGRES";

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if any.
pub fn find_bin() -> Option<PathBuf> {
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = std::env::var_os("STEWARD_PG_BIN").map(PathBuf::from) {
        return complete(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).find(|dir| complete(dir))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl PgCluster {
    /// Starts a new cluster, or `None` (with the reason printed) when no PostgreSQL server
    /// binaries are installed. Panics if they are missing while `STEWARD_REQUIRE_POSTGRES` is
    /// set, or if the cluster does not start.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            let why = "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in STEWARD_PG_BIN, \
                       /usr/lib/postgresql/*/bin or PATH";
            assert!(
                std::env::var_os(REQUIRE).is_none(),
                "{REQUIRE} is set but there are {why}: run ./scripts/postgres-install"
            );
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipped: {why}; run ./scripts/postgres-install");
            }
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("steward-pg-").tempdir().expect("a temporary directory");
        let cluster =
            PgCluster { bin, dir: Some(dir), port: 0, opts: String::new(), as_postgres, watchdog: Mutex::new(None) };
        std::fs::create_dir(cluster.sock()).expect("the socket directory");
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.root())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} to postgres failed", cluster.root().display());
        }
        cluster.run_ok(
            Command::new(cluster.bin.join("initdb")).arg("-D").arg(cluster.data()).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]),
            "initdb",
        );
        let mut cluster = cluster;
        cluster.watch();
        // A port found free may be taken before the server binds it: try a few.
        for attempt in 0.. {
            cluster.port = free_port();
            cluster.opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                cluster.port,
                cluster.sock().display()
            );
            let started = cluster.run(&mut cluster.pg_ctl("start"));
            if started.status.success() {
                return Some(cluster);
            }
            assert!(
                attempt < 3,
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&started.stderr),
                cluster.log_tail()
            );
        }
        unreachable!()
    }

    /// One cluster for the whole test process, started on first use. Tests that share it must
    /// each work in a database of their own ([`PgCluster::create_database`]) and must not
    /// restart or stop it.
    pub fn shared() -> Option<&'static PgCluster> {
        static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start).as_ref()
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("the cluster directory")
    }

    fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    fn sock(&self) -> PathBuf {
        self.root().join("sock")
    }

    fn log(&self) -> PathBuf {
        self.root().join("sock").join("postgres.log")
    }

    /// The server log's last lines, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs a server binary, as `postgres` when this process is root.
    fn run(&self, cmd: &mut Command) -> std::process::Output {
        let mut cmd = if self.as_postgres {
            let mut wrapped = Command::new("runuser");
            wrapped.args(["-u", "postgres", "--"]).arg(cmd.get_program()).args(cmd.get_args());
            wrapped
        } else {
            std::mem::replace(cmd, Command::new("true"))
        };
        cmd.stdin(Stdio::null()).output().expect("run a PostgreSQL binary")
    }

    fn run_ok(&self, cmd: &mut Command, what: &str) {
        let out = self.run(cmd);
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the watchdog that cleans up after a test process that ends without dropping.
    fn watch(&mut self) {
        let runas = if self.as_postgres { "runuser -u postgres -- " } else { "" };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null && [ -d '{data}' ]; do sleep 1; done; \
             if [ -d '{data}' ]; then {runas}'{pg_ctl}' -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{root}'; fi",
            pid = std::process::id(),
            data = self.data().display(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            root = self.root().display(),
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at the test run must not stop the cleanup.
            .process_group(0)
            .spawn()
            .expect("start the cluster's watchdog");
        *self.watchdog.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of its `postgres` database (user `postgres`, no password).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db`.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database with a unique name and returns its URL.
    pub fn create_database(&self) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!("t_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url_for(&name)
    }

    /// Runs SQL with `psql` against the `postgres` database, panicking on failure.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql `{sql}` failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_ctl <action>` on this cluster, waiting for it to finish, with the server's options and
    /// log file (without `-l`, a started server would keep the caller's output pipes open).
    fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(self.data()).arg("-o").arg(&self.opts).arg("-l").arg(self.log());
        cmd.args(["-m", "fast", "-w", "-t", "60", action]);
        cmd
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection is cut, as in a
    /// failover or an upgrade; returns once it accepts connections again.
    pub fn restart(&self) {
        self.run_ok(&mut self.pg_ctl("restart"), "pg_ctl restart");
    }

    /// Stops the server (`-m fast`); [`PgCluster::start_again`] brings it back.
    pub fn stop(&self) {
        self.run_ok(&mut self.pg_ctl("stop"), "pg_ctl stop");
    }

    /// Starts a stopped server again, on the same port.
    pub fn start_again(&self) {
        self.run_ok(&mut self.pg_ctl("start"), "pg_ctl start");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.run(Command::new(self.bin.join("pg_ctl")).arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
        if let Some(mut child) = self.watchdog.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.dir.take());
    }
}
