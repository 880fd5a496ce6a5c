//! Liveness: which process a run or a command belongs to, and heartbeat settings that cannot
//! declare a live run stalled.
//!
//! A pid alone does not name a process: pids are reused, mean nothing on another machine or in
//! another pid namespace, and a reboot ends every process. [`ProcessRef`] records what does name
//! one, so a later process can tell "still running" from "gone" from "cannot be told from here"
//! (the probing itself is IO and lives in `steward-tools`).

use serde::{Deserialize, Serialize};

/// A process as the operating system knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    /// The host name, for people; `boot_id` is what identifies the machine.
    pub host: String,
    /// The kernel's boot id: unique per machine and boot, so a different one means every
    /// process of the recorded boot has ended.
    pub boot_id: String,
    /// The pid namespace the pid belongs to; a pid means nothing outside it.
    pub pid_ns: String,
    /// The process id; for a command, also its process group id (it leads its own group).
    pub pid: i32,
    /// When it started, in clock ticks after boot: with the pid, unique within one boot.
    pub start_ticks: u64,
}

impl ProcessRef {
    /// Whether an observer running as `self` can look `other` up by pid: the same boot of the
    /// same machine and the same pid namespace.
    pub fn can_see(&self, other: &ProcessRef) -> bool {
        self.boot_id == other.boot_id && self.pid_ns == other.pid_ns
    }

    /// Whether `other` ran on this machine in an earlier boot, so that it has certainly ended.
    pub fn outlived(&self, other: &ProcessRef) -> bool {
        self.host == other.host && self.boot_id != other.boot_id
    }
}

impl std::fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

/// How many heartbeat intervals a stall threshold must span: a beat delayed by a busy machine
/// or a slow commit must never make a live run look dead.
pub const MIN_STALL_FACTOR: u64 = 3;

/// Refuses a stall threshold that a live run could cross between two of its heartbeats.
pub fn check_liveness(heartbeat_secs: u64, stall_threshold_secs: u64) -> Result<(), String> {
    if heartbeat_secs == 0 {
        return Err("the heartbeat interval must be at least 1 s".into());
    }
    let least = heartbeat_secs.saturating_mul(MIN_STALL_FACTOR);
    if stall_threshold_secs < least {
        return Err(format!(
            "a stall threshold of {stall_threshold_secs} s is too close to the {heartbeat_secs} s heartbeat: \
             a live run would be declared stalled; use at least {least} s ({MIN_STALL_FACTOR} heartbeats)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(host: &str, boot: &str, ns: &str, pid: i32) -> ProcessRef {
        ProcessRef { host: host.into(), boot_id: boot.into(), pid_ns: ns.into(), pid, start_ticks: 7 }
    }

    #[test]
    fn a_process_is_visible_only_from_its_boot_and_pid_namespace() {
        let me = p("h", "b1", "ns1", 1);
        assert!(me.can_see(&p("h", "b1", "ns1", 2)));
        assert!(!me.can_see(&p("h", "b1", "ns2", 2)), "another container on the same kernel");
        assert!(!me.can_see(&p("h", "b0", "ns1", 2)));
        assert!(me.outlived(&p("h", "b0", "ns1", 2)), "rebooted since");
        assert!(!me.outlived(&p("other", "b0", "ns1", 2)), "another machine");
        assert_eq!(p("h", "b", "n", 42).to_string(), "pid 42 on h");
    }

    #[test]
    fn a_stall_threshold_must_span_three_heartbeats() {
        assert_eq!(check_liveness(5, 30), Ok(()));
        assert_eq!(check_liveness(1, 3), Ok(()));
        let err = check_liveness(5, 3).unwrap_err();
        assert!(err.contains("use at least 15 s"), "{err}");
        assert!(check_liveness(5, 0).is_err());
        assert!(check_liveness(0, 30).is_err());
    }
}
