//! Read nodes that follow the log from a PostgreSQL streaming replica (`READ_DATABASE_URL`),
//! against a real hot standby: `scripts/replica`'s private pair (see [`pair`]). A projector
//! node serves on the primary, a read node on the standby. Skipped, saying why, where a
//! second cluster cannot be made.

#[path = "../common/mod.rs"]
mod common;
mod horizon;
mod pair;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A read node over `db`'s standby, with commands going to `db`'s primary.
async fn read_node(db: &pair::Database) -> TestServer {
    TestServer::start_with(db.primary(), |config| {
        config.no_projectors = true;
        config.read_database_url = Some(db.replica_url());
    })
    .await
}

/// Every query about `users`, each with the token it needs (the feed: its owner's).
fn queries(users: &[&TestUser]) -> Vec<(String, Option<String>)> {
    users
        .iter()
        .flat_map(|user| {
            let id = user.id;
            [
                (format!("/v1/users/{id}"), None),
                (format!("/v1/users/by-handle/{}", user.handle), None),
                (format!("/v1/users/{id}/feed"), Some(user.token.clone())),
                (format!("/v1/users/{id}/posts"), None),
                (format!("/v1/users/{id}/followers"), None),
                (format!("/v1/users/{id}/following"), None),
            ]
        })
        .collect()
}

/// Both nodes answer every query about `users` alike once they have applied `at`.
async fn agree(primary: &TestServer, read: &TestServer, users: &[&TestUser], at: &str) {
    for (path, token) in queries(users) {
        let ours = json_of(read.read(&path, token.as_deref(), at).await, StatusCode::OK).await;
        let theirs = json_of(
            primary.read(&path, token.as_deref(), at).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            ours, theirs,
            "{path} differs between the read node and the primary's node"
        );
    }
}

/// The read node's `/readyz` body once `ready` holds for it (within `within`).
async fn readyz_until(
    node: &TestServer,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let body = json_of(node.get("/readyz").send().await.unwrap(), StatusCode::OK).await;
        if ready(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never showed what was expected: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn feed(user: &TestUser) -> String {
    format!("/v1/users/{}/feed", user.id)
}

/// The ids on `user`'s feed as `node` answers once it has applied `at`.
async fn feed_ids(node: &TestServer, user: &TestUser, at: &str) -> Vec<i64> {
    let page = node.read(&feed(user), Some(&user.token), at).await;
    ids(&json_of(page, StatusCode::OK).await)
}

#[tokio::test]
async fn a_read_node_on_a_standby_reads_its_writes_waits_out_a_paused_replay_and_agrees() {
    let Some(pair) = pair::acquire() else { return };
    let db = pair.database("follow").await;
    let primary = TestServer::start(db.primary()).await;
    // The standby must hold the schema and the settings the projector node recorded.
    db.replayed().await;
    let read = read_node(&db).await;

    // Written on the primary's node, read on the read node.
    let alice = primary.register("alice").await;
    let bob = primary.register("bob").await;
    primary.follow(&bob, alice.id).await;
    let (first, at) = primary.post(&alice, "hello from the primary").await;
    assert_eq!(feed_ids(&read, &bob, &at).await, vec![first]);

    // Commands sent to the read node are written on the primary.
    let carol = read.register("carol").await;
    read.follow(&bob, carol.id).await;
    let (second, at) = read.post(&carol, "written through the read node").await;
    assert_eq!(feed_ids(&primary, &bob, &at).await, vec![second, first]);
    agree(&primary, &read, &[&alice, &bob, &carol], &at).await;

    // Replay paused: the read node cannot reach a newer position and says so after its wait.
    let standby = db.replica_pool().await;
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby)
        .await
        .unwrap();
    let (third, at) = primary
        .post(&alice, "while the standby's replay is paused")
        .await;
    let waited = read.read_once(&feed(&bob), Some(&bob.token), &at).await;
    assert!(waited.headers().contains_key("retry-after"));
    let body = problem(waited, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"].as_str().unwrap().contains("not yet"),
        "{body}"
    );
    // The lag shows: replay paused, the event missing on the standby.
    readyz_until(&read, Duration::from_secs(10), |body| {
        body["replica"]["replay_paused"] == true
            && body["replica"]["lag_events"].as_i64() >= Some(1)
    })
    .await;
    read.assert_metric("murmur_replica_lag_events").await;

    // A request held while replay resumes is answered once the standby has the event.
    let held = tokio::spawn(
        read.get(&feed(&bob))
            .bearer_auth(&bob.token)
            .header("x-murmur-min-position", &at)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "answered before the standby had the event"
    );
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby)
        .await
        .unwrap();
    let page = json_of(held.await.unwrap().unwrap(), StatusCode::OK).await;
    assert_eq!(ids(&page), vec![third, second, first]);
    agree(&primary, &read, &[&alice, &bob, &carol], &at).await;
    readyz_until(&read, Duration::from_secs(10), |body| {
        body["replica"]["replay_paused"] == false && body["replica"]["lag_events"] == 0
    })
    .await;

    read.stop().await;
    primary.stop().await;
    standby.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_read_node_whose_primary_does_not_answer_serves_reads_and_answers_commands_503() {
    let Some(pair) = pair::acquire() else { return };
    let db = pair.database("away").await;
    let primary = TestServer::start(db.primary()).await;
    let alice = primary.register("alice").await;
    let at = alice.position.clone();
    primary
        .read(&format!("/v1/users/{}", alice.id), None, &at)
        .await;
    primary.stop().await;
    db.replayed().await;

    // Nothing listens on port 1: the node's primary is away from the start.
    let away = murmur_projections::db::lazy_pool(
        "postgres://postgres@127.0.0.1:1/murmur?sslmode=disable"
            .parse()
            .unwrap(),
        2,
    );
    let mut config = test_config();
    config.no_projectors = true;
    config.read_database_url = Some(db.replica_url());
    let read = TestServer::start_on(config, away).await;

    let profile = json_of(
        read.read(&format!("/v1/users/{}", alice.id), None, &at)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(profile["handle"], "alice");
    let refused = read.post_json(
        "/v1/users",
        json!({"handle": "bob", "display_name": "Bob", "password": PASSWORD}),
    );
    let body = expect_problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"].as_str().unwrap().contains("DATABASE_URL"),
        "{body}"
    );
    // Still ready (it serves reads), and saying why its lag is unknown.
    let ready = readyz_until(&read, Duration::from_secs(30), |body| {
        body["replica"]["primary_error"].is_string()
    })
    .await;
    assert_eq!(ready["replica"]["lag_events"], Value::Null, "{ready}");

    read.stop().await;
    db.drop().await;
}
