//! murmur's read side: the projector runtime that follows the event log in commit order,
//! the read models it maintains, and the [`ReadModel`] interface the query API reads through.

pub mod audit;
pub mod checkpoints;
pub mod event;
pub mod feeds;
pub mod pg_read_model;
pub mod position;
pub mod posts;
pub mod profiles;
pub mod projection;
pub mod read_model;
pub mod runtime;

pub use checkpoints::CheckpointView;
pub use event::StoredEvent;
pub use feeds::FeedsProjection;
pub use pg_read_model::PgReadModel;
pub use position::Position;
pub use posts::PostsProjection;
pub use profiles::ProfilesProjection;
pub use projection::Projection;
pub use read_model::{
    Author, Page, PageRequest, PostItem, Profile, ReadError, ReadModel, UserListItem,
};
pub use runtime::{catch_up, run, spawn, status, BatchOutcome, ProjectionStatus, ProjectorConfig};
