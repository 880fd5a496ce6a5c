//! The micro-task executor's pure half (`micro_task_executor_v1`, §2.6.6.8): work packets,
//! generated micro-task definitions and their MT-VAL checks, the execution policy, the loop's
//! decisions, context compilation, and the parsers for what a model sends back.
//!
//! Nothing here touches the filesystem, a model or the clock; the runtime's executor feeds these
//! functions what it read and records what they decide.

pub mod context;
pub mod decide;
pub mod definition;
pub mod edits;
pub mod generate;
pub mod packet;
pub mod policy;
pub mod signal;
pub mod state;
pub mod validate;
