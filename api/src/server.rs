//! Starting and stopping murmur: connect and migrate, build the state, serve HTTP (and run the
//! projectors in-process unless told not to), and shut down gracefully: in-flight requests
//! finish, projectors stop between batches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use murmur_projections::ReadModel;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{load_or_create_secret, TokenKeys};
use crate::commands::Commands;
use crate::config::Config;
use crate::http::{self, AppState};

/// Connects to PostgreSQL and applies the migrations.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&config.database_url)
        .await
        .with_context(|| format!("connecting to {}", redact(&config.database_url)))?;
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

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    http: JoinHandle<anyhow::Result<()>>,
}

/// Builds the application state over `pool`.
pub fn state(config: Config, pool: PgPool) -> anyhow::Result<AppState> {
    let secret = load_or_create_secret(config.jwt_secret.as_deref(), &config.data_dir)?;
    let read_model: Arc<dyn ReadModel> = todo_read_model(pool.clone());
    Ok(AppState {
        commands: Arc::new(Commands::new(pool.clone())),
        read_model,
        tokens: Arc::new(TokenKeys::new(&secret, config.token_ttl)),
        admin_token: config.admin_token.as_deref().map(Arc::from),
        config: Arc::new(config),
        pool,
    })
}

// INTEGRATION POINT (owned by the lead): replaced by the projections crate's PostgreSQL
// read model when it lands. Until then every read answers an error.
fn todo_read_model(_pool: PgPool) -> Arc<dyn ReadModel> {
    Arc::new(NoReadModel)
}

struct NoReadModel;

fn not_wired<T>() -> Result<T, murmur_projections::ReadError> {
    Err(murmur_projections::ReadError::Database(
        sqlx::Error::Protocol("read model not wired yet".into()),
    ))
}

#[async_trait::async_trait]
impl ReadModel for NoReadModel {
    async fn profile(
        &self,
        _: i64,
    ) -> Result<Option<murmur_projections::Profile>, murmur_projections::ReadError> {
        not_wired()
    }
    async fn profile_by_handle(
        &self,
        _: &str,
    ) -> Result<Option<murmur_projections::Profile>, murmur_projections::ReadError> {
        not_wired()
    }
    async fn feed(
        &self,
        _: i64,
        _: &murmur_projections::PageRequest,
    ) -> Result<murmur_projections::Page<murmur_projections::PostItem>, murmur_projections::ReadError>
    {
        not_wired()
    }
    async fn user_posts(
        &self,
        _: i64,
        _: &murmur_projections::PageRequest,
    ) -> Result<murmur_projections::Page<murmur_projections::PostItem>, murmur_projections::ReadError>
    {
        not_wired()
    }
    async fn followers(
        &self,
        _: i64,
        _: &murmur_projections::PageRequest,
    ) -> Result<
        murmur_projections::Page<murmur_projections::UserListItem>,
        murmur_projections::ReadError,
    > {
        not_wired()
    }
    async fn following(
        &self,
        _: i64,
        _: &murmur_projections::PageRequest,
    ) -> Result<
        murmur_projections::Page<murmur_projections::UserListItem>,
        murmur_projections::ReadError,
    > {
        not_wired()
    }
    async fn progress(
        &self,
        _: &[&str],
    ) -> Result<murmur_projections::Position, murmur_projections::ReadError> {
        not_wired()
    }
}

/// Starts serving on `config.listen` (port 0 picks a free port; see [`Server::addr`]).
pub async fn start(config: Config, pool: PgPool) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // INTEGRATION POINT (owned by the lead): spawn the projectors here unless
    // `config.no_projectors`, stopping on `stop`.
    let app = http::router(state(config, pool)?);
    let (stop, mut stopped) = watch::channel(false);
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
            .context("serving HTTP")
    });
    tracing::info!(%addr, "murmur listening");
    Ok(Server { addr, stop, http })
}

impl Server {
    /// Stops accepting connections, lets in-flight requests finish, stops the projectors.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.http.await.context("HTTP task panicked")?
    }
}
