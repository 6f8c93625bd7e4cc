//! Modem workers: one task per modem over tokio-serial.
//!
//! - [`job`]: the contract with the rest of the daemon (jobs, outcomes, events, health).
//! - [`session`]: one command at a time with hard deadlines; unsolicited lines set aside.

pub mod job;
pub mod session;
