//! What a command can fail with, in the write side's own terms (the HTTP layer turns it into
//! a problem, in `http/error.rs`).

use cqrs_es::AggregateError;
use murmur_domain::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A domain rule refused the command (invalid input, a conflict, not found, forbidden).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The stream kept changing underneath the command, attempt after attempt.
    #[error("the resource was changed concurrently too many times; retry")]
    Contended,
    /// A login whose handle or password is wrong (the same answer for both).
    #[error("wrong handle or password")]
    BadCredentials,
    /// The database commands are written to does not answer.
    #[error("the database does not answer: {0}")]
    Unavailable(sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<AggregateError<DomainError>> for CommandError {
    fn from(e: AggregateError<DomainError>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Domain(e),
            AggregateError::AggregateConflict => Self::Contended,
            AggregateError::DatabaseConnectionError(e) => match e.downcast::<sqlx::Error>() {
                Ok(e) => (*e).into(),
                Err(e) => Self::Internal(anyhow::anyhow!("event store: {e}")),
            },
            other => Self::Internal(anyhow::anyhow!("event store: {other}")),
        }
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => Self::Unavailable(e),
            e => Self::Internal(anyhow::Error::new(e).context("database")),
        }
    }
}
