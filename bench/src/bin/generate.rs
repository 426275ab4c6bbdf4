//! `generate --scale S [--seed N]`: writes the benchmark dataset into an empty event store
//! and, optionally, bearer tokens for a sample of users. See bench/README.md.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use murmur_bench::generate::{generate, Options};
use murmur_bench::tokens;

#[derive(Parser)]
#[command(about = "Write the seed's dataset as murmur events into an empty event store")]
struct Args {
    /// 1 = the seed's 1,091,000 users and 50,368,293 follows; 0.1 = a tenth of each.
    #[arg(long)]
    scale: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Rows per COPY transaction. Kept short: projectors in every database of the cluster
    /// wait for the oldest open write transaction (pg_snapshot_xmin is cluster-wide).
    #[arg(long, default_value_t = 50_000)]
    chunk_rows: u64,
    /// Keep the events indexes during the load (slower; default drops and rebuilds them).
    #[arg(long)]
    keep_indexes: bool,
    /// Skip the `credentials` rows.
    #[arg(long)]
    no_credentials: bool,
    /// Write `<user id> <token>` lines for a sample of users here (needs MURMUR_JWT_SECRET).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// How many users get a token (user 1 always does).
    #[arg(long, default_value_t = 10_000)]
    token_users: u64,
    #[arg(long, env = "MURMUR_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Only write `--tokens` for the dataset this scale and seed give (already generated).
    #[arg(long, requires = "tokens")]
    tokens_only: bool,
    /// Also write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Checked before a generation that can take many minutes, not after it.
    let secret = match &args.tokens {
        Some(_) => Some(
            args.jwt_secret
                .as_deref()
                .context("--tokens needs MURMUR_JWT_SECRET (the server's secret)")?,
        ),
        None => None,
    };
    if args.tokens_only {
        let users = murmur_bench::generate::Counts::at_scale(args.scale)?.users;
        return write_tokens(&args, secret, users);
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await
        .context("connecting to the database")?;
    // The same migrations murmur applies at start-up, so the server finds them done.
    sqlx::migrate!("../migrations")
        .run(&pool)
        .await
        .context("migrating the database")?;
    let options = Options {
        chunk_rows: args.chunk_rows,
        drop_indexes: !args.keep_indexes,
        credentials: !args.no_credentials,
        ..Options::new(args.scale, args.seed)
    };
    let report = generate(&pool, &options, |written, secs| {
        eprintln!(
            "  {written} events in {secs:.1}s ({:.0} events/s)",
            written as f64 / secs
        );
    })
    .await?;
    let c = &report.counts;
    println!(
        "scale {} seed {}: {} users, {} follows ({} of user 1), {} posts = {} events",
        args.scale, args.seed, c.users, c.follows, c.user1_followers, c.posts, report.events
    );
    println!(
        "COPY {:.1}s, indexes {:.1}s, total {:.1}s: {:.0} events/s",
        report.copy_seconds, report.index_seconds, report.total_seconds, report.events_per_second
    );
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    write_tokens(&args, secret, c.users)
}

/// `--tokens`, if asked, for a dataset of `users` users.
fn write_tokens(args: &Args, secret: Option<&str>, users: u64) -> Result<()> {
    if let (Some(path), Some(secret)) = (&args.tokens, secret) {
        let users = tokens::sample_users(users, args.token_users, args.seed);
        tokens::write_file(path, secret, &users)?;
        println!("{} tokens in {}", users.len(), path.display());
    }
    Ok(())
}
