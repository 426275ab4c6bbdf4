//! The one error type of the domain: every broken rule, named.

use crate::{PostId, UserId};

/// A command refused by an aggregate. `kind()` tells the API which status to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid handle: {0}")]
    InvalidHandle(String),
    #[error("invalid display name: {0}")]
    InvalidDisplayName(String),
    #[error("invalid password: {0}")]
    InvalidPassword(String),
    #[error("invalid post body: {0}")]
    InvalidPostBody(String),
    #[error("handle is already taken")]
    HandleTaken,
    #[error("user {0} is already registered")]
    AlreadyRegistered(UserId),
    #[error("a user cannot follow themselves")]
    SelfFollow,
    #[error("unknown user {0}")]
    UnknownUser(UserId),
    #[error("post {0} already exists")]
    PostExists(PostId),
    #[error("unknown post {0}")]
    UnknownPost(PostId),
    #[error("only the author may delete post {0}")]
    NotPostAuthor(PostId),
    /// A service the aggregate asked (e.g. the user directory) failed; not the client's fault.
    #[error("lookup failed: {0}")]
    Lookup(String),
}

/// How a [`DomainError`] should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A rule about the command's content is broken (422).
    Invalid,
    /// The command conflicts with existing state (409).
    Conflict,
    /// Something the command names does not exist (404).
    NotFound,
    /// The actor may not do this (403).
    Forbidden,
    /// An internal dependency failed (500/503).
    Internal,
}

impl DomainError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidHandle(_)
            | Self::InvalidDisplayName(_)
            | Self::InvalidPassword(_)
            | Self::InvalidPostBody(_)
            | Self::SelfFollow => ErrorKind::Invalid,
            Self::HandleTaken | Self::AlreadyRegistered(_) | Self::PostExists(_) => {
                ErrorKind::Conflict
            }
            Self::UnknownUser(_) | Self::UnknownPost(_) => ErrorKind::NotFound,
            Self::NotPostAuthor(_) => ErrorKind::Forbidden,
            Self::Lookup(_) => ErrorKind::Internal,
        }
    }
}
