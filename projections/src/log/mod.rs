//! The event log and its bookkeeping: positions (with their one row codec), reading the log
//! in commit order, and checkpoints, settings and leader locks.

pub mod checkpoint;
pub mod horizon;
pub mod position;
pub mod read;
