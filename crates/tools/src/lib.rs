//! Steward's tool bus: every process Steward starts is started here.
//!
//! Keeping process creation in one crate is what lets the guards hold
//! everywhere (design decision 8): today a command runs in its own process
//! group with a timeout that sends SIGTERM to the whole group, then SIGKILL
//! after a grace period; output is captured up to a per-stream limit with the
//! dropped byte count recorded; and cancellation kills the group the same
//! way. Capability gates and terminal policy build on [`exec::run`].
#![warn(missing_docs)]

pub mod exec;
