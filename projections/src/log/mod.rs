//! The event log and its bookkeeping: positions (with their one row codec), reading the log
//! in commit order (once per node for all projections: [`shared`]), checkpoints, settings
//! and leader locks, how readers of the log are woken when it grows (the one LISTEN loop,
//! [`listen`]; on a hot standby: by its replay, [`standby`]), and the upkeep of its audit index.

pub mod audit_index;
pub mod checkpoint;
pub mod horizon;
pub mod listen;
pub mod position;
pub mod read;
pub mod restore;
pub mod shared;
pub mod standby;
pub mod wake;
