//! Durable writes of local files (an agent's prompt and output files, the project files a
//! micro-task changes): a reader sees the old file or the new one, never a torn one, and a
//! symlink is never followed. Steward's own state goes to the artifact store instead.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `path` through a fresh temporary beside it: fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = temporary_beside(path);
    write_new(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// `root/parts...` as a directory, each missing part made; a part that is a symlink (or not a
/// directory) is refused, never followed, so nothing a step planted under `root` can send the
/// engine's own writes outside it.
pub(crate) fn dirs_within(root: &Path, parts: &[&str]) -> std::io::Result<PathBuf> {
    let mut at = root.to_path_buf();
    for part in parts {
        at.push(part);
        match std::fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Checked after the create, so a link made meanwhile is caught too.
        if !std::fs::symlink_metadata(&at)?.file_type().is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory (a symlink is never followed)",
                at.display()
            )));
        }
    }
    Ok(at)
}

/// `<name>.steward-tmp` in the same directory, so the rename stays on one filesystem and two
/// targets never share a temporary.
pub(crate) fn temporary_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".steward-tmp");
    path.with_file_name(name)
}

/// Creates `path` afresh (a leftover temporary, or a symlink planted there, is removed first,
/// never followed), writes `bytes` and syncs them.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_file(path)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_made_within_the_root_and_a_link_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let made = dirs_within(root.path(), &["work", "runs", "r1"]).unwrap();
        assert!(made.is_dir() && made.starts_with(root.path()));
        assert_eq!(dirs_within(root.path(), &["work", "runs", "r1"]).unwrap(), made, "again: the same");
        std::os::unix::fs::symlink(outside.path(), root.path().join("planted")).unwrap();
        let refused = dirs_within(root.path(), &["planted", "runs", "r1"]).unwrap_err();
        assert!(refused.to_string().contains("a symlink is never followed"), "{refused}");
        assert!(!outside.path().join("runs").exists(), "nothing was made through the link");
    }
}
