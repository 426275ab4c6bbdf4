//! Upkeep of the log's audit index (`events_users`, a GIN index, migrations 0003 and 0009).
//!
//! An append adds its keys to the index's pending list, which is cheap; merging that list
//! into the index is what costs, and PostgreSQL makes whichever append finds the list full
//! do it, seconds of waiting for one command. Merged here instead, every second, on a
//! connection of its own (`gin_clean_pending_list` takes no transaction id, so it holds no
//! reader of the log back), the list never fills and sorted bulk merges stay cheap.

use std::time::Duration;

use sqlx::PgPool;

use crate::shutdown::Shutdown;

/// How often the pending list is merged.
pub const EVERY: Duration = Duration::from_secs(1);

/// Merges the audit index's pending list every [`EVERY`] until `stop`.
pub async fn keep_merged(pool: PgPool, mut stop: Shutdown) {
    loop {
        if stop.pause(EVERY).await {
            return;
        }
        if let Err(e) = merge(&pool).await {
            // Appends then merge it themselves, as without this task: slower, never wrong.
            tracing::debug!(error = %e, "could not merge the audit index's pending list");
        }
    }
}

/// Merges the pending list once; answers the index pages it removed from the list.
pub async fn merge(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT gin_clean_pending_list('events_users'::regclass)")
        .fetch_one(pool)
        .await
}
