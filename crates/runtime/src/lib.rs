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
//! background task renews the leases of the runs it drives and notices runs that were
//! cancelled or taken over by someone else, and stops their steps.
//!
//! Who drives a run is decided by the store: a process claims it ([`Engine::start`] and
//! [`Engine::resume`] claim the run they were asked for; [`Engine::work`] claims whatever is
//! runnable) under a lease whose epoch fences every write it makes.
//!
//! The engine never keeps state the store does not have: its in-memory view
//! of a run is exactly what it last committed, so a process that resumes a
//! run after a crash sees what the crashed one saw.

mod agent;
mod approval;
mod clock;
mod drive;
mod engine;
mod files;
mod halt;
mod retry;
pub mod secrets;
mod step;
mod worker;

pub mod micro_task;

pub use agent::missing_agent_clis;
pub use approval::Decision;
pub use clock::{Clock, SystemClock, UuidIds, new_run_id};
pub use engine::{CreateRun, Engine, EngineConfig, Error, Handoff, ProgressUpdate, Result};
pub use halt::{Halt, Stop};
pub use retry::RetryPolicy;
pub use worker::{WorkerOptions, WorkerReport};
