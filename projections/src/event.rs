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
    Ok(read_batch_of(conn, after, limit, None).await?.events)
}

/// A stretch of the log as one projection sees it.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events of the wanted aggregate types.
    pub events: Vec<StoredEvent>,
    /// How many events the stretch holds, wanted or not.
    pub scanned: usize,
    /// The last event of the stretch (`None`: nothing to read yet).
    pub end: Option<Position>,
}

/// [`read_batch`], decoding only events of `aggregate_types` (all if `None`): the others
/// are passed over without their payload leaving the database.
pub async fn read_batch_of(
    conn: &mut PgConnection,
    after: Position,
    limit: i64,
    aggregate_types: Option<&[&str]>,
) -> anyhow::Result<Batch> {
    let rows = sqlx::query(
        "SELECT transaction_id::text AS xid, position, aggregate_type, aggregate_id, sequence,
                event_type, event_version, wanted,
                CASE WHEN wanted THEN payload END AS payload,
                CASE WHEN wanted THEN metadata END AS metadata
         FROM (SELECT *, ($4::text[] IS NULL OR aggregate_type = ANY($4)) AS wanted
               FROM events
               WHERE (transaction_id, position) > ($1::text::xid8, $2)
                 AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY transaction_id, position
               LIMIT $3) stretch
         ORDER BY stretch.transaction_id, position",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(limit)
    .bind(aggregate_types)
    .fetch_all(conn)
    .await
    .context("reading events")?;
    let mut batch = Batch {
        scanned: rows.len(),
        ..Batch::default()
    };
    for row in rows {
        let xid: String = row.try_get("xid")?;
        let position = Position::new(
            xid.parse().context("transaction id is not a number")?,
            row.try_get("position")?,
        );
        batch.end = Some(position);
        if !row.try_get::<bool, _>("wanted")? {
            continue;
        }
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
        batch.events.push(StoredEvent {
            position,
            aggregate_type,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event,
            metadata,
        });
    }
    Ok(batch)
}
