//! Steward's engine: drives workflow runs durably on any [`steward_store::Store`].
//!
//! The shape, in one paragraph: [`Engine::boot`] runs the recovery scan and
//! only then opens the gate that [`Engine::create_run`], [`Engine::start`]
//! and [`Engine::resume`] wait on (HSK-WF-003). A run is driven by one task
//! (`drive`) that asks the pure planner (`steward_core::schedule::plan`)
//! what to do, records it in one commit (attempt starts before the steps
//! run, attempt ends after), spawns the steps through the tool bus, and
//! loops on their completions. Each completion and the next starts share a
//! commit, so a sequential run costs one durable write per step. A
//! background task renews heartbeats and notices runs that were cancelled or
//! recovered by someone else, and stops their steps.
//!
//! The engine never keeps state the store does not have: its in-memory view
//! of a run is exactly what it last committed, so a process that resumes a
//! run after a crash sees what the crashed one saw.

mod agent;
mod clock;
mod drive;
mod engine;
mod files;
mod halt;
mod retry;
pub mod secrets;
mod step;

pub mod micro_task;

pub use clock::{Clock, SystemClock, UuidIds, new_run_id};
pub use engine::{CreateRun, Engine, EngineConfig, Error, ProgressUpdate, Result};
pub use halt::{Halt, Stop};
pub use retry::RetryPolicy;
