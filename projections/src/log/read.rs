//! Reading the event log in commit order: [`StoredEvent`] and the batch query every
//! projector uses.

use anyhow::Context;
use chrono::{DateTime, Utc};
use murmur_domain::{EventMetadata, MurmurEvent};
use sqlx::{PgConnection, Row};

use super::horizon;
use crate::store::copy::{drain, CopyOut, Fields};
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
/// writing transaction is older than every transaction still in flight (but registered
/// flushes, which write no event: see [`horizon`], which also says what differs on a hot
/// standby): a transaction that commits late can then never be skipped, whatever positions
/// it took.
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

/// The statement of [`read_batch_of`], with the horizon written in.
static READ_BATCH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT transaction_id::text AS xid, position, aggregate_type, aggregate_id, sequence,
                event_type, event_version, wanted,
                CASE WHEN wanted THEN payload END AS payload,
                CASE WHEN wanted THEN metadata END AS metadata
         FROM (SELECT *, ($4::text[] IS NULL OR aggregate_type = ANY($4)) AS wanted
               FROM events
               WHERE (transaction_id, position) > ($1::text::xid8, $2)
                 AND transaction_id < {}
               ORDER BY transaction_id, position
               LIMIT $3) stretch
         ORDER BY stretch.transaction_id, position",
        horizon::HORIZON
    )
});

/// [`read_batch`], decoding only events of `aggregate_types` (all if `None`): the others
/// are passed over without their payload leaving the database.
pub async fn read_batch_of(
    conn: &mut PgConnection,
    after: Position,
    limit: i64,
    aggregate_types: Option<&[&str]>,
) -> anyhow::Result<Batch> {
    let rows = sqlx::query(&READ_BATCH)
        .bind(after.xid_text())
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
        let position = Position::from_row(&row)?;
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

/// The whole log (or a stretch of it) as one streaming read in commit order, for folds that
/// read millions of events: one `COPY`, no per-batch query. Like [`read_batch_of`] it takes
/// only events below `pg_snapshot_xmin` (as of the start). Its events carry only the time of
/// their metadata, which is all a fold reads.
pub struct LogStream<'c> {
    copy: CopyOut<'c>,
    /// The last event read, of any type.
    pub last: Option<Position>,
    /// Events read, of any type.
    pub scanned: u64,
}

type Streamed = (Position, Option<StoredEvent>);

fn decode_streamed(f: &mut Fields<'_>) -> anyhow::Result<Streamed> {
    let xid: u64 = f
        .text()?
        .parse()
        .context("transaction id is not a number")?;
    let position = Position::new(xid, f.int8()?);
    let aggregate_type = f.text()?;
    let event_type = f.text()?;
    let event_version = f.text()?;
    let Some(payload) = f.optional_text()? else {
        return Ok((position, None));
    };
    let time = f.text()?;
    let event = MurmurEvent::decode_str(aggregate_type, event_type, event_version, payload)
        .with_context(|| format!("event at {position}"))?;
    let time = DateTime::parse_from_rfc3339(time)
        .with_context(|| format!("metadata time of event at {position}"))?
        .with_timezone(&Utc);
    Ok((
        position,
        Some(StoredEvent {
            position,
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: String::new(),
            sequence: 0,
            event,
            metadata: EventMetadata {
                actor_id: None,
                request_id: String::new(),
                time,
            },
        }),
    ))
}

impl<'c> LogStream<'c> {
    /// Events after `after`, up to and including `until`, of `aggregate_types` (the others
    /// are counted but not decoded).
    pub async fn open(
        conn: &'c mut PgConnection,
        after: Position,
        until: Option<Position>,
        aggregate_types: &[&str],
    ) -> anyhow::Result<Self> {
        // COPY takes no parameters: positions are numbers, and the types are checked plain.
        let types = aggregate_types
            .iter()
            .map(|t| {
                anyhow::ensure!(t.chars().all(|c| c.is_ascii_alphanumeric()), "bad type {t}");
                Ok(format!("'{t}'"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(",");
        let until = until.map_or(String::new(), |u| {
            format!(
                "AND (e.transaction_id, e.position) <= ('{}'::xid8, {})",
                u.transaction_id, u.position
            )
        });
        let query = format!(
            // `e.` in ORDER BY: the xid8 column, not the text output column of that name.
            "SELECT e.transaction_id::text AS xid, e.position, e.aggregate_type, e.event_type,
                    e.event_version,
                    CASE WHEN e.aggregate_type IN ({types}) THEN e.payload::text END,
                    e.metadata->>'time'
             FROM events e
             WHERE (e.transaction_id, e.position) > ('{}'::xid8, {})
               AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) {until}
             ORDER BY e.transaction_id, e.position",
            after.transaction_id, after.position
        );
        Ok(Self {
            copy: CopyOut::start(conn, &query).await?,
            last: None,
            scanned: 0,
        })
    }

    /// Up to `max` more events read (fewer of the wanted types); `None` at the end.
    pub async fn next(&mut self, max: usize) -> anyhow::Result<Option<Vec<StoredEvent>>> {
        let mut read: Vec<Streamed> = Vec::with_capacity(max.min(1 << 16));
        let more = self.copy.read_into(&mut read, max, decode_streamed).await?;
        if read.is_empty() && !more {
            return Ok(None);
        }
        self.scanned += read.len() as u64;
        if let Some((last, _)) = read.last() {
            self.last = Some(*last);
        }
        Ok(Some(read.into_iter().filter_map(|(_, e)| e).collect()))
    }

    /// Reads the stream to its end so the connection can be used again.
    pub async fn close(self) -> anyhow::Result<()> {
        drain(self.copy).await
    }
}
