//! `replay audit`: pages through `murmur_projections::audit` and prints the events as a
//! table for people or as JSON lines for tools.

use std::io::Write;

use anyhow::Context;
use murmur_projections::audit::{self, AuditEvent, AuditFilter, MAX_LIMIT};
use murmur_projections::Position;
use sqlx::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    JsonLines,
}

/// Prints the events `filter` selects after `after`, at most `limit` of them (all if
/// `None`), page by page. Returns how many were printed.
pub async fn print(
    conn: &mut PgConnection,
    filter: &AuditFilter,
    mut after: Position,
    limit: Option<u64>,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut printed = 0u64;
    if format == Format::Table {
        writeln!(out, "{}", header())?;
    }
    loop {
        let want = limit.map_or(MAX_LIMIT as u64, |l| (l - printed).min(MAX_LIMIT as u64));
        if want == 0 {
            break;
        }
        let page = audit::read(conn, filter, after, want as i64)
            .await
            .context("reading the audit trail")?;
        for event in &page.items {
            match format {
                Format::Table => writeln!(out, "{}", row(event))?,
                Format::JsonLines => writeln!(out, "{}", serde_json::to_string(event)?)?,
            }
        }
        printed += page.items.len() as u64;
        match page.next_after {
            Some(next) => after = next,
            None => break,
        }
    }
    Ok(printed)
}

fn header() -> String {
    format!(
        "{:<14} {:<27} {:<6} {:<26} {:>4} {:<22} PAYLOAD",
        "POSITION", "TIME", "ACTOR", "STREAM", "SEQ", "EVENT"
    )
}

/// One line per event; an upcast event shows the version it was stored as.
fn row(event: &AuditEvent) -> String {
    let version = if event.upcast {
        format!(
            "v{} (stored v{})",
            event.event_version, event.stored_version
        )
    } else {
        format!("v{}", event.event_version)
    };
    let body = event
        .payload
        .get(&event.event_type)
        .unwrap_or(&event.payload)
        .to_string();
    let body = match &event.unreadable {
        Some(reason) => format!("{body}  UNREADABLE: {reason}"),
        None => body,
    };
    format!(
        "{:<14} {:<27} {:<6} {:<26} {:>4} {:<22} {}",
        event.position.to_string(),
        event.metadata.as_ref().map_or_else(
            || "?".to_string(),
            |m| m.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        event
            .metadata
            .as_ref()
            .and_then(|m| m.actor_id)
            .map_or_else(|| "-".to_string(), |a| a.to_string()),
        format!("{}/{}", event.aggregate_type, event.aggregate_id),
        event.sequence,
        format!("{} {version}", event.event_type),
        body
    )
}
