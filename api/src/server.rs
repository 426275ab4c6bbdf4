//! Starting and stopping murmur: connect and migrate, build the state, serve HTTP (and run the
//! projectors in-process unless told not to), and shut down gracefully: in-flight requests
//! finish, projectors stop between batches.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use murmur_projections::runtime::{self as projectors, ProjectorConfig, Wake};
use murmur_projections::{CheckpointView, Image, MemReadModel, PgReadModel, ReadModel, Role};
use sqlx::PgPool;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::auth::{load_or_create_secret, TokenKeys};
use crate::commands::Commands;
use crate::config::Config;
use crate::http::{self, AppState};

/// Connects to PostgreSQL and applies the migrations.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    use murmur_projections::db;
    // Every statement is a keyed lookup, a short page or a count of a backlog whose row
    // estimate the planner inflates: compiling them with JIT costs more than running them.
    let options = db::options(&config.database_url)?.options([("jit", "off")]);
    let pool = db::pool(options, config.db_pool_size, &config.database_url).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies `migrations/` (embedded at build time).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations")
        .run(pool)
        .await
        .context("applying migrations")
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    http: JoinHandle<anyhow::Result<()>>,
    projectors: JoinHandle<anyhow::Result<()>>,
    image: Image,
    /// Keeps the read model's in-memory checkpoints current; stopped after HTTP, so that
    /// requests still waiting for a position keep being woken.
    checkpoints: (oneshot::Sender<()>, JoinHandle<()>),
}

/// The projectors' settings from the server's configuration.
pub fn projector_config(config: &Config) -> ProjectorConfig {
    ProjectorConfig {
        celebrity_threshold: config.celebrity_threshold,
        poll_interval: config.poll_interval,
        ..ProjectorConfig::default()
    }
}

/// Builds the application state over `pool`, queries answered by `read_model`, commands
/// waking the projectors through `wake`.
pub fn state(
    config: Config,
    pool: PgPool,
    read_model: Arc<dyn ReadModel>,
    image: Image,
    wake: Wake,
) -> anyhow::Result<AppState> {
    let secret = load_or_create_secret(config.jwt_secret.as_deref(), &config.data_dir)?;
    if let Some(token) = config.admin_token.as_deref().filter(|t| !t.is_empty()) {
        crate::auth::check_secret_length("MURMUR_ADMIN_TOKEN", token)?;
    }
    Ok(AppState {
        commands: Arc::new(Commands::new(pool.clone(), image.clone(), wake)),
        read_model,
        tokens: Arc::new(TokenKeys::new(&secret, config.token_ttl)),
        admin_token: config.admin_token.as_deref().map(Arc::from),
        config: Arc::new(config),
        pool,
        image,
        login_throttle: Arc::default(),
    })
}

/// Starts serving on `config.listen` (port 0 picks a free port; see [`Server::addr`]).
pub async fn start(config: Config, pool: PgPool) -> anyhow::Result<Server> {
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
    projectors::check_settings(&pool, &projector_config).await?;
    let checkpoints = CheckpointView::load(pool.clone())
        .await
        .context("reading the projection checkpoints")?;
    let (stop_checkpoints, checkpoints_stopped) = oneshot::channel::<()>();
    let checkpoint_listener = checkpoints.spawn_listener(async move {
        let _ = checkpoints_stopped.await;
    });
    // Reads come from the image the projector tasks keep (loaded in the background: until
    // then queries answer 503 and /readyz says loading).
    let image = Image::new(&projector_config.settings());
    let tables = PgReadModel::with_checkpoints(pool.clone(), checkpoints);
    let read_model = Arc::new(MemReadModel::new(image.clone(), tables));
    let limits = http::serve::Limits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_timeout,
        shutdown_grace: config.shutdown_grace,
    };
    let wake = Wake::new();
    let state = state(
        config,
        pool.clone(),
        read_model,
        image.clone(),
        wake.clone(),
    )?;
    // Registrations a crash cut between the handle claim and UserRegistered; in the
    // background, since login and registering the handle again complete them on demand.
    let (commands, loading) = (state.commands.clone(), state.image.clone());
    tokio::spawn(async move {
        // After the image has loaded: not competing with it for the database.
        loading.loaded().await;
        match commands
            .complete_interrupted_registrations(crate::commands::COMPLETION_PAGE)
            .await
        {
            Ok(0) => {}
            Ok(completed) => tracing::info!(completed, "completed interrupted registrations"),
            Err(e) => tracing::error!(error = ?e, "completing interrupted registrations failed"),
        }
    });
    let app = http::router(state);
    let (stop, stopped) = watch::channel(false);
    let projectors = {
        let mut stopped = stopped.clone();
        projectors::spawn_into(
            pool,
            projector_config,
            image.clone(),
            role,
            wake,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )
    };
    let mut stopped = stopped;
    let http = tokio::spawn(async move {
        http::serve::serve(listener, app, limits, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await;
        anyhow::Ok(())
    });
    tracing::info!(%addr, "murmur listening");
    Ok(Server {
        addr,
        stop,
        http,
        projectors,
        checkpoints: (stop_checkpoints, checkpoint_listener),
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
        let _ = self.stop.send(true);
        let served = self.http.await.context("HTTP task panicked");
        let (stop_checkpoints, checkpoint_listener) = self.checkpoints;
        let _ = stop_checkpoints.send(());
        checkpoint_listener
            .await
            .context("checkpoint listener panicked")?;
        let served = served?;
        self.projectors.await.context("projector task panicked")??;
        served
    }
}
