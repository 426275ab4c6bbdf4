//! Reading the event log in commit order: [`StoredEvent`] and the batch query every
//! projector uses.

use anyhow::Context;
use murmur_domain::{EventMetadata, MurmurEvent};
use sqlx::{PgConnection, Row};

use crate::Position;

/// One decoded event of the log, as projections receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: Position,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event: MurmurEvent,
    pub metadata: EventMetadata,
}

/// Reads up to `limit` events after `after`, in commit order, taking only events whose
/// writing transaction is older than every transaction still in flight: a transaction that
/// commits late can then never be skipped, whatever positions it took.
pub async fn read_batch(
    conn: &mut PgConnection,
    after: Position,
    limit: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    let rows = sqlx::query(
        "SELECT transaction_id::text AS xid, position, aggregate_type, aggregate_id, sequence,
                event_type, event_version, payload, metadata
         FROM events
         WHERE (transaction_id, position) > ($1::text::xid8, $2)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY transaction_id, position
         LIMIT $3",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(limit)
    .fetch_all(conn)
    .await
    .context("reading events")?;
    rows.into_iter()
        .map(|row| {
            let xid: String = row.try_get("xid")?;
            let position = Position::new(
                xid.parse().context("transaction id is not a number")?,
                row.try_get("position")?,
            );
            let aggregate_type: String = row.try_get("aggregate_type")?;
            let event_type: String = row.try_get("event_type")?;
            let event_version: String = row.try_get("event_version")?;
            let event = MurmurEvent::decode(
                &aggregate_type,
                &event_type,
                &event_version,
                row.try_get("payload")?,
            )
            .with_context(|| format!("event at {position}"))?;
            let metadata = EventMetadata::from_json(&row.try_get("metadata")?)
                .with_context(|| format!("metadata of event at {position}"))?;
            Ok(StoredEvent {
                position,
                aggregate_type,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event,
                metadata,
            })
        })
        .collect()
}
