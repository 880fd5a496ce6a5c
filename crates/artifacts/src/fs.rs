//! `FsArtifacts`: the artifact store on the local file system, the embedded default. Every write
//! goes through a fresh temporary file (fsync, rename, fsync of the directory, once per batch),
//! and no symlink inside its directories is ever followed.
//!
//! The layout is the data directory's from before this seam, so existing data directories keep
//! working: blobs at `<data dir>/artifacts/<first two hex digits>/<64 hex digits>`, documents at
//! `<data dir>/micro_task_executor/<scope>/<name>` (the name's `/` are directories).
//!
//! The IO runs on the calling thread, as it did before the seam: each call is one small write or
//! read, and keeping the crate free of an async runtime lets any caller use it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ArtifactStore, BoxFuture, Error, Handle, Result, check_name, check_scope, hash, hash_hex};

/// Where blobs live inside a data directory.
const BLOBS_DIR: &str = "artifacts";
/// Where documents live inside a data directory (named for the micro-task executor, their first
/// user, whose job state was already kept there).
const DOCUMENTS_DIR: &str = "micro_task_executor";

/// Blobs and documents in two directories of the local file system.
#[derive(Debug, Clone)]
pub struct FsArtifacts {
    blobs: PathBuf,
    documents: PathBuf,
}

/// Makes every temporary name of this process unique, so two writes never share one.
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { action, location: path.display().to_string(), source }
}

fn symlink(path: &Path) -> Error {
    Error::Symlink { location: path.display().to_string() }
}

/// What is at `path`, without following a symlink there: `None` if nothing.
fn kind(path: &Path) -> Result<Option<std::fs::FileType>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("inspect", path)(e)),
    }
}

/// Syncs a directory, so that the entries just made in it survive a power loss.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync directory", dir))
}

/// `root/parts...` as a directory, made (and its entry synced) where missing. The root and its
/// ancestors are the operator's and may be links; below the root, a link is refused.
fn ensure_dirs(root: &Path, parts: &[&str]) -> Result<PathBuf> {
    if kind(root)?.is_none() {
        std::fs::create_dir_all(root).map_err(io("create directory", root))?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let mut at = root.to_path_buf();
    for part in parts {
        let parent = at.clone();
        at.push(part);
        match kind(&at)? {
            Some(t) if t.is_symlink() => return Err(symlink(&at)),
            Some(t) if t.is_dir() => {}
            Some(_) => {
                return Err(Error::Corrupt {
                    location: at.display().to_string(),
                    what: "a file where a directory belongs".into(),
                });
            }
            None => {
                match std::fs::create_dir(&at) {
                    Ok(()) => {}
                    // Made meanwhile by another writer; checked again below.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io("create directory", &at)(e)),
                }
                if kind(&at)?.is_some_and(|t| t.is_symlink()) {
                    return Err(symlink(&at));
                }
                sync_dir(&parent)?;
            }
        }
    }
    Ok(at)
}

/// A file written and synced under a temporary name, not yet in place.
struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

/// Writes `bytes` to a fresh temporary beside `root/parts...` and syncs it.
fn stage(root: &Path, parts: &[&str], bytes: &[u8]) -> Result<Staged> {
    let Some((file, dirs)) = parts.split_last() else {
        return Err(Error::Corrupt { location: root.display().to_string(), what: "no file name".into() });
    };
    let dir = ensure_dirs(root, dirs)?;
    let target = dir.join(file);
    let (tmp, mut f) = loop {
        let n = TEMPORARIES.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file}.{}.{n}.tmp", std::process::id()));
        // `create_new` never opens what is already there, a planted link included.
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create", &tmp)(e)),
        }
    };
    let written = f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io("write", &tmp));
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Staged { tmp, target, dir })
}

/// Writes each `(parts, bytes)` to `root/parts...`: every file to a fresh temporary, synced,
/// then renamed over its target in order, then each directory synced once. A symlink at a
/// target is replaced, never followed. The directory syncs are what a batch saves: a file's own
/// sync cannot be shared, a directory's can.
fn write_atomic(root: &Path, files: &[(Vec<&str>, &[u8])]) -> Result<()> {
    let mut staged: Vec<Staged> = Vec::with_capacity(files.len());
    let mut placed = 0;
    let result = (|| {
        for (parts, bytes) in files {
            staged.push(stage(root, parts, bytes)?);
        }
        for s in &staged {
            std::fs::rename(&s.tmp, &s.target).map_err(io("replace", &s.target))?;
            placed += 1;
        }
        let mut synced: Vec<&Path> = Vec::new();
        for s in &staged {
            if !synced.contains(&s.dir.as_path()) {
                sync_dir(&s.dir)?;
                synced.push(&s.dir);
            }
        }
        Ok(())
    })();
    if result.is_err() {
        for s in &staged[placed..] {
            let _ = std::fs::remove_file(&s.tmp);
        }
    }
    result
}

/// Reads `root/parts...`, `None` if it is not there; a link on the way is refused.
fn read_checked(root: &Path, parts: &[&str]) -> Result<Option<Vec<u8>>> {
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match kind(&at)? {
            None => return Ok(None),
            Some(t) if t.is_symlink() => return Err(symlink(&at)),
            Some(t) if i + 1 < parts.len() && !t.is_dir() => return Ok(None),
            Some(t) if i + 1 == parts.len() && !t.is_file() => {
                return Err(Error::Corrupt { location: at.display().to_string(), what: "not a regular file".into() });
            }
            Some(_) => {}
        }
    }
    match std::fs::read(&at) {
        Ok(bytes) => Ok(Some(bytes)),
        // Replaced or removed between the check and the read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", &at)(e)),
    }
}

/// Whether a directory entry is one of the store's temporaries (or a leftover of the
/// `.steward-tmp` files written before this seam), never a document.
fn temporary(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".steward-tmp")
}

/// Every document name below `dir` (named `base` relative to the scope), links skipped.
fn walk(dir: &Path, base: &str, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if temporary(&name) {
            continue;
        }
        let full = if base.is_empty() { name } else { format!("{base}/{name}") };
        // `DirEntry::file_type` does not follow a link; a link is not the store's.
        let t = entry.file_type().map_err(io("inspect", &entry.path()))?;
        if t.is_dir() {
            walk(&entry.path(), &full, out)?;
        } else if t.is_file() {
            out.push(full);
        }
    }
    Ok(())
}

impl FsArtifacts {
    /// Blobs under `blobs`, documents under `documents` (each made on first write).
    pub fn new(blobs: PathBuf, documents: PathBuf) -> FsArtifacts {
        FsArtifacts { blobs, documents }
    }

    /// The layout of a data directory: `<dir>/artifacts` and `<dir>/micro_task_executor`.
    pub fn in_data_dir(dir: &Path) -> FsArtifacts {
        FsArtifacts::new(dir.join(BLOBS_DIR), dir.join(DOCUMENTS_DIR))
    }

    /// Where blobs are.
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    /// Where documents are, a directory per scope.
    pub fn documents_dir(&self) -> &Path {
        &self.documents
    }

    /// The file of the blob named `hash`.
    pub fn blob_path(&self, hash: &str) -> Result<PathBuf> {
        let hex = hash_hex(hash)?;
        Ok(self.blobs.join(&hex[..2]).join(hex))
    }

    /// The file of a document.
    pub fn document_path(&self, scope: &str, name: &str) -> Result<PathBuf> {
        check_name(scope, name)?;
        Ok(name.split('/').fold(self.documents.join(scope), |p, part| p.join(part)))
    }

    fn put_now(&self, bytes: &[u8], media_type: &str) -> Result<Handle> {
        let hash = hash(bytes);
        let handle = Handle { hash: hash.clone(), size: bytes.len() as u64, media_type: media_type.to_owned() };
        let hex = hash_hex(&hash)?;
        let path = self.blobs.join(&hex[..2]).join(hex);
        // Already there: the same bytes, unless the file was damaged; a file of the wrong size
        // (or a link) is replaced. Verifying the content is left to reads, so that the common
        // repeated blob (an empty stderr) costs no read here.
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && m.file_type().is_file()
            && m.len() == handle.size
        {
            return Ok(handle);
        }
        write_atomic(&self.blobs, &[(vec![&hex[..2], hex], bytes)])?;
        Ok(handle)
    }

    fn get_now(&self, hash: &str) -> Result<Vec<u8>> {
        let hex = hash_hex(hash)?;
        let bytes = read_checked(&self.blobs, &[&hex[..2], hex])?
            .ok_or_else(|| Error::NotFound { hash: hash.to_owned(), location: self.blobs.display().to_string() })?;
        if crate::hash(&bytes) != hash {
            return Err(Error::Corrupt {
                location: self.blobs.join(&hex[..2]).join(hex).display().to_string(),
                what: "the artifact does not match its hash".into(),
            });
        }
        Ok(bytes)
    }

    fn write_now(&self, scope: &str, docs: &[(&str, &[u8])]) -> Result<()> {
        for (name, _) in docs {
            check_name(scope, name)?;
        }
        let files: Vec<(Vec<&str>, &[u8])> = docs
            .iter()
            .map(|(name, bytes)| (std::iter::once(scope).chain(name.split('/')).collect(), *bytes))
            .collect();
        write_atomic(&self.documents, &files)
    }

    fn read_now(&self, scope: &str, name: &str) -> Result<Option<Vec<u8>>> {
        check_name(scope, name)?;
        let parts: Vec<&str> = std::iter::once(scope).chain(name.split('/')).collect();
        read_checked(&self.documents, &parts)
    }

    fn list_now(&self, scope: &str, prefix: &str) -> Result<Vec<String>> {
        check_scope(scope)?;
        // Start at the deepest directory the prefix names, when it names a valid one.
        let base = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let base = if base.is_empty() || check_name(scope, base).is_err() { "" } else { base };
        let mut at = self.documents.clone();
        for part in std::iter::once(scope).chain(base.split('/').filter(|p| !p.is_empty())) {
            at.push(part);
            match kind(&at)? {
                None => return Ok(Vec::new()),
                Some(t) if t.is_symlink() => return Err(symlink(&at)),
                Some(t) if !t.is_dir() => return Ok(Vec::new()),
                Some(_) => {}
            }
        }
        let mut names = Vec::new();
        walk(&at, base, &mut names)?;
        names.retain(|n| n.starts_with(prefix));
        names.sort();
        Ok(names)
    }
}

impl ArtifactStore for FsArtifacts {
    fn put<'a>(&'a self, bytes: &'a [u8], media_type: &'a str) -> BoxFuture<'a, Result<Handle>> {
        Box::pin(async move { self.put_now(bytes, media_type) })
    }

    fn get<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move { self.get_now(hash) })
    }

    fn write_document<'a>(&'a self, scope: &'a str, name: &'a str, bytes: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.write_now(scope, &[(name, bytes)]) })
    }

    fn write_documents<'a>(&'a self, scope: &'a str, docs: &'a [(&'a str, &'a [u8])]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.write_now(scope, docs) })
    }

    fn read_document<'a>(&'a self, scope: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { self.read_now(scope, name) })
    }

    fn list_documents<'a>(&'a self, scope: &'a str, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move { self.list_now(scope, prefix) })
    }

    fn location(&self, scope: &str) -> String {
        let dir = self.documents.join(scope);
        std::path::absolute(&dir).unwrap_or(dir).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_system_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        crate::conformance::check(&FsArtifacts::in_data_dir(dir.path())).await.unwrap();
    }

    /// The layout from before the seam: a data directory written by an older Steward reads the
    /// same, and what is written now is where an older one would look.
    #[tokio::test]
    async fn the_layout_is_the_data_directorys() {
        let dir = tempfile::tempdir().unwrap();
        let a = FsArtifacts::in_data_dir(dir.path());
        let h = a.put(b"hello", "text/plain").await.unwrap();
        let hex = h.hash.strip_prefix("sha256:").unwrap();
        assert!(dir.path().join("artifacts").join(&hex[..2]).join(hex).is_file());
        let job = dir.path().join("micro_task_executor/job-7");
        std::fs::create_dir_all(job.join("step_outputs/k1")).unwrap();
        std::fs::write(job.join("progress_artifact.json"), b"{}").unwrap();
        std::fs::write(job.join("step_outputs/k1/response.txt"), b"answer").unwrap();
        // A temporary an older Steward left behind is no document.
        std::fs::write(job.join("run_ledger.json.steward-tmp"), b"torn").unwrap();
        assert_eq!(a.read_document("job-7", "progress_artifact.json").await.unwrap().unwrap(), b"{}");
        assert_eq!(
            a.list_documents("job-7", "").await.unwrap(),
            ["progress_artifact.json", "step_outputs/k1/response.txt"]
        );
        a.write_document("job-7", "run_ledger.json", b"[]").await.unwrap();
        assert_eq!(std::fs::read(job.join("run_ledger.json")).unwrap(), b"[]");
        assert_eq!(a.location("job-7"), std::path::absolute(&job).unwrap().display().to_string());
    }

    /// A damaged blob is an error, never content; a put of the same bytes repairs one whose
    /// size changed; no link inside the store is followed, for reading or for writing.
    #[tokio::test]
    async fn damage_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = FsArtifacts::in_data_dir(dir.path());
        let h = a.put(b"hello", "text/plain").await.unwrap();
        let path = a.blob_path(&h.hash).unwrap();
        std::fs::write(&path, b"hellO").unwrap();
        assert!(matches!(a.get(&h.hash).await, Err(Error::Corrupt { .. })));
        assert!(!a.verify(&h).await);
        std::fs::write(&path, b"tampered").unwrap();
        a.put(b"hello", "text/plain").await.unwrap();
        assert_eq!(a.get(&h.hash).await.unwrap(), b"hello");

        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"not yours").unwrap();
        let job = dir.path().join("micro_task_executor/job-1");
        std::fs::create_dir_all(&job).unwrap();
        std::os::unix::fs::symlink(&outside, job.join("step_outputs")).unwrap();
        assert!(matches!(a.read_document("job-1", "step_outputs/secret").await, Err(Error::Symlink { .. })));
        assert!(matches!(a.write_document("job-1", "step_outputs/x", b"x").await, Err(Error::Symlink { .. })));
        assert!(matches!(a.list_documents("job-1", "step_outputs/").await, Err(Error::Symlink { .. })));
        assert!(!outside.join("x").exists(), "nothing was written through the link");
        // A link in place of a document is replaced by the write, the file it named untouched.
        std::os::unix::fs::symlink(outside.join("secret"), job.join("progress_artifact.json")).unwrap();
        assert!(matches!(a.read_document("job-1", "progress_artifact.json").await, Err(Error::Symlink { .. })));
        a.write_document("job-1", "progress_artifact.json", b"{}").await.unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"not yours");
        assert!(std::fs::symlink_metadata(job.join("progress_artifact.json")).unwrap().is_file());
        assert_eq!(a.list_documents("job-1", "").await.unwrap(), ["progress_artifact.json"], "links are not listed");
    }
}
