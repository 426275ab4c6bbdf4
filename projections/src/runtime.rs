//! The projector runtime: one task per projection follows the event log in commit order
//! and applies it in batches, each batch and its checkpoint in one transaction.
//!
//! - Only one process applies a given projection: the leader holds a session-level advisory
//!   lock on its own connection; others retry every `standby_retry` and take over when the
//!   leader's session ends. The checkpoint update is also a compare-and-set, so even two
//!   leaders could not apply an event twice.
//! - Leaders wake on `NOTIFY murmur_events` (sent by a trigger when events commit) and poll
//!   every `poll_interval` as a fallback; while batches come back full they loop at once.
//! - Shutdown is checked between batches, never inside one.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::event::read_batch_of;
use crate::read_model::names;
use crate::{
    FeedsProjection, Position, PostsProjection, ProfilesProjection, Projection, StoredEvent,
};

/// The channel migration 0001's trigger notifies when events commit.
pub const CHANNEL: &str = "murmur_events";

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Most events applied per transaction.
    pub batch_size: i64,
    /// How often an idle leader looks for events without a notification.
    pub poll_interval: Duration,
    /// How often a standby tries to become leader, and the pause after a failed batch.
    pub standby_retry: Duration,
    /// See [`FeedsProjection::celebrity_threshold`].
    pub celebrity_threshold: i64,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 2_000,
            poll_interval: Duration::from_millis(500),
            standby_retry: Duration::from_secs(2),
            celebrity_threshold: crate::feeds::DEFAULT_CELEBRITY_THRESHOLD,
        }
    }
}

/// Every projection, configured.
pub fn projections(config: &ProjectorConfig) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(ProfilesProjection),
        Arc::new(PostsProjection),
        Arc::new(FeedsProjection {
            celebrity_threshold: config.celebrity_threshold,
        }),
    ]
}

/// What one step of a projector did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Went past this many events (applying those of the projection's aggregate types);
    /// the checkpoint is now `to`.
    Applied { events: usize, to: Position },
    /// Nothing to apply yet.
    Idle,
    /// The checkpoint moved since the batch was read (another process applied it); re-read.
    Stale,
}

/// A projection's checkpoint (`Position::START` before its first batch).
pub async fn checkpoint(conn: &mut PgConnection, projection: &str) -> anyhow::Result<Position> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS xid, position FROM projection_checkpoints
         WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(&mut *conn)
    .await
    .with_context(|| format!("reading the checkpoint of {projection}"))?;
    row.map(|row| position_of(&row))
        .unwrap_or(Ok(Position::START))
}

fn position_of(row: &sqlx::postgres::PgRow) -> anyhow::Result<Position> {
    let xid: String = row.try_get("xid")?;
    Ok(Position::new(
        xid.parse().context("transaction id is not a number")?,
        row.try_get("position")?,
    ))
}

/// Applies `events`, read after `from`, and moves the checkpoint past them, in one
/// transaction. Returns false (and changes nothing) if the checkpoint is no longer `from`.
pub async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    from: Position,
    events: &[StoredEvent],
) -> anyhow::Result<bool> {
    match events.last() {
        Some(last) => apply_batch_to(conn, projection, from, events, last.position).await,
        None => Ok(true),
    }
}

/// [`apply_batch`] for a stretch of the log that ends at `to` (its events of other
/// aggregate types left out).
pub async fn apply_batch_to(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    from: Position,
    events: &[StoredEvent],
    to: Position,
) -> anyhow::Result<bool> {
    let name = projection.name();
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .execute(&mut *conn)
    .await
    .context("creating a checkpoint")?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // Batches are many short statements whose row estimates the skew of the follow graph
    // inflates; compiling them with JIT costs more than running them.
    sqlx::query("SET LOCAL jit = off")
        .execute(&mut *tx)
        .await
        .context("configuring the batch")?;
    let row = sqlx::query(
        "SELECT transaction_id::text AS xid, position FROM projection_checkpoints
         WHERE projection = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .context("locking the checkpoint")?;
    if position_of(&row)? != from {
        return Ok(false);
    }
    if !events.is_empty() {
        projection
            .apply(&mut tx, events)
            .await
            .with_context(|| format!("{name}: applying events up to {to}"))?;
    }
    let moved = sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, position = $3, updated_at = now()
         WHERE projection = $1 AND transaction_id = $4::text::xid8 AND position = $5",
    )
    .bind(name)
    .bind(to.transaction_id.to_string())
    .bind(to.position)
    .bind(from.transaction_id.to_string())
    .bind(from.position)
    .execute(&mut *tx)
    .await
    .context("writing the checkpoint")?
    .rows_affected();
    if moved != 1 {
        bail!("{name}: checkpoint changed under a locked row");
    }
    tx.commit().await.context("committing a batch")?;
    Ok(true)
}

/// Reads and applies one batch of at most `batch_size` events.
pub async fn run_once(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    batch_size: i64,
) -> anyhow::Result<BatchOutcome> {
    let from = checkpoint(conn, projection.name()).await?;
    let batch = read_batch_of(conn, from, batch_size, Some(projection.aggregate_types())).await?;
    let Some(to) = batch.end else {
        return Ok(BatchOutcome::Idle);
    };
    if apply_batch_to(conn, projection, from, &batch.events, to).await? {
        Ok(BatchOutcome::Applied {
            events: batch.scanned,
            to,
        })
    } else {
        Ok(BatchOutcome::Stale)
    }
}

/// Applies every projection until it has applied every committed event (waiting for
/// in-flight transactions that hold older events back). For tests and tools: it waits for
/// each projection's lock rather than standing by. Returns the number of events applied.
pub async fn catch_up(pool: &PgPool, config: &ProjectorConfig) -> anyhow::Result<u64> {
    let mut applied = 0;
    for projection in projections(config) {
        applied += catch_up_projection(pool, projection.as_ref(), config.batch_size).await?;
    }
    Ok(applied)
}

/// [`catch_up`] for one projection.
pub async fn catch_up_projection(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await.context("connecting")?.detach();
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(projection.name())
        .execute(&mut conn)
        .await
        .context("taking the projection lock")?;
    let mut applied = 0;
    loop {
        match run_once(&mut conn, projection, batch_size).await? {
            BatchOutcome::Applied { events, .. } => applied += events as u64,
            BatchOutcome::Stale => {}
            BatchOutcome::Idle => {
                let at = checkpoint(&mut conn, projection.name()).await?;
                if !committed_after(&mut conn, at).await? {
                    break;
                }
                tokio::time::sleep(HELD_BACK_RETRY).await;
            }
        }
    }
    sqlx::Connection::close(conn).await.context("closing")?;
    Ok(applied)
}

/// First key of the advisory locks projectors take (the second is the projection's name).
const LOCK_CLASS: i32 = 0x6d75_726d; // "murm"

/// Tries to become the one process applying `projection`; the lock lasts as long as the
/// session of `conn`.
pub async fn try_lock(conn: &mut PgConnection, projection: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(projection)
        .fetch_one(conn)
        .await
        .context("trying the projection lock")
}

/// How soon a leader looks again when committed events wait behind an in-flight transaction.
const HELD_BACK_RETRY: Duration = Duration::from_millis(20);

/// Whether any event was committed after `at` (applicable or still held back).
async fn committed_after(conn: &mut PgConnection, at: Position) -> anyhow::Result<bool> {
    // Not `EXISTS`: its generic plan (what a prepared statement gets after five runs) is a
    // sequential scan of the whole log, 35 s at scale 1. A first row in commit order can
    // only come from the commit-order index.
    let first: Option<i64> = sqlx::query_scalar(
        "SELECT position FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2)
         ORDER BY transaction_id, position LIMIT 1",
    )
    .bind(at.transaction_id.to_string())
    .bind(at.position)
    .fetch_optional(conn)
    .await
    .context("looking for held-back events")?;
    Ok(first.is_some())
}

/// Events committed after `at`, and the age in seconds of the oldest of them (0 if none).
async fn lag(conn: &mut PgConnection, at: Position) -> anyhow::Result<(i64, f64)> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM events
                 WHERE (transaction_id, position) > ($1::text::xid8, $2)) AS events,
                coalesce(extract(epoch FROM now() - (
                    SELECT (metadata->>'time')::timestamptz FROM events
                    WHERE (transaction_id, position) > ($1::text::xid8, $2)
                    ORDER BY transaction_id, position LIMIT 1)), 0)::float8 AS seconds",
    )
    .bind(at.transaction_id.to_string())
    .bind(at.position)
    .fetch_one(conn)
    .await
    .context("measuring projection lag")?;
    Ok((
        row.try_get("events")?,
        row.try_get::<f64, _>("seconds")?.max(0.0),
    ))
}

/// A projection's progress, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub checkpoint: Position,
    /// Committed events not applied yet.
    pub lag_events: i64,
    /// Age of the oldest committed event not applied yet (0 when caught up).
    pub lag_seconds: f64,
}

/// Every projection's checkpoint and lag.
pub async fn status(pool: &PgPool) -> anyhow::Result<Vec<ProjectionStatus>> {
    let mut conn = pool.acquire().await.context("connecting")?;
    let mut all = Vec::with_capacity(names::ALL.len());
    for name in names::ALL {
        let checkpoint = checkpoint(&mut conn, name).await?;
        let (lag_events, lag_seconds) = lag(&mut conn, checkpoint).await?;
        all.push(ProjectionStatus {
            name,
            checkpoint,
            lag_events,
            lag_seconds,
        });
    }
    Ok(all)
}

fn record_lag(name: &'static str, (events, seconds): (i64, f64)) {
    metrics::gauge!("murmur_projection_lag_events", "projection" => name).set(events as f64);
    metrics::gauge!("murmur_projection_lag_seconds", "projection" => name).set(seconds);
}

fn record_position(name: &'static str, at: Position) {
    metrics::gauge!("murmur_projection_position", "projection" => name).set(at.position as f64);
}

/// Runs every projection until `shutdown` completes: what `murmur serve` does in-process and
/// `murmur project` does alone.
pub async fn run(
    pool: PgPool,
    config: ProjectorConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let (wake_tx, wake) = watch::channel(0u64);
    let mut tasks = JoinSet::new();
    tasks.spawn(listen(pool.clone(), wake_tx, stop.clone()));
    for projection in projections(&config) {
        tasks.spawn(follow(
            pool.clone(),
            projection,
            config.clone(),
            wake.clone(),
            stop.clone(),
        ));
    }
    let result = tokio::select! {
        () = shutdown => Ok(()),
        Some(ended) = tasks.join_next() => match ended {
            Ok(()) => Err(anyhow::anyhow!("a projector task ended unexpectedly")),
            Err(e) => Err(anyhow::Error::new(e).context("a projector task panicked")),
        },
    };
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    result
}

/// [`run`] on its own task.
pub fn spawn(
    pool: PgPool,
    config: ProjectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(run(pool, config, shutdown))
}

/// Sleeps for `duration`; returns true if asked to stop meanwhile (or already).
async fn pause(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.changed() => true,
    }
}

/// Forwards `NOTIFY murmur_events` to the projector tasks; reconnects when the connection drops.
async fn listen(pool: PgPool, wake: watch::Sender<u64>, mut stop: watch::Receiver<bool>) {
    let retry = Duration::from_secs(1);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "projector listener cannot connect");
                if pause(retry, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "projector listener cannot LISTEN");
            if pause(retry, &mut stop).await {
                return;
            }
            continue;
        }
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(_) => wake.send_modify(|n| *n = n.wrapping_add(1)),
                    Err(e) => {
                        tracing::warn!(error = %e, "projector listener lost its connection");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
        if pause(retry, &mut stop).await {
            return;
        }
    }
}

/// One projection's task: stand by until it holds the lock, then lead until stopped or
/// until its connection fails.
async fn follow(
    pool: PgPool,
    projection: Arc<dyn Projection>,
    config: ProjectorConfig,
    mut wake: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let name = projection.name();
    let leader = metrics::gauge!("murmur_projection_leader", "projection" => name);
    loop {
        if *stop.borrow() {
            return;
        }
        let mut conn = match pool.acquire().await {
            // Detached: the lock must end with this session, never go back to the pool.
            Ok(conn) => conn.detach(),
            Err(e) => {
                tracing::warn!(projection = name, error = %e, "projector cannot connect");
                if pause(config.standby_retry, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        match try_lock(&mut conn, name).await {
            Ok(true) => {
                tracing::info!(projection = name, "projector leads");
                leader.set(1.0);
                let led = lead(
                    &mut conn,
                    projection.as_ref(),
                    &config,
                    &mut wake,
                    &mut stop,
                )
                .await;
                leader.set(0.0);
                let _ = sqlx::Connection::close(conn).await;
                match led {
                    Ok(()) => return,
                    Err(e) => tracing::error!(projection = name, error = ?e, "projector failed"),
                }
            }
            Ok(false) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            Err(e) => tracing::warn!(projection = name, error = ?e, "projector lock failed"),
        }
        if pause(config.standby_retry, &mut stop).await {
            return;
        }
    }
}

/// Applies batches while holding the lock; returns Ok when asked to stop.
async fn lead(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    config: &ProjectorConfig,
    wake: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let name = projection.name();
    let applied = metrics::counter!("murmur_projection_events_applied_total", "projection" => name);
    let mut lag_measured: Option<Instant> = None;
    let mut at = checkpoint(conn, name).await?;
    record_position(name, at);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        // Mark notifications seen before reading, so one arriving meanwhile wakes us again.
        wake.borrow_and_update();
        let outcome = run_once(conn, projection, config.batch_size).await?;
        match outcome {
            BatchOutcome::Applied { events, to } => {
                applied.increment(events as u64);
                record_position(name, to);
                at = to;
            }
            BatchOutcome::Stale => at = checkpoint(conn, name).await?,
            BatchOutcome::Idle => {}
        }
        let busy = match outcome {
            BatchOutcome::Applied { events, .. } => events as i64 >= config.batch_size,
            BatchOutcome::Stale => true,
            BatchOutcome::Idle => false,
        };
        // Counting the backlog costs a scan of it: at most once a second.
        if lag_measured.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            record_lag(name, lag(conn, at).await?);
            lag_measured = Some(Instant::now());
        }
        if busy {
            continue;
        }
        // Committed events held back by an older transaction still in flight (anywhere in
        // the cluster) bring no further notification when it ends: look again soon.
        let wait = if outcome == BatchOutcome::Idle && committed_after(conn, at).await? {
            config.poll_interval.min(HELD_BACK_RETRY)
        } else {
            config.poll_interval
        };
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}
