//! `stream`: live projector throughput. Appends a sustained mixed stream of events (see
//! `murmur_bench::stream`) straight into the log of a database a `murmur serve` (or `murmur
//! project` beside a read node) is running on, at `--rate` events/s for `--duration`, and
//! samples the server's `/metrics` meanwhile: how many events each projection applied, how
//! far memory and the durable copies trailed. Then it times how long each takes to catch up.
//! Prints a summary and a `BENCH_JSON` line. See bench/README.md.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use murmur_bench::stream::{Mix, Next, Stream};
use murmur_domain::EventMetadata;
use murmur_projections::Position;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

#[derive(Parser)]
#[command(about = "Append a sustained mixed stream into murmur's log; measure the projectors")]
struct Args {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The murmur server whose projectors are measured.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    server: String,
    /// Events appended per second.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Statements appending at once (each a short transaction of its own).
    #[arg(long, default_value_t = 2)]
    writers: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Instead of a paced stream: append this many events while an open transaction holds
    /// every reader of the log back, then end it and time how fast the projectors apply
    /// the backlog (their throughput, apart from what appending costs).
    #[arg(long)]
    backlog: Option<u64>,
}

/// One sample of the server's gauges: per projection (in `/metrics` order) the events
/// applied, the memory lag (events, seconds) and the durable lag (events).
#[derive(Debug, Default, Clone)]
struct Sample {
    /// Events each projection has gone past, by projection.
    applied: std::collections::BTreeMap<String, f64>,
    lag_events: f64,
    lag_seconds: f64,
    durable_lag_events: f64,
}

/// `name`'s series: (labels, value).
fn series<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        Some((labels, value.parse().ok()?))
    })
}

fn most(text: &str, name: &str) -> f64 {
    series(text, name).map(|(_, v)| v).fold(0.0, f64::max)
}

impl Sample {
    /// Events the slowest projection applied since `before`.
    fn applied_since(&self, before: &Sample) -> f64 {
        self.applied
            .iter()
            .map(|(p, n)| n - before.applied.get(p).copied().unwrap_or(0.0))
            .fold(f64::MAX, f64::min)
    }
}

async fn sample(client: &reqwest::Client, server: &str) -> Result<Sample> {
    let text = client
        .get(format!("{server}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(Sample {
        applied: series(&text, "murmur_projection_events_applied_total")
            .map(|(labels, v)| (labels.to_string(), v))
            .collect(),
        // The slowest projection bounds what the node serves.
        lag_events: most(&text, "murmur_projection_lag_events"),
        lag_seconds: most(&text, "murmur_projection_lag_seconds"),
        durable_lag_events: most(&text, "murmur_projection_durable_lag_events"),
    })
}

/// Reserves `n` ids of a sequence; answers the first.
async fn reserve(pool: &PgPool, sequence: &str, n: i64) -> Result<i64> {
    let first: i64 = sqlx::query_scalar(&format!(
        "SELECT setval('{sequence}', nextval('{sequence}') + $1) - $1 + 1"
    ))
    .bind(n)
    .fetch_one(pool)
    .await
    .with_context(|| format!("reserving {n} ids of {sequence}"))?;
    Ok(first)
}

/// Appends `events` in one statement (one transaction), dated now; answers the last position.
async fn append(pool: &PgPool, events: &[Next]) -> Result<Position> {
    let metadata = EventMetadata {
        actor_id: None,
        request_id: "stream-bench".into(),
        time: chrono::Utc::now(),
    }
    .to_json();
    let (mut types, mut ids, mut seqs, mut kinds, mut versions, mut payloads) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for next in events {
        let (aggregate_type, id, kind, version, payload) = next.event.encode();
        types.push(aggregate_type);
        ids.push(id);
        seqs.push(next.sequence);
        kinds.push(kind);
        versions.push(version);
        payloads.push(payload);
    }
    let rows = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload, metadata)
         SELECT t, i, s, k, v, p, $7 FROM UNNEST($1::text[], $2::text[], $3::bigint[],
                                                 $4::text[], $5::text[], $6::jsonb[])
              AS e(t, i, s, k, v, p)
         RETURNING transaction_id::text AS xid, position",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&seqs)
    .bind(&kinds)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .fetch_all(pool)
    .await
    .context("appending the stream")?;
    let mut last = Position::START;
    for row in &rows {
        last = last.max(Position::from_row(row)?);
    }
    Ok(last)
}

/// The least in-memory position `/readyz` reports.
async fn memory_position(client: &reqwest::Client, server: &str) -> Result<Position> {
    let body: serde_json::Value = client
        .get(format!("{server}/readyz"))
        .send()
        .await?
        .json()
        .await?;
    let mut least: Option<Position> = None;
    for m in body["memory"]
        .as_array()
        .context("/readyz without memory")?
    {
        let at: Position = m["position"]
            .as_str()
            .context("a position")?
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        least = Some(least.map_or(at, |l| l.min(at)));
    }
    least.context("no projection in /readyz")
}

async fn durable_position(pool: &PgPool) -> Result<Position> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS xid, position FROM projection_checkpoints
         ORDER BY transaction_id, position LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    Ok(Position::from_row(&row)?)
}

fn p99(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get((xs.len() as f64 * 0.99) as usize)
        .or(xs.last())
        .copied()
        .unwrap_or(0.0)
}

/// Appends `n` events as fast as `writers` statements at a time allow.
async fn append_all(
    pool: &PgPool,
    stream: &mut Stream,
    n: u64,
    writers: usize,
) -> Result<Position> {
    let (mut appended, mut last) = (0u64, Position::START);
    let mut in_flight = tokio::task::JoinSet::new();
    while appended < n || !in_flight.is_empty() {
        while appended < n && in_flight.len() < writers {
            let mut events = Vec::new();
            while (events.len() as u64) < (n - appended).min(5_000) {
                stream.next_into(&mut events);
            }
            appended += events.len() as u64;
            let pool = pool.clone();
            in_flight.spawn(async move { append(&pool, &events).await });
        }
        if let Some(done) = in_flight.join_next().await {
            last = last.max(done??);
        }
    }
    Ok(last)
}

/// `--backlog`: see [`Args::backlog`].
async fn backlog(args: &Args, pool: &PgPool, stream: &mut Stream, n: u64) -> Result<()> {
    let client = reqwest::Client::new();
    let mut holder = pool.begin().await?;
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *holder)
        .await?;
    let started = Instant::now();
    let last = append_all(pool, stream, n, args.writers).await?;
    let appended_in = started.elapsed().as_secs_f64();
    let from = memory_position(&client, &args.server).await?;
    let released = Instant::now();
    holder.rollback().await?;
    while memory_position(&client, &args.server).await? < last {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let memory = released.elapsed().as_secs_f64();
    while durable_position(pool).await? < last {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let durable = released.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "backlog": n,
        "appended_seconds": appended_in,
        "memory_from": from.to_string(),
        "memory_seconds": memory,
        "applied_per_second": n as f64 / memory,
        "durable_seconds": durable,
        "durable_per_second": n as f64 / durable,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!("BENCH_JSON {summary}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pool = PgPoolOptions::new()
        .max_connections(args.writers as u32 + 2)
        .connect(&args.database_url)
        .await
        .context("connecting")?;
    let users: i64 = sqlx::query_scalar("SELECT max(user_id) FROM profiles")
        .fetch_one(&pool)
        .await?;
    let total = args.backlog.unwrap_or(args.rate * args.duration);
    let first_user = reserve(&pool, "user_ids", total as i64).await?;
    let first_post = reserve(&pool, "post_ids", total as i64).await?;
    let mut stream = Stream::new(Mix::default(), args.seed, users, first_user, first_post);
    if let Some(n) = args.backlog {
        return backlog(&args, &pool, &mut stream, n).await;
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    let before = sample(&client, &args.server).await?;
    println!(
        "stream: {} events/s for {} s over {users} users ({} writers)",
        args.rate, args.duration, args.writers
    );

    // Writers append every 10 ms what the rate owes by then; the sampler runs beside them.
    let tick = Duration::from_millis(10);
    let mut appended = 0u64;
    let mut last = Position::START;
    let mut samples = vec![before.clone()];
    let mut next_sample = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let end = started + Duration::from_secs(args.duration);
    while Instant::now() < end {
        let owed = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
        while appended < owed.min(total) && in_flight.len() < args.writers {
            let mut events = Vec::new();
            while (events.len() as u64) < (owed - appended).min(5_000) {
                stream.next_into(&mut events);
            }
            appended += events.len() as u64;
            let pool = pool.clone();
            in_flight.spawn(async move { append(&pool, &events).await });
        }
        if let Some(done) = in_flight.try_join_next() {
            last = last.max(done??);
        }
        if Instant::now() >= next_sample {
            samples.push(sample(&client, &args.server).await?);
            next_sample += Duration::from_millis(250);
        }
        tokio::time::sleep(tick).await;
    }
    while let Some(done) = in_flight.join_next().await {
        last = last.max(done??);
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let stopped = Instant::now();
    while memory_position(&client, &args.server).await? < last {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let memory_drain = stopped.elapsed().as_secs_f64();
    let after = sample(&client, &args.server).await?;
    while durable_position(&pool).await? < last {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let durable_drain = stopped.elapsed().as_secs_f64();

    let during: Vec<&Sample> = samples.iter().skip(1).collect();
    let applied_during = samples.last().map_or(0.0, |s| s.applied_since(&before));
    let summary = serde_json::json!({
        "rate": args.rate,
        "appended": appended,
        "appended_per_second": appended as f64 / load_seconds,
        "applied_per_second_during_load": applied_during / load_seconds,
        "applied_per_second_to_drained": after.applied_since(&before) / (load_seconds + memory_drain),
        "p99_lag_seconds": p99(during.iter().map(|s| s.lag_seconds).collect()),
        "max_lag_seconds": during.iter().map(|s| s.lag_seconds).fold(0.0, f64::max),
        "p99_lag_events": p99(during.iter().map(|s| s.lag_events).collect()),
        "max_durable_lag_events": during.iter().map(|s| s.durable_lag_events).fold(0.0, f64::max),
        "memory_drain_seconds": memory_drain,
        "durable_drain_seconds": durable_drain,
        "next_ids": stream.next_ids(),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!("BENCH_JSON {summary}");
    Ok(())
}
