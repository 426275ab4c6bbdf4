//! `rebuild` and `verify`: replay the whole log through the projections' own code
//! (`runtime::apply_batch`, the live projectors' batch step) into shadow tables, then swap
//! them in or compare them with the live ones.
//!
//! Phases:
//! 1. Bulk: one reader streams the log in commit order, batch after batch (the next batch is
//!    read while the current one is applied); each projection applies it on its own
//!    connection into its shadow schema, each batch its own short transaction. The shadows
//!    are unlogged and lack the indexes `apply` never reads; after the load they are made
//!    logged and those indexes are built (a rebuild only; verify compares rows).
//! 2. Hand-over: one transaction locks the live checkpoint rows (`FOR UPDATE`): a live
//!    projector's next batch waits on that row, so the live tables stop moving. The shadows
//!    catch up (to the log's end for a rebuild, to exactly the live checkpoint for verify).
//! 3. Rebuild: in that same transaction, the shadow tables replace the live ones and the
//!    live checkpoint becomes the shadows' position; on commit the waiting live projector
//!    sees its checkpoint moved (its compare-and-set fails), re-reads it and continues from
//!    there, so nothing committed meanwhile is lost or applied twice.
//!    Verify: a read-only snapshot is taken while the lock is held, the lock is released, and
//!    the tables are compared in that snapshot.
//!
//! Interrupting any phase (drop, Ctrl-C, kill -9, lost connection) rolls back the open
//! transaction: the live tables are untouched, and the next run drops the leftover shadows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::BoxFuture;
use murmur_projections::event::read_batch;
use murmur_projections::read_model::names;
use murmur_projections::runtime::{self, ProjectorConfig};
use murmur_projections::{Position, Projection, StoredEvent};
use sqlx::{PgConnection, PgPool, Row};

use crate::progress::{Progress, ProgressMode};
use crate::shadow;

/// Called after each bulk batch with the number of events read so far.
pub type BatchHook = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    /// Events per batch (per transaction).
    pub batch_size: i64,
    /// The projections' configuration; must match the live projectors' (celebrity threshold).
    pub projector: ProjectorConfig,
    /// How long the hand-over may wait for the live projector's batch or readers' locks.
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

/// The projections named (all of them for an empty list), each once, in `names::ALL` order.
pub fn select(
    requested: &[String],
    config: &ProjectorConfig,
) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    for name in requested {
        if !names::ALL.contains(&name.as_str()) {
            bail!(
                "unknown projection {name:?}; the projections are: {}",
                names::ALL.join(", ")
            );
        }
    }
    Ok(runtime::projections(config)
        .into_iter()
        .filter(|p| requested.is_empty() || requested.iter().any(|n| n == p.name()))
        .collect())
}

/// First key of the advisory lock a rebuild of a projection holds (the second is its name),
/// so two rebuilds of one projection never share its shadow schema.
const REBUILD_LOCK_CLASS: i32 = 0x7265_706c; // "repl"

/// A projection being built into its shadow schema, on its own connection.
struct Shadow {
    projection: Arc<dyn Projection>,
    conn: PgConnection,
    /// The shadow's checkpoint.
    at: Position,
    /// Apply nothing beyond this (verify).
    until: Option<Position>,
}

impl Shadow {
    async fn open(pool: &PgPool, projection: Arc<dyn Projection>) -> anyhow::Result<Self> {
        let name = projection.name();
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
                bail!("{name} is being rebuilt or verified by another process")
            }
            Err(e) => return Err(anyhow::Error::new(e).context("taking the rebuild lock")),
        }
        sqlx::query("RESET lock_timeout")
            .execute(&mut conn)
            .await
            .context("resetting the lock timeout")?;
        shadow::create(&mut conn, projection.as_ref())
            .await
            .with_context(|| format!("creating the shadow tables of {name}"))?;
        shadow::enter(&mut conn, name).await?;
        // Losing the last shadow batches in a crash costs nothing: the shadow is dropped.
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await
            .context("setting synchronous_commit")?;
        Ok(Self {
            projection,
            conn,
            at: Position::START,
            until: None,
        })
    }

    /// The events of `batch` (read after `cursor`) this shadow still has to apply.
    fn slice<'a>(&self, batch: &'a [StoredEvent]) -> &'a [StoredEvent] {
        let start = batch.partition_point(|e| e.position <= self.at);
        let end = match self.until {
            Some(until) => batch.partition_point(|e| e.position <= until),
            None => batch.len(),
        };
        &batch[start..end.max(start)]
    }

    async fn apply(&mut self, batch: &[StoredEvent]) -> anyhow::Result<()> {
        let events = self.slice(batch);
        let Some(last) = events.last() else {
            return Ok(());
        };
        let to = last.position;
        let name = self.projection.name();
        if !runtime::apply_batch(&mut self.conn, self.projection.as_ref(), self.at, events)
            .await
            .with_context(|| format!("rebuilding {name}"))?
        {
            bail!("the shadow checkpoint of {name} moved under the rebuild");
        }
        self.at = to;
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        shadow::drop_all(&mut self.conn, self.projection.name()).await?;
        sqlx::Connection::close(self.conn).await.context("closing")
    }
}

/// A connection of its own (session state: search path, advisory locks), never returned
/// to the pool.
async fn connect(pool: &PgPool) -> anyhow::Result<PgConnection> {
    Ok(pool
        .acquire()
        .await
        .context("connecting to the database")?
        .detach())
}

/// One rebuild or verify: the reader of the log, the shadows and the progress display.
struct Replay {
    names: Vec<&'static str>,
    reader: PgConnection,
    shadows: Vec<Shadow>,
    progress: Progress,
}

impl Replay {
    /// Creates fresh shadows of `projections` (each on its own connection).
    async fn open(
        pool: &PgPool,
        projections: Vec<Arc<dyn Projection>>,
        verb: &str,
        options: &Options,
    ) -> anyhow::Result<Self> {
        let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
        let mut reader = connect(pool).await?;
        ensure_checkpoints(&mut reader, &names).await?;
        let mut shadows = Vec::with_capacity(projections.len());
        for projection in projections {
            shadows.push(Shadow::open(pool, projection).await?);
        }
        let total = log_size(&mut reader).await?;
        let label = format!("{verb} {}", names.join(", "));
        Ok(Self {
            names,
            reader,
            shadows,
            progress: Progress::new(&label, total, options.progress),
        })
    }

    /// Streams the log from the least shadow checkpoint through every shadow until the end
    /// (or each shadow's `until`). Returns the number of events read. `hook`: call
    /// `options.after_batch` (the bulk phase only).
    async fn build(&mut self, options: &Options, hook: bool) -> anyhow::Result<u64> {
        let Some(mut cursor) = self.shadows.iter().map(|s| s.at).min() else {
            return Ok(0);
        };
        let mut read = 0u64;
        let mut batch = read_batch(&mut self.reader, cursor, options.batch_size).await?;
        while let Some(last) = batch.last() {
            let beyond_all = self
                .shadows
                .iter()
                .all(|s| s.until.is_some_and(|until| batch[0].position > until));
            if beyond_all {
                break;
            }
            cursor = last.position;
            let applying =
                futures::future::try_join_all(self.shadows.iter_mut().map(|s| s.apply(&batch)));
            let (applied, next) = tokio::join!(
                applying,
                read_batch(&mut self.reader, cursor, options.batch_size)
            );
            applied?;
            read += batch.len() as u64;
            self.progress.advance(batch.len() as u64);
            if let (true, Some(after_batch)) = (hook, &options.after_batch) {
                after_batch(read).await;
            }
            batch = next?;
        }
        Ok(read)
    }

    /// Drops the shadows and closes the connections.
    async fn close(self) -> anyhow::Result<()> {
        for shadow in self.shadows {
            shadow.close().await?;
        }
        sqlx::Connection::close(self.reader)
            .await
            .context("closing")
    }
}

/// The hand-over transaction: holds the live checkpoint rows of `projections` locked.
/// Returns the live checkpoints.
async fn lock_live(
    tx: &mut PgConnection,
    projections: &[&'static str],
    lock_timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Position>> {
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = {}",
        lock_timeout.as_millis().max(1)
    ))
    .execute(&mut *tx)
    .await
    .context("setting the lock timeout")?;
    let rows = sqlx::query(
        "SELECT projection, transaction_id::text AS xid, position FROM projection_checkpoints
         WHERE projection = ANY($1) ORDER BY projection FOR UPDATE",
    )
    .bind(projections)
    .fetch_all(&mut *tx)
    .await
    .context("locking the live checkpoints (is a live projector stuck in a batch?)")?;
    rows.iter()
        .map(|row| {
            let xid: String = row.try_get("xid")?;
            Ok((
                row.try_get("projection")?,
                Position::new(
                    xid.parse().context("bad transaction id")?,
                    row.try_get("position")?,
                ),
            ))
        })
        .collect()
}

async fn ensure_checkpoints(conn: &mut PgConnection, projections: &[&str]) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection) SELECT unnest($1::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(projections)
    .execute(conn)
    .await
    .context("creating checkpoints")?;
    Ok(())
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
}

/// Rebuilds `projections` into shadow tables and swaps them in (one transaction).
pub async fn rebuild(
    pool: &PgPool,
    projections: Vec<Arc<dyn Projection>>,
    options: &Options,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let mut replay = Replay::open(pool, projections, "rebuilding", options).await?;
    let mut events = replay.build(options, true).await?;
    // Logged first: making a table logged rewrites it with its indexes, so indexes built
    // before would be built twice.
    futures::future::try_join_all(replay.shadows.iter_mut().map(|s| async {
        shadow::set_logged(&mut s.conn, s.projection.as_ref()).await?;
        shadow::create_deferred_indexes(&mut s.conn, s.projection.as_ref()).await
    }))
    .await?;

    let mut handover = connect(pool).await?;
    let mut tx = sqlx::Connection::begin(&mut handover).await?;
    let live = lock_live(&mut tx, &replay.names, options.lock_timeout).await?;
    events += replay.build(options, false).await?;
    for shadow in &replay.shadows {
        let name = shadow.projection.name();
        let live = live.get(name).copied().unwrap_or(Position::START);
        // Cannot happen (every event the live projector applied is readable), but a swap
        // must never take the read models back in the log.
        if shadow.at < live {
            bail!(
                "{name}: the rebuild reached {} but the live checkpoint is {live}",
                shadow.at
            );
        }
    }
    replay.progress.finish();
    let at = replay
        .shadows
        .first()
        .map(|s| s.at)
        .unwrap_or(Position::START);
    for shadow in &replay.shadows {
        shadow::swap(&mut tx, shadow.projection.as_ref()).await?;
        sqlx::query(
            "UPDATE projection_checkpoints
             SET transaction_id = $2::text::xid8, position = $3, updated_at = now()
             WHERE projection = $1",
        )
        .bind(shadow.projection.name())
        .bind(shadow.at.transaction_id.to_string())
        .bind(shadow.at.position)
        .execute(&mut *tx)
        .await
        .context("writing the live checkpoint")?;
    }
    tx.commit().await.context("committing the swap")?;
    sqlx::Connection::close(handover).await.context("closing")?;
    let projections = replay.names.clone();
    replay.close().await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RebuildReport {
        projections,
        events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        checkpoint: at,
    })
}

/// How one table of a projection compared.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableCheck {
    pub projection: &'static str,
    pub table: &'static str,
    pub live_rows: i64,
    pub rebuilt_rows: i64,
    pub matches: bool,
    /// A few rows found on one side only, as `only live: (...)` / `only rebuilt: (...)`.
    pub differences: Vec<String>,
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

/// Rows shown per side when a table differs.
const SHOWN_DIFFERENCES: i64 = 5;

/// Rebuilds `projections` into shadow tables up to exactly their live checkpoints and
/// compares every table (row counts and an order-independent checksum of the rows).
pub async fn verify(
    pool: &PgPool,
    projections: Vec<Arc<dyn Projection>>,
    options: &Options,
) -> anyhow::Result<VerifyReport> {
    let mut replay = Replay::open(pool, projections, "verifying", options).await?;
    // Bulk up to where the live projections are now (they only move forward).
    for shadow in &mut replay.shadows {
        let live = runtime::checkpoint(&mut replay.reader, shadow.projection.name()).await?;
        shadow.until = Some(live);
    }
    replay.build(options, true).await?;

    let mut handover = connect(pool).await?;
    let mut tx = sqlx::Connection::begin(&mut handover).await?;
    let live = lock_live(&mut tx, &replay.names, options.lock_timeout).await?;
    for shadow in &mut replay.shadows {
        shadow.until = live.get(shadow.projection.name()).copied();
    }
    replay.build(options, false).await?;
    replay.progress.finish();
    // The snapshot sees live and shadow tables at the same log position; read-only, it
    // holds back no projector (it takes no transaction id).
    let mut snapshot = connect(pool).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut snapshot)
        .await
        .context("starting the comparison snapshot")?;
    sqlx::query("SELECT 1")
        .execute(&mut snapshot)
        .await
        .context("taking the comparison snapshot")?;
    tx.rollback()
        .await
        .context("releasing the live checkpoints")?;

    let mut tables = Vec::new();
    for shadow in &replay.shadows {
        if shadow.until.is_some_and(|until| shadow.at != until) {
            bail!(
                "{}: could not bring the rebuild to the live checkpoint {:?} (at {})",
                shadow.projection.name(),
                shadow.until,
                shadow.at
            );
        }
        for table in shadow.projection.tables() {
            tables.push(
                compare(&mut snapshot, shadow.projection.name(), table)
                    .await
                    .with_context(|| format!("comparing {table}"))?,
            );
        }
    }
    sqlx::query("COMMIT")
        .execute(&mut snapshot)
        .await
        .context("ending the comparison snapshot")?;
    replay.close().await?;
    for conn in [snapshot, handover] {
        sqlx::Connection::close(conn).await.context("closing")?;
    }
    Ok(VerifyReport { at: live, tables })
}

async fn compare(
    conn: &mut PgConnection,
    projection: &'static str,
    table: &'static str,
) -> anyhow::Result<TableCheck> {
    let shadow = shadow::schema(projection);
    // Row count and the sum of a 64-bit hash of each row's text: order-independent and
    // computed in one streaming pass.
    let digest = |schema: &str| {
        format!(
            "SELECT count(*) AS n,
                    coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)::text AS h
             FROM {schema}.{table} t"
        )
    };
    let live = sqlx::query(&digest("public")).fetch_one(&mut *conn).await?;
    let rebuilt = sqlx::query(&digest(&shadow)).fetch_one(&mut *conn).await?;
    let (live_rows, rebuilt_rows): (i64, i64) = (live.try_get("n")?, rebuilt.try_get("n")?);
    let matches = live_rows == rebuilt_rows
        && live.try_get::<String, _>("h")? == rebuilt.try_get::<String, _>("h")?;
    let differences = if matches {
        vec![]
    } else {
        let one_side = |from: &str, minus: &str, label: &str| {
            format!(
                "(SELECT '{label}: ' || r FROM
                    (SELECT t::text AS r FROM {from}.{table} t
                     EXCEPT ALL SELECT t::text FROM {minus}.{table} t) d
                  ORDER BY r LIMIT {SHOWN_DIFFERENCES})"
            )
        };
        let sql = format!(
            "{} UNION ALL {}",
            one_side("public", &shadow, "only live"),
            one_side(&shadow, "public", "only rebuilt")
        );
        sqlx::query_scalar(&sql).fetch_all(&mut *conn).await?
    };
    Ok(TableCheck {
        projection,
        table,
        live_rows,
        rebuilt_rows,
        matches,
        differences,
    })
}
