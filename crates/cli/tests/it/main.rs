//! End-to-end tests of the `steward` binary on real SQLite files and real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

mod approvals;
mod bad_input;
mod crash;
mod direclaw;
mod e2e;
mod governance;
mod hostile_corpus;
mod local_model;
mod micro_task;
mod mt_bench;
mod recorder;
mod restart;
mod sandbox;
mod secrets;
mod serve;
mod tidy;
mod torture;
mod workers;
