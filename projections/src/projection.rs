//! The [`Projection`] trait: what a read model implements so that the runtime (and
//! `replay rebuild`) can feed it the event log.

use cqrs_es::Aggregate;
use murmur_domain::{Follow, Handle, Post, User};
use sqlx::PgConnection;

use crate::StoredEvent;

/// A read model maintained from the event log.
///
/// Rules for implementors:
/// - `apply` receives a batch of events in commit order (thousands at a time during a
///   rebuild) and must be set-based: aggregate the batch in memory and write it with a few
///   statements (`UNNEST` arrays, `INSERT ... SELECT`), not one round trip per event.
/// - `apply` runs inside a transaction the caller owns and must not commit, roll back or
///   touch `projection_checkpoints`: the runtime writes the checkpoint in the same
///   transaction, which is what makes a crash at any instant lose or repeat nothing.
/// - `apply` names its own tables UNQUALIFIED: `replay rebuild` runs the same code under
///   `SET search_path TO <shadow schema>, public` to build shadow copies (created with
///   `CREATE TABLE shadow.x (LIKE public.x INCLUDING ALL)` for each of [`Projection::tables`])
///   and then swaps them in.
/// - `apply` reads only the tables listed in `tables()`: reading another projection's
///   tables would make the result depend on how far that projection had got.
#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    /// The checkpoint name (one of `read_model::names`).
    fn name(&self) -> &'static str;
    /// The tables this projection owns, unqualified.
    fn tables(&self) -> &'static [&'static str];
    /// The aggregate types whose events `apply` needs (`Aggregate::TYPE`); the live runtime
    /// does not even decode the others. Default: all of them.
    fn aggregate_types(&self) -> &'static [&'static str] {
        &[Handle::TYPE, User::TYPE, Follow::TYPE, Post::TYPE]
    }
    /// Indexes on [`Projection::tables`] that `apply` never reads (only queries do). A
    /// rebuild builds them once after its bulk load instead of maintaining them row by row.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &[]
    }
    /// Applies a batch of events, in order. Must be idempotent only per checkpoint: the
    /// runtime never hands the same event twice to committed state.
    async fn apply(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()>;
}
