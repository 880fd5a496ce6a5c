//! The micro-task executor's pure half (`micro_task_executor_v1`, §2.6.6.8): work packets,
//! generated micro-task definitions and their MT-VAL checks, the execution policy, the loop's
//! decisions, context compilation, and the parsers for what a model sends back.
//!
//! Nothing here touches the filesystem, a model or the clock; the runtime's executor feeds these
//! functions what it read and records what they decide.

pub mod caps;
pub mod classify;
pub mod context;
pub mod decide;
pub mod definition;
pub mod edits;
pub mod generate;
pub mod learning;
pub mod lora;
pub mod packet;
pub mod policy;
pub mod signal;
pub mod state;
pub mod transitions;
pub mod validate;

/// A seeded xorshift generator for the parsers' fuzz tests: deterministic, no dependency.
#[cfg(test)]
pub(crate) mod fuzz {
    pub(crate) struct XorShift(pub(crate) u64);

    impl XorShift {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}
