//! murmur's read side: the projector runtime that follows the event log in commit order,
//! the read models it maintains, and the [`ReadModel`] interface the query API reads through.

pub mod position;
pub mod read_model;

pub use position::Position;
pub use read_model::{
    Author, Page, PageRequest, PostItem, Profile, ReadError, ReadModel, UserListItem,
};
