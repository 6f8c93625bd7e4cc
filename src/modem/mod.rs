//! Modem workers: one task per modem over tokio-serial, never blocking the others.
//!
//! - [`job`]: the contract with the rest of the daemon (jobs, outcomes, events, health).
//! - [`config`]: what a worker is configured with.
//! - [`session`]: one command at a time with hard deadlines; unsolicited lines set aside.
//! - [`init`]: bringing a modem up, with the fallbacks real modems need.
//! - [`worker`]: the task: life cycle, recovery, and the entry point [`spawn_worker`].
//! - `send`, `receive`, `health`: what the worker does with jobs, incoming messages and polls.

pub mod config;
mod health;
pub mod init;
pub mod job;
mod receive;
mod send;
pub mod session;
pub mod worker;
#[cfg(test)]
mod worker_tests;

pub use config::{Timeouts, WorkerConfig};
pub use worker::{Opener, WorkerHandle, spawn_with_opener, spawn_worker};
