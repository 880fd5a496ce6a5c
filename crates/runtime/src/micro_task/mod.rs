//! The micro-task executor's runtime half: reading a work packet from disk into a checked plan
//! (generated tasks, waves, the MT-VAL report and the tool bus's verdict on every verify
//! command), the loop that runs it, and the staged copy of the workspace each task works in
//! (`stage`). The decisions themselves live in `steward_micro_task`.

mod executor;
pub(crate) mod job;
mod plan;
mod stage;

pub(crate) use executor::cancel_documents;

/// Removes this machine's stages of job `job_id`.
pub(crate) fn remove_stages(job_id: &str) {
    stage::remove(&job::stage_base(job_id));
}
pub use executor::{BoxFuture, EventSink, ExecError, Executor, ModelFactory, Outcome};
pub use job::{stage_base, sweep_stages};
pub use plan::{Plan, PlanError, plan, probe_servers};
