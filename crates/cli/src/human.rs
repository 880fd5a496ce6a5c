//! Who is acting: the operating-system user behind a command, and the refusal to record a human
//! decision from a command that runs inside a step.
//!
//! The sandbox is what keeps a step's commands away from the store (the data directory is
//! hidden and nothing outside the workspace is writable); this is the second fence, for
//! commands run without a sandbox: a human decision typed by a step is refused before the
//! store is opened, whatever the step set in its environment.

use std::path::PathBuf;

/// The operating-system user running this process, as the actor id of what it records:
/// `cli:<name>`, from the real user id (not `$USER`, which anyone can set).
pub(crate) fn actor() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("cli:{}", user.name),
        _ => format!("cli:uid-{uid}"),
    }
}

/// Why this process is running inside a workflow step, if it is: the step's environment, or an
/// ancestor process that is Steward itself.
pub(crate) fn inside_a_step() -> Option<String> {
    for var in ["STEWARD_RUN_ID", "STEWARD_ATTEMPT", "STEWARD_IDEMPOTENCY_KEY"] {
        if std::env::var_os(var).is_some() {
            return Some(format!("{var} is set, as it is for a step's commands"));
        }
    }
    let me = std::env::current_exe().ok()?.canonicalize().ok()?;
    let launcher = me.with_file_name(steward_tools::sandbox::LAUNCHER);
    let mut pid = std::process::id();
    // A chain of parents ends at pid 1; the bound keeps a corrupt /proc from looping.
    for _ in 0..64 {
        pid = parent(pid)?;
        if pid <= 1 {
            return None;
        }
        let exe: Option<PathBuf> = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_ref().is_some_and(|e| *e == me || *e == launcher) {
            return Some(format!("its ancestor process {pid} is Steward ({})", me.display()));
        }
    }
    None
}

/// The parent of `pid`, from `/proc/<pid>/stat` (the field after the parenthesised name).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_from_proc() {
        let me = std::process::id();
        assert_eq!(parent(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn the_actor_is_the_real_user() {
        let a = actor();
        assert!(a.starts_with("cli:") && a.len() > 4, "{a}");
    }
}
