//! A micro-task's staged copy of the workspace (DG-WF-08/09/11): where its edits land and its
//! verify commands run, so that nothing reaches the user's tree before the task is done.
//!
//! A stage is a full copy of the workspace (in the layout its verify commands expect), minus
//! the directories the engine keeps its own state in, made under the system's temporary
//! directory (where the sandbox binds a command's workspace back). It is a cache: what a
//! task changed is in the job's documents (each iteration's `planned_writes.json`), so a stage
//! lost with its machine is made again from the workspace and those. When the task completes,
//! its declared files as the stage has them are promoted into the workspace: listed in a
//! promotion document first, then written (each through a temporary file and a rename), then
//! marked done; a crash in between is finished at the next start, never half undone.

use std::path::{Path, PathBuf};

use steward_micro_task::edits::FileWrite;

use crate::files::{temporary_beside, write_new};

/// The file that says a stage is complete (it is made under another name and renamed).
pub(crate) const READY: &str = ".steward-stage-ready";

/// What went wrong with a stage or the workspace.
#[derive(Debug)]
pub(crate) struct StageError {
    pub(crate) path: PathBuf,
    pub(crate) source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError { path: path.to_owned(), source }
}

/// Makes `stage` a copy of `root` (without the paths in `skip`, which are the engine's own),
/// with `writes` applied in order, or leaves a complete one as it is. Built beside and renamed
/// into place, so a stage is complete or absent.
pub(crate) fn ensure(
    root: &Path,
    stage: &Path,
    skip: &[PathBuf],
    writes: impl FnOnce() -> Vec<Vec<FileWrite>>,
) -> Result<(), StageError> {
    if stage.join(READY).is_file() {
        return Ok(());
    }
    let building = stage.with_extension("building");
    for old in [stage, building.as_path()] {
        if old.exists() {
            std::fs::remove_dir_all(old).map_err(at(old))?;
        }
    }
    if let Some(parent) = building.parent() {
        std::fs::create_dir_all(parent).map_err(at(parent))?;
        // Only this user reads what a task is changing.
        restrict(parent)?;
    }
    let skip: Vec<PathBuf> =
        skip.iter().chain([&building, &stage.to_path_buf()]).filter_map(|p| p.canonicalize().ok()).collect();
    copy_tree(root, &building, &skip)?;
    for batch in writes() {
        match write_files(&building, &batch)? {
            Ok(()) => {}
            // A write the task made once through a symlink was refused then, too.
            Err(_) => continue,
        }
    }
    write_new(&building.join(READY), b"").map_err(at(&building))?;
    std::fs::rename(&building, stage).map_err(at(stage))
}

fn restrict(dir: &Path) -> Result<(), StageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(at(dir))
}

/// Copies `from` into `to` (made), files with their permissions, symbolic links as links,
/// leaving out `skip` (canonical paths) and anything that is neither.
fn copy_tree(from: &Path, to: &Path, skip: &[PathBuf]) -> Result<(), StageError> {
    std::fs::create_dir_all(to).map_err(at(to))?;
    for entry in std::fs::read_dir(from).map_err(at(from))? {
        let entry = entry.map_err(at(from))?;
        let path = entry.path();
        if path.canonicalize().is_ok_and(|c| skip.contains(&c)) {
            continue;
        }
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(at(&path))?;
        if kind.is_symlink() {
            let link = std::fs::read_link(&path).map_err(at(&path))?;
            std::os::unix::fs::symlink(&link, &target).map_err(at(&target))?;
        } else if kind.is_dir() {
            copy_tree(&path, &target, skip)?;
        } else if kind.is_file() {
            std::fs::copy(&path, &target).map_err(at(&path))?;
        }
    }
    Ok(())
}

/// Writes every file through a temporary file and a rename, all temporaries first. Refuses
/// (inner `Err`) a target reached through a symlink anywhere under `root`, checked right before
/// writing: verify commands run model-written code that could plant one.
pub(crate) fn write_files(root: &Path, writes: &[FileWrite]) -> Result<Result<(), String>, StageError> {
    for w in writes {
        let mut at_path = root.to_path_buf();
        for part in w.path.split('/') {
            at_path.push(part);
            if std::fs::symlink_metadata(&at_path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Ok(Err(format!("`{}` goes through a symlink; writes to symlinks are denied", w.path)));
            }
        }
    }
    let mut staged = Vec::new();
    for w in writes {
        let target = root.join(&w.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(at(parent))?;
        }
        let tmp = temporary_beside(&target);
        write_new(&tmp, w.content.as_bytes()).map_err(at(&tmp))?;
        staged.push((tmp, target));
    }
    for (tmp, target) in staged {
        std::fs::rename(&tmp, &target).map_err(at(&target))?;
    }
    Ok(Ok(()))
}

/// What a completed task promotes: the last content its applied iterations gave each file
/// (`batches`, in order), where that differs from `root`'s. Taken from the task's recorded writes,
/// never from the stage's files: a verify command runs model-written code in the stage, which
/// could turn a declared file into a link to a secret outside it, or leave its own output in it.
pub(crate) fn net_writes(root: &Path, batches: &[Vec<FileWrite>]) -> Vec<FileWrite> {
    let mut last: Vec<FileWrite> = Vec::new();
    for w in batches.iter().flatten() {
        match last.iter_mut().find(|l| l.path == w.path) {
            Some(l) => l.content = w.content.clone(),
            None => last.push(w.clone()),
        }
    }
    last.into_iter()
        .filter_map(|mut w| {
            let current = std::fs::read_to_string(root.join(&w.path)).ok();
            w.created = current.is_none();
            (current.as_deref() != Some(w.content.as_str())).then_some(w)
        })
        .collect()
}

/// Removes a stage (or a job's stages); one already gone is no error.
pub(crate) fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir.with_extension("building"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_the_workspace_with_the_tasks_writes_and_changes_nothing_there() {
        let root = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("src")).unwrap();
        std::fs::create_dir_all(root.path().join(".steward")).unwrap();
        std::fs::write(root.path().join("src/a.py"), "old\n").unwrap();
        std::fs::write(root.path().join(".steward/steward.db"), "db").unwrap();
        std::os::unix::fs::symlink("src/a.py", root.path().join("link")).unwrap();
        let stage = base.path().join("job/MT-001");
        let write = FileWrite { path: "src/a.py".into(), content: "new\n".into(), created: false };
        let writes = vec![vec![write.clone()]];
        ensure(root.path(), &stage, &[root.path().join(".steward")], || writes).unwrap();
        assert_eq!(std::fs::read_to_string(stage.join("src/a.py")).unwrap(), "new\n");
        assert!(!stage.join(".steward").exists(), "the engine's own directory is left out");
        assert_eq!(std::fs::read_link(stage.join("link")).unwrap(), Path::new("src/a.py"));
        assert_eq!(
            std::fs::read_to_string(root.path().join("src/a.py")).unwrap(),
            "old\n",
            "the workspace is untouched"
        );

        // A complete stage is kept as it is; the writes are not asked for again.
        ensure(root.path(), &stage, &[], || panic!("rebuilt")).unwrap();
        // What is promoted is the last content recorded for each file, not the stage's files.
        let older = FileWrite { content: "older\n".into(), ..write.clone() };
        std::fs::write(stage.join("src/a.py"), "changed by a verify command\n").unwrap();
        let batches = vec![vec![older], vec![write.clone()]];
        let promoted = net_writes(root.path(), &batches);
        assert_eq!(promoted, vec![write]);
        write_files(root.path(), &promoted).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("src/a.py")).unwrap(), "new\n");
        assert!(net_writes(root.path(), &batches).is_empty(), "nothing left to promote");
        remove(&stage);
        assert!(!stage.exists());
    }
}
