//! The micro-task executor's runtime half: reading a work packet from disk into a checked plan
//! (generated tasks, waves, the MT-VAL report and the tool bus's verdict on every verify
//! command), and the loop that runs it. The decisions themselves live in `steward_core::micro_task`.

mod executor;
pub(crate) mod job;
mod plan;

pub use executor::{BoxFuture, EventSink, ExecError, Executor, ModelFactory, Outcome};
pub use plan::{Plan, PlanError, plan};
