//! Fan-out probe: posts as user 1 through the HTTP API, then polls the feeds of a sample of
//! user 1's followers until the post shows, and reports how long that took (p50/p90/max ms).
//! Works against murmur and the naive baseline alike (same routes).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use murmur_bench::tokens;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Time from a post by user 1 to its presence in followers' feeds")]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    base: String,
    /// The token file written by `generate --tokens`.
    #[arg(long)]
    tokens: PathBuf,
    /// Finds which sampled users follow user 1 (the `follows` read model).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Followers polled per post.
    #[arg(long, default_value_t = 50)]
    followers: usize,
    /// Posts by user 1 (each timed separately).
    #[arg(long, default_value_t = 5)]
    posts: usize,
    /// Give up on a follower after this long.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

/// Polls `user`'s feed until `post` is in it; the time since `start`, or `None` on timeout.
async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    post: i64,
    start: Instant,
    timeout: Duration,
) -> Result<Option<f64>> {
    while start.elapsed() < timeout {
        let page: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.iter().any(|item| item["id"].as_i64() == Some(post)) {
            return Ok(Some(start.elapsed().as_secs_f64() * 1000.0));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(None)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let all = tokens::read_file(&args.tokens)?;
    let user1 = all
        .iter()
        .find(|(id, _)| *id == 1)
        .map(|(_, t)| t.clone())
        .context("the token file has no token for user 1")?;
    let candidates: Vec<i64> = all
        .iter()
        .map(|(id, _)| *id)
        .filter(|&id| id != 1)
        .collect();
    let db = sqlx::PgPool::connect(&args.database_url).await?;
    let followers: Vec<i64> = sqlx::query_scalar(
        "SELECT follower_id FROM follows WHERE followee_id = 1 AND follower_id = ANY($1) \
         ORDER BY follower_id LIMIT $2",
    )
    .bind(&candidates)
    .bind(args.followers as i64)
    .fetch_all(&db)
    .await
    .context("finding sampled followers of user 1")?;
    if followers.is_empty() {
        bail!("no sampled user follows user 1");
    }
    let sample: Vec<(String, String)> = all
        .iter()
        .filter(|(id, _)| followers.contains(id))
        .map(|(id, token)| {
            let url = format!("{}/v1/users/{id}/feed?limit=5", args.base);
            (url, token.clone())
        })
        .collect();

    let http = reqwest::Client::new();
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut times = Vec::new();
    let mut timeouts = 0;
    for n in 0..args.posts {
        let start = Instant::now();
        let created: Value = http
            .post(format!("{}/v1/posts", args.base))
            .bearer_auth(&user1)
            .json(&json!({"body": format!("fan-out probe {n}")}))
            .send()
            .await?
            .error_for_status()
            .context("posting as user 1")?
            .json()
            .await?;
        let post = created["id"]
            .as_i64()
            .context("the post response has no id")?;
        let waits = sample
            .iter()
            .map(|(url, token)| wait_for(&http, url, token, post, start, timeout));
        for result in futures::future::join_all(waits).await {
            match result? {
                Some(ms) => times.push(ms),
                None => timeouts += 1,
            }
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "BENCH_JSON {}",
        json!({
            "posts": args.posts,
            "followers": sample.len(),
            "p50_ms": percentile(&times, 0.5),
            "p90_ms": percentile(&times, 0.9),
            "max_ms": times.last().copied().unwrap_or(f64::NAN),
            "timeouts": timeouts,
        })
    );
    Ok(())
}
