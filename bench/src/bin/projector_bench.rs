//! `projector_bench`: projector throughput (events/s) for registration, follow and post
//! events, and how long a post by an author with a million followers takes to reach their
//! feeds. Creates (and finally drops) its own database; writes the log with multi-row
//! INSERTs in short transactions, as `MurmurEvent::encode` and `EventMetadata::to_json` say.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use murmur_domain::{
    EventMetadata, FollowEvent, HandleEvent, MurmurEvent, PostEvent, UserEvent, UserId,
};
use murmur_projections::runtime::{catch_up_projection, projections, spawn, ProjectorConfig};
use murmur_projections::{PageRequest, PgReadModel, ReadModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

#[derive(Parser)]
#[command(about = "Measure murmur's projectors")]
struct Args {
    /// Server to create the bench database on (any existing database of it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    #[arg(long, default_value = "murmur_projbench")]
    database: String,
    /// Users; all but user 1 follow user 1 (the celebrity).
    #[arg(long, default_value_t = 1_000_000)]
    users: i64,
    /// Further follows between random users.
    #[arg(long, default_value_t = 1_000_000)]
    random_follows: i64,
    /// Posts by random users other than user 1.
    #[arg(long, default_value_t = 200_000)]
    posts: i64,
    /// Celebrity posts to time.
    #[arg(long, default_value_t = 5)]
    celebrity_posts: i64,
    #[arg(long, default_value_t = 2_000)]
    batch_size: i64,
    /// Keep the database afterwards.
    #[arg(long)]
    keep: bool,
}

/// Event times one millisecond apart from a fixed start.
struct Clock(DateTime<Utc>);

impl Clock {
    fn tick(&mut self) -> EventMetadata {
        self.0 += chrono::Duration::milliseconds(1);
        EventMetadata {
            actor_id: None,
            request_id: "bench".into(),
            time: self.0,
        }
    }
}

/// Appends events (each the first of its stream) in transactions of 10,000.
async fn append(pool: &PgPool, clock: &mut Clock, events: &[MurmurEvent]) -> Result<()> {
    for chunk in events.chunks(10_000) {
        let (mut types, mut ids, mut kinds, mut versions, mut payloads, mut metadata) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for event in chunk {
            let (aggregate_type, id, kind, version, payload) = event.encode();
            types.push(aggregate_type);
            ids.push(id);
            kinds.push(kind);
            versions.push(version);
            payloads.push(payload);
            metadata.push(clock.tick().to_json());
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             SELECT t, i, 1, k, v, p, m
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[])
                  AS e(t, i, k, v, p, m)",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&kinds)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .execute(pool)
        .await
        .context("appending events")?;
    }
    Ok(())
}

/// Brings every projection up to date, one after the other; prints and returns the seconds
/// each took.
async fn catch_up_timed(
    pool: &PgPool,
    config: &ProjectorConfig,
    what: &str,
    events: usize,
) -> Result<f64> {
    let mut total = 0.0;
    for projection in projections(config) {
        let started = Instant::now();
        let applied = catch_up_projection(pool, projection, config).await?;
        let secs = started.elapsed().as_secs_f64();
        total += secs;
        println!(
            "  {what}: {:<8} {applied} events in {secs:.2}s = {:.0} events/s",
            projection.name(),
            applied as f64 / secs
        );
    }
    println!(
        "  {what}: all three projections, {events} events in {total:.2}s = {:.0} events/s",
        events as f64 / total
    );
    Ok(total)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut admin = PgConnection::connect(&args.admin_url)
        .await
        .context("connecting to the server")?;
    let db = &args.database;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    let url = match args.admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{db}"),
        None => anyhow::bail!("--admin-url needs a database name"),
    };
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .context("connecting to the bench database")?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    let config = ProjectorConfig {
        batch_size: args.batch_size,
        ..ProjectorConfig::default()
    };
    println!(
        "users {}, random follows {}, posts {}, batch {}, celebrity threshold {}",
        args.users, args.random_follows, args.posts, config.batch_size, config.celebrity_threshold
    );
    let mut clock =
        Clock(DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?.with_timezone(&Utc));
    let mut rng = StdRng::seed_from_u64(1);

    let mut events = Vec::new();
    for user_id in 1..=args.users {
        let handle = format!("user{user_id}");
        events.push(MurmurEvent::Handle(HandleEvent::HandleClaimed {
            user_id,
            handle: handle.clone(),
            display_name: handle.clone(),
        }));
        events.push(MurmurEvent::User(UserEvent::UserRegistered {
            user_id,
            handle: handle.clone(),
            display_name: handle,
        }));
    }
    append(&pool, &mut clock, &events).await?;
    catch_up_timed(&pool, &config, "register", events.len()).await?;

    // Everyone follows user 1, interleaved with random follows (each edge once).
    let mut edges = std::collections::HashSet::new();
    let mut events = Vec::new();
    let random_per_celebrity = args.random_follows as f64 / (args.users - 1) as f64;
    let mut owed = 0.0;
    for follower_id in 2..=args.users {
        events.push(MurmurEvent::Follow(FollowEvent::Followed {
            follower_id,
            followee_id: 1,
        }));
        owed += random_per_celebrity;
        while owed >= 1.0 {
            let a: UserId = rng.random_range(2..=args.users);
            let b: UserId = rng.random_range(2..=args.users);
            if a != b && edges.insert((a, b)) {
                events.push(MurmurEvent::Follow(FollowEvent::Followed {
                    follower_id: a,
                    followee_id: b,
                }));
                owed -= 1.0;
            }
        }
    }
    drop(edges);
    append(&pool, &mut clock, &events).await?;
    catch_up_timed(&pool, &config, "follow", events.len()).await?;

    let events: Vec<MurmurEvent> = (1..=args.posts)
        .map(|post_id| {
            MurmurEvent::Post(PostEvent::PostCreated {
                post_id,
                author_id: rng.random_range(2..=args.users),
                body: format!("post number {post_id}, written for the projector benchmark"),
            })
        })
        .collect();
    append(&pool, &mut clock, &events).await?;
    let inbox_before: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(cardinality(post_ids)), 0)::bigint FROM feed_inbox",
    )
    .fetch_one(&pool)
    .await?;
    catch_up_timed(&pool, &config, "post", events.len()).await?;
    let inbox_after: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(cardinality(post_ids)), 0)::bigint FROM feed_inbox",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "  post: {} inbox rows written ({:.1} per post)",
        inbox_after - inbox_before,
        (inbox_after - inbox_before) as f64 / args.posts as f64
    );

    // The celebrity's posts, with the projectors running as in the server.
    let stop = murmur_projections::shutdown::Stop::new();
    let runtime = spawn(pool.clone(), config.clone(), stop.shutdown());
    let rm = PgReadModel::new(pool.clone());
    let readers: Vec<UserId> = vec![2, args.users / 2, args.users];
    let followers: i64 =
        sqlx::query_scalar("SELECT followers_count FROM profiles WHERE user_id = 1")
            .fetch_one(&pool)
            .await?;
    let mut latencies = Vec::new();
    for i in 0..args.celebrity_posts {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let post_id = args.posts + 1 + i;
        let started = Instant::now();
        append(
            &pool,
            &mut clock,
            &[MurmurEvent::Post(PostEvent::PostCreated {
                post_id,
                author_id: 1,
                body: "hello, a million followers".into(),
            })],
        )
        .await?;
        let committed = started.elapsed();
        let xid: String = sqlx::query_scalar(
            "SELECT transaction_id::text FROM events WHERE aggregate_type = 'Post' AND aggregate_id = $1",
        )
        .bind(post_id.to_string())
        .fetch_one(&pool)
        .await?;
        // Until every older transaction in the cluster has ended, no projector may read it.
        loop {
            let readable: bool = sqlx::query_scalar(
                "SELECT $1::text::xid8 < pg_snapshot_xmin(pg_current_snapshot())",
            )
            .bind(&xid)
            .fetch_one(&pool)
            .await?;
            if readable {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let readable = started.elapsed() - committed;
        for &reader in &readers {
            loop {
                let page = rm
                    .feed(
                        reader,
                        &PageRequest {
                            limit: 20,
                            cursor: None,
                        },
                    )
                    .await?;
                if page.items.iter().any(|p| p.id == post_id) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!("post {post_id} not in the feed of {reader} after 60 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let seen = started.elapsed() - committed;
        println!(
            "  celebrity post {post_id} (author with {followers} followers): in the feeds of users {readers:?} {:.0} ms after its commit ({:.0} ms of it waiting for older transactions in the cluster to end)",
            seen.as_secs_f64() * 1000.0,
            readable.as_secs_f64() * 1000.0
        );
        latencies.push((
            seen.as_secs_f64() * 1000.0,
            (seen - readable).as_secs_f64() * 1000.0,
        ));
    }
    stop.stop();
    runtime.await??;
    let range = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        format!(
            "{:.0}..{:.0} ms",
            ms.first().unwrap_or(&0.0),
            ms.last().unwrap_or(&0.0)
        )
    };
    println!(
        "  celebrity post: {} from commit to followers' feeds; {} from readable to feeds",
        range(latencies.iter().map(|l| l.0).collect()),
        range(latencies.iter().map(|l| l.1).collect())
    );

    pool.close().await;
    if !args.keep {
        sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    Ok(())
}
