//! Following the log on a hot standby (a streaming replica of the primary, a read node's
//! `READ_DATABASE_URL`).
//!
//! A standby refuses `LISTEN`, and a notification sent on the primary may arrive before the
//! standby has replayed what it announces, so a node reading a standby is woken by the
//! standby's own replay instead: [`follow_replay`] looks at the replayed WAL position every
//! [`REPLAY_POLL`] (one call, no table read) and wakes the projector tasks when it has moved,
//! since nothing becomes visible on a standby otherwise. [`watch_lag`] measures how far the
//! standby trails the primary, for `/readyz` and the metrics.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::checkpoint::COUNTED_AT_MOST;
use super::wake::Wake;
use crate::runtime::Image;
use crate::shutdown::Shutdown;
use crate::Position;

/// How often a node reading a standby looks at its replay.
pub const REPLAY_POLL: Duration = Duration::from_millis(10);
/// How often the standby's lag behind the primary is measured.
pub const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// Whether the server behind `pool` is a hot standby (in recovery).
pub async fn in_recovery(pool: &PgPool) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await
        .context("asking whether the database is a standby")
}

/// How far the standby a node reads trails the primary, as last measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicaStatus {
    /// Replay is paused (`pg_wal_replay_pause()`): the node's answers stop moving.
    pub replay_paused: bool,
    /// Events committed on the primary that the standby has not replayed yet (counted up to
    /// 10,000).
    pub lag_events: Option<i64>,
    /// WAL the standby has still to replay, in bytes (all of the primary's WAL, any database).
    pub lag_bytes: Option<i64>,
    /// While events are missing: seconds since the standby replayed its last commit (an
    /// upper bound of the oldest missing event's age); 0 when it has them all.
    pub lag_seconds: Option<f64>,
    /// Why the primary could not be asked (the figures that need it are then unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_error: Option<String>,
}

/// Wakes `wake`'s projector tasks whenever the standby behind `pool` has replayed more WAL,
/// until shut down, the server is promoted, or a query fails.
pub async fn follow_replay(pool: &PgPool, wake: &Wake, stop: &mut Shutdown) {
    let mut replayed: Option<String> = None;
    loop {
        let row: Result<(bool, Option<String>), _> =
            sqlx::query_as("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")
                .fetch_one(pool)
                .await;
        match row {
            // Promoted: it can be listened to now.
            Ok((false, _)) => return,
            Ok((true, lsn)) => {
                if lsn != replayed {
                    replayed = lsn;
                    wake.replayed();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the standby's replay position");
                return;
            }
        }
        if stop.pause(REPLAY_POLL).await {
            return;
        }
    }
}

/// Measures every [`MEASURE_EVERY`] how far the standby behind `log` trails `primary`, into
/// `image` (`/readyz`) and the `murmur_replica_*` gauges, until shut down. Runs on its
/// own task: a primary that does not answer slows only this.
pub async fn watch_lag(log: PgPool, primary: PgPool, image: Image, mut stop: Shutdown) {
    let mut warned: Option<Instant> = None;
    loop {
        if stop.pause(MEASURE_EVERY).await {
            return;
        }
        if !image.is_loaded() {
            continue;
        }
        let measured = tokio::select! {
            measured = measure(&log, &primary, image.least_position()) => measured,
            () = stop.recv() => return,
        };
        match measured {
            Ok(status) => {
                if let Some(status) = &status {
                    publish(status);
                }
                image.set_replica(status);
            }
            Err(e) => {
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    warned = Some(Instant::now());
                    tracing::warn!(error = %format!("{e:#}"), "cannot measure the standby's lag");
                }
            }
        }
    }
}

/// One measurement (`None`: `log` is not a standby, or no longer). The standby's log
/// agrees with the primary's up to `at` (a position the node has read past, so every
/// transaction below it had ended there), so the events it lacks are the primary's after
/// `at` less its own; counted on the standby first, so the difference is never short.
/// Counts stop at [`COUNTED_AT_MOST`] more; a node that far behind its own standby gets no
/// figure (its projections' lag says so).
async fn measure(
    log: &PgPool,
    primary: &PgPool,
    at: Position,
) -> anyhow::Result<Option<ReplicaStatus>> {
    let standby = sqlx::query(
        "SELECT pg_is_in_recovery() AS standby,
                -- It fails outside recovery.
                CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused,
                pg_last_wal_replay_lsn()::text AS lsn,
                coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8
                    AS since_replay,
                (SELECT count(*) FROM (SELECT FROM events
                 WHERE (transaction_id, position) > ($1::text::xid8, $2) LIMIT $3) c) AS events",
    )
    .bind(at.xid_text())
    .bind(at.position)
    .bind(COUNTED_AT_MOST)
    .fetch_one(log)
    .await
    .context("reading the standby's replay")?;
    if !standby.try_get::<bool, _>("standby")? {
        return Ok(None);
    }
    let mut status = ReplicaStatus {
        replay_paused: standby
            .try_get::<Option<bool>, _>("paused")?
            .unwrap_or(false),
        ..ReplicaStatus::default()
    };
    let lsn: Option<String> = standby.try_get("lsn")?;
    let on_standby: i64 = standby.try_get("events")?;
    let on_primary = sqlx::query(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::int8 AS bytes,
                (SELECT count(*) FROM (SELECT FROM events
                 WHERE (transaction_id, position) > ($2::text::xid8, $3) LIMIT $4) c) AS events",
    )
    .bind(lsn.unwrap_or_else(|| "0/0".into()))
    .bind(at.xid_text())
    .bind(at.position)
    .bind(on_standby + COUNTED_AT_MOST)
    .fetch_one(primary)
    .await;
    match on_primary {
        Ok(row) => {
            let missing = (row.try_get::<i64, _>("events")? - on_standby).max(0);
            let since_replay: f64 = standby.try_get("since_replay")?;
            status.lag_events = (on_standby < COUNTED_AT_MOST).then_some(missing);
            status.lag_bytes = Some(row.try_get::<i64, _>("bytes")?.max(0));
            status.lag_seconds = Some(if missing > 0 {
                since_replay.max(0.0)
            } else {
                0.0
            });
        }
        Err(e) => status.primary_error = Some(format!("the primary does not answer: {e}")),
    }
    Ok(Some(status))
}

fn publish(status: &ReplicaStatus) {
    metrics::gauge!("murmur_replica_replay_paused").set(f64::from(u8::from(status.replay_paused)));
    metrics::gauge!("murmur_replica_primary_up")
        .set(f64::from(u8::from(status.primary_error.is_none())));
    if let Some(events) = status.lag_events {
        metrics::gauge!("murmur_replica_lag_events").set(events as f64);
    }
    if let Some(bytes) = status.lag_bytes {
        metrics::gauge!("murmur_replica_lag_bytes").set(bytes as f64);
    }
    if let Some(seconds) = status.lag_seconds {
        metrics::gauge!("murmur_replica_lag_seconds").set(seconds);
    }
}
