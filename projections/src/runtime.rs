//! The projector runtime: for each projection, a leader task folds the log into the
//! projection's in-memory state in commit order and keeps its durable copy in step.
//!
//! - Only one process leads a projection: it holds a session-level advisory lock on its own
//!   connection; others retry every `standby_retry` and take over when the leader's session
//!   ends. Leading starts by loading the state from its tables at their checkpoint (one
//!   snapshot); writing the durable copy is also a compare-and-set on the checkpoint, so
//!   even two leaders could not apply an event twice.
//! - The state moves one batch at a time, in memory; the durable copy follows in larger
//!   steps (every `flush_interval` under load, at once when idle): the batch's row changes
//!   and the checkpoint in one transaction. Any failure ends the leadership; the next one
//!   reloads the copy and re-applies the log from its checkpoint, so nothing is lost or
//!   applied twice.
//! - Leaders wake on `NOTIFY murmur_events` and poll every `poll_interval` as a fallback;
//!   while batches come back full they loop at once. Shutdown is checked between batches
//!   and flushes first.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::log::checkpoint::{self, SettingsMismatch};
use crate::log::read::read_batch_of;
use crate::projection::{AnyState, Kind};
use crate::read_model::names;
use crate::store::{Settings, Snapshot};
use crate::Position;

/// The channel migration 0001's trigger notifies when events commit.
pub const CHANNEL: &str = "murmur_events";

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Most events read and applied in memory per step.
    pub batch_size: i64,
    /// How often an idle leader looks for events without a notification.
    pub poll_interval: Duration,
    /// How often a standby tries to become leader, and the pause after a failure.
    pub standby_retry: Duration,
    /// Authors with more followers than this are merged at read time, not fanned out.
    pub celebrity_threshold: i64,
    /// Longest the durable copy trails memory while events keep coming.
    pub flush_interval: Duration,
    /// Flush sooner once this many rows are pending.
    pub flush_rows: usize,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            poll_interval: Duration::from_millis(500),
            standby_retry: Duration::from_secs(2),
            celebrity_threshold: crate::state::feeds::DEFAULT_CELEBRITY_THRESHOLD,
            flush_interval: Duration::from_millis(500),
            flush_rows: 500_000,
        }
    }
}

impl ProjectorConfig {
    pub fn settings(&self) -> Settings {
        Settings {
            celebrity_threshold: self.celebrity_threshold,
        }
    }
}

/// Every projection.
pub fn projections(_config: &ProjectorConfig) -> Vec<Kind> {
    Kind::ALL.to_vec()
}

/// A projection's state as readers share it: the state and how far it has applied the log.
pub struct Live {
    pub state: RwLock<AnyState>,
    position: watch::Sender<Position>,
}

impl Live {
    fn new(state: AnyState, at: Position) -> Self {
        Self {
            state: RwLock::new(state),
            position: watch::Sender::new(at),
        }
    }

    /// The last event applied to the state.
    pub fn position(&self) -> Position {
        *self.position.borrow()
    }
}

/// What one step of a projector did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Went past this many events (applying those of the projection's aggregate types).
    Applied { events: usize, to: Position },
    /// Nothing to apply yet.
    Idle,
}

/// The durable copy's checkpoint moved under a leader: another process wrote it.
#[derive(Debug, thiserror::Error)]
#[error("{0}: the checkpoint moved under this leader (another process applied the projection)")]
pub struct Stale(&'static str);

/// One projection being applied: its shared state, and how far the durable copy is.
pub struct Projector {
    kind: Kind,
    live: Arc<Live>,
    durable: Position,
    last_flush: Instant,
}

impl Projector {
    /// Loads the projection from its tables at their checkpoint (one snapshot), after
    /// checking they were built with `settings`.
    pub async fn load(pool: &PgPool, kind: Kind, settings: &Settings) -> anyhow::Result<Self> {
        let started = Instant::now();
        let name = kind.name();
        let mut conn = pool.acquire().await.context("connecting")?;
        checkpoint::check_settings(&mut conn, name, &kind.identity(settings)).await?;
        drop(conn);
        let mut snapshot = Snapshot::begin(pool).await?;
        let at = checkpoint::checkpoint(snapshot.conn(), name).await?;
        let state = kind
            .load(&mut snapshot, settings)
            .await
            .with_context(|| format!("loading the {name} projection"))?;
        snapshot.finish().await?;
        tracing::info!(
            projection = name,
            checkpoint = %at,
            seconds = started.elapsed().as_secs_f64(),
            "projection loaded"
        );
        metrics::histogram!("murmur_projection_load_seconds", "projection" => name)
            .record(started.elapsed().as_secs_f64());
        Ok(Self {
            kind,
            live: Arc::new(Live::new(state, at)),
            durable: at,
            last_flush: Instant::now(),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Where the state is in the log.
    pub fn position(&self) -> Position {
        self.live.position()
    }

    /// Where the durable copy is.
    pub fn durable(&self) -> Position {
        self.durable
    }

    /// Reads at most `batch_size` events after the state's position and applies them.
    pub async fn step(&mut self, conn: &mut PgConnection, batch_size: i64) -> anyhow::Result<Step> {
        let from = self.position();
        let batch =
            read_batch_of(conn, from, batch_size, Some(self.kind.aggregate_types())).await?;
        let Some(to) = batch.end else {
            return Ok(Step::Idle);
        };
        {
            let mut state = self
                .live
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for event in &batch.events {
                state.apply(event);
            }
        }
        self.live.position.send_replace(to);
        Ok(Step::Applied {
            events: batch.scanned,
            to,
        })
    }

    /// Rows waiting for the next flush.
    pub fn pending_rows(&self) -> usize {
        self.live
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pending_rows()
    }

    /// Writes the row changes since the last flush and moves the checkpoint to the state's
    /// position, in one transaction. Fails with [`Stale`] if another process moved it.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let to = self.position();
        if to == self.durable {
            return Ok(());
        }
        let started = Instant::now();
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        self.flush_into(&mut tx, to).await?;
        tx.commit().await.context("committing a flush")?;
        self.durable = to;
        self.last_flush = Instant::now();
        let name = self.kind.name();
        metrics::histogram!("murmur_projection_flush_seconds", "projection" => name)
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("murmur_projection_durable_position", "projection" => name)
            .set(to.position as f64);
        Ok(())
    }

    /// The work of [`Projector::flush`] inside the caller's transaction, not committed: the
    /// changes are taken from the state either way, so after a failed commit only a reload
    /// gives a projector that can flush again.
    pub async fn flush_into(&mut self, tx: &mut PgConnection, to: Position) -> anyhow::Result<()> {
        let name = self.kind.name();
        let changes = self
            .live
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_changes();
        // Short set-based statements whose row estimates the skew of the follow graph
        // inflates; compiling them with JIT costs more than running them.
        sqlx::query("SET LOCAL jit = off")
            .execute(&mut *tx)
            .await
            .context("configuring the flush")?;
        if !checkpoint::advance(tx, name, self.durable, to).await? {
            return Err(Stale(name).into());
        }
        changes
            .write(tx)
            .await
            .with_context(|| format!("{name}: writing changes up to {to}"))
    }

    /// Whether the durable copy should catch up now.
    fn flush_due(&self, idle: bool, config: &ProjectorConfig) -> bool {
        self.position() != self.durable
            && (idle
                || self.last_flush.elapsed() >= config.flush_interval
                || self.pending_rows() >= config.flush_rows)
    }
}

/// Applies every projection until it has applied every committed event (waiting for
/// in-flight transactions that hold older events back), and writes it. For tests and
/// tools: it waits for each projection's lock rather than standing by. Returns the number
/// of events applied.
pub async fn catch_up(pool: &PgPool, config: &ProjectorConfig) -> anyhow::Result<u64> {
    let mut applied = 0;
    for kind in projections(config) {
        applied += catch_up_projection(pool, kind, config).await?;
    }
    Ok(applied)
}

/// [`catch_up`] for one projection.
pub async fn catch_up_projection(
    pool: &PgPool,
    kind: Kind,
    config: &ProjectorConfig,
) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await.context("connecting")?.detach();
    checkpoint::lock(&mut conn, kind.name()).await?;
    let mut projector = Projector::load(pool, kind, &config.settings()).await?;
    let mut applied = 0;
    loop {
        match projector.step(&mut conn, config.batch_size).await? {
            Step::Applied { events, .. } => applied += events as u64,
            Step::Idle => {
                if !checkpoint::committed_after(&mut conn, projector.position()).await? {
                    break;
                }
                tokio::time::sleep(HELD_BACK_RETRY).await;
            }
        }
        if projector.pending_rows() >= config.flush_rows {
            projector.flush(&mut conn).await?;
        }
    }
    projector.flush(&mut conn).await?;
    sqlx::Connection::close(conn).await.context("closing")?;
    Ok(applied)
}

/// How soon a leader looks again when committed events wait behind an in-flight transaction.
const HELD_BACK_RETRY: Duration = Duration::from_millis(20);

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

/// Every projection's durable checkpoint and lag.
pub async fn status(pool: &PgPool) -> anyhow::Result<Vec<ProjectionStatus>> {
    let mut conn = pool.acquire().await.context("connecting")?;
    let mut all = Vec::with_capacity(names::ALL.len());
    for name in names::ALL {
        let checkpoint = checkpoint::checkpoint(&mut conn, name).await?;
        let (lag_events, lag_seconds) = checkpoint::lag(&mut conn, checkpoint).await?;
        all.push(ProjectionStatus {
            name,
            checkpoint,
            lag_events,
            lag_seconds,
        });
    }
    Ok(all)
}

/// Checks every projection's stored settings against `config` (see
/// [`checkpoint::check_settings`]): a server refuses to start on a mismatch.
pub async fn check_settings(pool: &PgPool, config: &ProjectorConfig) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("connecting")?;
    for kind in projections(config) {
        checkpoint::check_settings(&mut conn, kind.name(), &kind.identity(&config.settings()))
            .await?;
    }
    Ok(())
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
    let (listener_pool, listener_stop) = (pool.clone(), stop.clone());
    tasks.spawn(async move {
        listen(listener_pool, wake_tx, listener_stop).await;
        Ok(())
    });
    for kind in projections(&config) {
        tasks.spawn(follow(
            pool.clone(),
            kind,
            config.clone(),
            wake.clone(),
            stop.clone(),
        ));
    }
    let result = tokio::select! {
        () = shutdown => Ok(()),
        Some(ended) = tasks.join_next() => match ended {
            Ok(Ok(())) => Err(anyhow::anyhow!("a projector task ended unexpectedly")),
            Ok(Err(e)) => Err(e),
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
/// until something fails (then stand by and lead again, from a fresh load). Ends with an
/// error only when the projection's tables were built with other settings.
async fn follow(
    pool: PgPool,
    kind: Kind,
    config: ProjectorConfig,
    mut wake: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let name = kind.name();
    let leader = metrics::gauge!("murmur_projection_leader", "projection" => name);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let mut conn = match pool.acquire().await {
            // Detached: the lock must end with this session, never go back to the pool.
            Ok(conn) => conn.detach(),
            Err(e) => {
                tracing::warn!(projection = name, error = %e, "projector cannot connect");
                if pause(config.standby_retry, &mut stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        match checkpoint::try_lock(&mut conn, name).await {
            Ok(true) => {
                tracing::info!(projection = name, "projector leads");
                leader.set(1.0);
                let led = lead(&mut conn, &pool, kind, &config, &mut wake, &mut stop).await;
                leader.set(0.0);
                let _ = sqlx::Connection::close(conn).await;
                match led {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is::<SettingsMismatch>() => return Err(e),
                    Err(e) => tracing::error!(projection = name, error = ?e, "projector failed"),
                }
            }
            Ok(false) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            Err(e) => tracing::warn!(projection = name, error = ?e, "projector lock failed"),
        }
        if pause(config.standby_retry, &mut stop).await {
            return Ok(());
        }
    }
}

fn record_lag(name: &'static str, (events, seconds): (i64, f64), durable_events: i64) {
    metrics::gauge!("murmur_projection_lag_events", "projection" => name).set(events as f64);
    metrics::gauge!("murmur_projection_lag_seconds", "projection" => name).set(seconds);
    metrics::gauge!("murmur_projection_durable_lag_events", "projection" => name)
        .set(durable_events as f64);
}

/// Loads the projection, then applies and flushes batches while holding the lock; returns
/// Ok when asked to stop (after a last flush).
async fn lead(
    conn: &mut PgConnection,
    pool: &PgPool,
    kind: Kind,
    config: &ProjectorConfig,
    wake: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let name = kind.name();
    let applied = metrics::counter!("murmur_projection_events_applied_total", "projection" => name);
    let position = metrics::gauge!("murmur_projection_position", "projection" => name);
    let mut projector = Projector::load(pool, kind, &config.settings()).await?;
    position.set(projector.position().position as f64);
    let mut lag_measured: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return projector.flush(conn).await;
        }
        // Mark notifications seen before reading, so one arriving meanwhile wakes us again.
        wake.borrow_and_update();
        let step = projector.step(conn, config.batch_size).await?;
        let busy = match step {
            Step::Applied { events, to } => {
                applied.increment(events as u64);
                position.set(to.position as f64);
                events as i64 >= config.batch_size
            }
            Step::Idle => false,
        };
        if projector.flush_due(!busy, config) {
            projector.flush(conn).await?;
        }
        // Counting the backlog costs a scan of it: at most once a second.
        if lag_measured.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let at = projector.position();
            let head = checkpoint::lag(conn, at).await?;
            let durable = checkpoint::events_between(conn, projector.durable(), at).await?;
            record_lag(name, head, durable);
            lag_measured = Some(Instant::now());
        }
        if busy {
            continue;
        }
        // Committed events held back by an older transaction still in flight (anywhere in
        // the cluster) bring no further notification when it ends: look again soon.
        let held_back =
            step == Step::Idle && checkpoint::committed_after(conn, projector.position()).await?;
        let wait = if held_back {
            config.poll_interval.min(HELD_BACK_RETRY)
        } else {
            config.poll_interval
        };
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}
