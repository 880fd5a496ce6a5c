//! Operating-system processes: which one this is, whether a recorded one still runs, and
//! killing the command group a dead engine left behind.
//!
//! Everything reads `/proc` (Linux). A recorded [`ProcessRef`] is only judged from the same
//! boot and pid namespace; from anywhere else its state is [`Liveness::Unknown`], never a guess.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use steward_core::liveness::ProcessRef;

/// How often a group being killed is looked at again. Its members are not this process's
/// children (their parent died), so there is no exit to wait on, only `/proc` to read.
const POLL: Duration = Duration::from_millis(20);

/// How long a group is given to disappear after SIGKILL before it is reported as still there.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What identifies this machine, boot and pid namespace; read once.
struct Machine {
    host: String,
    boot_id: String,
    pid_ns: String,
}

fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
        Machine {
            host: Some(read("/proc/sys/kernel/hostname"))
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into()),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            pid_ns,
        }
    })
}

/// One line of `/proc/PID/stat`, the fields used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    state: char,
    pgrp: i32,
    start_ticks: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `pid (comm) state ppid pgrp ... starttime ...`; `comm` may hold spaces and `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3 of the man page, pgrp 5, starttime 22.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// This process.
pub fn current() -> Option<ProcessRef> {
    static ME: OnceLock<Option<ProcessRef>> = OnceLock::new();
    ME.get_or_init(|| identify(i32::try_from(std::process::id()).ok()?)).clone()
}

/// The identity of a process that has run and exited: one started (`sleep`), identified, killed
/// with SIGKILL and reaped. What a record left by a killed engine names, for benchmarks of
/// recovery.
pub fn exited() -> std::io::Result<ProcessRef> {
    let mut child = std::process::Command::new("sleep").arg("600").spawn()?;
    let identity = i32::try_from(child.id()).ok().and_then(identify);
    child.kill()?;
    child.wait()?;
    identity.ok_or_else(|| std::io::Error::other("cannot read the identity of a child process"))
}

/// A process of this machine, by pid; `None` if there is no such process.
pub fn identify(pid: i32) -> Option<ProcessRef> {
    let st = stat(pid)?;
    let m = machine();
    Some(ProcessRef {
        host: m.host.clone(),
        boot_id: m.boot_id.clone(),
        pid_ns: m.pid_ns.clone(),
        pid,
        start_ticks: st.start_ticks,
    })
}

/// What can be said of a recorded process from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It still runs (a stopped process runs too).
    Alive,
    /// It has ended: no such pid, a new process under its pid, a zombie, or a boot ago.
    Gone,
    /// It lives on another machine or in another pid namespace.
    Unknown(String),
}

/// Where a recorded process is, seen from this one.
enum Sight {
    /// In this boot and pid namespace: its pid can be looked up.
    Here,
    /// On this machine, in an earlier boot: it has ended.
    EarlierBoot,
    /// Out of sight, and why.
    Elsewhere(String),
}

fn sight(p: &ProcessRef) -> Sight {
    match current() {
        None => Sight::Elsewhere("this process cannot read /proc".into()),
        Some(me) if me.outlived(p) => Sight::EarlierBoot,
        Some(me) if !me.can_see(p) => {
            Sight::Elsewhere(format!("{p} is on another machine or in another pid namespace"))
        }
        Some(_) => Sight::Here,
    }
}

/// Whether `p` still runs.
pub fn liveness(p: &ProcessRef) -> Liveness {
    match sight(p) {
        Sight::Here => {}
        Sight::EarlierBoot => return Liveness::Gone,
        Sight::Elsewhere(why) => return Liveness::Unknown(why),
    }
    match stat(p.pid) {
        Some(st) if st.start_ticks == p.start_ticks && st.state != 'Z' => Liveness::Alive,
        _ => Liveness::Gone,
    }
}

/// The live members of process group `pgid` that started no earlier than its leader did.
fn members(pgid: i32, leader_start: u64) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|st| st.pgrp == pgid && st.state != 'Z' && st.start_ticks >= leader_start))
        .collect()
}

/// The live members of the command group `p` leads, if it is still the group recorded.
fn group_of(p: &ProcessRef) -> Vec<i32> {
    match stat(p.pid) {
        // Its pid now names another process, which a live member of the old group would have
        // prevented (a group's id stays taken while any member lives): the group is gone.
        Some(st) if st.start_ticks != p.start_ticks => Vec::new(),
        // The leader (live, a zombie or exited) and whatever of its group survives.
        _ => members(p.pid, p.start_ticks),
    }
}

/// How [`reap`] left a recorded command group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// Nothing of it was running.
    Gone,
    /// Its members were killed: `signal` is the last one it needed.
    Killed {
        /// `SIGTERM` if that sufficed, else `SIGKILL`.
        signal: Signal,
        /// How many processes of the group were alive.
        processes: usize,
    },
    /// It cannot be checked from here (another machine or pid namespace), or it outlived
    /// SIGKILL.
    Unreachable(String),
}

/// Kills what is left of the command group `p` led, as a timeout would: SIGTERM to the group,
/// `grace` to exit, then SIGKILL. Only the recorded group is touched: a pid that now names
/// another process is left alone.
pub async fn reap(p: &ProcessRef, grace: Duration) -> Reaped {
    match sight(p) {
        Sight::Here => {}
        Sight::EarlierBoot => return Reaped::Gone,
        Sight::Elsewhere(why) => return Reaped::Unreachable(why),
    }
    let alive = group_of(p);
    if alive.is_empty() {
        return Reaped::Gone;
    }
    let pgid = Pid::from_raw(p.pid);
    let _ = killpg(pgid, Signal::SIGTERM);
    if wait_gone(p, grace).await {
        return Reaped::Killed { signal: Signal::SIGTERM, processes: alive.len() };
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    if wait_gone(p, KILL_WAIT).await {
        return Reaped::Killed { signal: Signal::SIGKILL, processes: alive.len() };
    }
    Reaped::Unreachable(format!("process group {} of {} survived SIGKILL", p.pid, p.host))
}

/// Whether `p` is a process of this machine that is stopped (SIGSTOP, a debugger): alive, and
/// doing nothing until someone continues it.
pub fn is_stopped(p: &ProcessRef) -> bool {
    liveness(p) == Liveness::Alive && stat(p.pid).is_some_and(|st| matches!(st.state, 'T' | 't'))
}

/// Kills the process `p` (not its group) with SIGKILL, which even a stopped process cannot
/// ignore, if it is still the one recorded; waits, within a bound, until it is gone. Returns
/// whether it is gone.
pub async fn kill_process(p: &ProcessRef) -> bool {
    if liveness(p) != Liveness::Alive {
        return true;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    let until = Instant::now() + KILL_WAIT;
    while liveness(p) == Liveness::Alive {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// Kills what is left of the group `p` leads (its leader has exited) and waits, within a
/// bound, until none of it runs. Returns whether it is gone.
pub async fn end_group(p: &ProcessRef) -> bool {
    // ESRCH: nobody is left in the group, the usual case.
    if killpg(Pid::from_raw(p.pid), Signal::SIGKILL).is_err() {
        return true;
    }
    wait_gone(p, KILL_WAIT).await
}

async fn wait_gone(p: &ProcessRef, within: Duration) -> bool {
    let until = Instant::now() + within;
    loop {
        if group_of(p).is_empty() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(Stat { state: 'S', pgrp: 4242, start_ticks: 987654 }));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_it() {
        let me = current().expect("reads /proc");
        assert_eq!(liveness(&me), Liveness::Alive);
        let reused = ProcessRef { start_ticks: me.start_ticks + 1, ..me.clone() };
        assert_eq!(liveness(&reused), Liveness::Gone);
        let elsewhere = ProcessRef { pid_ns: "pid:[1]".into(), ..me.clone() };
        assert!(matches!(liveness(&elsewhere), Liveness::Unknown(_)));
        let rebooted = ProcessRef { boot_id: "an earlier boot".into(), ..me };
        assert_eq!(liveness(&rebooted), Liveness::Gone);
    }

    #[tokio::test]
    async fn reaping_kills_the_recorded_group_and_leaves_a_reused_pid_alone() {
        use std::os::unix::process::CommandExt;
        // A leader that ignores SIGTERM, with a child: SIGKILL after the grace ends both.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let p = identify(pid).unwrap();
        while members(pid, p.start_ticks).len() < 2 {
            tokio::time::sleep(POLL).await;
        }
        // The same pid with another start time is somebody else's: untouched.
        let impostor = ProcessRef { start_ticks: p.start_ticks + 1, ..p.clone() };
        assert_eq!(reap(&impostor, Duration::from_millis(10)).await, Reaped::Gone);
        assert_eq!(liveness(&p), Liveness::Alive);

        let reaped = reap(&p, Duration::from_millis(100)).await;
        assert_eq!(reaped, Reaped::Killed { signal: Signal::SIGKILL, processes: 2 });
        let _ = child.wait();
        assert!(members(pid, p.start_ticks).is_empty());
        assert_eq!(reap(&p, Duration::from_millis(10)).await, Reaped::Gone);
    }
}
