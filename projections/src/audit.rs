//! The audit trail: the event log read back for people, in commit order, with older event
//! versions shown upcast (and the stored version flagged). The one place that reads the log
//! for audit: `replay audit` and the `/v1/audit` routes both call [`read`].
//!
//! Like a projector, it reads only events below the oldest in-flight transaction
//! (`pg_snapshot_xmin`), so paging with `after` never skips a transaction that commits late.
//! "A user's events" are those where the user is the actor (`metadata.actor_id`) or a subject
//! (`user_id`, `follower_id`, `followee_id`, `author_id` in the payload): migration 0003's
//! `event_users()` and its GIN index.

use anyhow::Context;
use chrono::{DateTime, Utc};
use murmur_domain::{EventMetadata, MurmurEvent, UserId};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use utoipa::ToSchema;

use crate::Position;

/// Most events one page may hold.
pub const MAX_LIMIT: i64 = 1_000;
/// Events per page when the caller names no limit.
pub const DEFAULT_LIMIT: i64 = 100;

/// Which events to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFilter {
    /// The whole log, optionally only events stamped at or after `since`.
    All { since: Option<DateTime<Utc>> },
    /// One aggregate's history (`aggregate_type` as stored: `User`, `Handle`, `Follow`, `Post`).
    Stream {
        aggregate_type: String,
        aggregate_id: String,
    },
    /// Every event the user acted in or is the subject of.
    User(UserId),
}

/// One stored event as the audit shows it (the audit routes' schema).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditEvent {
    /// `"<transaction id>:<position>"`: the event's place in commit order.
    #[schema(value_type = String, example = "812:40")]
    pub position: Position,
    /// `Handle`, `User`, `Follow` or `Post`.
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// The version shown: the current one, after upcasting.
    pub event_version: String,
    /// The version as stored in the log.
    pub stored_version: String,
    /// True when the stored event is an older version, shown upcast.
    pub upcast: bool,
    /// The event in its current form, e.g. `{"PostCreated": {...}}`.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Who acted, in which request, when (null when the stored metadata cannot be read).
    pub metadata: Option<EventMetadata>,
    /// Present only when the stored metadata cannot be read: as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub stored_metadata: Option<Value>,
    /// Set when murmur cannot decode the stored event or its metadata; what it cannot read
    /// is then shown as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// A page of events in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(value_type = Option<String>)]
    pub next_after: Option<Position>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("limit must be between 1 and {MAX_LIMIT}, got {0}")]
    BadLimit(i64),
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

const COLUMNS: &str = "SELECT transaction_id::text AS xid, position, aggregate_type, aggregate_id,
        sequence, event_type, event_version, payload, metadata
     FROM events
     WHERE (transaction_id, position) > ($1::text::xid8, $2)
       AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())";

/// Reads up to `limit` events after `after` (`Position::START`: from the beginning).
pub async fn read(
    conn: &mut PgConnection,
    filter: &AuditFilter,
    after: Position,
    limit: i64,
) -> Result<AuditPage, AuditError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AuditError::BadLimit(limit));
    }
    // One static statement per filter, so each gets a plan that uses its index.
    let condition = match filter {
        AuditFilter::All { since: None } => "",
        AuditFilter::All { since: Some(_) } => " AND (metadata->>'time')::timestamptz >= $4",
        AuditFilter::Stream { .. } => " AND aggregate_type = $4 AND aggregate_id = $5",
        AuditFilter::User(_) => {
            " AND event_users(event_type, payload, metadata) @> ARRAY[$4::bigint]"
        }
    };
    let sql = format!("{COLUMNS}{condition} ORDER BY transaction_id, position LIMIT $3");
    let mut query = sqlx::query(&sql)
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(limit);
    query = match filter {
        AuditFilter::All { since: None } => query,
        AuditFilter::All { since: Some(since) } => query.bind(*since),
        AuditFilter::Stream {
            aggregate_type,
            aggregate_id,
        } => query.bind(aggregate_type).bind(aggregate_id),
        AuditFilter::User(user) => query.bind(*user),
    };
    let rows = query
        .fetch_all(conn)
        .await
        .context("reading the audit trail")?;
    let items = rows
        .iter()
        .map(audit_event)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let next_after = match items.last() {
        Some(last) if items.len() as i64 == limit => Some(last.position),
        _ => None,
    };
    Ok(AuditPage { items, next_after })
}

/// Decodes a row; an event murmur cannot read is still shown, as stored, with the reason.
fn audit_event(row: &PgRow) -> anyhow::Result<AuditEvent> {
    let position = Position::from_row(row)?;
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let stored_type: String = row.try_get("event_type")?;
    let stored_version: String = row.try_get("event_version")?;
    let stored_payload: Value = row.try_get("payload")?;
    let stored_metadata: Value = row.try_get("metadata")?;
    let (metadata, metadata_unreadable) = match EventMetadata::from_json(&stored_metadata) {
        Ok(metadata) => (Some(metadata), None),
        Err(e) => (None, Some(format!("metadata: {e}"))),
    };
    let decoded = MurmurEvent::decode(
        &aggregate_type,
        &stored_type,
        &stored_version,
        stored_payload.clone(),
    );
    let (event_type, event_version, payload, unreadable) = match decoded {
        Ok(event) => {
            let (_, _, event_type, version, payload) = event.encode();
            (event_type, version, payload, None)
        }
        Err(e) => (
            stored_type,
            stored_version.clone(),
            stored_payload,
            Some(e.to_string()),
        ),
    };
    Ok(AuditEvent {
        position,
        upcast: event_version != stored_version,
        aggregate_type,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type,
        event_version,
        stored_version,
        payload,
        stored_metadata: metadata.is_none().then_some(stored_metadata),
        metadata,
        unreadable: match (unreadable, metadata_unreadable) {
            (Some(event), Some(metadata)) => Some(format!("{event}; {metadata}")),
            (event, metadata) => event.or(metadata),
        },
    })
}
