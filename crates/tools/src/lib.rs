//! Steward's tool bus (MEX v1.2): every process Steward starts is planned, gated, guarded, run and recorded here.
//!
//! Layout, in the order an operation meets it:
//! - [`op`]: the `poe-1.0` [`op::PlannedOperation`] envelope and the [`op::EngineResult`].
//! - [`registry`]: the engines (`mechanical_engines.json`, shipping `engine.shell`/`exec`).
//! - [`gates`]: G-SCHEMA, G-CAP (default deny), G-INTEGRITY, G-BUDGET, G-PROVENANCE, G-DET, pure.
//! - [`terminal`]: the guards (denylist before allowlist, cwd containment, session kinds).
//! - [`exec`]: running the command in its own process group with timeout, kill grace, output limits, cancellation,
//!   once its group is recorded ([`exec::ProcessRecorder`]).
//! - [`sandbox`]: the operating-system sandbox the command runs in (Landlock, private user, mount and network
//!   namespaces), applied by the `steward-sandbox` launcher before it becomes the command.
//! - [`process`]: process identities, liveness, and killing a dead engine's leftover command group.
//! - [`redact`]: what is logged is redacted; evidence goes, content-addressed, to the artifact store
//!   the bus is given (`steward-artifacts`, an `Arc<dyn ArtifactStore>`: on disk, or where every
//!   worker reaches it).
//! - [`bus`]: [`bus::ToolBus`] ties them together and returns the events to record.
//!
//! Keeping process creation in this one crate is what lets the guards hold
//! everywhere (design decision 8); a tidy test checks that no other library
//! crate spawns a process. The bus never touches the store: the caller
//! commits the events it returns in the same transaction as the attempt.
#![warn(missing_docs)]

pub mod bus;
pub mod conformance;
pub mod exec;
pub mod gates;
pub mod op;
pub mod process;
pub mod redact;
pub mod registry;
pub mod sandbox;
pub mod terminal;
