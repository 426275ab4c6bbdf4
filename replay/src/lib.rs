//! `replay`: rebuild murmur's projections from the event log without downtime, verify them
//! against a fresh rebuild, and read the audit trail. The binary (`main.rs`) is a thin CLI
//! over these modules; tests drive them directly.

pub mod audit;
pub mod progress;
pub mod rebuild;
pub mod shadow;

pub use progress::ProgressMode;
pub use rebuild::{rebuild, select, verify, Options, RebuildReport, VerifyReport};
