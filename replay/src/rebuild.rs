//! `rebuild` and `verify`: fold the whole log in memory with the projections' own states
//! (the live projectors' code), then write the result into shadow tables and swap them in,
//! or compare it with the live tables.
//!
//! Rebuild, in phases:
//! 1. Fold: one streaming read of the log in commit order (`LogStream`), every selected
//!    projection folding each event into its in-memory state.
//! 2. Write: each state is written with binary `COPY` into its shadow tables (one
//!    connection per projection, in parallel), then the indexes only queries read are built.
//! 3. Catch up, unlocked: the events committed meanwhile are applied and written as row
//!    changes, until little is left. Nothing is locked yet, so the live projectors go on.
//! 4. Hand-over: one transaction locks the live checkpoint rows (`FOR UPDATE`: a live
//!    projector's next flush waits on them; the lock also gives the transaction an id,
//!    which holds back every projector of the cluster, so this part is kept short), applies
//!    the last few events, swaps the shadow tables in and sets the live checkpoints to the
//!    shadows' position with their settings. The live leader's next flush then finds its
//!    checkpoint moved, and it reloads from the new tables.
//!
//! Verify: one read-only snapshot gives the live tables and their checkpoints at one
//! instant; the log is folded up to exactly those checkpoints and compared with the tables
//! row by row. It takes no lock and writes nothing.
//!
//! Interrupting any phase (drop, Ctrl-C, kill -9, lost connection) rolls back the open
//! transaction: the live tables are untouched, and the next run drops the leftover shadows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::BoxFuture;
use murmur_projections::log::checkpoint;
use murmur_projections::log::read::{read_batch_of, LogStream};
use murmur_projections::runtime::ProjectorConfig;
use murmur_projections::store::verify::compare;
pub use murmur_projections::store::verify::TableCheck;
use murmur_projections::store::Snapshot;
use murmur_projections::{AnyState, Kind, Position, StoredEvent};
use sqlx::{PgConnection, PgPool};

use crate::progress::{Progress, ProgressMode};
use crate::shadow;

/// Called after each bulk batch with the number of events read so far.
pub type BatchHook = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    /// Events per read (the hook and progress run between reads) and per catch-up batch.
    pub batch_size: i64,
    /// The projections' configuration; its celebrity threshold is the rebuilt feeds'.
    pub projector: ProjectorConfig,
    /// How long the hand-over may wait for the live projector's flush or readers' locks.
    pub lock_timeout: Duration,
    pub progress: ProgressMode,
    /// Tests use it to interrupt a rebuild or write events in the middle of one.
    pub after_batch: Option<BatchHook>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_size: 50_000,
            projector: ProjectorConfig::default(),
            lock_timeout: Duration::from_secs(30),
            progress: ProgressMode::Auto,
            after_batch: None,
        }
    }
}

/// The projections named (all of them for an empty list), each once, in `Kind::ALL` order.
pub fn select(requested: &[String]) -> anyhow::Result<Vec<Kind>> {
    for name in requested {
        if Kind::from_name(name).is_none() {
            let all: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            bail!(
                "unknown projection {name:?}; the projections are: {}",
                all.join(", ")
            );
        }
    }
    Ok(Kind::ALL
        .into_iter()
        .filter(|k| requested.is_empty() || requested.iter().any(|n| n == k.name()))
        .collect())
}

/// First key of the advisory lock a rebuild of a projection holds (the second is its name),
/// so two rebuilds of one projection never share its shadow schema.
const REBUILD_LOCK_CLASS: i32 = 0x7265_706c; // "repl"

/// A connection of its own (session state: search path, advisory locks), never returned
/// to the pool.
async fn connect(pool: &PgPool) -> anyhow::Result<PgConnection> {
    Ok(pool
        .acquire()
        .await
        .context("connecting to the database")?
        .detach())
}

/// A projection's state and how far it has folded the log.
struct Folding {
    state: AnyState,
    at: Position,
    /// Apply nothing beyond this (verify).
    until: Option<Position>,
}

impl Folding {
    fn new(kind: Kind, options: &Options, until: Option<Position>) -> Self {
        let mut state = kind.empty(&options.projector.settings());
        // A fold writes (or compares) every row at the end; it tracks no changes.
        state.set_tracking(false);
        match &mut state {
            AnyState::Feeds(feeds) => feeds.keep_since(),
            AnyState::Posts(posts) => posts.keep_all(),
            AnyState::Profiles(_) => {}
        }
        Self {
            state,
            at: Position::START,
            until,
        }
    }

    fn apply(&mut self, events: &[StoredEvent], end: Position) {
        for event in events {
            if self.until.is_some_and(|u| event.position > u) {
                break;
            }
            if event.position > self.at {
                self.state.apply(event);
            }
        }
        self.at = match self.until {
            Some(until) => end.min(until).max(self.at),
            None => end.max(self.at),
        };
    }
}

/// Seconds spent in each phase.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Phases {
    pub read_and_fold: f64,
    pub write: f64,
    pub index: f64,
    pub catch_up: f64,
    /// The locked hand-over: the live projectors wait for this long at most.
    pub swap: f64,
}

/// Streams the log after the least position of `folds` (up to `until`) through every fold.
/// Reading and decoding (this task) and folding (a blocking thread) run side by side.
/// Returns the number of events read.
async fn fold_log(
    reader: &mut PgConnection,
    folds: &mut Vec<Folding>,
    until: Option<Position>,
    options: &Options,
    progress: &mut Progress,
) -> anyhow::Result<u64> {
    let Some(from) = folds.iter().map(|f| f.at).min() else {
        return Ok(0);
    };
    let mut types: Vec<&str> = folds
        .iter()
        .flat_map(|f| f.state.kind().aggregate_types().iter().copied())
        .collect();
    types.sort_unstable();
    types.dedup();
    let mut stream = LogStream::open(reader, from, until, &types).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<StoredEvent>, Position)>(4);
    let mut owned = std::mem::take(folds);
    let folder = tokio::task::spawn_blocking(move || {
        while let Some((events, end)) = rx.blocking_recv() {
            for fold in owned.iter_mut() {
                fold.apply(&events, end);
            }
        }
        owned
    });
    let mut read = 0;
    let streamed = async {
        while let Some(events) = stream.next(options.batch_size.max(1) as usize).await? {
            let end = stream.last.unwrap_or(from);
            let scanned = stream.scanned - read;
            read = stream.scanned;
            if tx.send((events, end)).await.is_err() {
                bail!("the fold stopped");
            }
            progress.advance(scanned);
            if let Some(after_batch) = &options.after_batch {
                after_batch(read).await;
            }
        }
        stream.close().await
    }
    .await;
    drop(tx);
    *folds = folder.await.context("the fold panicked")?;
    streamed?;
    Ok(read)
}

/// A projection being rebuilt into its shadow schema, on its own connection.
struct Shadow {
    kind: Kind,
    conn: PgConnection,
}

impl Shadow {
    async fn open(pool: &PgPool, kind: Kind) -> anyhow::Result<Self> {
        let name = kind.name();
        let mut conn = connect(pool).await?;
        // Wait a little: the session of a rebuild interrupted a moment ago may still be
        // ending on the server.
        sqlx::query("SET lock_timeout = '5s'")
            .execute(&mut conn)
            .await
            .context("setting the lock timeout")?;
        let locked = sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind(REBUILD_LOCK_CLASS)
            .bind(name)
            .execute(&mut conn)
            .await;
        match locked {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                bail!("{name} is being rebuilt by another process")
            }
            Err(e) => return Err(anyhow::Error::new(e).context("taking the rebuild lock")),
        }
        sqlx::query("RESET lock_timeout")
            .execute(&mut conn)
            .await
            .context("resetting the lock timeout")?;
        shadow::create(&mut conn, kind)
            .await
            .with_context(|| format!("creating the shadow tables of {name}"))?;
        shadow::enter(&mut conn, name).await?;
        Ok(Self { kind, conn })
    }

    /// Writes a fold's row changes into the shadow tables.
    async fn write_changes(&mut self, fold: &mut Folding) -> anyhow::Result<()> {
        // Whole rows: the shadows are swapped in without a journal to replay.
        fold.state.complete_next();
        let changes = fold.state.take_changes();
        let mut tx = sqlx::Connection::begin(&mut self.conn).await?;
        changes
            .write(&mut tx)
            .await
            .with_context(|| format!("catching up {}", self.kind.name()))?;
        tx.commit().await.context("committing a catch-up")?;
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        shadow::drop_all(&mut self.conn, self.kind.name()).await?;
        sqlx::Connection::close(self.conn).await.context("closing")
    }
}

/// Applies the committed events after the folds' positions, batch by batch, writing each
/// batch's changes into the shadows, until a batch comes back with fewer than `until_below`
/// events. Returns the number of events read.
async fn catch_up(
    reader: &mut PgConnection,
    folds: &mut [Folding],
    shadows: &mut [Shadow],
    batch_size: i64,
    until_below: i64,
) -> anyhow::Result<u64> {
    let mut read = 0;
    loop {
        let from = folds.iter().map(|f| f.at).min().unwrap_or(Position::START);
        let batch = read_batch_of(reader, from, batch_size, None).await?;
        let Some(end) = batch.end else {
            return Ok(read);
        };
        read += batch.scanned as u64;
        for (fold, shadow) in folds.iter_mut().zip(shadows.iter_mut()) {
            fold.apply(&batch.events, end);
            shadow.write_changes(fold).await?;
        }
        if (batch.scanned as i64) < until_below {
            return Ok(read);
        }
    }
}

/// The hand-over transaction: holds the live checkpoint rows of `kinds` locked. Returns the
/// live checkpoints.
async fn lock_live(
    tx: &mut PgConnection,
    kinds: &[Kind],
    lock_timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Position>> {
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = {}",
        lock_timeout.as_millis().max(1)
    ))
    .execute(&mut *tx)
    .await
    .context("setting the lock timeout")?;
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let rows = sqlx::query(
        "SELECT projection, transaction_id::text AS xid, position FROM projection_checkpoints
         WHERE projection = ANY($1) ORDER BY projection FOR UPDATE",
    )
    .bind(&names)
    .fetch_all(&mut *tx)
    .await
    .context("locking the live checkpoints (is a live projector stuck in a flush?)")?;
    rows.iter()
        .map(|row| {
            Ok((
                sqlx::Row::try_get(row, "projection")?,
                Position::from_row(row)?,
            ))
        })
        .collect()
}

/// The log's highest position: the progress bar's estimate of the work.
async fn log_size(conn: &mut PgConnection) -> anyhow::Result<u64> {
    let max: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(conn)
        .await
        .context("measuring the log")?;
    Ok(max.max(0) as u64)
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RebuildReport {
    pub projections: Vec<&'static str>,
    /// Events replayed (each event once, however many projections).
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// The live checkpoint of every rebuilt projection after the swap.
    pub checkpoint: Position,
    pub phases: Phases,
}

/// Rebuilds `kinds` into shadow tables and swaps them in (one transaction).
/// The locked part of a rebuild, kept short: lock the live checkpoints, apply what was
/// committed since the unlocked catch-up, swap the shadows in and set the checkpoints with
/// their settings, in one transaction. Returns the events applied.
async fn hand_over(
    pool: &PgPool,
    reader: &mut PgConnection,
    folds: &mut [Folding],
    shadows: &mut [Shadow],
    options: &Options,
) -> anyhow::Result<u64> {
    let kinds: Vec<Kind> = folds.iter().map(|f| f.state.kind()).collect();
    let mut handover = connect(pool).await?;
    let mut tx = sqlx::Connection::begin(&mut handover).await?;
    let live = lock_live(&mut tx, &kinds, options.lock_timeout).await?;
    let events = catch_up(reader, folds, shadows, options.batch_size, 1).await?;
    for fold in folds.iter() {
        let name = fold.state.kind().name();
        let live = live.get(name).copied().unwrap_or(Position::START);
        // Cannot happen (every event the live projector applied is readable), but a swap
        // must never take the read models back in the log.
        if fold.at < live {
            bail!(
                "{name}: the rebuild reached {} but the live checkpoint is {live}",
                fold.at
            );
        }
    }
    for fold in folds.iter() {
        let kind = fold.state.kind();
        shadow::swap(&mut tx, kind).await?;
        let settings = kind.identity(&options.projector.settings());
        checkpoint::set(&mut tx, kind.name(), fold.at, &settings).await?;
    }
    tx.commit().await.context("committing the swap")?;
    sqlx::Connection::close(handover).await.context("closing")?;
    Ok(events)
}

pub async fn rebuild(
    pool: &PgPool,
    kinds: Vec<Kind>,
    options: &Options,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let names: Vec<&'static str> = kinds.iter().map(|k| k.name()).collect();
    let mut reader = connect(pool).await?;
    checkpoint::ensure(&mut reader, &names).await?;
    let mut shadows = Vec::with_capacity(kinds.len());
    for &kind in &kinds {
        shadows.push(Shadow::open(pool, kind).await?);
    }
    let mut folds: Vec<Folding> = kinds
        .iter()
        .map(|&k| Folding::new(k, options, None))
        .collect();
    let mut progress = Progress::new(
        &format!("rebuilding {}", names.join(", ")),
        log_size(&mut reader).await?,
        options.progress,
    );
    let mut phases = Phases::default();

    let phase = Instant::now();
    let mut events = fold_log(&mut reader, &mut folds, None, options, &mut progress).await?;
    progress.finish();
    phases.read_and_fold = phase.elapsed().as_secs_f64();

    let phase = Instant::now();
    futures::future::try_join_all(folds.iter().zip(shadows.iter_mut()).map(
        |(fold, shadow)| async move {
            fold.state
                .write_all(&mut shadow.conn)
                .await
                .with_context(|| format!("writing {}", shadow.kind.name()))
        },
    ))
    .await?;
    phases.write = phase.elapsed().as_secs_f64();

    let phase = Instant::now();
    futures::future::try_join_all(
        shadows
            .iter_mut()
            .map(|s| shadow::create_deferred_indexes(&mut s.conn, s.kind)),
    )
    .await?;
    phases.index = phase.elapsed().as_secs_f64();

    let phase = Instant::now();
    for fold in &mut folds {
        fold.state.set_tracking(true);
    }
    events += catch_up(
        &mut reader,
        &mut folds,
        &mut shadows,
        options.batch_size,
        options.batch_size / 10,
    )
    .await?;
    phases.catch_up = phase.elapsed().as_secs_f64();

    let phase = Instant::now();
    events += hand_over(pool, &mut reader, &mut folds, &mut shadows, options).await?;
    phases.swap = phase.elapsed().as_secs_f64();
    let at = folds.first().map(|f| f.at).unwrap_or(Position::START);
    for shadow in shadows {
        shadow.close().await?;
    }
    sqlx::Connection::close(reader).await.context("closing")?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RebuildReport {
        projections: names,
        events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        checkpoint: at,
        phases,
    })
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerifyReport {
    /// The log position each projection was compared at (its live checkpoint).
    pub at: BTreeMap<String, Position>,
    pub tables: Vec<TableCheck>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.tables.iter().all(|t| t.matches)
    }
}

/// Folds the log up to exactly the live checkpoints of `kinds` and compares every table
/// with the live one, as of one snapshot.
pub async fn verify(
    pool: &PgPool,
    kinds: Vec<Kind>,
    options: &Options,
) -> anyhow::Result<VerifyReport> {
    let mut snapshot = Snapshot::begin(pool).await?;
    let mut at = BTreeMap::new();
    let mut folds = Vec::with_capacity(kinds.len());
    for &kind in &kinds {
        let live = checkpoint::checkpoint(snapshot.conn(), kind.name()).await?;
        at.insert(kind.name().to_string(), live);
        folds.push(Folding::new(kind, options, Some(live)));
    }
    let mut reader = connect(pool).await?;
    let until = at.values().copied().max();
    let label = format!(
        "verifying {}",
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut progress = Progress::new(&label, log_size(&mut reader).await?, options.progress);
    if let Some(until) = until.filter(|u| *u > Position::START) {
        fold_log(&mut reader, &mut folds, Some(until), options, &mut progress).await?;
    }
    progress.finish();
    sqlx::Connection::close(reader).await.context("closing")?;
    let mut tables = Vec::new();
    for fold in &folds {
        let live = at[fold.state.kind().name()];
        if fold.at != live {
            bail!(
                "{}: could not fold the log to the live checkpoint {live} (reached {})",
                fold.state.kind().name(),
                fold.at
            );
        }
        tables.extend(compare(snapshot.conn(), &fold.state).await?);
    }
    snapshot.finish().await?;
    Ok(VerifyReport { at, tables })
}
