//! A process-wide, in-memory view of `projection_checkpoints`, so that queries learn how far
//! the read models are without a database round trip.
//!
//! Kept current by `LISTEN murmur_checkpoints` (migration 0005's trigger, notified at commit,
//! so memory never runs ahead of committed read models), re-read in full at start, after
//! every (re)connection of the listener (notifications sent meanwhile are lost) and every
//! [`RESYNC_EVERY`] as a safety net. On a hot standby, which refuses `LISTEN` (and where the
//! primary's notification may come before the rows it announces have been replayed), it is
//! re-read every [`STANDBY_RESYNC`] instead. It may lag the database by a moment, never
//! lead it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::log::listen::{self, Listening};
use crate::read_model::ReadError;
use crate::shutdown::Shutdown;
use crate::Position;

/// The channel migration 0005's trigger notifies when a checkpoint row changes.
pub const CHANNEL: &str = "murmur_checkpoints";
/// How often the whole table is re-read even when notifications flow.
pub const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// How often the view is re-read from a hot standby.
pub const STANDBY_RESYNC: Duration = Duration::from_millis(50);
/// The pause before the listener tries to connect again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Checkpoint of each projection, by name.
pub type Checkpoints = BTreeMap<String, Position>;

/// Every checkpoint row, read from the database.
pub async fn read_all(pool: &PgPool) -> Result<Checkpoints, ReadError> {
    let rows = sqlx::query(
        "SELECT projection, transaction_id::text AS xid, position FROM projection_checkpoints",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("projection")?, Position::from_row(row)?)))
        .collect()
}

/// The least checkpoint of `projections` (one without a row has applied nothing yet).
pub fn least(checkpoints: &Checkpoints, projections: &[&str]) -> Position {
    projections
        .iter()
        .map(|name| checkpoints.get(*name).copied().unwrap_or(Position::START))
        .min()
        .unwrap_or(Position::START)
}

/// `"<projection> <xid>:<position>"`, as the trigger sends it.
fn parse_payload(payload: &str) -> Option<(&str, Position)> {
    let (name, at) = payload.rsplit_once(' ')?;
    Some((name, at.parse().ok()?))
}

/// Cheap to clone; every clone sees the same checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointView {
    pool: PgPool,
    current: Arc<watch::Sender<Checkpoints>>,
    /// Notifications applied so far: tells a full re-read whether one raced with it.
    notified: Arc<AtomicU64>,
}

impl CheckpointView {
    /// Reads every checkpoint once. Call [`CheckpointView::spawn_listener`] to keep it current.
    pub async fn load(pool: PgPool) -> Result<Self, ReadError> {
        let checkpoints = read_all(&pool).await?;
        Ok(Self {
            pool,
            current: Arc::new(watch::Sender::new(checkpoints)),
            notified: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The least in-memory checkpoint of `projections`.
    pub fn progress(&self, projections: &[&str]) -> Position {
        least(&self.current.borrow(), projections)
    }

    /// Waits until `projections` have reached `min` in memory, for at most `timeout`, and
    /// answers their progress then. Before giving up it reads the database once, so a lost
    /// notification cannot make a caller give up on a position that was in fact reached.
    pub async fn wait_for(
        &self,
        projections: &[&str],
        min: Position,
        timeout: Duration,
    ) -> Result<Position, ReadError> {
        let mut changes = self.current.subscribe();
        let reached = tokio::time::timeout_at(
            Instant::now() + timeout,
            changes.wait_for(|c| least(c, projections) >= min),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|checkpoints| least(&checkpoints, projections));
        match reached {
            Some(at) => Ok(at),
            // Timed out (or, impossibly, the sender is gone: it lives as long as `self`).
            None => {
                self.resync().await?;
                Ok(self.progress(projections))
            }
        }
    }

    /// Re-reads every checkpoint from the database into memory.
    pub async fn resync(&self) -> Result<(), ReadError> {
        let before = self.notified.load(Ordering::Acquire);
        let read = read_all(&self.pool).await?;
        self.current.send_if_modified(|current| {
            let mut merged = read;
            // Checked under the lock `apply` also counts under.
            if self.notified.load(Ordering::Acquire) != before {
                // A notification applied meanwhile may be newer than what the read saw.
                for (name, at) in current.iter() {
                    let entry = merged.entry(name.clone()).or_insert(*at);
                    *entry = (*entry).max(*at);
                }
            }
            if *current == merged {
                return false;
            }
            *current = merged;
            true
        });
        Ok(())
    }

    /// Applies one notification. Checkpoints only move forward (the runtime's
    /// compare-and-set, and a rebuild refuses to go back), so a notification that arrives
    /// after a newer full re-read never takes memory back.
    fn apply(&self, payload: &str) {
        let Some((name, at)) = parse_payload(payload) else {
            tracing::warn!(payload, "ignoring a malformed checkpoint notification");
            return;
        };
        self.current.send_if_modified(|current| {
            self.notified.fetch_add(1, Ordering::AcqRel);
            match current.get_mut(name) {
                Some(known) if *known >= at => false,
                Some(known) => {
                    *known = at;
                    true
                }
                None => {
                    current.insert(name.to_string(), at);
                    true
                }
            }
        });
    }

    /// Keeps the view current until `shutdown` is told (the log's one LISTEN loop,
    /// [`listen::follow`]).
    pub fn spawn_listener(&self, shutdown: Shutdown) -> JoinHandle<()> {
        let view = self.clone();
        tokio::spawn(async move {
            let pool = view.pool.clone();
            listen::follow(&pool, &view, shutdown, RECONNECT_AFTER).await;
        })
    }

    async fn resync_or_warn(&self) -> bool {
        match self.resync().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the checkpoints failed");
                false
            }
        }
    }
}

/// LISTEN, re-read, apply notifications, re-read every [`RESYNC_EVERY`]; on a hot standby,
/// re-read every [`STANDBY_RESYNC`] until it is promoted.
#[async_trait::async_trait]
impl Listening for CheckpointView {
    const CHANNEL: &'static str = CHANNEL;
    const WHAT: &'static str = "checkpoint listener";

    async fn connected(&self) {
        self.resync_or_warn().await;
    }

    fn heard(&self, payload: &str) {
        self.apply(payload);
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(RESYNC_EVERY)
    }

    async fn tick(&self) {
        self.resync_or_warn().await;
    }

    async fn on_standby(&self, shutdown: &mut Shutdown) {
        let mut checked = Instant::now();
        while self.resync_or_warn().await {
            if shutdown.pause(STANDBY_RESYNC).await {
                return;
            }
            // A standby that was promoted can be listened to.
            if checked.elapsed() >= RESYNC_EVERY {
                checked = Instant::now();
                if !matches!(crate::log::standby::in_recovery(&self.pool).await, Ok(true)) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_and_least_takes_the_minimum() {
        assert_eq!(
            parse_payload("feeds 812:40"),
            Some(("feeds", Position::new(812, 40)))
        );
        assert_eq!(parse_payload("feeds"), None);
        assert_eq!(parse_payload("feeds 812"), None);
        let mut checkpoints = Checkpoints::new();
        checkpoints.insert("a".into(), Position::new(5, 9));
        checkpoints.insert("b".into(), Position::new(4, 20));
        assert_eq!(least(&checkpoints, &["a", "b"]), Position::new(4, 20));
        assert_eq!(least(&checkpoints, &["a", "missing"]), Position::START);
        assert_eq!(least(&checkpoints, &[]), Position::START);
    }
}
