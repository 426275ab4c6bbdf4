//! The end-to-end harness: a real murmur server (HTTP on a free loopback port, projectors
//! in-process) over the fresh database `#[sqlx::test]` made for the test, and a client.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::time::Duration;

use murmur_api::config::Config;
use murmur_api::server::{self, Server};
use murmur_domain::EventMetadata;
use murmur_projections::args::SharedArgs;
use murmur_projections::Position;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

pub const PASSWORD: &str = "correct horse battery";
pub const JWT_SECRET: &str = "test-secret-at-least-32-bytes-long";
pub const ADMIN_TOKEN: &str = "test-admin-token-at-least-32-bytes";
/// How many 503s [`TestServer::read`] retries (each after the server's 5 s wait).
const READ_RETRIES: usize = 11;

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    server: Option<Server>,
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub handle: String,
    pub token: String,
    /// The `position` the registration answered.
    pub position: String,
}

/// The configuration tests run with; `start_with` may change it.
pub fn test_config() -> Config {
    Config {
        shared: SharedArgs {
            database_url: String::new(),
            celebrity_threshold: murmur_projections::state::feeds::DEFAULT_CELEBRITY_THRESHOLD,
        },
        read_database_url: None,
        listen: "127.0.0.1:0".parse().expect("valid address"),
        data_dir: std::env::temp_dir().join("murmur-tests"),
        jwt_secret: Some(JWT_SECRET.into()),
        token_ttl: Duration::from_secs(3600),
        admin_token: Some(ADMIN_TOKEN.into()),
        db_pool_size: 20,
        no_projectors: false,
        poll_interval: Duration::from_millis(500),
        flush_interval: Duration::from_millis(500),
        inbox_fold_after: murmur_projections::state::feeds::Folding::default().after,
        max_connections: 10_000,
        header_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(10),
    }
}

impl TestServer {
    /// Use from `#[sqlx::test(migrations = "../migrations")] async fn t(_: PgPoolOptions, db: PgConnectOptions)`.
    pub async fn start(db: PgConnectOptions) -> Self {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: PgConnectOptions, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        configure(&mut config);
        let pool = PgPoolOptions::new()
            .max_connections(config.db_pool_size)
            .connect_with(db)
            .await
            .expect("connecting to the test database");
        server::migrate(&pool).await.expect("migrating");
        Self::start_on(config, pool).await
    }

    /// Starts a server with `config` whose commands go to `pool` (not migrated here).
    pub async fn start_on(config: Config, pool: PgPool) -> Self {
        let server = server::start(config, pool.clone())
            .await
            .expect("starting the server");
        // Queries answer 503 until the projections are in memory.
        server.ready().await;
        Self {
            base: format!("http://{}", server.addr),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("building the client"),
            pool,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// Registers `handle` (password [`PASSWORD`]) and returns the new user.
    pub async fn register(&self, handle: &str) -> TestUser {
        let response = self
            .request(Method::POST, "/v1/users")
            .json(&json!({"handle": handle, "display_name": format!("{handle} name"), "password": PASSWORD}))
            .send()
            .await
            .expect("POST /v1/users");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "registering {handle}"
        );
        let body: Value = response.json().await.expect("JSON body");
        TestUser {
            id: body["id"].as_i64().expect("id"),
            handle: handle.to_string(),
            token: body["token"].as_str().expect("token").to_string(),
            position: body["position"].as_str().expect("position").to_string(),
        }
    }

    /// `user` follows `target`; returns the command's position.
    pub async fn follow(&self, user: &TestUser, target: i64) -> String {
        self.follow_edge(Method::PUT, user, target).await
    }

    /// `user` unfollows `target`; returns the command's position.
    pub async fn unfollow(&self, user: &TestUser, target: i64) -> String {
        self.follow_edge(Method::DELETE, user, target).await
    }

    async fn follow_edge(&self, method: Method, user: &TestUser, target: i64) -> String {
        let path = format!("/v1/users/{}/following/{target}", user.id);
        let response = self
            .request(method.clone(), &path)
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
        let body: Value = response.json().await.expect("JSON body");
        body["position"].as_str().expect("position").to_string()
    }

    /// `user` posts `body`; returns the post's id and the command's position.
    pub async fn post(&self, user: &TestUser, body: &str) -> (i64, String) {
        let response = self
            .request(Method::POST, "/v1/posts")
            .bearer_auth(&user.token)
            .json(&json!({ "body": body }))
            .send()
            .await
            .expect("POST /v1/posts");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "posting as {}",
            user.handle
        );
        let body: Value = response.json().await.expect("JSON body");
        let id = body["id"].as_i64().expect("id");
        (id, body["position"].as_str().expect("position").to_string())
    }

    /// `user` deletes their post `id`; returns the command's position (`X-Murmur-Position`).
    pub async fn delete_post(&self, user: &TestUser, id: i64) -> String {
        let response = self
            .request(Method::DELETE, &format!("/v1/posts/{id}"))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("DELETE /v1/posts/{id}");
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "deleting post {id}"
        );
        response
            .headers()
            .get("x-murmur-position")
            .and_then(|v| v.to_str().ok())
            .expect("X-Murmur-Position")
            .to_string()
    }

    /// `GET path`, as `token` if given, once the projections have applied `min_position`.
    /// Retries a 503 (the wait timed out) a few times: a long write transaction anywhere in
    /// the PostgreSQL cluster (another test, a bulk load) holds every projector back.
    pub async fn read(
        &self,
        path: &str,
        token: Option<&str>,
        min_position: &str,
    ) -> reqwest::Response {
        for _ in 0..READ_RETRIES {
            let response = self.read_once(path, token, min_position).await;
            if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                return response;
            }
        }
        self.read_once(path, token, min_position).await
    }

    /// Waits until every projection's durable copy (its tables) has applied `position`:
    /// reads are served from memory, and the tables may trail it by a flush.
    pub async fn durable_at_least(&self, position: &str) {
        let min: murmur_projections::Position = position.parse().expect("a position");
        for _ in 0..600 {
            let at = murmur_projections::checkpoints::read_all(&self.pool)
                .await
                .expect("reading the checkpoints");
            let least = murmur_projections::checkpoints::least(
                &at,
                &murmur_projections::read_model::names::ALL,
            );
            if least >= min {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the durable copies did not reach {position}");
    }

    /// `GET path` with `X-Murmur-Min-Position`, answered as it comes.
    pub async fn read_once(
        &self,
        path: &str,
        token: Option<&str>,
        min_position: &str,
    ) -> reqwest::Response {
        let mut request = self.get(path).header("x-murmur-min-position", min_position);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Asserts that `/metrics` names `metric`.
    pub async fn assert_metric(&self, metric: &str) {
        let metrics = self
            .get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains(metric), "{metric} missing from {metrics}");
    }

    /// Waits until the server's projector runtime stops; why.
    pub async fn projectors_stopped(&self) -> String {
        match &self.server {
            Some(server) => server.projectors_stopped().await,
            None => String::new(),
        }
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Reads a problem+json answer, checking its content type and status field.
/// The ids of a page's items, in order.
pub fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_i64().expect("id"))
        .collect()
}

/// The answer's `Content-Type` ("" when there is none).
pub fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(content_type(&response), "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status.as_u16());
    body
}
/// One stored event, as the tests look at it.
#[derive(Debug)]
pub struct Stored {
    pub event_type: String,
    pub sequence: i64,
    pub payload: Value,
    pub metadata: EventMetadata,
    pub position: Position,
}

/// A stream's events, in order.
pub async fn stream(pool: &PgPool, aggregate_type: &str, aggregate_id: &str) -> Vec<Stored> {
    sqlx::query(
        "SELECT event_type, sequence, payload, metadata, transaction_id::text AS xid, position
         FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await
    .expect("reading a stream")
    .into_iter()
    .map(|row| Stored {
        event_type: row.get("event_type"),
        sequence: row.get("sequence"),
        payload: row.get("payload"),
        metadata: EventMetadata::from_json(&row.get::<Value, _>("metadata"))
            .expect("readable metadata"),
        position: Position::from_row(&row).expect("a position"),
    })
    .collect()
}

/// Asserts that the `SELECT count(*) ...` query `sql` counts `expected` rows.
pub async fn assert_count(pool: &PgPool, sql: &str, expected: i64) {
    let counted: i64 = sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("counting");
    assert_eq!(counted, expected, "{sql}");
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Shorthands: requests as a signed-in user, and anonymous JSON posts.
pub trait Requests {
    fn as_user(&self, method: Method, path: &str, user: &TestUser) -> reqwest::RequestBuilder;
    fn post_json(&self, path: &str, body: Value) -> reqwest::RequestBuilder;
}

impl Requests for TestServer {
    fn post_json(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.request(Method::POST, path).json(&body)
    }

    fn as_user(&self, method: Method, path: &str, user: &TestUser) -> reqwest::RequestBuilder {
        self.request(method, path)
            .header("authorization", bearer(&user.token))
    }
}

/// Sends `request` and reads the problem+json answer it must get.
pub async fn expect_problem(request: reqwest::RequestBuilder, status: StatusCode) -> Value {
    problem(request.send().await.expect("an answer"), status).await
}

/// Asserts the status and reads the JSON body.
pub async fn json_of(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("a JSON body")
}

/// The `position` an answer carries.
pub fn position(body: &Value) -> Position {
    body["position"]
        .as_str()
        .expect("a position")
        .parse()
        .expect("a well-formed position")
}
/// `POST /v1/sessions`.
pub async fn login(server: &TestServer, handle: &str, password: &str) -> reqwest::Response {
    server
        .post_json(
            "/v1/sessions",
            json!({"handle": handle, "password": password}),
        )
        .send()
        .await
        .unwrap()
}
