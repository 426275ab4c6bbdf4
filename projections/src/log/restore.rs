//! A log restored into another cluster. Positions order by `transaction_id`, the xid of the
//! cluster that wrote the event; after a logical dump and restore (or a logical-replication
//! move) the new cluster hands out xids below the restored ones, so every new event would
//! sort before them: projectors would skip new events and a rebuild could not read the
//! restored ones (they are never below the horizon). [`check`] refuses to go on then, and
//! [`resequence`] moves the log into the current cluster's past, keeping its order.

use anyhow::Context;
use sqlx::{PgConnection, PgPool, Row};

/// The transaction id restored events get: PostgreSQL's "frozen" xid, older than any
/// transaction of this cluster, so every horizon is past it.
pub const RESTORED_XID: u64 = 2;

/// The log holds transaction ids this cluster has not reached: it was restored from another.
#[derive(Debug, thiserror::Error)]
#[error(
    "the event log holds transaction ids up to {newest}, ahead of this PostgreSQL cluster's \
     next one ({next}): it was restored from another cluster, and new events would sort \
     before the restored ones. Stop every murmur process and run `replay resequence` once"
)]
pub struct TransactionIdsAhead {
    pub newest: u64,
    pub next: u64,
}

fn parse(text: Option<String>) -> anyhow::Result<u64> {
    text.map_or(Ok(0), |t| {
        t.parse().context("a transaction id is not a number")
    })
}

/// Refuses (with [`TransactionIdsAhead`]) a log or checkpoint whose transaction ids are at
/// or past the cluster's next one. Two index lookups and no xid is consumed.
pub async fn check(conn: &mut PgConnection) -> anyhow::Result<()> {
    let row = sqlx::query(
        "SELECT (SELECT max(transaction_id)::text FROM events) AS events,
                (SELECT max(transaction_id)::text FROM projection_checkpoints) AS checkpoints,
                pg_snapshot_xmax(pg_current_snapshot())::text AS next",
    )
    .fetch_one(conn)
    .await
    .context("reading the log's newest transaction id")?;
    let newest = parse(row.try_get("events")?)?.max(parse(row.try_get("checkpoints")?)?);
    let next = parse(row.try_get("next")?)?;
    if newest >= next {
        return Err(TransactionIdsAhead { newest, next }.into());
    }
    Ok(())
}

/// What [`resequence`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resequenced {
    pub events: i64,
    pub checkpoints: i64,
}

/// Rewrites the whole log into this cluster's past: every event gets [`RESTORED_XID`] and a
/// new position, its rank in the old commit order (so the order is kept exactly), and each
/// checkpoint moves to the same place in it. One transaction holding the log and the
/// checkpoints exclusively; run it with no murmur process running. Nothing to do (zeros)
/// when the log is not ahead.
pub async fn resequence(pool: &PgPool) -> anyhow::Result<Resequenced> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE events, projection_checkpoints IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .context("locking the log")?;
    match check(&mut tx).await {
        Ok(()) => {
            return Ok(Resequenced {
                events: 0,
                checkpoints: 0,
            })
        }
        Err(e) if e.is::<TransactionIdsAhead>() => {}
        Err(e) => return Err(e),
    }
    // Checkpoints first: where each is in the old order.
    let checkpoints = sqlx::query(
        "UPDATE projection_checkpoints c
         SET transaction_id = CASE WHEN r.rank = 0 THEN '0'::xid8 ELSE $1::text::xid8 END,
             position = r.rank
         FROM (SELECT projection,
                      (SELECT count(*) FROM events e
                       WHERE (e.transaction_id, e.position) <= (c.transaction_id, c.position)) AS rank
               FROM projection_checkpoints c) r
         WHERE c.projection = r.projection",
    )
    .bind(RESTORED_XID.to_string())
    .execute(&mut *tx)
    .await
    .context("moving the checkpoints")?
    .rows_affected();
    // Through negative positions, so that no two rows ever share one (the index is unique).
    let events = sqlx::query(
        "UPDATE events e SET transaction_id = $1::text::xid8, position = -r.rank
         FROM (SELECT position, row_number() OVER (ORDER BY transaction_id, position) AS rank
               FROM events) r
         WHERE e.position = r.position",
    )
    .bind(RESTORED_XID.to_string())
    .execute(&mut *tx)
    .await
    .context("renumbering the log")?
    .rows_affected();
    sqlx::query("UPDATE events SET position = -position")
        .execute(&mut *tx)
        .await
        .context("renumbering the log")?;
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('events', 'position'),
                       greatest((SELECT max(position) FROM events), 1))",
    )
    .execute(&mut *tx)
    .await
    .context("moving the position sequence")?;
    tx.commit().await?;
    Ok(Resequenced {
        events: events as i64,
        checkpoints: checkpoints as i64,
    })
}
