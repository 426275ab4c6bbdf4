//! The `murmur` binary: `serve` (HTTP, with the projectors in-process unless
//! `--no-projectors`), `project` (the projectors only) and `migrate`.
//! Stops gracefully on SIGTERM or SIGINT.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use murmur_api::config::Config;
use murmur_api::server;
use murmur_projections::shutdown::Stop;
use tracing_subscriber::EnvFilter;

// glibc's malloc was a sixth of a memory-served feed request's CPU (perf, scale 1).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "murmur",
    version,
    about = "An event-sourced social network backend"
)]
struct Cli {
    /// Log line format. JSON lines carry the request id of every line logged in a request.
    #[arg(long, env = "MURMUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply migrations, then serve HTTP (and run the projectors unless --no-projectors).
    Serve(Config),
    /// Apply migrations, then run only the projectors.
    Project(Config),
    /// Apply migrations and exit.
    Migrate(Config),
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    murmur_api::http::health::prometheus();
    match cli.command {
        Command::Serve(config) => {
            let pool = server::connect_serve(&config).await?;
            let server = server::start(config, pool).await?;
            // Frozen read models must not keep answering: if the projectors stop, exit
            // non-zero so that a supervisor restarts the process.
            let stopped = tokio::select! {
                () = shutdown_signal() => None,
                reason = server.projectors_stopped() => Some(reason),
            };
            if let Some(reason) = stopped {
                tracing::error!(reason, "the projectors stopped; exiting");
                let _ = server.shutdown().await;
                anyhow::bail!("{reason}");
            }
            server.shutdown().await.context("shutting down")?;
            tracing::info!("stopped");
        }
        Command::Project(config) => {
            if config.read_database_url.is_some() {
                tracing::warn!("READ_DATABASE_URL is for read nodes: projectors read DATABASE_URL");
            }
            let pool = server::connect(&config).await?;
            tracing::info!("running the projectors");
            // The projections crate's runtime: every projection, until the signal.
            let stop = Stop::on(shutdown_signal());
            murmur_projections::run(pool, server::projector_config(&config), stop.shutdown())
                .await
                .context("running the projectors")?;
            tracing::info!("stopped");
        }
        Command::Migrate(config) => {
            server::connect(&config).await?;
            tracing::info!("migrations applied");
        }
    }
    Ok(())
}
