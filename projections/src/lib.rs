//! murmur's read side. Each projection is a plain fold over the event log held in memory,
//! with a durable, checkpointed copy of its tables in PostgreSQL.
//!
//! Where things live:
//! - [`args`]: the settings both binaries take (database URL, celebrity threshold).
//! - [`db`]: connecting (the default URL, the pool, redacted URLs), for every binary.
//! - [`log`]: the event log and its bookkeeping: [`Position`] (and its one row codec),
//!   reading the log in commit order ([`StoredEvent`]), checkpoints, settings and leader
//!   locks ([`log::checkpoint`]).
//! - [`state`]: the projections' in-memory states (profiles, posts, feeds with the follow
//!   graph), one file each, no I/O.
//! - [`store`]: their durable copies: loading, writing a batch's row changes, writing a
//!   whole state (binary `COPY`).
//! - [`projection`]: the list of projections ([`Kind`]) and [`AnyState`], through which the
//!   runtime and `replay` drive them.
//! - [`runtime`]: the leader loop that follows the log and flushes the durable copy;
//!   [`shutdown`]: how a node tells its tasks to stop.
//! - [`read_model`]: the query side's interface, [`ReadModel`], with its error type and
//!   cursors; [`mem_read_model`] implements it over the memory image (what nodes serve),
//!   [`pg_read_model`] over the tables (the lists, and the reference), [`checkpoints`]
//!   keeps the tables' checkpoints in memory for it; [`audit`] reads the log for the audit
//!   trail.

pub mod args;
pub mod audit;
pub mod checkpoints;
pub mod db;
pub mod log;
pub mod mem_read_model;
pub mod pg_read_model;
pub mod projection;
pub mod read_model;
pub mod runtime;
pub mod shutdown;
pub mod state;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use checkpoints::CheckpointView;
pub use log::position::Position;
pub use log::read::StoredEvent;
pub use mem_read_model::MemReadModel;
pub use pg_read_model::PgReadModel;
pub use projection::{AnyState, Kind};
pub use read_model::{
    Author, Page, PageRequest, PostItem, Profile, ReadError, ReadModel, Reads, UserListItem,
};
pub use runtime::{
    catch_up, run, spawn, status, Image, ProjectionStatus, ProjectorConfig, Role, Step,
};
