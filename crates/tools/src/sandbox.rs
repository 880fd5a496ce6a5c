//! The operating-system sandbox every command of the tool bus runs in: what it may write, what
//! it cannot see, and whether it reaches the network.
//!
//! A command is started by the `steward-sandbox` launcher (or `steward __sandbox`), which
//! contains itself, starts the command under a small init, and stays the recorded process
//! group leader until the command ends, exiting with its status:
//!
//! - private user, mount and pid namespaces. Every inherited file system is remounted
//!   read-only and the writable paths bound back; Steward's data directory, the usual
//!   credential stores and `/run` (the daemons' sockets) are covered by an empty read-only
//!   directory (or `/dev/null` for a file); the configuration, what git runs as code (or all
//!   of `.git`, where the profile says so) are bound read-only, with the directories above them
//!   pinned as mount points; `/tmp` and `/dev/shm` are private, empty tmpfs mounts that vanish
//!   with the command (what the command works with under the host's `/tmp`, such as its
//!   workspace, is bound back). The init is process 1 of the pid namespace: when the command
//!   ends, everything it started ends with it;
//! - a private network namespace (only a loopback that is down) unless `net.http` is granted;
//! - Landlock: the whole file system readable, writes only beneath the workspace, `/tmp`,
//!   `/dev/shm`, the granted paths and a few devices (no `/dev/tty`, no device ioctl); no
//!   signals to processes outside the sandbox (the engine cannot be killed by its own step),
//!   no abstract sockets outside it, no ptrace or `/proc/<pid>/fd` of outside processes, and no
//!   mount changes, so nothing set up here can be undone from inside.
//!
//! Landlock is the mechanism for writes; the namespaces are what hide and contain. Both are
//! required, Landlock in full (ABI 6): a kernel that lacks either cannot sandbox, and the
//! command is refused unless the operator allowed running without one (`[sandbox] mode`),
//! which every attempt then records.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, LandlockStatus, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode as FileMode;
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The launcher's file name; it is installed beside `steward`.
pub const LAUNCHER: &str = "steward-sandbox";

/// The argument that makes the launcher the init of a command's pid namespace.
const INIT_ARG: &str = "__sandbox-init";

/// The environment variable that tells the launcher which process started it: the engine.
///
/// A command dies with its engine. The launcher asks the kernel to kill it when its parent (the
/// engine) dies, and the command's init asks the same of the launcher, whose death ends the
/// command's pid namespace: so an engine killed with SIGKILL leaves no command running, on any
/// machine, and a peer that takes its runs over need not reach that machine to stop them. The
/// variable closes the race where the engine died before the launcher asked: its parent is then
/// no longer the process named here, and it runs nothing.
pub const ENGINE_PID: &str = "STEWARD_ENGINE_PID";

/// The launcher's first argument, so that `steward` itself can be the launcher where
/// `steward-sandbox` is not installed beside it.
pub const LAUNCH_ARG: &str = "__sandbox";

/// The exit code of a launcher that could not contain its command (the command did not run).
/// It is reported as the command's exit, with the launcher's reason on its stderr: a command
/// can exit 126 too, so no channel shared with it can say "not started" truthfully.
pub const SETUP_FAILED: i32 = 126;

/// What a launcher that could not contain its command prints first on stderr.
pub const SETUP_FAILED_PREFIX: &str = "steward-sandbox:";

/// The Landlock ABI this sandbox is written against: file-system rights up to ioctl on
/// devices (5) and the signal and abstract-socket scopes (6). Newer kernels enforce it fully;
/// older ones enforce what they know, and the attempt records the ABI that was in force.
const TARGET_ABI: ABI = ABI::V6;

/// Files beneath the home directory that hold credentials, hidden from every command.
pub const CREDENTIAL_STORES: &[&str] = &[
    ".ssh",
    ".aws",
    ".azure",
    ".gnupg",
    ".netrc",
    ".git-credentials",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".config/git/credentials",
    ".docker/config.json",
    ".kube",
    ".npmrc",
    ".yarnrc",
    ".pypirc",
    ".pgpass",
    ".my.cnf",
    ".s3cfg",
    ".boto",
    ".gem/credentials",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".terraform.d/credentials.tfrc.json",
    ".config/huggingface",
    ".cache/huggingface/token",
    ".local/share/keyrings",
    ".password-store",
    ".vault-token",
];

/// The private `/tmp` and `/dev/shm` live in memory. Unbounded, each could take half of it
/// (tmpfs's default) and a command filling both could starve the machine, the engine included;
/// bounded, a command that fills them gets `ENOSPC`.
const TMP_SIZE: &str = "mode=1777,size=25%";
const SHM_SIZE: &str = "mode=1777,size=10%";

/// The parts of a repository whose contents git runs as code.
const GIT_CODE: &[&str] = &[".git/config", ".git/hooks", ".git/info", ".git/config.worktree"];

/// Where the host's daemons keep their sockets; hidden from every command.
const HOST_IPC: &str = "/run";

/// Devices any command may write (and read). Not `/dev/tty`: through the operator's terminal a
/// command could type into the shell that started Steward (`TIOCSTI`), outside the sandbox.
/// No device gets `ioctl` either.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// The rules one command runs under. Every path is absolute; the bus records them with the
/// attempt exactly as the launcher applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Beneath these, the command may create, change and delete (the workspace, granted paths).
    pub writable: Vec<PathBuf>,
    /// Kept read-only even beneath a writable path (the configuration, `.git`).
    pub read_only: Vec<PathBuf>,
    /// Covered by an empty, read-only directory or file (the data directory, credential stores).
    pub hidden: Vec<PathBuf>,
    /// Inside a hidden directory, still readable (an agent's prompt file in its attempt directory).
    pub exposed: Vec<PathBuf>,
    /// Whether the command reaches the network.
    pub network: bool,
}

impl Rules {
    /// Drops paths that do not exist (nothing to protect or grant there), so what is recorded is
    /// what is applied. Paths are made canonical, because a mount or a Landlock rule attaches to
    /// the file a path leads to.
    pub fn resolved(mut self) -> Rules {
        let keep = |paths: &mut Vec<PathBuf>| {
            let mut out: Vec<PathBuf> = paths.iter().filter_map(|p| p.canonicalize().ok()).collect();
            out.sort();
            out.dedup();
            *paths = out;
        };
        keep(&mut self.writable);
        keep(&mut self.read_only);
        keep(&mut self.hidden);
        keep(&mut self.exposed);
        // An exposed path means something only inside a hidden one.
        let hidden = self.hidden.clone();
        self.exposed.retain(|e| hidden.iter().any(|h| e.starts_with(h) && e != h));
        self
    }
}

/// What the launcher reports after containing itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The Landlock ABI in force (every rule is enforced, or the launcher refuses).
    pub landlock_abi: i64,
}

/// Why a command could not be contained.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A namespace could not be created.
    #[error("cannot create private {what} namespaces: {source} (unprivileged user namespaces may be disabled)")]
    Namespace {
        /// Which.
        what: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// A mount that hides or protects a path failed.
    #[error("cannot {what} {path}: {source}")]
    Mount {
        /// What it was for.
        what: &'static str,
        /// Where.
        path: String,
        /// Why.
        source: nix::Error,
    },
    /// Writing an id map or similar failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Landlock is missing or refused the rules.
    #[error("Landlock: {0}")]
    Landlock(String),
}

fn mount_err(what: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SetupError + use<> {
    let path = path.display().to_string();
    move |source| SetupError::Mount { what, path, source }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Io { what, source }
}

/// Contains the calling process under `rules`. Must run while the process has one thread
/// (user namespaces refuse multi-threaded callers), which is why it runs in the launcher.
pub fn enter(rules: &Rules) -> Result<Applied, SetupError> {
    let cwd = std::env::current_dir().map_err(io_err("read the working directory"))?;
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)
        .map_err(|source| SetupError::Namespace { what: "user, mount and pid", source })?;
    // The same ids inside as outside: files keep their owners, tools that compare them agree.
    std::fs::write("/proc/self/setgroups", "deny").map_err(io_err("deny setgroups"))?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).map_err(io_err("map the user id"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).map_err(io_err("map the group id"))?;
    if !rules.network {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|source| SetupError::Namespace { what: "network", source })?;
    }
    let root = Path::new("/");
    mount(None::<&str>, root, None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(mount_err("make private the mounts of", root))?;

    // Held before anything covers them, to be bound back writable.
    let writable: Vec<(&Path, OwnedFd)> = rules
        .writable
        .iter()
        .map(|p| {
            open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, FileMode::empty())
                .map(|fd| (p.as_path(), fd))
                .map_err(mount_err("hold the writable path", p))
        })
        .collect::<Result<_, _>>()?;
    read_only_mounts();
    private_tmp(rules, &cwd)?;
    for (path, fd) in &writable {
        bind_back(fd, path)?;
        writable_mounts(path)?;
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        mount(Some("tmpfs"), shm, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(SHM_SIZE))
            .map_err(mount_err("mount a private tmpfs on", shm))?;
    }
    pin_ancestors(rules)?;
    for path in &rules.read_only {
        bind_read_only(path, path)?;
    }
    for path in &rules.hidden {
        hide(path, &rules.exposed)?;
    }
    // The working directory was opened before the mounts; enter it again through them.
    std::env::set_current_dir(&cwd).map_err(io_err(format!("enter {}", cwd.display())))?;
    landlock(rules)
}

/// Mounts an empty tmpfs on `/tmp` that only this command sees, and binds the real paths the
/// command reads back where they were (a read-only or exposed file, the working directory);
/// writable paths are bound back by the caller, with what lies beneath them.
///
/// Not an overlay of the host's `/tmp`: overlayfs refuses a lower layer with mounts beneath it
/// that the namespace inherited (they are locked), and a sandbox that works only on some
/// machines' `/tmp` is not one mechanism.
fn private_tmp(rules: &Rules, cwd: &Path) -> Result<(), SetupError> {
    let Ok(real_tmp) = Path::new("/tmp").canonicalize() else { return Ok(()) };
    let mut keep: Vec<&Path> = rules.read_only.iter().chain(&rules.exposed).map(PathBuf::as_path).collect();
    keep.push(cwd);
    keep.retain(|p| p.starts_with(&real_tmp) && !rules.writable.iter().any(|w| p.starts_with(w)));
    keep.sort();
    keep.dedup();
    // Only the outermost of nested paths needs binding back; the rest come with it.
    let outermost: Vec<&Path> =
        keep.iter().copied().filter(|p| !keep.iter().any(|q| q != p && p.starts_with(q))).collect();
    let held: Vec<(&Path, OwnedFd)> = outermost
        .into_iter()
        .map(|p| {
            open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, FileMode::empty()).map(|fd| (p, fd)).map_err(mount_err("hold", p))
        })
        .collect::<Result<_, _>>()?;
    mount(Some("tmpfs"), &real_tmp, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(TMP_SIZE))
        .map_err(mount_err("mount a private tmpfs on", &real_tmp))?;
    for (path, fd) in &held {
        bind_back(fd, path)?;
    }
    Ok(())
}

/// Binds what `fd` holds (opened before a mount covered it) onto `path`, making the mount point.
fn bind_back(fd: &OwnedFd, path: &Path) -> Result<(), SetupError> {
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let make = io_err(format!("make a mount point at {}", path.display()));
    if source.is_dir() {
        std::fs::create_dir_all(path).map_err(make)?;
    } else {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(format!("make a mount point at {}", path.display())))?;
        }
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(make)?;
    }
    mount(Some(source.as_path()), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(mount_err("bind back", path))
}

/// The mount points of this namespace, outermost first (`/proc/self/mountinfo`, field 5, with
/// its octal escapes undone).
fn mount_points() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| PathBuf::from(unescape_mountinfo(p))).collect()
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes every file system the namespace inherited read-only, so that what Landlock does not
/// cover (changing modes, times and extended attributes, and whatever a mapped root's
/// capabilities allow) cannot touch a file outside the writable paths either. The kernel's
/// own trees (`/proc`, `/sys`, `/dev`) are left as they are: Landlock keeps them unwritten.
/// A mount that refuses (one hidden under another) stays as it was, under Landlock alone.
fn read_only_mounts() {
    for mp in mount_points() {
        if ["/proc", "/sys", "/dev"].iter().any(|k| mp.starts_with(k)) {
            continue;
        }
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | locked_flags(&mp);
        let _ = mount(None::<&str>, &mp, None::<&str>, flags, None::<&str>);
    }
}

/// Makes `path`, bound back over the read-only tree, writable again, with the mounts beneath it.
fn writable_mounts(path: &Path) -> Result<(), SetupError> {
    for mp in mount_points().into_iter().filter(|mp| mp.starts_with(path)) {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | locked_flags(&mp);
        if mp == path {
            mount(None::<&str>, &mp, None::<&str>, flags, None::<&str>).map_err(mount_err("make writable", path))?;
        } else {
            // A mount beneath a writable path that cannot be made writable stays read-only.
            let _ = mount(None::<&str>, &mp, None::<&str>, flags, None::<&str>);
        }
    }
    Ok(())
}

/// Makes each directory between a writable root and a protected path (read-only or hidden)
/// beneath it a mount point of its own. A mount point cannot be renamed, so the command cannot
/// move a protected path's parent aside and put a directory of its own making in its place.
fn pin_ancestors(rules: &Rules) -> Result<(), SetupError> {
    let mut pinned: Vec<&Path> = Vec::new();
    for protected in rules.read_only.iter().chain(&rules.hidden) {
        for root in rules.writable.iter().filter(|w| protected.starts_with(w)) {
            for dir in protected.ancestors().skip(1).take_while(|a| a.starts_with(root) && *a != root.as_path()) {
                if !pinned.contains(&dir) && dir.is_dir() {
                    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                        .map_err(mount_err("pin", dir))?;
                    pinned.push(dir);
                }
            }
        }
    }
    Ok(())
}

/// The flags a remount must keep: a mount that came from the parent namespace has them locked.
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else { return MsFlags::empty() };
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    flags
}

fn bind_read_only(source: &Path, target: &Path) -> Result<(), SetupError> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(mount_err("bind", target))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(target);
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(mount_err("make read-only", target))
}

/// Covers `path` with something empty and read-only; paths in `exposed` beneath it stay
/// readable, bound read-only into the cover.
fn hide(path: &Path, exposed: &[PathBuf]) -> Result<(), SetupError> {
    if !path.exists() {
        // Already out of sight (it was under the host's `/tmp`).
        return Ok(());
    }
    if !path.is_dir() {
        return bind_read_only(Path::new("/dev/null"), path);
    }
    let inside: Vec<(&PathBuf, OwnedFd)> = exposed
        .iter()
        .filter(|e| e.starts_with(path))
        .map(|e| open(e.as_path(), OFlag::O_PATH | OFlag::O_CLOEXEC, FileMode::empty()).map(|fd| (e, fd)))
        .collect::<Result<_, _>>()
        .map_err(mount_err("hold a path exposed inside", path))?;
    let cover = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), path, Some("tmpfs"), cover, Some("mode=0755,size=64k")).map_err(mount_err("hide", path))?;
    for (e, fd) in &inside {
        bind_back(fd, e)?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(e);
        mount(None::<&str>, e.as_path(), None::<&str>, flags, None::<&str>).map_err(mount_err("make read-only", e))?;
    }
    mount(None::<&str>, path, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | cover, None::<&str>)
        .map_err(mount_err("make read-only the cover of", path))
}

fn landlock(rules: &Rules) -> Result<Applied, SetupError> {
    let ll = |e: landlock::RulesetError| SetupError::Landlock(e.to_string());
    let abi = TARGET_ABI;
    let mut writable: Vec<PathBuf> = rules.writable.clone();
    writable.extend(["/tmp", "/dev/shm"].iter().map(PathBuf::from).filter(|p| p.exists()));
    let devices: Vec<&str> = DEVICES.iter().copied().filter(|d| Path::new(d).exists()).collect();
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(ll)?
        .scope(Scope::from_all(abi))
        .map_err(ll)?
        .create()
        .map_err(ll)?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi)))
        .map_err(ll)?
        .add_rules(path_beneath_rules(&writable, AccessFs::from_all(abi)))
        .map_err(ll)?
        .add_rules(path_beneath_rules(&devices, AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate))
        .map_err(ll)?
        .restrict_self()
        .map_err(ll)?;
    let landlock_abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi as i64,
        LandlockStatus::NotEnabled => return Err(SetupError::Landlock("not enabled in this kernel".into())),
        LandlockStatus::NotImplemented => return Err(SetupError::Landlock("not built into this kernel".into())),
    };
    // An older kernel enforces only part of the rules (before ABI 6: a command may signal its
    // engine; before 5: ioctl on devices; before 3: truncate outside the workspace). That is not
    // the sandbox this promises, so it counts as none.
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(Applied { landlock_abi }),
        RulesetStatus::NotEnforced | RulesetStatus::PartiallyEnforced => Err(SetupError::Landlock(format!(
            "this kernel's Landlock (ABI {landlock_abi}) cannot enforce every rule; ABI {} or later is needed",
            TARGET_ABI as i64
        ))),
    }
}

/// The launcher's arguments for one command: `__sandbox RULES -- PROGRAM ARGS...`.
pub fn launch_args(rules: &Rules, program: &str, args: &[String]) -> Vec<String> {
    let mut out =
        vec![LAUNCH_ARG.to_owned(), serde_json::to_string(rules).unwrap_or_default(), "--".into(), program.to_owned()];
    out.extend(args.iter().cloned());
    out
}

/// Whether these command-line arguments ask for the launcher (or the init it starts).
pub fn is_launcher_call(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == LAUNCH_ARG || a == INIT_ARG)
}

/// The launcher: `steward-sandbox __sandbox RULES -- PROGRAM ARGS...` contains itself under
/// `RULES` and becomes `PROGRAM`; `steward-sandbox __sandbox --probe` contains itself as a
/// command in the current directory would be and prints what was applied. Returns only on
/// failure, with the exit code.
pub fn launcher_main(args: Vec<OsString>) -> i32 {
    let fail = |reason: String| {
        let _ = writeln!(std::io::stderr(), "{SETUP_FAILED_PREFIX} {reason}");
        SETUP_FAILED
    };
    if args.get(1).is_some_and(|a| a == INIT_ARG) {
        return init(args.into_iter().skip(2));
    }
    let mut args = args.into_iter().skip(1).skip_while(|a| a == LAUNCH_ARG);
    let Some(first) = args.next() else {
        return fail("usage: steward-sandbox __sandbox RULES -- PROGRAM [ARGS...] | --probe".into());
    };
    if first == "--probe" {
        let rules = Rules { writable: std::env::current_dir().into_iter().collect(), ..Rules::default() }.resolved();
        return match enter(&rules) {
            Ok(applied) => {
                let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&applied).unwrap_or_default());
                0
            }
            Err(e) => fail(e.to_string()),
        };
    }
    let rules: Rules = match serde_json::from_str(&first.to_string_lossy()) {
        Ok(r) => r,
        Err(e) => return fail(format!("unreadable rules: {e}")),
    };
    // A relative path would be resolved against a directory the mounts may have covered.
    let all = rules.writable.iter().chain(&rules.read_only).chain(&rules.hidden).chain(&rules.exposed);
    if let Some(p) = all.into_iter().find(|p| !p.is_absolute()) {
        return fail(format!("the rules name a relative path, {}", p.display()));
    }
    if args.next().is_none_or(|sep| sep != "--") {
        return fail("expected `--` after the rules".into());
    }
    let Some(program) = args.next() else { return fail("no program to run".into()) };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return fail(format!("cannot tie the command to its engine: {e}"));
    }
    let engine = std::env::var(ENGINE_PID).ok().and_then(|p| p.parse::<i32>().ok());
    if engine.is_some_and(|p| nix::unistd::getppid().as_raw() != p) {
        return fail("its engine has exited; the command does not run".into());
    }
    if let Err(e) = enter(&rules) {
        return fail(e.to_string());
    }
    // This process stays the recorded group leader and waits for the command's init. A stop
    // signal sent to the group reaches the command; this process outlives it so that it can
    // report how the command ended (and Steward does not take its end for the command's).
    let stops = stop_signals();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stops), None);
    // std resets the signal mask of what it starts, so init and the command see none blocked.
    // The private /tmp is the only temp directory the command can write.
    let status = std::process::Command::new("/proc/self/exe")
        .args([OsString::from(INIT_ARG), OsString::from("--"), program])
        .args(args)
        .env("TMPDIR", "/tmp")
        .env_remove(ENGINE_PID)
        .status();
    match status {
        Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => code,
            // Killed (SIGKILL reaches init from outside): end the same way.
            (None, Some(sig)) => {
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&stops), None);
                if let Ok(sig) = Signal::try_from(sig) {
                    let _ = nix::sys::signal::raise(sig);
                }
                128 + sig
            }
            (None, None) => 1,
        },
        Err(e) => fail(format!("cannot start the command's init: {e}")),
    }
}

/// The signals Steward stops a command with.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
        set.add(s);
    }
    set
}

/// Process 1 of the command's private pid namespace: starts the command, reaps whatever is
/// orphaned to it, and exits with the command's status once the command has ended. Its exit
/// makes the kernel kill everything left in the namespace, so nothing a command started
/// outlives it, not even a process that left its group (`setsid`) or was orphaned.
///
/// A signal ends the command with exit status 128 + its number, as a shell reports it: process
/// 1 cannot die of a signal it sends itself.
fn init(mut args: impl Iterator<Item = OsString>) -> i32 {
    if std::process::id() != 1 || args.next().is_none_or(|sep| sep != "--") {
        let _ = writeln!(std::io::stderr(), "{SETUP_FAILED_PREFIX} the init of a command runs only in its sandbox");
        return SETUP_FAILED;
    }
    let Some(program) = args.next() else { return SETUP_FAILED };
    // The launcher's death ends the namespace, and with it the command (see `ENGINE_PID`).
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return SETUP_FAILED;
    }
    let command = match std::process::Command::new(&program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            // Like a shell: 127 for a program that is not there, 126 for one that cannot run.
            let _ = writeln!(std::io::stderr(), "{}: {e}", program.to_string_lossy());
            return if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        }
    };
    let pid = Pid::from_raw(i32::try_from(command.id()).unwrap_or(i32::MAX));
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
}

/// Runs the launcher once, as a command would be, to learn whether this kernel can sandbox.
pub async fn probe(launcher: &Path) -> Result<Applied, String> {
    let out = tokio::process::Command::new(launcher)
        .args([LAUNCH_ARG, "--probe"])
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot start the sandbox launcher {}: {e}", launcher.display()))?;
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| format!("the sandbox probe answered nonsense: {e}"))
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr.trim().strip_prefix(SETUP_FAILED_PREFIX).unwrap_or(stderr.trim()).trim().to_owned();
        Err(if reason.is_empty() { format!("the sandbox probe failed ({})", out.status) } else { reason })
    }
}

/// Whether commands may run without a sandbox (`[sandbox] mode` in `steward.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every command runs in the sandbox; where the kernel cannot sandbox, commands are refused.
    Required,
    /// Where the kernel cannot sandbox, commands run without one, and every attempt says so.
    IfAvailable,
    /// Commands run without a sandbox, and every attempt says so.
    Off,
}

/// Capabilities the operator grants beyond a profile's defaults, to the commands of one
/// profile, one workflow, or both (`[[sandbox.grant]]`). Each is requested by every matching
/// command, checked by G-CAP and recorded like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Only commands running under this profile; `None` for every profile.
    pub profile: Option<String>,
    /// Only commands of runs of this workflow; `None` for every workflow.
    pub workflow: Option<String>,
    /// `fs.write:<absolute path>`, `fs.read:<absolute path>` or `net.http`.
    pub capabilities: Vec<String>,
}

/// How the bus contains commands: the operator's settings and what this kernel can do.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Whether running without a sandbox is allowed.
    pub mode: Mode,
    /// The `steward-sandbox` launcher; `None` when it cannot be found.
    pub launcher: Option<PathBuf>,
    /// Hidden from every command: the data directory, the credential stores.
    pub hidden: Vec<PathBuf>,
    /// Read-only for every command: the configuration.
    pub read_only: Vec<PathBuf>,
    /// Profiles whose commands see the workspace's `.git` read-only.
    pub protect_git: Vec<String>,
    /// The operator's grants.
    pub grants: Vec<Grant>,
    probed: std::sync::Arc<tokio::sync::OnceCell<Result<Applied, String>>>,
}

/// What one command runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Containment {
    /// In the sandbox, started by `launcher`.
    Sandboxed {
        /// The launcher.
        launcher: PathBuf,
        /// Its rules.
        rules: Rules,
        /// What the probe found this kernel enforces.
        applied: Applied,
    },
    /// Without a sandbox, because the operator allowed it; `reason` says why.
    Unsandboxed {
        /// Why, recorded on the attempt.
        reason: String,
    },
    /// Not at all: the kernel cannot sandbox and the operator did not allow running without one.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The credential stores beneath `home`.
pub fn credential_stores(home: &Path) -> Vec<PathBuf> {
    CREDENTIAL_STORES.iter().map(|c| home.join(c)).collect()
}

impl Sandbox {
    /// A sandbox with `launcher`, hiding `hidden` and protecting `read_only`.
    pub fn new(mode: Mode, launcher: Option<PathBuf>, mut hidden: Vec<PathBuf>, read_only: Vec<PathBuf>) -> Sandbox {
        // The daemons' sockets live under /run (a container engine, the system bus, a local
        // PostgreSQL that trusts its own user): reaching one is reaching outside the sandbox,
        // so the directory is covered whole, keeping only the resolver configuration.
        hidden.push(PathBuf::from(HOST_IPC));
        Sandbox {
            mode,
            launcher,
            hidden,
            read_only,
            protect_git: Vec::new(),
            grants: Vec::new(),
            probed: Default::default(),
        }
    }

    /// No sandbox (tests of other layers, and `[sandbox] mode = "off"`).
    pub fn off() -> Sandbox {
        Sandbox::new(Mode::Off, None, Vec::new(), Vec::new())
    }

    /// The capabilities the operator grants to a command of `workflow` under `profile`.
    pub fn granted(&self, profile: Option<&str>, workflow: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in &self.grants {
            let profile_ok = g.profile.as_deref().is_none_or(|p| Some(p) == profile);
            let workflow_ok = g.workflow.as_deref().is_none_or(|w| w == workflow);
            if profile_ok && workflow_ok {
                out.extend(g.capabilities.iter().filter(|c| !out.contains(c)).cloned().collect::<Vec<_>>());
            }
        }
        out
    }

    /// The rules for a command in `workspace` that holds `capabilities` (already checked by
    /// G-CAP) under `profile`.
    pub fn rules(&self, workspace: &Path, capabilities: &[String], profile: Option<&str>) -> Rules {
        let scoped = |axis: &str| -> Vec<PathBuf> {
            capabilities
                .iter()
                .filter_map(|c| c.strip_prefix(axis)?.strip_prefix(':'))
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .collect()
        };
        let mut writable = vec![workspace.to_path_buf()];
        writable.extend(scoped("fs.write"));
        let readable = scoped("fs.read");
        let mut read_only = self.read_only.clone();
        if profile.is_some_and(|p| self.protect_git.iter().any(|g| g == p)) {
            read_only.push(workspace.join(".git"));
        } else {
            // What git runs as code (hooks, and programs named in its configuration: an
            // fsmonitor, a filter, a pager) is read-only always: written by a step, it would
            // run outside the sandbox the next time a person uses git here. Objects, refs
            // and the index stay writable, so a step can still commit.
            read_only.extend(GIT_CODE.iter().map(|p| workspace.join(p)));
        }
        // A granted read of a hidden path itself uncovers it; of a path inside one, exposes it.
        let hidden: Vec<PathBuf> = self.hidden.iter().filter(|h| !readable.contains(h)).cloned().collect();
        let mut exposed = readable;
        exposed.extend(Path::new("/etc/resolv.conf").canonicalize().ok().filter(|r| r.starts_with(HOST_IPC)));
        let network = capabilities.iter().any(|c| c == "net.http" || c.starts_with("net.http:"));
        Rules { writable, read_only, hidden, exposed, network }.resolved()
    }

    /// What this machine offers: what the probe found, or why it cannot sandbox (`Ok(None)`
    /// when the operator turned the sandbox off).
    pub async fn status(&self) -> Result<Option<Applied>, String> {
        match self.contain(Rules::default()).await {
            Containment::Sandboxed { applied, .. } => Ok(Some(applied)),
            Containment::Unsandboxed { .. } if self.mode == Mode::Off => Ok(None),
            Containment::Unsandboxed { reason } | Containment::Refused { reason } => Err(reason),
        }
    }

    /// What a command with these rules runs under, probing the kernel once.
    pub async fn contain(&self, rules: Rules) -> Containment {
        let unavailable = |reason: String| match self.mode {
            Mode::Required => Containment::Refused {
                reason: format!(
                    "this machine cannot sandbox commands ({reason}); set `[sandbox] mode = \"if_available\"` in \
                     steward.toml to run them without one"
                ),
            },
            Mode::IfAvailable => Containment::Unsandboxed { reason: format!("the kernel cannot sandbox: {reason}") },
            Mode::Off => Containment::Unsandboxed { reason: "the operator turned the sandbox off".into() },
        };
        if self.mode == Mode::Off {
            return unavailable(String::new());
        }
        let Some(launcher) = &self.launcher else {
            return unavailable(format!("the `{LAUNCHER}` launcher was not found beside steward"));
        };
        let probed = self.probed.get_or_init(|| probe(launcher)).await;
        match probed {
            Ok(applied) => Containment::Sandboxed { launcher: launcher.clone(), rules, applied: *applied },
            Err(reason) => unavailable(reason.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_rules_drop_what_does_not_exist_and_keep_exposed_paths_only_inside_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(d.join("data/runs/1")).unwrap();
        std::fs::write(d.join("data/runs/1/prompt.md"), "p").unwrap();
        let rules = Rules {
            writable: vec![d.clone(), d.join("missing")],
            hidden: vec![d.join("data"), d.join("data")],
            exposed: vec![d.join("data/runs/1/prompt.md"), d.join("elsewhere")],
            ..Rules::default()
        }
        .resolved();
        assert_eq!(rules.writable, vec![d.clone()]);
        assert_eq!(rules.hidden, vec![d.join("data")]);
        assert_eq!(rules.exposed, vec![d.join("data/runs/1/prompt.md")]);
    }

    #[test]
    fn launch_args_carry_the_rules_and_the_command() {
        let rules = Rules { network: true, ..Rules::default() };
        let args = launch_args(&rules, "sh", &["-c".into(), "echo hi".into()]);
        assert_eq!(args[0], LAUNCH_ARG);
        assert_eq!(args[2..], ["--", "sh", "-c", "echo hi"]);
        assert_eq!(serde_json::from_str::<Rules>(&args[1]).unwrap(), rules);
    }
}
