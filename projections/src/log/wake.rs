//! How projectors learn that events committed, without a NOTIFY in the appending
//! transaction: PostgreSQL serialises the commits of transactions that queued a
//! notification (one cluster-wide lock held through commit), so a trigger's `pg_notify`
//! on every append kept commands from sharing WAL flushes (`bench/pgbench/notify`: 20–25k
//! one-row inserts/s without it, 3.7–4.8k with it).
//!
//! The process that appended calls [`Wake::committed`] after its commit returned:
//! - projectors in the same process are woken at once (a `watch`);
//! - other processes (read nodes, a projector elsewhere) hear `NOTIFY murmur_events` from
//!   [`Wake::announce`], sent on its own connection outside any appending transaction and
//!   coalesced to at most one per [`COALESCE`].
//!
//! Events appended by something that does not call it (a bulk load, SQL by hand) are found
//! by the projectors' polling, as are notifications lost with a dropped listener. A process
//! that reads the log on a hot standby hears nothing there: its replay wakes it instead
//! ([`super::standby`]).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{watch, Notify};

use crate::shutdown::Shutdown;

/// The channel events' wake-ups go out on.
pub const CHANNEL: &str = "murmur_events";

/// The shortest interval between two notifications a process sends.
pub const COALESCE: Duration = Duration::from_millis(5);

/// One process's wake-up hub; cheap to clone.
#[derive(Clone)]
pub struct Wake {
    inner: Arc<Inner>,
}

struct Inner {
    /// Bumped on every wake-up, local or heard.
    seen: watch::Sender<u64>,
    /// Set when local commits have not been announced yet.
    outbound: Notify,
    /// This process's payload, so its listener can pass over its own notifications.
    node: String,
}

impl Default for Wake {
    fn default() -> Self {
        Self::new()
    }
}

impl Wake {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                seen: watch::channel(0).0,
                outbound: Notify::new(),
                node: uuid::Uuid::new_v4().simple().to_string(),
            }),
        }
    }

    /// Changes whenever events may have committed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.seen.subscribe()
    }

    /// Events this process appended have committed: wake its projectors, and announce it
    /// to other processes soon.
    pub fn committed(&self) {
        self.bump();
        self.inner.outbound.notify_one();
    }

    /// A notification arrived on [`CHANNEL`] with `payload`: wake this process's projectors
    /// unless it was this process's own announcement.
    pub fn heard(&self, payload: &str) {
        if payload != self.inner.node {
            self.bump();
        }
    }

    /// The hot standby this process reads has replayed more of the primary's WAL (see
    /// [`super::standby`]): wake this process's projectors.
    pub fn replayed(&self) {
        self.bump();
    }

    fn bump(&self) {
        self.inner.seen.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sends the notifications other processes wait for, at most one per [`COALESCE`],
    /// until shut down. A failure is only logged: listeners also poll.
    pub async fn announce(&self, pool: PgPool, mut stop: Shutdown) {
        loop {
            tokio::select! {
                () = self.inner.outbound.notified() => {}
                () = stop.recv() => return,
            }
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&self.inner.node)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "could not announce committed events");
            }
            tokio::time::sleep(COALESCE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_wakes_local_subscribers_and_an_own_announcement_does_not() {
        let wake = Wake::new();
        let mut seen = wake.subscribe();
        wake.committed();
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        let own = wake.inner.node.clone();
        wake.heard(&own);
        assert!(!seen.has_changed().unwrap());
        wake.heard("");
        assert!(seen.has_changed().unwrap());
    }
}
