//! Modem workers: one task per modem over tokio-serial.

pub mod job;
