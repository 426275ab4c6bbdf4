//! The `replay` binary: `rebuild`, `verify` and `audit` (see `replay --help`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use murmur_projections::args::SharedArgs;
use murmur_projections::audit::AuditFilter;
use murmur_projections::read_model::names;
use murmur_projections::runtime::ProjectorConfig;
use murmur_projections::Position;
use murmur_replay::audit::{self, Format};
use murmur_replay::{rebuild, select, verify, Options, ProgressMode};
use sqlx::PgPool;

#[derive(Parser)]
#[command(
    name = "replay",
    about = "Rebuild and verify murmur's projections from the event log; read the audit trail"
)]
struct Cli {
    #[command(flatten)]
    shared: SharedArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rebuild projections from the whole log into shadow tables and swap them in while the
    /// API keeps serving the old ones; the live projector continues from the rebuild.
    Rebuild {
        /// Rebuild every projection.
        #[arg(
            long,
            conflicts_with = "projection",
            required_unless_present = "projection"
        )]
        all: bool,
        #[command(flatten)]
        replay: ReplayArgs,
    },
    /// Fold the log up to the live checkpoints and compare the result with the live tables
    /// row by row, as of one snapshot; exits 1 and names the first differing rows if they
    /// disagree.
    Verify {
        #[command(flatten)]
        replay: ReplayArgs,
    },
    /// Read the audit trail (events in commit order, older versions shown upcast).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// After restoring the database into another cluster (whose transaction ids are behind
    /// the log's): move the whole log into this cluster's past, keeping its order, and the
    /// checkpoints with it. Stop every murmur process first. Does nothing when not needed.
    Resequence,
}

#[derive(Args)]
struct ReplayArgs {
    /// A projection to work on (repeatable); verify takes all when none is named.
    #[arg(long, num_args = 1.., value_parser = PossibleValuesParser::new(names::ALL))]
    projection: Vec<String>,
    /// Events per batch (and per transaction).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    batch_size: i64,
    /// How long the hand-over may wait for the live projector and readers, in seconds.
    #[arg(long, default_value_t = 30)]
    lock_timeout: u64,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// One aggregate's history, e.g. `audit stream Post 42` or `audit stream Follow 3:7`.
    Stream {
        /// Handle, User, Follow or Post.
        aggregate_type: String,
        aggregate_id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Every event the user acted in or is the subject of.
    User {
        id: i64,
        #[command(flatten)]
        page: PageArgs,
    },
    /// The whole log in commit order (100 events unless --limit says otherwise).
    Log {
        /// Only events stamped at or after this time (RFC 3339, or a date YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Args)]
struct PageArgs {
    /// Start after this position ("<transaction id>:<position>", as the API shows them).
    #[arg(long)]
    after: Option<Position>,
    /// Print at most this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{text:?} is neither RFC 3339 (2026-01-02T03:04:05Z) nor a date"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        tokio::select! {
            result = run(cli) => match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => {
                // Dropping the work closes its connections: the server rolls back whatever
                // was in flight, the live tables stay as they were, the next run starts clean.
                eprintln!("interrupted: the live projections are untouched");
                ExitCode::from(130)
            }
        }
    })
}

async fn connect(url: &str) -> anyhow::Result<PgPool> {
    use murmur_projections::db;
    db::pool(db::options(url)?, 8, url).await
}

fn options(args: &ReplayArgs, shared: &SharedArgs) -> Options {
    Options {
        batch_size: args.batch_size,
        projector: ProjectorConfig {
            batch_size: args.batch_size,
            celebrity_threshold: shared.celebrity_threshold,
            ..ProjectorConfig::default()
        },
        lock_timeout: Duration::from_secs(args.lock_timeout),
        progress: ProgressMode::Auto,
        after_batch: None,
    }
}

/// Prints a verify report, a line per table and its first differing rows.
fn print_verify(report: &murmur_replay::rebuild::VerifyReport) -> ExitCode {
    for table in &report.tables {
        let at = report.at.get(table.projection).copied().unwrap_or_default();
        let verdict = if table.matches { "ok" } else { "DIFFERS" };
        let note = table.note.map(|n| format!(" ({n})")).unwrap_or_default();
        println!(
            "{verdict:<8} {}.{} at {at}: {} live rows, {} rebuilt{note}",
            table.projection, table.table, table.live_rows, table.rebuilt_rows
        );
        for difference in &table.differences {
            println!("         {difference}");
        }
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the live projections differ from a rebuild");
        ExitCode::FAILURE
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let pool = connect(&cli.shared.database_url).await?;
    match cli.command {
        Command::Rebuild { replay, .. } => {
            let options = options(&replay, &cli.shared);
            let projections = select(&replay.projection)?;
            let report = rebuild(&pool, projections, &options).await?;
            let p = &report.phases;
            println!(
                "rebuilt {}: {} events in {:.1}s ({:.0} events/s); checkpoint {}\n\
                 read+fold {:.1}s, write {:.1}s, index {:.1}s, catch-up {:.1}s, swap {:.2}s",
                report.projections.join(", "),
                report.events,
                report.seconds,
                report.events_per_second,
                report.checkpoint,
                p.read_and_fold,
                p.write,
                p.index,
                p.catch_up,
                p.swap
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { replay } => {
            let options = options(&replay, &cli.shared);
            let projections = select(&replay.projection)?;
            let report = verify(&pool, projections, &options).await?;
            Ok(print_verify(&report))
        }
        Command::Resequence => {
            let done = murmur_projections::log::restore::resequence(&pool).await?;
            if done.events == 0 {
                println!("the log is in this cluster's past already: nothing to do");
            } else {
                println!(
                    "resequenced {} events and {} checkpoints into this cluster's past",
                    done.events, done.checkpoints
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(command) => {
            let (filter, page, default_limit) = match command {
                AuditCommand::Stream {
                    aggregate_type,
                    aggregate_id,
                    page,
                } => (
                    AuditFilter::Stream {
                        aggregate_type,
                        aggregate_id,
                    },
                    page,
                    None,
                ),
                AuditCommand::User { id, page } => (AuditFilter::User(id), page, None),
                AuditCommand::Log { since, page } => (AuditFilter::All { since }, page, Some(100)),
            };
            let mut conn = pool.acquire().await.context("connecting to the database")?;
            let format = if page.json {
                Format::JsonLines
            } else {
                Format::Table
            };
            let mut out = std::io::stdout().lock();
            audit::print(
                &mut conn,
                &filter,
                page.after.unwrap_or(Position::START),
                page.limit.or(default_limit),
                format,
                &mut out,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
