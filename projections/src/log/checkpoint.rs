//! `projection_checkpoints`: where each projection's durable copy is in the log, the
//! settings it was built with, and the advisory locks that make one process its leader.

use anyhow::Context;
use sqlx::{PgConnection, Row};

use super::position::Position;

/// A projection's checkpoint (`Position::START` before its first batch).
pub async fn checkpoint(conn: &mut PgConnection, projection: &str) -> anyhow::Result<Position> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS xid, position FROM projection_checkpoints
         WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(&mut *conn)
    .await
    .with_context(|| format!("reading the checkpoint of {projection}"))?;
    Ok(match row {
        Some(row) => Position::from_row(&row)?,
        None => Position::START,
    })
}

/// Creates the checkpoint rows that do not exist yet.
pub async fn ensure(conn: &mut PgConnection, projections: &[&str]) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection) SELECT unnest($1::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(projections)
    .execute(conn)
    .await
    .context("creating checkpoints")?;
    Ok(())
}

/// Inside the caller's transaction: moves the checkpoint from `from` to `to`, locking its
/// row first. Returns false (and changes nothing) if it is no longer at `from`: another
/// process has written the projection meanwhile.
pub async fn advance(
    tx: &mut PgConnection,
    projection: &str,
    from: Position,
    to: Position,
) -> anyhow::Result<bool> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS xid, position FROM projection_checkpoints
         WHERE projection = $1 FOR UPDATE",
    )
    .bind(projection)
    .fetch_one(&mut *tx)
    .await
    .context("locking the checkpoint")?;
    if Position::from_row(&row)? != from {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, position = $3, updated_at = now()
         WHERE projection = $1",
    )
    .bind(projection)
    .bind(to.xid_text())
    .bind(to.position)
    .execute(&mut *tx)
    .await
    .context("writing the checkpoint")?;
    Ok(true)
}

/// Sets a checkpoint outright (a rebuild's swap), with the settings it was built with.
pub async fn set(
    tx: &mut PgConnection,
    projection: &str,
    at: Position,
    settings: &serde_json::Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, position = $3, settings = $4, updated_at = now()
         WHERE projection = $1",
    )
    .bind(projection)
    .bind(at.xid_text())
    .bind(at.position)
    .bind(settings)
    .execute(tx)
    .await
    .with_context(|| format!("writing the checkpoint of {projection}"))?;
    Ok(())
}

/// The settings the durable copy of a projection was built with differ from the
/// configured ones: its tables mean something else, so continuing would mix the two.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {projection} projection was built with {stored} but this process is configured with \
     {configured}; rebuild it with the new settings (`replay rebuild --projection {projection}` \
     with the same MURMUR_CELEBRITY_THRESHOLD), or start with the old ones"
)]
pub struct SettingsMismatch {
    pub projection: String,
    pub stored: serde_json::Value,
    pub configured: serde_json::Value,
}

/// Checks a projection's stored settings against `configured`, recording them where none
/// are known yet (a projection that has applied nothing, or one built before settings were
/// stored, which is taken to have been built with the configured ones). Writes only then,
/// so that a read node on a hot standby can check recorded settings.
pub async fn check_settings(
    conn: &mut PgConnection,
    projection: &str,
    configured: &serde_json::Value,
) -> anyhow::Result<()> {
    let row = sqlx::query(
        "SELECT settings, transaction_id::text AS xid, position FROM projection_checkpoints
         WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(&mut *conn)
    .await
    .context("reading the projection's settings")?;
    let (stored, at) = match &row {
        Some(row) => (
            row.try_get::<Option<serde_json::Value>, _>("settings")?,
            Position::from_row(row)?,
        ),
        None => (None, Position::START),
    };
    match stored {
        Some(stored) if stored == *configured => Ok(()),
        Some(stored) if at != Position::START => Err(SettingsMismatch {
            projection: projection.to_string(),
            stored,
            configured: configured.clone(),
        }
        .into()),
        _ => record_settings(conn, projection, configured).await,
    }
}

/// Records `configured` as a projection's settings (creating its checkpoint row).
async fn record_settings(
    conn: &mut PgConnection,
    projection: &str,
    configured: &serde_json::Value,
) -> anyhow::Result<()> {
    let recorded = sqlx::query(
        "INSERT INTO projection_checkpoints (projection, settings) VALUES ($1, $2)
         ON CONFLICT (projection) DO UPDATE SET settings = EXCLUDED.settings",
    )
    .bind(projection)
    .bind(configured)
    .execute(conn)
    .await;
    match recorded {
        Ok(_) => Ok(()),
        // 25006: read_only_sql_transaction, a hot standby.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25006") => {
            Err(anyhow::anyhow!(
                "the {projection} projection has no settings recorded yet, and this database \
                 is read-only (a hot standby): start a projector node (`murmur serve` or \
                 `murmur project`) on the primary first"
            ))
        }
        Err(e) => Err(anyhow::Error::new(e).context("recording the projection's settings")),
    }
}

/// First key of the advisory locks projectors take (the second is the projection's name).
const LOCK_CLASS: i32 = 0x6d75_726d; // "murm"

/// Tries to become the one process applying `projection`; the lock lasts as long as the
/// session of `conn`.
pub async fn try_lock(conn: &mut PgConnection, projection: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(projection)
        .fetch_one(conn)
        .await
        .context("trying the projection lock")
}

/// Waits until this session is the one process applying `projection`.
pub async fn lock(conn: &mut PgConnection, projection: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(projection)
        .execute(conn)
        .await
        .context("taking the projection lock")?;
    Ok(())
}

/// Whether any event was committed after `at` (applicable or still held back).
pub async fn committed_after(conn: &mut PgConnection, at: Position) -> anyhow::Result<bool> {
    // Not `EXISTS`: its generic plan (what a prepared statement gets after five runs) is a
    // sequential scan of the whole log, 35 s at scale 1. A first row in commit order can
    // only come from the commit-order index.
    let first: Option<i64> = sqlx::query_scalar(
        "SELECT position FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2)
         ORDER BY transaction_id, position LIMIT 1",
    )
    .bind(at.xid_text())
    .bind(at.position)
    .fetch_optional(conn)
    .await
    .context("looking for held-back events")?;
    Ok(first.is_some())
}

/// Events committed after `at` (up to [`COUNTED_AT_MOST`]), and the age in seconds of the
/// oldest of them (0 if none).
pub async fn lag(conn: &mut PgConnection, at: Position) -> anyhow::Result<(i64, f64)> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM (SELECT FROM events
                 WHERE (transaction_id, position) > ($1::text::xid8, $2) LIMIT $3) c) AS events,
                coalesce(extract(epoch FROM now() - (
                    SELECT (metadata->>'time')::timestamptz FROM events
                    WHERE (transaction_id, position) > ($1::text::xid8, $2)
                    ORDER BY transaction_id, position LIMIT 1)), 0)::float8 AS seconds",
    )
    .bind(at.xid_text())
    .bind(at.position)
    .bind(COUNTED_AT_MOST)
    .fetch_one(conn)
    .await
    .context("measuring projection lag")?;
    Ok((
        row.try_get("events")?,
        row.try_get::<f64, _>("seconds")?.max(0.0),
    ))
}

/// The oldest write transaction in flight anywhere in the cluster: what holds every
/// reader's horizon (`pg_snapshot_xmin`) back. Other users' sessions show only to a
/// superuser or a member of `pg_read_all_stats`; then this may find nothing.
pub async fn oldest_transaction(
    conn: &mut PgConnection,
) -> anyhow::Result<Option<crate::runtime::Blocker>> {
    let row = sqlx::query(
        "SELECT pid, datname::text AS database,
                coalesce(extract(epoch FROM now() - xact_start), 0)::float8 AS age
         FROM pg_stat_activity
         WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
         ORDER BY age(backend_xid) DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await
    .context("looking for the oldest transaction")?;
    row.map(|row| {
        Ok(crate::runtime::Blocker {
            pid: row.try_get("pid")?,
            database: row.try_get("database")?,
            age_seconds: row.try_get("age")?,
        })
    })
    .transpose()
}

/// Events counted by [`events_between`] at most: counting is a walk of the index, measured
/// every second, and beyond this many the figure only says "far behind".
pub const COUNTED_AT_MOST: i64 = 10_000;

/// Events in the log after `from` up to and including `to`, up to [`COUNTED_AT_MOST`].
pub async fn events_between(
    conn: &mut PgConnection,
    from: Position,
    to: Position,
) -> anyhow::Result<i64> {
    if to <= from {
        return Ok(0);
    }
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT FROM events
             WHERE (transaction_id, position) > ($1::text::xid8, $2)
               AND (transaction_id, position) <= ($3::text::xid8, $4)
             LIMIT $5) counted",
    )
    .bind(from.xid_text())
    .bind(from.position)
    .bind(to.xid_text())
    .bind(to.position)
    .bind(COUNTED_AT_MOST)
    .fetch_one(conn)
    .await
    .context("counting events between two positions")
}
