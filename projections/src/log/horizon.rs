//! How far the log can be read in commit order: below the oldest transaction still in
//! flight that may yet commit events (`pg_snapshot_xmin`, cluster-wide).
//!
//! A flush of a projection's durable copy is a write transaction that writes no event, yet
//! while it runs (seconds, for a large batch of inboxes) it is the oldest in flight, so
//! every projector would wait for it. This process's own flushes register their transaction
//! ids here, and the horizon passes over them. Only ever-eventless transactions are
//! registered, and a reader that does not know of one yet merely waits for it, so no race
//! can let a reader skip an event.

use std::sync::Mutex;

use sqlx::PgConnection;

/// Transaction ids of this process's flushes in flight.
static EVENTLESS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The transaction ids the horizon may pass over, as text (`xid8` binds as text).
pub fn eventless() -> Vec<String> {
    EVENTLESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(u64::to_string)
        .collect()
}

/// Registers the transaction open on `tx` as one that writes no event, for as long as the
/// returned guard lives (drop it once the transaction has ended).
pub async fn register_eventless(tx: &mut PgConnection) -> anyhow::Result<Eventless> {
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(tx)
        .await?;
    let xid = xid.parse()?;
    EVENTLESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(xid);
    Ok(Eventless(xid))
}

/// Unregisters its transaction when dropped.
#[must_use]
pub struct Eventless(u64);

impl Drop for Eventless {
    fn drop(&mut self) {
        let mut all = EVENTLESS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = all.iter().position(|&x| x == self.0) {
            all.swap_remove(at);
        }
    }
}
