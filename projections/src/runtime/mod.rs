//! The projector runtime: per projection, a task that folds the log into the node's memory
//! image ([`Image`]) in commit order and, on the node that leads it, keeps its durable copy
//! in step.
//!
//! - [`live`]: the image readers share, and how the projector writes it without making
//!   readers wait for more than [`live::MAX_HOLD`].
//! - [`projector`]: one projection being applied ([`Projector`]): load, step, flush.
//! - [`leader`]: the tasks: lead, or follow without writing ([`Role`]).
//!
//! Only one process leads a projection: it holds a session-level advisory lock on its own
//! connection; the others follow the log into their own image and try for the lock every
//! `standby_retry`. Leading starts by loading the state from its tables at their checkpoint
//! (one snapshot); writing the durable copy is also a compare-and-set on the checkpoint, so
//! even two leaders could not apply an event twice. The state moves one batch at a time,
//! in memory; the durable copy follows on a task of its own (every `flush_interval` under
//! load, at once when idle), so applying never waits for a commit. Any failure ends the
//! leadership; the next one reloads the copy and re-applies the log from its checkpoint.
//! Tasks wake when this process's commands commit, on other processes' `NOTIFY
//! murmur_events` (see [`crate::log::wake`]: never sent inside an appending transaction) or,
//! on a read node that reads a hot standby ([`Databases`]), when the standby has replayed
//! more ([`crate::log::standby`]), and poll every `poll_interval` as a fallback; while
//! batches come back full they loop at once.

pub mod leader;
pub mod live;
pub mod projector;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::task::JoinHandle;

pub use crate::log::wake::{Wake, CHANNEL};
pub use leader::Role;
pub use live::{Blocker, Health, Image, Live};
pub use projector::{Projector, Stale, Step};

use crate::log::checkpoint;
use crate::projection::Kind;
use crate::read_model::names;
use crate::shutdown::Shutdown;
use crate::store::Settings;
use crate::Position;

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
    /// Post bodies held per author (`state::posts::RESIDENT_POSTS`).
    pub resident_posts: usize,
    /// How the inbox journal is folded into whole rows.
    pub folding: crate::state::feeds::Folding,
    /// Longest the durable copy trails memory while events keep coming.
    pub flush_interval: Duration,
    /// Flush sooner once this many rows are pending.
    pub flush_rows: usize,
    /// After the log has been quiet this long, a journal in the durable copy is folded into
    /// whole rows.
    pub rest: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            poll_interval: Duration::from_millis(500),
            standby_retry: Duration::from_secs(2),
            celebrity_threshold: crate::state::feeds::DEFAULT_CELEBRITY_THRESHOLD,
            resident_posts: crate::state::posts::RESIDENT_POSTS,
            folding: crate::state::feeds::Folding::default(),
            flush_interval: Duration::from_millis(500),
            flush_rows: 500_000,
            rest: Duration::from_secs(10),
        }
    }
}

impl ProjectorConfig {
    pub fn settings(&self) -> Settings {
        Settings {
            celebrity_threshold: self.celebrity_threshold,
            resident_posts: self.resident_posts,
            folding: self.folding,
        }
    }
}

/// The databases a node's projector tasks use.
#[derive(Debug, Clone)]
pub struct Databases {
    /// Where the log is read and the projections loaded from: the primary, or on a read
    /// node with `READ_DATABASE_URL` a hot standby of it.
    pub log: PgPool,
    /// The primary: where this process's commits are announced, and what a standby's lag
    /// is measured against.
    pub primary: PgPool,
}

impl Databases {
    /// The log read where it is written.
    pub fn one(pool: PgPool) -> Self {
        Self {
            log: pool.clone(),
            primary: pool,
        }
    }
}

/// Every projection.
pub fn projections(_config: &ProjectorConfig) -> Vec<Kind> {
    Kind::ALL.to_vec()
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
            projector.flush_journal(&mut conn).await?;
        }
    }
    projector.flush(&mut conn).await?;
    sqlx::Connection::close(conn).await.context("closing")?;
    Ok(applied)
}

/// How soon a leader looks again when committed events wait behind an in-flight transaction.
pub(crate) const HELD_BACK_RETRY: Duration = Duration::from_millis(20);

/// A projection's durable progress, as [`status`] measures it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub checkpoint: Position,
    /// Committed events not applied yet.
    pub lag_events: i64,
    /// Age of the oldest committed event not applied yet (0 when caught up).
    pub lag_seconds: f64,
}

/// Every projection's durable checkpoint and exact lag: a count over each backlog, for tools
/// and tests (`/readyz` reads the projector tasks' own figures instead).
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

/// Checks that the log belongs to this cluster ([`crate::log::restore::check`]) and every
/// projection's stored settings against `config` (see [`checkpoint::check_settings`]): a
/// server refuses to start otherwise.
pub async fn check_settings(pool: &PgPool, config: &ProjectorConfig) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("connecting")?;
    crate::log::restore::check(&mut conn).await?;
    for kind in projections(config) {
        checkpoint::check_settings(&mut conn, kind.name(), &kind.identity(&config.settings()))
            .await?;
    }
    Ok(())
}

/// Runs every projection into a fresh image until `shutdown` is told, leading where it can
/// (see [`leader::run`]).
pub async fn run(pool: PgPool, config: ProjectorConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    let image = Image::new(&config.settings());
    let db = Databases::one(pool);
    leader::run(db, config, image, Role::Projector, Wake::new(), shutdown).await
}

/// [`run`] on its own task.
pub fn spawn(
    pool: PgPool,
    config: ProjectorConfig,
    shutdown: Shutdown,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(run(pool, config, shutdown))
}

/// [`leader::run`] into `image`, woken through `wake`, on its own task.
pub fn spawn_into(
    db: Databases,
    config: ProjectorConfig,
    image: Image,
    role: Role,
    wake: Wake,
    shutdown: Shutdown,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let up = metrics::gauge!("murmur_projectors_up");
        up.set(1.0);
        let result = leader::run(db, config, image.clone(), role, wake, shutdown).await;
        up.set(0.0);
        image.mark_stopped(match &result {
            Ok(()) => "the projectors were stopped".to_string(),
            Err(e) => format!("the projectors failed: {e:#}"),
        });
        result
    })
}
