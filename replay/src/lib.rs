//! `replay`: rebuild murmur's projections from the event log without downtime, verify them
//! against a fresh rebuild, and read the audit trail. The binary (`main.rs`) is a thin CLI
//! over these modules; tests drive them directly.
//!
//! - [`rebuild`]: the fold of the whole log in memory, the shadow tables' bulk write, the
//!   catch-up and the hand-over ([`rebuild()`]), and [`verify()`]; its settings in
//!   [`Options`], its errors as `anyhow` context.
//! - [`shadow`]: the shadow schemas, their indexes and the swap.
//! - [`progress`]: the progress bar on a terminal, log lines otherwise.
//! - [`audit`]: `replay audit`'s tables and JSON lines (the reading itself is
//!   `murmur_projections::audit`).
//!
//! The settings it shares with the server (`DATABASE_URL`, the celebrity threshold) are
//! `murmur_projections::args::SharedArgs`; checkpoints and locks are
//! `murmur_projections::log::checkpoint`'s.

pub mod audit;
pub mod progress;
pub mod rebuild;
pub mod shadow;

pub use progress::ProgressMode;
pub use rebuild::{rebuild, select, verify, Options, RebuildReport, VerifyReport};
