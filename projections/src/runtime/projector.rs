//! One projection being applied: its shared state ([`Live`]), fed batch by batch from the
//! log, and (when it leads) its durable copy, flushed on a task of its own so that applying
//! never waits for a commit.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;

use super::live::Live;
use super::ProjectorConfig;
use crate::log::checkpoint;
use crate::log::horizon::{self, Registry};
use crate::log::read::read_batch_of;
use crate::log::shared::SharedReads;
use crate::projection::{AnyChanges, AnyState, Kind};
use crate::store::{Settings, Snapshot};
use crate::Position;

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
pub struct Stale(pub &'static str);

/// Events per read while a loaded state catches up with the one it replaces.
const CATCH_UP_BATCH: i64 = 5_000;

/// A flush on its own task: the changes up to `to`.
struct InFlight {
    to: Position,
    task: JoinHandle<anyhow::Result<()>>,
}

pub struct Projector {
    kind: Kind,
    live: Arc<Live>,
    /// Where the durable copy is (the last flush that committed).
    durable: Position,
    last_flush: Instant,
    /// When the state last moved.
    last_moved: Instant,
    in_flight: Option<InFlight>,
}

/// Loads `kind`'s state from its tables at their checkpoint (one snapshot), after checking
/// they were built with `settings`; with change tracking on only if it is to be flushed.
async fn load_state(
    pool: &PgPool,
    kind: Kind,
    settings: &Settings,
    track: bool,
) -> anyhow::Result<(AnyState, Position)> {
    let started = Instant::now();
    let name = kind.name();
    let mut conn = pool.acquire().await.context("connecting")?;
    checkpoint::check_settings(&mut conn, name, &kind.identity(settings)).await?;
    drop(conn);
    let mut snapshot = Snapshot::begin(pool).await?;
    let at = checkpoint::checkpoint(snapshot.conn(), name).await?;
    let mut state = kind
        .load(&mut snapshot, settings)
        .await
        .with_context(|| format!("loading the {name} projection"))?;
    snapshot.finish().await?;
    state.set_tracking(track);
    tracing::info!(
        projection = name,
        checkpoint = %at,
        seconds = started.elapsed().as_secs_f64(),
        "projection loaded"
    );
    metrics::histogram!("murmur_projection_load_seconds", "projection" => name)
        .record(started.elapsed().as_secs_f64());
    Ok((state, at))
}

/// Writes `changes` and moves the checkpoint from `from` to `to` inside the caller's
/// transaction, not committed; fails with [`Stale`] if another process moved it.
async fn write_flush(
    tx: &mut PgConnection,
    kind: Kind,
    changes: &AnyChanges,
    from: Position,
    to: Position,
) -> anyhow::Result<()> {
    let name = kind.name();
    // Short set-based statements whose row estimates the skew of the follow graph
    // inflates; compiling them with JIT costs more than running them.
    sqlx::query("SET LOCAL jit = off")
        .execute(&mut *tx)
        .await
        .context("configuring the flush")?;
    if !checkpoint::advance(tx, name, from, to).await? {
        return Err(Stale(name).into());
    }
    changes
        .write(tx)
        .await
        .with_context(|| format!("{name}: writing changes up to {to}"))
}

/// [`write_flush`] in a transaction of its own, committed. With `registry`, readers of the
/// log (in any process) pass over the transaction meanwhile: it writes no event.
async fn commit_flush(
    conn: &mut PgConnection,
    registry: Option<&Arc<Registry>>,
    kind: Kind,
    changes: AnyChanges,
    from: Position,
    to: Position,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let eventless = match registry {
        Some(registry) => Some(horizon::register_eventless(&mut tx, registry).await?),
        None => None,
    };
    write_flush(&mut tx, kind, &changes, from, to).await?;
    tx.commit().await.context("committing a flush")?;
    if let Some(eventless) = eventless {
        eventless.release().await?;
    }
    let name = kind.name();
    metrics::histogram!("murmur_projection_flush_seconds", "projection" => name)
        .record(started.elapsed().as_secs_f64());
    metrics::gauge!("murmur_projection_durable_position", "projection" => name)
        .set(to.position as f64);
    Ok(())
}

impl Projector {
    /// Loads the projection into a state of its own (for tools and tests), tracking changes.
    pub async fn load(pool: &PgPool, kind: Kind, settings: &Settings) -> anyhow::Result<Self> {
        Self::load_into(pool, Arc::new(Live::new(kind, settings)), settings, true).await
    }

    /// Loads the projection from its tables and installs it into `live`. If `live` is
    /// already further in the log (it followed without leading), the loaded state first
    /// catches up with it, so readers never see it go back. `track`: record changes for
    /// flushing (a leader) or not (a read node).
    pub async fn load_into(
        pool: &PgPool,
        live: Arc<Live>,
        settings: &Settings,
        track: bool,
    ) -> anyhow::Result<Self> {
        let kind = live.kind();
        let (mut state, durable) = load_state(pool, kind, settings, track).await?;
        let mut at = durable;
        if live.is_loaded() && live.position() > at {
            let target = live.position();
            let mut conn = pool.acquire().await.context("connecting")?;
            while at < target {
                let batch =
                    read_batch_of(&mut conn, at, CATCH_UP_BATCH, Some(kind.aggregate_types()))
                        .await?;
                let Some(end) = batch.end else {
                    anyhow::bail!("{}: the log ends before {target}", kind.name());
                };
                for event in &batch.events {
                    state.apply(event);
                }
                at = end;
            }
        }
        live.install(state, at);
        Ok(Self {
            kind,
            live,
            durable,
            last_flush: Instant::now(),
            last_moved: Instant::now(),
            in_flight: None,
        })
    }

    /// A projector that only applies (never flushes), over the state `live` holds, or
    /// loaded into it if there is none yet.
    pub async fn load_into_follower(
        pool: &PgPool,
        live: Arc<Live>,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        if !live.is_loaded() {
            return Self::load_into(pool, live, settings, false).await;
        }
        {
            let mut state = live.write();
            state.set_tracking(false);
            // What a leader that failed had not flushed: the next leader reloads anyway.
            drop(state.take_changes());
        }
        Ok(Self {
            kind: live.kind(),
            durable: live.position(),
            live,
            last_flush: Instant::now(),
            last_moved: Instant::now(),
            in_flight: None,
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
        self.live.apply(&batch.events, to);
        self.last_moved = Instant::now();
        Ok(Step::Applied {
            events: batch.scanned,
            to,
        })
    }

    /// [`Projector::step`] through the node's shared reads: a stretch another projection
    /// has read is not read again. A stretch taken from those kept counts as a full batch
    /// (there may be more at once).
    pub async fn step_shared(
        &mut self,
        conn: &mut PgConnection,
        reads: &SharedReads,
        batch_size: i64,
    ) -> anyhow::Result<(Step, bool)> {
        let Some(tail) = reads.read(conn, self.position(), batch_size).await? else {
            return Ok((Step::Idle, false));
        };
        let (events, to) = (tail.events(), tail.end());
        self.live.apply(events, to);
        self.last_moved = Instant::now();
        let full = tail.kept() || events.len() as i64 >= batch_size;
        Ok((
            Step::Applied {
                events: events.len(),
                to,
            },
            full,
        ))
    }

    /// Rows waiting for the next flush.
    pub fn pending_rows(&self) -> usize {
        self.live.read().pending_rows()
    }

    /// Takes the changes since the last flush, with the position they bring the copy to;
    /// `complete`: as whole rows, leaving no journal (see [`AnyState::complete_next`]).
    fn take_changes(&mut self, complete: bool) -> (AnyChanges, Position) {
        let mut state = self.live.write();
        if complete {
            state.complete_next();
        }
        // Under the lock: the position cannot move between the two.
        (state.take_changes(), self.live.position())
    }

    /// Whether there is anything to flush; `complete`: also a journal to fold into rows.
    fn has_changes(&self, complete: bool) -> bool {
        self.position() != self.durable || (complete && self.live.read().journaled())
    }

    /// Writes the row changes since the last flush (as whole rows, no journal left) and
    /// moves the checkpoint to the state's position, in one transaction, waiting for it.
    /// Fails with [`Stale`] if another process moved it.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        self.flush_as(conn, true).await
    }

    /// [`Projector::flush`] as a leader under load makes it: inbox changes as a journal.
    pub async fn flush_journal(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        self.flush_as(conn, false).await
    }

    async fn flush_as(&mut self, conn: &mut PgConnection, complete: bool) -> anyhow::Result<()> {
        self.finish_flush().await?;
        if !self.has_changes(complete) {
            return Ok(());
        }
        let (changes, to) = self.take_changes(complete);
        commit_flush(conn, None, self.kind, changes, self.durable, to).await?;
        self.durable = to;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// The work of a flush ([`Projector::flush`], or with `complete` false
    /// [`Projector::flush_journal`]) inside the caller's transaction, not committed: the
    /// changes are taken from the state either way, so after a failed commit only a reload
    /// gives a projector that can flush again.
    pub async fn flush_into(
        &mut self,
        tx: &mut PgConnection,
        to: Position,
        complete: bool,
    ) -> anyhow::Result<()> {
        let (changes, at) = self.take_changes(complete);
        anyhow::ensure!(at == to, "flush_into({to}) of a state at {at}");
        write_flush(tx, self.kind, &changes, self.durable, to).await
    }

    /// Starts a flush on its own task and connection, unless one is in flight or there is
    /// nothing to write; applying goes on meanwhile. `complete`: see [`Projector::flush`].
    pub fn start_flush(&mut self, pool: &PgPool, registry: &Arc<Registry>, complete: bool) {
        if self.in_flight.is_some() || !self.has_changes(complete) {
            return;
        }
        let (changes, to) = self.take_changes(complete);
        let (kind, from, pool, registry) =
            (self.kind, self.durable, pool.clone(), registry.clone());
        let task = tokio::spawn(async move {
            let mut conn = pool.acquire().await.context("connecting to flush")?;
            commit_flush(&mut conn, Some(&registry), kind, changes, from, to).await
        });
        self.in_flight = Some(InFlight { to, task });
    }

    /// Whether a flush is in flight.
    pub fn flushing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Waits for the flush in flight, if any; its failure is this projector's.
    pub async fn finish_flush(&mut self) -> anyhow::Result<()> {
        let Some(flight) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let ended = (&mut flight.task).await;
        let to = flight.to;
        self.in_flight = None;
        ended.context("a flush task panicked")??;
        self.durable = to;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// [`Projector::finish_flush`] if the flush in flight has ended (never waits).
    pub async fn poll_flush(&mut self) -> anyhow::Result<()> {
        match &self.in_flight {
            Some(flight) if flight.task.is_finished() => self.finish_flush().await,
            _ => Ok(()),
        }
    }

    /// Whether the journal should be folded into whole rows now: the state has not moved
    /// for `config.rest`, and everything else is flushed.
    pub(super) fn rest_due(&self, config: &ProjectorConfig) -> bool {
        !self.flushing()
            && self.position() == self.durable
            && self.last_moved.elapsed() >= config.rest
            && self.live.read().journaled()
    }

    /// Whether the durable copy should catch up now.
    pub(super) fn flush_due(&self, idle: bool, config: &ProjectorConfig) -> bool {
        !self.flushing()
            && self.position() != self.durable
            && (idle
                || self.last_flush.elapsed() >= config.flush_interval
                || self.pending_rows() >= config.flush_rows)
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        // A leader that fails stops its flush: the next one reloads from the checkpoint.
        if let Some(flight) = &self.in_flight {
            flight.task.abort();
        }
    }
}
