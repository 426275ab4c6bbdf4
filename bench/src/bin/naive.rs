//! The "before" column of bench/RESULTS.md: a comparison server (never part of murmur's API)
//! answering murmur's profile and feed routes the way the seed's Rails app did, over the same
//! database: counters by `COUNT(*)` over the follow graph (joined to users, like
//! `@user.followers.count`), the feed by joining posts to follows at query time, and a pool
//! of 25 connections. Writes (for the mixed load) are plain row inserts and deletes.
//!
//! It reads murmur's read-model tables after `replay rebuild --all`, using only the plain
//! columns (`profiles` user columns, never its counters; `follows`; `posts`).

use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use clap::Parser;
use murmur_api::auth::TokenKeys;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

#[derive(Parser)]
#[command(about = "The seed's query patterns behind murmur's routes, for comparison")]
struct Args {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "NAIVE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
    #[arg(long, env = "MURMUR_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// The seed's Rails pool size.
    #[arg(long, default_value_t = 25)]
    pool: u32,
}

#[derive(Clone)]
struct AppState {
    db: PgPool,
    keys: std::sync::Arc<TokenKeys>,
}

/// Errors as plain statuses; the load scripts only count them.
enum Failure {
    Unauthorized,
    Forbidden,
    NotFound,
    Unprocessable,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Database(e) => {
                tracing::warn!(error = %e, "query failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        status.into_response()
    }
}

impl AppState {
    /// The bearer token's user, who must be `id`.
    fn signed_in_as(&self, headers: &HeaderMap, id: i64) -> Result<(), Failure> {
        let user = self.signed_in(headers)?;
        if user == id {
            Ok(())
        } else {
            Err(Failure::Forbidden)
        }
    }

    fn signed_in(&self, headers: &HeaderMap) -> Result<i64, Failure> {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| self.keys.verify(token))
            .ok_or(Failure::Unauthorized)
    }
}

#[derive(Serialize, sqlx::FromRow)]
struct Author {
    id: i64,
    handle: String,
    display_name: String,
}

#[derive(Serialize)]
struct Profile {
    id: i64,
    handle: String,
    display_name: String,
    created_at: DateTime<Utc>,
    followers_count: i64,
    following_count: i64,
    posts_count: i64,
}

async fn profile(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Profile>, Failure> {
    let (handle, display_name, created_at): (String, String, DateTime<Utc>) =
        sqlx::query_as("SELECT handle, display_name, created_at FROM profiles WHERE user_id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?
            .ok_or(Failure::NotFound)?;
    // The seed's three uncached counters, each a COUNT(*) at request time.
    let followers_count = sqlx::query_scalar(
        "SELECT count(*) FROM profiles u JOIN follows f ON u.user_id = f.follower_id \
         WHERE f.followee_id = $1",
    )
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    let following_count = sqlx::query_scalar(
        "SELECT count(*) FROM profiles u JOIN follows f ON u.user_id = f.followee_id \
         WHERE f.follower_id = $1",
    )
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    let posts_count = sqlx::query_scalar("SELECT count(*) FROM posts WHERE author_id = $1")
        .bind(id)
        .fetch_one(&state.db)
        .await?;
    Ok(Json(Profile {
        id,
        handle,
        display_name,
        created_at,
        followers_count,
        following_count,
        posts_count,
    }))
}

#[derive(Deserialize)]
struct FeedQuery {
    limit: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    post_id: i64,
    body: String,
    created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    author: Author,
}

async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(query): Query<FeedQuery>,
) -> Result<Response, Failure> {
    state.signed_in_as(&headers, id)?;
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    // `current_user.feed_posts.timeline`: own posts and followees' posts, joined at read time.
    let rows: Vec<FeedRow> = sqlx::query_as(
        "SELECT p.post_id, p.body, p.created_at, a.user_id AS id, a.handle, a.display_name \
         FROM posts p JOIN profiles a ON a.user_id = p.author_id \
         WHERE p.author_id = $1 \
            OR p.author_id IN (SELECT followee_id FROM follows WHERE follower_id = $1) \
         ORDER BY p.created_at DESC, p.post_id DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| json!({"id": r.post_id, "body": r.body, "created_at": r.created_at, "author": r.author}))
        .collect();
    Ok(Json(json!({"items": items, "next_cursor": null})).into_response())
}

async fn follow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, target)): Path<(i64, i64)>,
) -> Result<Json<serde_json::Value>, Failure> {
    state.signed_in_as(&headers, id)?;
    if id == target {
        return Err(Failure::Unprocessable);
    }
    sqlx::query(
        "INSERT INTO follows (follower_id, followee_id, since) \
         SELECT $1, user_id, now() FROM profiles WHERE user_id = $2 ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(target)
    .execute(&state.db)
    .await?;
    Ok(Json(json!({"following": true})))
}

async fn unfollow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, target)): Path<(i64, i64)>,
) -> Result<Json<serde_json::Value>, Failure> {
    state.signed_in_as(&headers, id)?;
    sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2")
        .bind(id)
        .bind(target)
        .execute(&state.db)
        .await?;
    Ok(Json(json!({"following": false})))
}

#[derive(Deserialize)]
struct NewPost {
    body: String,
}

async fn create_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(new): Json<NewPost>,
) -> Result<(StatusCode, Json<serde_json::Value>), Failure> {
    let author = state.signed_in(&headers)?;
    let body =
        murmur_domain::rules::validate_post_body(&new.body).map_err(|_| Failure::Unprocessable)?;
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO posts (post_id, author_id, body, created_at) \
         VALUES (nextval('post_ids'), $1, $2, now()) RETURNING post_id, created_at",
    )
    .bind(author)
    .bind(&body)
    .fetch_one(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "author_id": author, "body": body, "created_at": created_at})),
    ))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.pool)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&args.database_url)
        .await
        .context("connecting to the database")?;
    let state = AppState {
        db,
        keys: std::sync::Arc::new(TokenKeys::new(
            args.jwt_secret.as_bytes(),
            murmur_bench::tokens::TTL,
        )),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/users/{id}", get(profile))
        .route("/v1/users/{id}/feed", get(feed))
        .route(
            "/v1/users/{id}/following/{target}",
            put(follow).delete(unfollow),
        )
        .route("/v1/posts", post(create_post))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::warn!("naive baseline listening on {}", args.listen);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}
