//! Secret inputs sealed at rest: ChaCha20-Poly1305 under a key file beside the database.
//!
//! A `secret: true` input is sealed before the run is stored and opened only in the memory of
//! the engine that drives the run. Sealed rather than not stored, because a run is driven by
//! more than the process that created it: the `--detach` driver, `steward resume` after a
//! crash, `steward gate` after a pause, all of them other processes that need the value and
//! have nobody to ask for it. The key is 32 random bytes in `<data dir>/secret.key` (mode
//! 0600, created on first use, refused when others may read it), so the database alone (a
//! copied file, a backup, a debug bundle) holds no secret; whoever can read the data
//! directory as its owner can read both, which is the limit of this design.
//!
//! The key and the nonces come from the operating system's random source through `aws-lc-rs`,
//! which the tree already holds for TLS. Each value is bound to its run and input name (the
//! AEAD's associated data), so a sealed value copied to another run or input does not open.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::{Map, Value, json};

use steward_core::inputs::{SEALED_KEY, is_sealed};
use steward_core::workflow::Workflow;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "secret.key";

/// The form sealed values are written in: the algorithm and this layout, hex of nonce and
/// ciphertext with its tag.
const SCHEME: &str = "chacha20poly1305-v1";
const KEY_LEN: usize = 32;

/// Why a secret could not be sealed or opened. Never holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file is missing where a sealed value needs it.
    #[error(
        "secret input `{name}` cannot be read: the secret key {} is missing; restore it, or cancel the run and start it again with the value",
        .path.display()
    )]
    Missing {
        /// The input that needs it.
        name: String,
        /// The key file.
        path: PathBuf,
    },
    /// The key file could not be read or created.
    #[error("cannot {what} the secret key {}: {source}", path.display())]
    Io {
        /// `read` or `create`.
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others than its owner may read the key file.
    #[error("the secret key {} may be read by others (mode {mode:o}); run `chmod 600 {}`", .path.display(), .path.display())]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a key.
    #[error("the secret key {} is not a Steward key (expected 64 hex digits)", .0.display())]
    Malformed(PathBuf),
    /// A sealed value does not open with this key.
    #[error(
        "secret input `{name}` cannot be opened with {key}: it was sealed under another key or has been changed; restore the key it was sealed with, or cancel the run and start it again with the value"
    )]
    WrongKey {
        /// The input.
        name: String,
        /// Where the key came from.
        key: String,
    },
    /// A stored value is not in a form this version seals.
    #[error("secret input `{name}` is stored in an unknown form (expected `{SCHEME}`)")]
    Unknown {
        /// The input.
        name: String,
    },
    /// The random source or the cipher failed.
    #[error("cannot seal secret input `{name}`: the cipher or the random source failed")]
    Crypto {
        /// The input.
        name: String,
    },
}

/// Where the key comes from.
#[derive(Debug)]
enum Source {
    File(PathBuf),
    /// A key of this process alone: what it seals, no other process can open.
    Ephemeral,
}

/// Seals and opens secret input values.
pub struct Sealer {
    source: Source,
    key: OnceLock<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer whose key is the file at `path`, created (mode 0600) the first time a value is
    /// sealed; opening never creates it.
    pub fn at(path: PathBuf) -> Sealer {
        Sealer { source: Source::File(path), key: OnceLock::new() }
    }

    /// A sealer whose key lives in this process only: for embedding and tests. A run it seals
    /// cannot be continued with its secrets by another process.
    pub fn ephemeral() -> Sealer {
        Sealer { source: Source::Ephemeral, key: OnceLock::new() }
    }

    fn describe(&self) -> String {
        match &self.source {
            Source::File(p) => p.display().to_string(),
            Source::Ephemeral => "this process's key (it was sealed by another process)".into(),
        }
    }

    fn key(&self, create: bool, name: &str) -> Result<LessSafeKey, Error> {
        let bytes = match self.key.get() {
            Some(k) => *k,
            None => {
                let k = match &self.source {
                    Source::File(path) => load_or_create(path, create).map_err(|e| match e {
                        Error::Missing { path, .. } => Error::Missing { name: name.into(), path },
                        other => other,
                    })?,
                    Source::Ephemeral => random::<KEY_LEN>().ok_or_else(|| Error::Crypto { name: name.into() })?,
                };
                // Another thread may have won; both read the same file, and an ephemeral key
                // is whichever was stored first.
                *self.key.get_or_init(|| k)
            }
        };
        UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map(LessSafeKey::new)
            .map_err(|_| Error::Crypto { name: name.into() })
    }

    /// `value` sealed for input `name` of run `run_id`: `{"$sealed": "<scheme>:<hex>"}`.
    pub fn seal(&self, run_id: &str, name: &str, value: &Value) -> Result<Value, Error> {
        let key = self.key(true, name)?;
        let nonce = random::<NONCE_LEN>().ok_or_else(|| Error::Crypto { name: name.into() })?;
        let mut data = serde_json::to_vec(value).map_err(|_| Error::Crypto { name: name.into() })?;
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(run_id, name)), &mut data)
            .map_err(|_| Error::Crypto { name: name.into() })?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(json!({SEALED_KEY: format!("{SCHEME}:{}", hex(&sealed))}))
    }

    /// The value a [`Sealer::seal`] of the same key, run and name sealed.
    pub fn open(&self, run_id: &str, name: &str, sealed: &Value) -> Result<Value, Error> {
        let unknown = || Error::Unknown { name: name.into() };
        let text = sealed.get(SEALED_KEY).and_then(Value::as_str).ok_or_else(unknown)?;
        let data = text.strip_prefix(SCHEME).and_then(|t| t.strip_prefix(':')).and_then(unhex).ok_or_else(unknown)?;
        if data.len() < NONCE_LEN {
            return Err(unknown());
        }
        let (nonce, rest) = data.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unknown())?;
        let key = self.key(false, name)?;
        let mut rest = rest.to_vec();
        let wrong = || Error::WrongKey { name: name.into(), key: self.describe() };
        let plain = key.open_in_place(nonce, Aad::from(aad(run_id, name)), &mut rest).map_err(|_| wrong())?;
        serde_json::from_slice(plain).map_err(|_| wrong())
    }

    /// The run's inputs with each secret one sealed (those a workflow declares `secret: true`).
    pub fn seal_inputs(
        &self,
        run_id: &str,
        wf: &Workflow,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, Error> {
        inputs
            .into_iter()
            .map(|(name, v)| {
                let secret = wf.input(&name).is_some_and(|d| d.secret) && !is_sealed(&v);
                let v = if secret { self.seal(run_id, &name, &v)? } else { v };
                Ok((name, v))
            })
            .collect()
    }

    /// The run's inputs with every sealed value opened, and the opened values.
    pub fn open_inputs(
        &self,
        run_id: &str,
        inputs: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, Vec<Value>), Error> {
        let mut opened = Vec::new();
        let mut out = Map::new();
        for (name, v) in inputs {
            let v = if is_sealed(v) {
                let plain = self.open(run_id, name, v)?;
                opened.push(plain.clone());
                plain
            } else {
                v.clone()
            };
            out.insert(name.clone(), v);
        }
        Ok((out, opened))
    }
}

/// Binds a sealed value to its run and input.
fn aad(run_id: &str, name: &str) -> Vec<u8> {
    format!("steward secret input\0{run_id}\0{name}").into_bytes()
}

fn random<const N: usize>() -> Option<[u8; N]> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).ok()?;
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Reads the key file, or (with `create`) makes it when there is none.
fn load_or_create(path: &Path, create: bool) -> Result<[u8; KEY_LEN], Error> {
    match load(path) {
        Err(Error::Missing { .. }) if create => make(path),
        other => other,
    }
}

fn load(path: &Path) -> Result<[u8; KEY_LEN], Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io { what: "read", path: path.to_owned(), source };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing { name: String::new(), path: path.to_owned() });
        }
        Err(e) => return Err(io(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Exposed { path: path.to_owned(), mode });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let bytes = unhex(text.trim()).ok_or_else(|| Error::Malformed(path.to_owned()))?;
    bytes.try_into().map_err(|_| Error::Malformed(path.to_owned()))
}

/// Writes a new key under a temporary name and links it into place, so the key file exists
/// whole or not at all; if another process linked one first, that one is the key.
fn make(path: &Path) -> Result<[u8; KEY_LEN], Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io { what: "create", path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let key = random::<KEY_LEN>().ok_or_else(|| io(std::io::Error::other("the random source failed")))?;
    let tag = random::<8>().map_or_else(|| std::process::id().to_string(), |r| hex(&r));
    let tmp = dir.join(format!(".{KEY_FILE}.{tag}.tmp"));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(format!("{}\n", hex(&key)).as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 (point 6): a sealed value holds nothing of the secret, opens only for its run
    /// and input under its key, and the key file is private and made once.
    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(KEY_FILE);
        let sealer = Sealer::at(path.clone());
        let missing = sealer.open("r1", "tok", &json!({SEALED_KEY: format!("{SCHEME}:{}", "00".repeat(40))}));
        assert!(matches!(&missing, Err(Error::Missing { name, .. }) if name == "tok"), "{missing:?}");
        let secret = json!("hunter2-very-secret");
        let sealed = sealer.seal("r1", "tok", &secret).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.to_string().contains("hunter2"));
        assert_ne!(sealed, sealer.seal("r1", "tok", &secret).unwrap(), "a fresh nonce every time");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        // Another process on the same data directory opens it; another run or input does not.
        let other = Sealer::at(path.clone());
        assert_eq!(other.open("r1", "tok", &sealed).unwrap(), secret);
        assert!(matches!(other.open("r2", "tok", &sealed), Err(Error::WrongKey { .. })));
        assert!(matches!(other.open("r1", "pw", &sealed), Err(Error::WrongKey { .. })));
        assert!(matches!(Sealer::ephemeral().open("r1", "tok", &sealed), Err(Error::WrongKey { .. })));
        assert!(matches!(other.open("r1", "tok", &json!({SEALED_KEY: "rot13:abc"})), Err(Error::Unknown { .. })));

        // A key others may read is refused; a damaged one is named.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Sealer::at(path.clone()).open("r1", "tok", &sealed).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::write(&path, "nope").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Sealer::at(path.clone()).seal("r1", "tok", &secret), Err(Error::Malformed(_))));
        for e in [Error::Missing { name: "tok".into(), path }, Error::WrongKey { name: "tok".into(), key: "k".into() }]
        {
            assert!(!e.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn inputs_are_sealed_by_declaration_and_opened_by_form() {
        let wf = steward_core::workflow::parse(
            "id: w\nversion: 1\ninputs:\n  tok: {secret: true}\n  cfg: {type: json, secret: true}\n  name: string\nsteps:\n  - {id: a, type: noop}\n",
        )
        .unwrap();
        let sealer = Sealer::ephemeral();
        let given = json!({"tok": "t0ken-value", "cfg": {"pw": "nested-pw"}, "name": "x"});
        let sealed = sealer.seal_inputs("r", &wf, given.as_object().unwrap().clone()).unwrap();
        assert!(is_sealed(&sealed["tok"]) && is_sealed(&sealed["cfg"]) && sealed["name"] == "x");
        let (opened, values) = sealer.open_inputs("r", &sealed).unwrap();
        assert_eq!(Value::Object(opened), given);
        assert_eq!(values.len(), 2);
    }
}
