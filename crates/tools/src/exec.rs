//! Running one command under a timeout, a kill grace, output limits and cancellation, once its
//! process group is recorded.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use steward_core::liveness::ProcessRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::process;

/// Default timeout (TERM-API: 180,000 ms).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(180_000);
/// Default grace between SIGTERM and SIGKILL (10,000 ms).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_millis(10_000);
/// Default limit per output stream (1.5 MB).
pub const DEFAULT_OUTPUT_LIMIT: usize = 1_500_000;

/// How long output may stay open after the command's whole group is gone before only what is
/// already written is read.
const DRAIN: Duration = Duration::from_millis(200);

/// While draining, a read that waits this long finds nothing more written.
const DRAIN_READ: Duration = Duration::from_millis(50);

/// A command to run.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Bytes kept per stream.
    pub output_limit: usize,
    /// Inherited variables the command does not get.
    pub env_remove: Vec<String>,
    /// The sandbox it runs in: the launcher and its rules; `None` runs it uncontained.
    pub sandbox: Option<(PathBuf, crate::sandbox::Rules)>,
}

impl CommandSpec {
    /// `sh -c <script>` in `cwd` with default limits.
    pub fn shell(script: &str, cwd: PathBuf) -> CommandSpec {
        CommandSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            cwd,
            timeout: DEFAULT_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            env_remove: Vec::new(),
            sandbox: None,
        }
    }

    /// What the launcher is told to run: the sandbox launcher and its arguments, or the command.
    fn launched(&self) -> (String, Vec<String>) {
        match &self.sandbox {
            Some((launcher, rules)) => {
                (launcher.display().to_string(), crate::sandbox::launch_args(rules, &self.program, &self.args))
            }
            None => (self.program.clone(), self.args.clone()),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it (not one we sent).
    Signalled(i32),
    /// Its timeout expired and its process group was killed.
    TimedOut,
    /// It was cancelled and its process group was killed.
    Cancelled,
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// Captured standard output, at most `output_limit` bytes.
    pub stdout: Vec<u8>,
    /// Captured standard error, at most `output_limit` bytes.
    pub stderr: Vec<u8>,
    /// Bytes of stdout dropped past the limit.
    pub stdout_truncated_bytes: u64,
    /// Bytes of stderr dropped past the limit.
    pub stderr_truncated_bytes: u64,
    /// Wall-clock run time.
    pub duration: Duration,
}

/// A command that was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The process could not be created.
    #[error("cannot start `{program}` in {cwd}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The directory it was to run in.
        cwd: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its process could not be recorded, so it was killed before the command ran.
    #[error("`{program}` was not started: its process could not be recorded: {reason}")]
    Unrecorded {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
}

/// A boxed future, for the recorder's object-safe method.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Told about a command's process group before the command may run, so that whoever takes
/// over after a crash can find it (and kill it) even if the engine dies the next instant.
pub trait ProcessRecorder: Send + Sync {
    /// Records `process` durably; the command runs only if this returns `Ok`.
    fn record(&self, process: ProcessRef) -> BoxFuture<'_, Result<(), String>>;
}

/// For commands no later process has to find (`steward tools check`, tests): records nothing.
#[derive(Debug, Clone, Copy)]
pub struct Unrecorded;

impl ProcessRecorder for Unrecorded {
    fn record(&self, _: ProcessRef) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Holds a command until its process is recorded. The shell that leads the group waits for
/// one line on its stdin and becomes the command (same pid, same group) only if it reads
/// `go`. If Steward dies before sending it, the pipe reaches end of file and the command
/// never runs: no command runs that a recovery could not find.
const LAUNCH: &str = r#"IFS= read -r go && [ "$go" = go ] || exit 125; exec 0</dev/null; exec "$@""#;

/// Cancelled by [`hurry`]: commands being stopped skip the rest of their grace.
fn hurried() -> &'static CancellationToken {
    static HURRY: OnceLock<CancellationToken> = OnceLock::new();
    HURRY.get_or_init(CancellationToken::new)
}

/// Every command this process is stopping (timed out or cancelled, within its kill grace)
/// gets SIGKILL now; for a second Ctrl-C.
pub fn hurry() {
    hurried().cancel();
}

/// Runs `spec` to completion, timeout or cancellation.
///
/// The command leads its own process group, so a timeout or cancel reaches
/// every process it started (grandchildren included): SIGTERM first, SIGKILL
/// after `kill_grace`. When the command exits on its own, anything it left
/// behind in its group is killed too, so no process outlives its step.
///
/// Before the command runs, its group is handed to `recorder`; if that fails, the group is
/// killed and [`StartError::Unrecorded`] returned.
pub async fn run(
    spec: &CommandSpec,
    cancel: &CancellationToken,
    recorder: &dyn ProcessRecorder,
) -> Result<Outcome, StartError> {
    let (program, args) = spec.launched();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(LAUNCH)
        .arg("steward-launch")
        .arg(program)
        .args(args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for name in &spec.env_remove {
        cmd.env_remove(name);
    }
    if spec.sandbox.is_some() {
        // The launcher ties the command's life to this process's (see `sandbox::ENGINE_PID`).
        cmd.env(crate::sandbox::ENGINE_PID, std::process::id().to_string());
    }
    let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
        program: spec.program.clone(),
        cwd: spec.cwd.display().to_string(),
        source,
    })?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok());
    let pgid = pid.map(Pid::from_raw);
    let unrecorded = |reason: String| StartError::Unrecorded { program: spec.program.clone(), reason };
    // The shell is blocked reading its stdin, so the process is there to be identified.
    let process = pid.and_then(process::identify);
    let recorded = match &process {
        Some(p) => tokio::select! {
            r = recorder.record(p.clone()) => r.map_err(unrecorded),
            () = cancel.cancelled() => Err(unrecorded("cancelled before it started".into())),
        },
        None => Err(unrecorded(format!("process {} cannot be identified in /proc", pid.unwrap_or_default()))),
    };
    let mut go = child.stdin.take();
    if let Err(e) = recorded {
        signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
        return Err(e);
    }
    if let Some(stdin) = go.as_mut() {
        // A failed write means the shell is gone; its exit status says how.
        let _ = stdin.write_all(b"go\n").await;
    }
    drop(go);

    let started = Instant::now();
    let stop_reading = CancellationToken::new();
    let out = tokio::spawn(read_limited(child.stdout.take(), spec.output_limit, stop_reading.clone()));
    let err = tokio::spawn(read_limited(child.stderr.take(), spec.output_limit, stop_reading.clone()));

    let forced = tokio::select! {
        status = child.wait() => Ok(status),
        () = tokio::time::sleep(spec.timeout) => Err(Ending::TimedOut),
        () = cancel.cancelled() => Err(Ending::Cancelled),
    };
    let ending = match forced {
        Ok(status) => match status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(code), _) => Ending::Exited(code),
                (None, Some(sig)) => Ending::Signalled(sig),
                (None, None) => Ending::Exited(-1),
            },
            Err(_) => Ending::Exited(-1),
        },
        Err(ending) => {
            signal_group(pgid, Signal::SIGTERM);
            let exited = tokio::select! {
                r = tokio::time::timeout(spec.kill_grace, child.wait()) => r.is_ok(),
                () = hurried().cancelled() => false,
            };
            if !exited {
                signal_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            ending
        }
    };
    // Whatever the command left in its group (stragglers that ignored SIGTERM, background
    // jobs) dies with it, and is gone before this returns: nothing of an attempt outlives it
    // in its group to overlap its retry.
    if let Some(p) = &process {
        process::end_group(p).await;
    }
    // With the group gone, its output reaches end of file at once, unless a process that left
    // the group (`setsid`) still holds it: then what is already written is read and the rest
    // is not waited for, so a command cannot hold its step past its end, or its timeout.
    let readers = async { (out.await, err.await) };
    tokio::pin!(readers);
    let (out, err) = tokio::select! {
        both = &mut readers => both,
        () = tokio::time::sleep(DRAIN) => {
            stop_reading.cancel();
            readers.await
        }
    };
    let (stdout, stdout_truncated_bytes) = out.unwrap_or_default();
    let (stderr, stderr_truncated_bytes) = err.unwrap_or_default();
    Ok(Outcome { ending, stdout, stderr, stdout_truncated_bytes, stderr_truncated_bytes, duration: started.elapsed() })
}

fn signal_group(pgid: Option<Pid>, sig: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (the group is gone) is the normal case after a clean exit.
        let _ = killpg(pgid, sig);
    }
}

/// Reads a stream to its end, keeping at most `limit` bytes and counting the rest.
/// Once `stop` fires, it reads only what is already written: a read that has to wait ends it.
async fn read_limited<R: AsyncRead + Unpin>(
    stream: Option<R>,
    limit: usize,
    stop: CancellationToken,
) -> (Vec<u8>, u64) {
    let Some(mut stream) = stream else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        let read = if stop.is_cancelled() {
            match tokio::time::timeout(DRAIN_READ, stream.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => break,
            }
        } else {
            // Reading a pipe is cancel-safe: nothing read is lost when `stop` wins.
            tokio::select! {
                read = stream.read(&mut buf) => read,
                () = stop.cancelled() => continue,
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                let take = n.min(room);
                kept.extend_from_slice(&buf[..take]);
                dropped += (n - take) as u64;
            }
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> CommandSpec {
        CommandSpec::shell(script, std::env::temp_dir())
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let o = run(&spec("echo out; echo err >&2; exit 3"), &CancellationToken::new(), &Unrecorded).await.unwrap();
        assert_eq!(o.ending, Ending::Exited(3));
        assert_eq!((o.stdout.as_slice(), o.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    }

    #[tokio::test]
    async fn output_is_truncated_at_the_limit_and_counted() {
        let mut s = spec("head -c 10000 /dev/zero");
        s.output_limit = 4096;
        let o = run(&s, &CancellationToken::new(), &Unrecorded).await.unwrap();
        assert_eq!((o.stdout.len(), o.stdout_truncated_bytes), (4096, 10000 - 4096));
    }

    /// Whether a process is gone (absent, or a zombie nobody reaped yet).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        // A grandchild records its pid, then outlives its parent unless the group is killed.
        let mut s = CommandSpec::shell("sh -c 'echo $$ > gc.pid; exec sleep 30' & sleep 30", dir.path().to_owned());
        s.timeout = Duration::from_millis(300);
        s.kill_grace = Duration::from_millis(200);
        let o = run(&s, &CancellationToken::new(), &Unrecorded).await.unwrap();
        assert_eq!(o.ending, Ending::TimedOut);
        let pid = std::fs::read_to_string(dir.path().join("gc.pid")).unwrap();
        assert!(gone(&pid), "grandchild {pid} survived the group kill");
    }

    #[tokio::test]
    async fn cancellation_sends_sigterm_then_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        // SIGTERM is ignored (and the ignoring is inherited by `sleep`): only SIGKILL ends it.
        let mut s = CommandSpec::shell("trap '' TERM; touch trapped; sleep 30", dir.path().to_owned());
        s.kill_grace = Duration::from_millis(100);
        let t = token.clone();
        let handle = tokio::spawn(async move { run(&s, &t, &Unrecorded).await });
        while !dir.path().join("trapped").exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        token.cancel();
        let o = handle.await.unwrap().unwrap();
        assert_eq!(o.ending, Ending::Cancelled);
        // Without the SIGKILL after the grace, the command would have run its 30 s.
        assert!(o.duration < Duration::from_secs(10), "ended after {:?}", o.duration);
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_spawn_error() {
        let s = CommandSpec::shell("true", "/nonexistent/dir".into());
        let e = run(&s, &CancellationToken::new(), &Unrecorded).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir"), "{e}");
    }

    /// A process that leaves the command's group (`setsid`) and keeps its output open cannot
    /// hold the command past its end: what was written is kept, the rest not waited for.
    #[tokio::test]
    async fn output_held_by_a_process_that_left_the_group_does_not_hold_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let s = CommandSpec::shell(
            "setsid sh -c 'echo $$ > escaped.pid; exec sleep 30' & while [ ! -s escaped.pid ]; do sleep 0.01; done; echo out",
            dir.path().to_owned(),
        );
        let o = run(&s, &CancellationToken::new(), &Unrecorded).await.unwrap();
        let escaped: i32 = std::fs::read_to_string(dir.path().join("escaped.pid")).unwrap().trim().parse().unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(escaped), Signal::SIGKILL);
        assert_eq!((o.ending, o.stdout.as_slice()), (Ending::Exited(0), &b"out\n"[..]));
        // Without the drain bound it would have waited for the escaped `sleep 30`.
        assert!(o.duration < Duration::from_secs(20), "ended after {:?}", o.duration);
    }

    /// Records what it is told, after checking the command has not run yet.
    struct Witness {
        marker: PathBuf,
        refuse: bool,
        seen: std::sync::Mutex<Vec<(ProcessRef, bool)>>,
    }

    impl ProcessRecorder for Witness {
        fn record(&self, p: ProcessRef) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move {
                self.seen.lock().unwrap().push((p, self.marker.exists()));
                if self.refuse { Err("the store refused".into()) } else { Ok(()) }
            })
        }
    }

    /// Issue 10: the command's group is recorded before the command runs, with the identity
    /// of the process that then runs it; a refused record means it never runs.
    #[tokio::test]
    async fn the_process_is_recorded_before_the_command_runs() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let s = CommandSpec::shell("echo $$ > ran", dir.path().to_owned());
        let w = Witness { marker: marker.clone(), refuse: false, seen: Default::default() };
        let o = run(&s, &CancellationToken::new(), &w).await.unwrap();
        assert_eq!(o.ending, Ending::Exited(0));
        let (p, ran_before) = w.seen.lock().unwrap()[0].clone();
        assert!(!ran_before, "the command ran before its process was recorded");
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        assert_eq!(p.pid, pid, "the recorded process is the one that ran the command");
        assert_eq!(crate::process::liveness(&p), crate::process::Liveness::Gone);

        std::fs::remove_file(&marker).unwrap();
        let w = Witness { marker: marker.clone(), refuse: true, seen: Default::default() };
        let e = run(&s, &CancellationToken::new(), &w).await.unwrap_err();
        assert!(e.to_string().contains("the store refused"), "{e}");
        assert!(!marker.exists(), "a command whose process was not recorded ran");
    }

    /// If Steward dies between starting the process and recording it, the command never runs:
    /// the launcher reads end of file instead of `go`.
    #[test]
    fn a_launcher_whose_parent_died_never_runs_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", LAUNCH, "steward-launch", "sh", "-c", "touch ran"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(!dir.path().join("ran").exists());
    }
}
