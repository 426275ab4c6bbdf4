//! How far the log can be read in commit order: below the oldest transaction still in
//! flight that may yet commit events (`pg_snapshot_xmin`, cluster-wide).
//!
//! A flush of a projection's durable copy is a write transaction that writes no event, yet
//! while it runs (seconds, when it writes whole inboxes) it is the oldest in flight, so
//! every reader of the log, in every process (read nodes too), would wait for it. Flushes
//! register their transaction ids in `eventless_transactions` (migration 0009), committed
//! on a connection of their own while the flush runs, and every reader's horizon passes
//! over the ids listed there. Only ever-eventless transactions are registered, and a reader
//! that does not see a registration yet merely waits for that transaction, so no race can
//! let a reader skip an event.

use std::sync::Arc;

use anyhow::Context;
use sqlx::{PgConnection, PgPool};

/// The horizon as SQL: the oldest transaction in flight that is not registered eventless,
/// or, with none, the snapshot's `xmax`. Readers take events whose transaction is below it.
///
/// A hot standby's snapshots list no transaction (`pg_snapshot_xip` is empty there: the
/// primary's transactions in flight are kept apart), so when none is listed and the session
/// has no transaction id (as on a standby) the horizon is the snapshot's `xmin`: on a
/// primary that is `xmax`, on a standby the oldest transaction in flight. A flush in flight
/// on the primary therefore holds standby readers back: what is in flight after it cannot
/// be found from a standby's snapshot. ARCHITECTURE.md, "Reading the log on a hot standby".
pub const HORIZON: &str = "(SELECT CASE
    WHEN EXISTS (SELECT FROM pg_snapshot_xip(s)) OR pg_current_xact_id_if_assigned() IS NOT NULL
    THEN coalesce((SELECT min(x) FROM pg_snapshot_xip(s) x
                   WHERE x NOT IN (SELECT xid FROM eventless_transactions)),
                  pg_snapshot_xmax(s))
    ELSE pg_snapshot_xmin(s) END
  FROM pg_current_snapshot() AS snap(s))";

/// Where a process registers its eventless transactions: a connection of its own (not one
/// of the pool: a flush holding a pooled connection must not wait for a second one),
/// opened when first needed and again after a failure.
pub struct Registry {
    pool: PgPool,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
}

impl Registry {
    /// A registry connecting like `pool`.
    pub fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs `sql` with `xid` bound on the registry's connection.
    async fn execute(&self, sql: &str, xid: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let options = self.pool.connect_options();
            *conn = Some(
                sqlx::Connection::connect_with(&*options)
                    .await
                    .context("connecting the eventless registry")?,
            );
        }
        let Some(open) = conn.as_mut() else {
            anyhow::bail!("the eventless registry has no connection");
        };
        let done = sqlx::query(sql).bind(xid).execute(open).await;
        if done.is_err() {
            *conn = None;
        }
        done.map(|_| ()).context("writing the eventless registry")
    }
}

/// Registers the transaction open on `tx` as one that writes no event until the returned
/// guard is released (release it once the transaction has ended). The registration is
/// committed (on `registry`'s own connection) before this returns.
pub async fn register_eventless(
    tx: &mut PgConnection,
    registry: &Arc<Registry>,
) -> anyhow::Result<Eventless> {
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(tx)
        .await
        .context("reading a flush's transaction id")?;
    // Registrations of transactions that have ended (a process that died mid-flush) go too.
    registry
        .execute(
            "WITH gone AS (DELETE FROM eventless_transactions
                           WHERE xid < pg_snapshot_xmin(pg_current_snapshot()))
             INSERT INTO eventless_transactions (xid) VALUES ($1::text::xid8)",
            &xid,
        )
        .await?;
    Ok(Eventless {
        xid,
        registry: Some(registry.clone()),
    })
}

/// A registration; [`Eventless::release`] it once its transaction has ended. Dropped
/// unreleased, it is released in the background.
#[must_use]
pub struct Eventless {
    xid: String,
    registry: Option<Arc<Registry>>,
}

const UNREGISTER: &str = "DELETE FROM eventless_transactions WHERE xid = $1::text::xid8";

impl Eventless {
    pub async fn release(mut self) -> anyhow::Result<()> {
        match self.registry.take() {
            Some(registry) => registry.execute(UNREGISTER, &self.xid).await,
            None => Ok(()),
        }
    }
}

impl Drop for Eventless {
    fn drop(&mut self) {
        let (Some(registry), Ok(runtime)) =
            (self.registry.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let xid = std::mem::take(&mut self.xid);
        // Harmless if it never runs: a registration of an ended transaction changes no
        // horizon, and the next registration removes it.
        runtime.spawn(async move {
            if let Err(e) = registry.execute(UNREGISTER, &xid).await {
                tracing::debug!(error = %e, "could not unregister a flush");
            }
        });
    }
}
