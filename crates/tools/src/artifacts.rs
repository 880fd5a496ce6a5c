//! Content-addressed artifacts: written atomically, named by their SHA-256, verified on read.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::op::ArtifactHandle;

/// SHA-256 of bytes as `sha256:<hex>`.
pub fn hash(bytes: &[u8]) -> String {
    format!("sha256:{}", steward_core::sha256_hex(bytes))
}

/// A directory of immutable artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// Artifacts under `root` (created on first write).
    pub fn new(root: PathBuf) -> ArtifactStore {
        ArtifactStore { root }
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        let hex = hash.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| self.root.join(&hex[..2]).join(hex))
    }

    /// Stores bytes (temp file, fsync, rename, fsync of the directory) unless already there.
    pub fn put(&self, bytes: &[u8], media_type: &str) -> std::io::Result<ArtifactHandle> {
        let hash = hash(bytes);
        let handle =
            ArtifactHandle { hash: hash.clone(), bytes: bytes.len() as u64, media_type: media_type.to_owned() };
        let Some(path) = self.path(&hash) else {
            return Err(std::io::Error::other("bad artifact hash"));
        };
        if path.exists() {
            return Ok(handle);
        }
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile_in(&dir)?;
        tmp.1.write_all(bytes)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, &path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(handle)
    }

    /// Reads an artifact, checking that it still hashes to its name.
    pub fn get(&self, hash: &str) -> std::io::Result<Vec<u8>> {
        let path = self.path(hash).ok_or_else(|| std::io::Error::other(format!("`{hash}` is not an artifact hash")))?;
        let bytes = std::fs::read(&path)?;
        if self::hash(&bytes) != hash {
            return Err(std::io::Error::other(format!("artifact {} does not match its hash", path.display())));
        }
        Ok(bytes)
    }

    /// Whether the artifact exists and verifies.
    pub fn verify(&self, handle: &ArtifactHandle) -> bool {
        self.get(&handle.hash).is_ok_and(|b| b.len() as u64 == handle.bytes)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    for n in 0..100u32 {
        let p = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a temporary artifact file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_content_addressed_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path().join("artifacts"));
        let a = store.put(b"hello", "text/plain").unwrap();
        assert_eq!(a.hash, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(store.put(b"hello", "text/plain").unwrap(), a);
        assert_eq!(store.get(&a.hash).unwrap(), b"hello");
        assert!(store.verify(&a));
        let path = store.path(&a.hash).unwrap();
        std::fs::write(&path, b"tampered").unwrap();
        assert!(!store.verify(&a));
        assert!(store.get("sha256:zz").is_err());
    }
}
