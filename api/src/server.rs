//! Starting and stopping murmur: connect and migrate, build the state, serve HTTP (and run the
//! projectors in-process unless told not to), and shut down gracefully: in-flight requests
//! finish, projectors stop between batches.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use murmur_projections::db;
use murmur_projections::runtime::{self as projectors, Databases, ProjectorConfig, Wake};
use murmur_projections::shutdown::Stop;
use murmur_projections::state::feeds::Folding;
use murmur_projections::{CheckpointView, Image, MemReadModel, PgReadModel, ReadModel, Role};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::auth::{load_or_create_secret, TokenKeys};
use crate::commands::Commands;
use crate::config::Config;
use crate::http::{self, AppState, Shared};

/// `migrations/`, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// `url`'s connection options. Every statement is a keyed lookup, a short page or a count of
/// a backlog whose row estimate the planner inflates: compiling them with JIT costs more
/// than running them.
fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(db::options(url)?.options([("jit", "off")]))
}

/// Connects to PostgreSQL and applies the migrations.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options = connect_options(&config.shared.database_url)?;
    let pool = db::pool(options, config.db_pool_size, &config.shared.database_url).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// The primary's pool for `murmur serve`: [`connect`]; but a read node that reads a hot
/// standby (`READ_DATABASE_URL`) migrates nothing and connects to the primary only when a
/// command needs it, so that it serves reads while the primary is away.
pub async fn connect_serve(config: &Config) -> anyhow::Result<PgPool> {
    check_read_source(config)?;
    if config.read_database_url.is_none() {
        return connect(config).await;
    }
    let options = connect_options(&config.shared.database_url)?;
    Ok(db::lazy_pool(options, config.db_pool_size))
}

/// Applies `migrations/`.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")
}

/// `READ_DATABASE_URL` is a read node's alone: projectors write their tables where they
/// read the log.
fn check_read_source(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.read_database_url.is_none() || config.no_projectors,
        "READ_DATABASE_URL (--read-database-url) is for read nodes (`murmur serve \
         --no-projectors`): projectors read the log where they write it, at DATABASE_URL"
    );
    Ok(())
}

/// Where the node reads the log and the tables: `pool`, or the hot standby
/// `READ_DATABASE_URL` names once it holds this build's schema.
async fn read_pool(config: &Config, pool: &PgPool) -> anyhow::Result<PgPool> {
    let Some(url) = &config.read_database_url else {
        return Ok(pool.clone());
    };
    let read = db::pool(connect_options(url)?, config.db_pool_size, url).await?;
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&read)
            .await
        {
            Ok(applied) => applied,
            // 42P01: undefined_table, nothing migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(anyhow::Error::new(e).context("reading the standby's schema")),
        };
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the database at READ_DATABASE_URL ({}) lacks migrations {missing:?}: run `murmur \
         migrate` (or start a projector node) against the primary, DATABASE_URL, and let the \
         standby replay them",
        db::redact(url)
    );
    warn_about_standby(&read).await?;
    Ok(read)
}

/// Logs what makes a read source a poor one: not a standby at all, or a standby whose
/// primary may cancel the node's long reads.
async fn warn_about_standby(read: &PgPool) -> anyhow::Result<()> {
    let (standby, feedback): (bool, String) =
        sqlx::query_as("SELECT pg_is_in_recovery(), current_setting('hot_standby_feedback')")
            .fetch_one(read)
            .await
            .context("asking the read database what it is")?;
    if !standby {
        tracing::warn!(
            "READ_DATABASE_URL is not a hot standby: it must be the primary itself or a \
             streaming (physical) replica of it, since the log is ordered by the primary's \
             transaction ids"
        );
    } else if feedback != "on" {
        tracing::warn!(
            "hot_standby_feedback is off on the standby: the primary may clean up rows the \
             node's long reads (loading the image) still need, and replay then cancels them"
        );
    }
    Ok(())
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub addr: SocketAddr,
    stop: Stop,
    http: JoinHandle<anyhow::Result<()>>,
    projectors: JoinHandle<anyhow::Result<()>>,
    image: Image,
    /// Keeps the read model's in-memory checkpoints current; stopped after HTTP, so that
    /// requests still waiting for a position keep being woken.
    checkpoints: (Stop, JoinHandle<()>),
}

/// The projectors' settings from the server's configuration.
pub fn projector_config(config: &Config) -> ProjectorConfig {
    ProjectorConfig {
        celebrity_threshold: config.shared.celebrity_threshold,
        poll_interval: config.poll_interval,
        flush_interval: config.flush_interval,
        folding: Folding {
            after: config.inbox_fold_after,
            ..Folding::default()
        },
        ..ProjectorConfig::default()
    }
}

/// Builds the application state: commands written to `pool` (the primary), waking the
/// projectors through `wake`; queries answered by `read_model`; the rest read from
/// `read_pool` (the primary, or a read node's standby).
pub fn state(
    config: Config,
    pool: PgPool,
    read_pool: PgPool,
    read_model: Arc<dyn ReadModel>,
    image: Image,
    wake: Wake,
) -> anyhow::Result<AppState> {
    let secret = load_or_create_secret(config.jwt_secret.as_deref(), &config.data_dir)?;
    if let Some(token) = config.admin_token.as_deref().filter(|t| !t.is_empty()) {
        crate::auth::check_secret_length("MURMUR_ADMIN_TOKEN", token)?;
    }
    Ok(AppState::new(Shared {
        commands: Arc::new(Commands::new(pool.clone(), image.clone(), wake)),
        read_model,
        tokens: Arc::new(TokenKeys::new(&secret, config.token_ttl)),
        admin_token: config.admin_token.as_deref().map(Arc::from),
        config: Arc::new(config),
        pool,
        read_pool,
        image,
        login_throttle: Arc::default(),
    }))
}

/// What queries read: the memory image (loaded by the projector tasks in the background:
/// until then queries answer 503 and /readyz says loading) and, for the follower lists, the
/// tables with their checkpoints, kept current by a listener stopped through its `Stop`.
struct ReadSide {
    image: Image,
    read_model: Arc<dyn ReadModel>,
    checkpoints: (Stop, JoinHandle<()>),
}

async fn read_side(read_pool: &PgPool, config: &ProjectorConfig) -> anyhow::Result<ReadSide> {
    let checkpoints = CheckpointView::load(read_pool.clone())
        .await
        .context("reading the projection checkpoints")?;
    let stop_checkpoints = Stop::new();
    let checkpoint_listener = checkpoints.spawn_listener(stop_checkpoints.shutdown());
    let image = Image::new(&config.settings());
    let tables = PgReadModel::with_checkpoints(read_pool.clone(), checkpoints);
    Ok(ReadSide {
        read_model: Arc::new(MemReadModel::new(image.clone(), tables)),
        image,
        checkpoints: (stop_checkpoints, checkpoint_listener),
    })
}

/// Completes the registrations a crash cut between the handle claim and UserRegistered; in
/// the background, since login and registering the handle again complete them on demand.
fn complete_registrations(commands: Arc<Commands>, image: Image) {
    tokio::spawn(async move {
        // After the image has loaded: not competing with it for the database.
        image.loaded().await;
        match commands
            .complete_interrupted_registrations(crate::commands::COMPLETION_PAGE)
            .await
        {
            Ok(0) => {}
            Ok(completed) => tracing::info!(completed, "completed interrupted registrations"),
            Err(e) => tracing::error!(error = ?e, "completing interrupted registrations failed"),
        }
    });
}

/// Starts serving on `config.listen` (port 0 picks a free port; see [`Server::addr`]), with
/// commands written to `pool`; a read node with `READ_DATABASE_URL` reads its standby.
pub async fn start(config: Config, pool: PgPool) -> anyhow::Result<Server> {
    check_read_source(&config)?;
    let read_pool = read_pool(&config, &pool).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let role = if config.no_projectors {
        Role::ReadNode
    } else {
        Role::Projector
    };
    let projector_config = projector_config(&config);
    // Refuse to start, rather than fail in the background, on tables built otherwise.
    projectors::check_settings(&read_pool, &projector_config).await?;
    let read = read_side(&read_pool, &projector_config).await?;
    let limits = http::serve::Limits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_timeout,
        shutdown_grace: config.shutdown_grace,
    };
    let wake = Wake::new();
    let image = read.image.clone();
    let state = state(
        config,
        pool.clone(),
        read_pool.clone(),
        read.read_model,
        image.clone(),
        wake.clone(),
    )?;
    complete_registrations(state.commands.clone(), state.image.clone());
    let app = http::router(state);
    let stop = Stop::new();
    let projectors = {
        let db = Databases {
            log: read_pool,
            primary: pool,
        };
        projectors::spawn_into(
            db,
            projector_config,
            image.clone(),
            role,
            wake,
            stop.shutdown(),
        )
    };
    let serving = stop.shutdown();
    let http = tokio::spawn(async move {
        http::serve::serve(listener, app, limits, serving).await;
        anyhow::Ok(())
    });
    tracing::info!(%addr, "murmur listening");
    Ok(Server {
        addr,
        stop,
        http,
        projectors,
        checkpoints: read.checkpoints,
        image,
    })
}

impl Server {
    /// Waits until the memory image is loaded: from then on queries answer (before, 503).
    pub async fn ready(&self) {
        self.image.loaded().await;
    }

    /// Waits until the projector runtime stops (it should not before shutdown); why.
    pub async fn projectors_stopped(&self) -> String {
        self.image.wait_stopped().await
    }

    /// Stops accepting connections, lets in-flight requests finish, stops the projectors
    /// and the checkpoint listener.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.stop();
        let served = self.http.await.context("HTTP task panicked");
        let (stop_checkpoints, checkpoint_listener) = self.checkpoints;
        stop_checkpoints.stop();
        checkpoint_listener
            .await
            .context("checkpoint listener panicked")?;
        let served = served?;
        self.projectors.await.context("projector task panicked")??;
        served
    }
}
