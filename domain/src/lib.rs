//! murmur's write model: the aggregates that validate commands, the events they append,
//! and the rules they enforce. Pure logic: no I/O, no clock, no database.
//!
//! Aggregates (one cqrs-es stream each):
//! - [`Handle`]: one stream per normalized handle; its first `HandleClaimed` wins, which is
//!   what makes handles unique under concurrent registration.
//! - [`User`]: one stream per user id, opened by `UserRegistered`.
//! - [`Follow`]: one stream per (follower, followee) edge, so a follow never loads a large stream.
//! - [`Post`]: one stream per post id.

pub mod error;
pub mod event;
pub mod follow;
pub mod post;
pub mod rules;
pub mod user;

pub use error::DomainError;
pub use event::{upcast, EventMetadata, MurmurEvent, MurmurUpcaster, UnknownEvent};
pub use follow::{Follow, FollowCommand, FollowEvent, UserDirectory};
pub use post::{Post, PostCommand, PostEvent};
pub use user::{Handle, HandleCommand, HandleEvent, User, UserCommand, UserEvent};

/// User ids are positive integers below 2^53, so JavaScript clients read them exactly.
pub type UserId = i64;
/// Post ids, same range as user ids.
pub type PostId = i64;

/// The largest id murmur hands out (2^53 - 1).
pub const MAX_ID: i64 = (1 << 53) - 1;
