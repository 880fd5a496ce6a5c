//! Engine integration tests on a real SQLite file: recovery, resume, failures, cancellation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

mod agents;
mod approvals;
mod engine;
mod faults;
mod governance;
mod micro_task_runs;
mod micro_tasks;
mod recovery;
mod restart;
mod workers;
