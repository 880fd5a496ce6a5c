//! Steward's domain core: what a workflow is, what a run may do next, and what gets recorded.
//!
//! Everything here is pure: no IO, no async, no clock reads, no randomness.
//! Time arrives as a [`Timestamp`] argument and identifiers as strings the
//! caller generated. That makes every decision the engine takes
//! reproducible from persisted state, which is what crash recovery relies on.
//!
//! - [`workflow`]: YAML definitions read into a validated model, every error
//!   located ([`workflow::parse`]).
//! - [`state`]: the run and attempt state machines, one transition table each.
//! - [`schedule`]: next-step resolution from a run's attempt history.
//! - [`template`]: `{{...}}` placeholders, checked statically and rendered.
//! - [`shell`]: shell text read with a real parser into the simple commands it
//!   would run, and the structured denylist that judges them.
//! - [`event`]: the Flight Recorder envelope and typed payloads.
//! - [`job`]: job kinds and the DG-JOB-06 contract.
//! - [`liveness`]: process identities and heartbeat settings that cannot stall a live run.
//! - [`inputs`], [`result_block`], [`progress`]: typed inputs, the
//!   `[workflow_result]` envelope, and the progress snapshot.
#![warn(missing_docs)]

pub mod capability;
pub mod event;
pub mod event_registry;
pub mod ids;
pub mod inputs;
pub mod job;
pub mod liveness;
pub mod progress;
pub mod relative_path;
pub mod result_block;
pub mod schedule;
pub mod shell;
pub mod state;
pub mod template;
pub mod time;
pub mod workflow;
pub mod yaml;

pub use time::Timestamp;

/// The idempotency key of a step attempt: stable across processes and retries of the write.
pub fn idempotency_key(run_id: &str, step_id: &str, attempt: u32) -> String {
    format!("{run_id}:{step_id}:{attempt}")
}

/// SHA-256 of `bytes` as 64 lowercase hex digits: the one digest every hash in Steward uses
/// (definition identity, artifact addresses, prompt and context hashes, idempotency keys).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
