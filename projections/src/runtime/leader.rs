//! The tasks that keep a node's [`Image`] current: per projection, lead (apply and flush,
//! holding the projection's advisory lock) when this node may and no other process does,
//! otherwise follow (apply only, writing nothing), so that every node serves current reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::live::{Image, Live};
use super::projector::{Projector, Step};
use super::{Databases, ProjectorConfig, HELD_BACK_RETRY};
use crate::log::checkpoint::{self, SettingsMismatch};
use crate::log::horizon::Registry;
use crate::log::listen::{self, Listening};
use crate::log::shared::SharedReads;
use crate::log::standby;
use crate::log::wake::{Wake, CHANNEL};
use crate::shutdown::{Shutdown, Stop};

/// Whether a node's projectors may write the durable copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Lead each projection when no other process does; follow meanwhile.
    Projector,
    /// Only follow (`serve --no-projectors`): load the copies, apply the log, write nothing.
    ReadNode,
}

/// Keeps `image` current until `shutdown` is told: what `murmur serve` does in-process,
/// `murmur project` alone, and a read node without writing (reading the log on a hot
/// standby when `db.log` is one). `wake` is the process's: its commands' commits wake these
/// tasks directly, and are announced to other processes on the primary.
pub async fn run(
    db: Databases,
    config: ProjectorConfig,
    image: Image,
    role: Role,
    wake: Wake,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    // A log restored from another cluster would be misread from the first batch on.
    crate::log::restore::check(&mut *db.log.acquire().await?).await?;
    let on_standby = standby::in_recovery(&db.log).await?;
    anyhow::ensure!(
        !(on_standby && role == Role::Projector),
        "projectors write their tables where they read the log: they cannot read a hot standby"
    );
    // Told when shut down, or when a task fails: the others stop too.
    let stop = Stop::new();
    let mut tasks = JoinSet::new();
    spawn_helpers(
        &mut tasks,
        &db,
        &image,
        role,
        on_standby,
        &wake,
        &stop.shutdown(),
    );
    let registry = Arc::new(Registry::new(&db.primary));
    let reads = Arc::new(SharedReads::new());
    for kind in super::projections(&config) {
        let task = Task {
            registry: registry.clone(),
            reads: reads.clone(),
            pool: db.log.clone(),
            live: image.get(kind).clone(),
            config: config.clone(),
            wake: wake.subscribe(),
            stop: stop.shutdown(),
            held_since: None,
            blocker_checked: None,
            warned: None,
        };
        tasks.spawn(task.run(role));
    }
    let result = tokio::select! {
        () = shutdown.recv() => Ok(()),
        Some(ended) = tasks.join_next() => match ended {
            Ok(Ok(())) => Err(anyhow::anyhow!("a projector task ended unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::Error::new(e).context("a projector task panicked")),
        },
    };
    stop.stop();
    while tasks.join_next().await.is_some() {}
    result
}

/// The node's tasks beside the projections': wake-ups, announcing its commits, measuring
/// how far a standby it reads trails the primary, the audit index's upkeep (projector nodes).
fn spawn_helpers(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    db: &Databases,
    image: &Image,
    role: Role,
    on_standby: bool,
    wake: &Wake,
    stop: &Shutdown,
) {
    let (listener_pool, listener_wake, listener_stop) =
        (db.log.clone(), wake.clone(), stop.clone());
    tasks.spawn(async move {
        let wake_ups = WakeUps {
            pool: listener_pool,
            wake: listener_wake,
        };
        listen::follow(&wake_ups.pool, &wake_ups, listener_stop, LISTEN_RETRY).await;
        Ok(())
    });
    let (announcer_pool, announcer_wake, announcer_stop) =
        (db.primary.clone(), wake.clone(), stop.clone());
    tasks.spawn(async move {
        announcer_wake
            .announce(announcer_pool, announcer_stop)
            .await;
        Ok(())
    });
    if on_standby {
        let (log, primary, image, stop) = (
            db.log.clone(),
            db.primary.clone(),
            image.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            standby::watch_lag(log, primary, image, stop).await;
            Ok(())
        });
    }
    if role == Role::Projector {
        let (pool, stop) = (db.primary.clone(), stop.clone());
        tasks.spawn(async move {
            crate::log::audit_index::keep_merged(pool, stop).await;
            Ok(())
        });
    }
}

/// Wakes the projector tasks when the log may have grown: on a primary by other processes'
/// `NOTIFY murmur_events`, on a hot standby (which refuses `LISTEN`) by its replay.
struct WakeUps {
    pool: PgPool,
    wake: Wake,
}

#[async_trait::async_trait]
impl Listening for WakeUps {
    const CHANNEL: &'static str = CHANNEL;
    const WHAT: &'static str = "projector listener";

    async fn connected(&self) {
        // What was announced while not listening: the tasks look at the log once more.
        self.wake.heard("");
    }

    fn heard(&self, payload: &str) {
        self.wake.heard(payload);
    }

    async fn on_standby(&self, shutdown: &mut Shutdown) {
        standby::follow_replay(&self.pool, &self.wake, shutdown).await;
    }
}

/// One projection's task on one node.
struct Task {
    pool: PgPool,
    /// Where its flushes register as eventless.
    registry: Arc<Registry>,
    /// The log as the node's tasks have read it.
    reads: Arc<SharedReads>,
    live: Arc<Live>,
    config: ProjectorConfig,
    wake: watch::Receiver<u64>,
    stop: Shutdown,
    /// Since when committed events have waited behind another transaction.
    held_since: Option<Instant>,
    blocker_checked: Option<Instant>,
    warned: Option<Instant>,
}

/// The pause before the wake-up listener tries to connect again.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// How long committed events may wait behind another transaction before it is named.
const HELD_BACK_WARNING: Duration = Duration::from_secs(5);

/// What a pass of [`Task::apply`] ended with.
enum Then {
    Stop,
    /// Try to become the leader (a standby's turn came).
    TryLead,
}

impl Task {
    fn name(&self) -> &'static str {
        self.live.kind().name()
    }

    /// Publishes a lag measurement (metrics and the projection's health); a task that
    /// measures has got past any failure.
    fn record_lag(&self, (events, seconds): (i64, f64), durable_events: Option<i64>) {
        let name = self.name();
        metrics::gauge!("murmur_projection_lag_events", "projection" => name).set(events as f64);
        metrics::gauge!("murmur_projection_lag_seconds", "projection" => name).set(seconds);
        if let Some(durable) = durable_events {
            metrics::gauge!("murmur_projection_durable_lag_events", "projection" => name)
                .set(durable as f64);
        }
        self.live.update_health(|h| {
            h.lag_events = events;
            h.lag_seconds = seconds;
            h.durable_lag_events = durable_events;
            h.failure = None;
        });
    }

    /// While committed events wait behind another transaction for longer than
    /// [`HELD_BACK_WARNING`], names that transaction (in the health, a metric and a
    /// warning); forgets it once events flow.
    async fn note_held_back(
        &mut self,
        conn: &mut PgConnection,
        held_back: bool,
    ) -> anyhow::Result<()> {
        let name = self.name();
        let since = match (held_back, self.held_since) {
            (false, _) => {
                if self.held_since.take().is_some() {
                    metrics::gauge!("murmur_projection_held_back_seconds", "projection" => name)
                        .set(0.0);
                    self.live.update_health(|h| h.held_back_by = None);
                }
                return Ok(());
            }
            (true, None) => *self.held_since.insert(Instant::now()),
            (true, Some(since)) => since,
        };
        let held = since.elapsed();
        if held < HELD_BACK_WARNING
            || self
                .blocker_checked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.blocker_checked = Some(Instant::now());
        let blocker = checkpoint::oldest_transaction(conn).await?;
        metrics::gauge!("murmur_projection_held_back_seconds", "projection" => name)
            .set(held.as_secs_f64());
        if self
            .warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
        {
            self.warned = Some(Instant::now());
            tracing::warn!(
                projection = name,
                held_back_seconds = held.as_secs_f64(),
                blocker = ?blocker,
                "committed events wait behind an older transaction in the cluster \
                 (pg_snapshot_xmin is cluster-wide): end it, or keep write transactions short"
            );
        }
        self.live.update_health(|h| h.held_back_by = blocker);
        Ok(())
    }

    /// Leads when it can (a projector node), follows otherwise, until stopped; after a
    /// failure it starts again from a fresh load. Ends with an error only when the
    /// projection's tables were built with other settings.
    async fn run(mut self, role: Role) -> anyhow::Result<()> {
        let name = self.name();
        let leader = metrics::gauge!("murmur_projection_leader", "projection" => name);
        loop {
            if self.stop.is_shutdown() {
                return Ok(());
            }
            let outcome = match role {
                Role::Projector => match self.try_lead(&leader).await {
                    Ok(true) => Ok(Then::Stop),
                    // Another process leads: follow it for a while, then try again.
                    Ok(false) => self.follow(Some(self.config.standby_retry)).await,
                    Err(e) => Err(e),
                },
                Role::ReadNode => self.follow(None).await,
            };
            match outcome {
                Ok(Then::Stop) => return Ok(()),
                Ok(Then::TryLead) => continue,
                Err(e) if e.is::<SettingsMismatch>() => return Err(e),
                Err(e) => {
                    tracing::error!(projection = name, error = ?e, "projector failed");
                    metrics::counter!("murmur_projection_failures_total", "projection" => name)
                        .increment(1);
                    self.live
                        .update_health(|h| h.failure = Some(format!("{e:#}")));
                }
            }
            if self.stop.pause(self.config.standby_retry).await {
                return Ok(());
            }
        }
    }

    /// Takes the lock and leads until stopped (true), or answers false if another process
    /// holds it.
    async fn try_lead(&mut self, leader: &metrics::Gauge) -> anyhow::Result<bool> {
        // Detached: the lock must end with this session, never go back to the pool.
        let mut conn = self.pool.acquire().await?.detach();
        if !checkpoint::try_lock(&mut conn, self.name()).await? {
            let _ = sqlx::Connection::close(conn).await;
            return Ok(false);
        }
        tracing::info!(projection = self.name(), "projector leads");
        leader.set(1.0);
        let led = self.lead(&mut conn).await;
        leader.set(0.0);
        let _ = sqlx::Connection::close(conn).await;
        led.map(|()| true)
    }

    /// Loads the projection (tracking changes), then applies batches and flushes them on
    /// their own task while holding the lock; returns Ok when asked to stop, after a last
    /// flush.
    async fn lead(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let settings = self.config.settings();
        let mut projector =
            Projector::load_into(&self.pool, self.live.clone(), &settings, true).await?;
        let mut lag_measured: Option<Instant> = None;
        loop {
            if self.stop.is_shutdown() {
                return projector.flush(conn).await;
            }
            projector.poll_flush().await?;
            let (step, busy) = self.step(&mut projector, conn).await?;
            if projector.flush_due(!busy, &self.config) {
                projector.start_flush(&self.pool, &self.registry, false);
            } else if projector.rest_due(&self.config) {
                // At rest: the journal is folded into whole rows (see `state::feeds`).
                projector.start_flush(&self.pool, &self.registry, true);
            }
            // Counting the backlog costs a scan of it: at most once a second.
            if lag_measured.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                let at = projector.position();
                let head = checkpoint::lag(conn, at).await?;
                let durable = checkpoint::events_between(conn, projector.durable(), at).await?;
                self.record_lag(head, Some(durable));
                lag_measured = Some(Instant::now());
            }
            if busy {
                continue;
            }
            let wait = self.idle_wait(conn, &projector, step).await?;
            let flushing = projector.flushing();
            tokio::select! {
                _ = self.wake.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                () = self.stop.recv() => {}
                // A flush that ends may leave rows to flush now that it is idle.
                ended = projector.finish_flush(), if flushing => ended?,
            }
        }
    }

    /// Applies the log without writing anything, from the state `live` holds (loading it
    /// first if there is none), for `standby` (then [`Then::TryLead`]) or until stopped.
    async fn follow(&mut self, standby: Option<Duration>) -> anyhow::Result<Then> {
        let settings = self.config.settings();
        let mut projector =
            Projector::load_into_follower(&self.pool, self.live.clone(), &settings).await?;
        let until = standby.map(|d| Instant::now() + d);
        let mut conn = self.pool.acquire().await?;
        let mut lag_measured: Option<Instant> = None;
        loop {
            if self.stop.is_shutdown() {
                return Ok(Then::Stop);
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                return Ok(Then::TryLead);
            }
            let (step, busy) = self.step(&mut projector, &mut conn).await?;
            if lag_measured.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                let head = checkpoint::lag(&mut conn, projector.position()).await?;
                self.record_lag(head, None);
                lag_measured = Some(Instant::now());
            }
            if busy {
                continue;
            }
            let mut wait = self.idle_wait(&mut conn, &projector, step).await?;
            if let Some(t) = until {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = self.wake.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                () = self.stop.recv() => {}
            }
        }
    }

    /// One batch; whether it came back full (more to read at once).
    async fn step(
        &mut self,
        projector: &mut Projector,
        conn: &mut PgConnection,
    ) -> anyhow::Result<(Step, bool)> {
        let name = self.name();
        // Mark notifications seen before reading, so one arriving meanwhile wakes us again.
        self.wake.borrow_and_update();
        let (step, busy) = projector
            .step_shared(conn, &self.reads, self.config.batch_size)
            .await?;
        if let Step::Applied { events, to } = step {
            metrics::counter!("murmur_projection_events_applied_total", "projection" => name)
                .increment(events as u64);
            metrics::gauge!("murmur_projection_position", "projection" => name)
                .set(to.position as f64);
        }
        Ok((step, busy))
    }

    /// How long an idle task sleeps unless woken: briefly when committed events wait
    /// behind an older transaction still in flight (anywhere in the cluster), since its
    /// end brings no further notification.
    async fn idle_wait(
        &mut self,
        conn: &mut PgConnection,
        projector: &Projector,
        step: Step,
    ) -> anyhow::Result<Duration> {
        let held_back =
            step == Step::Idle && checkpoint::committed_after(conn, projector.position()).await?;
        self.note_held_back(conn, held_back).await?;
        Ok(if held_back {
            self.config.poll_interval.min(HELD_BACK_RETRY)
        } else {
            self.config.poll_interval
        })
    }
}
