//! Posts over HTTP (create, trim, delete by the author only), and the log's positions.

mod common;

use std::time::Duration;

use common::*;
use murmur_api::auth::TokenKeys;
use murmur_domain::EventMetadata;
use murmur_projections::Position;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Row;

#[sqlx::test(migrations = "../migrations")]
async fn posts_are_created_trimmed_and_deleted_by_their_author(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = TestServer::start(db).await;
    let oz = server.register("oz").await;
    let pat = server.register("pat").await;

    let response = server
        .as_user(Method::POST, "/v1/posts", &oz)
        .header("x-request-id", "post-1")
        .json(&json!({"body": "  hello, murmur \n"}))
        .send()
        .await
        .unwrap();
    let post = json_of(response, StatusCode::CREATED).await;
    let id = post["id"].as_i64().unwrap();
    assert_eq!(post["author_id"], oz.id);
    assert_eq!(post["body"], "hello, murmur");
    let events = stream(&server.pool, "Post", &id.to_string()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].payload,
        json!({"PostCreated": {"post_id": id, "author_id": oz.id, "body": "hello, murmur"}})
    );
    assert_eq!(events[0].metadata.actor_id, Some(oz.id));
    assert_eq!(events[0].metadata.request_id, "post-1");
    let created_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(post["created_at"].clone()).unwrap();
    assert_eq!(created_at, events[0].metadata.time);
    assert_eq!(position(&post), events[0].position);

    // 280 scalar values of 4 bytes each fit; 281 do not.
    let longest = json_of(
        server
            .as_user(Method::POST, "/v1/posts", &oz)
            .json(&json!({"body": "🦀".repeat(280)}))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(longest["body"].as_str().unwrap().chars().count(), 280);
    for bad in ["🦀".repeat(281), " \n\t ".to_string(), String::new()] {
        let body = expect_problem(
            server
                .as_user(Method::POST, "/v1/posts", &oz)
                .json(&json!({ "body": bad })),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains("post body"));
    }

    let path = format!("/v1/posts/{id}");
    expect_problem(
        server.as_user(Method::DELETE, &path, &pat),
        StatusCode::FORBIDDEN,
    )
    .await;
    let deleted = server
        .as_user(Method::DELETE, &path, &oz)
        .header("x-request-id", "delete-1")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let events = stream(&server.pool, "Post", &id.to_string()).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].payload,
        json!({"PostDeleted": {"post_id": id, "author_id": oz.id}})
    );
    assert_eq!(events[1].metadata.request_id, "delete-1");
    assert_eq!(
        deleted.headers()["x-murmur-position"].to_str().unwrap(),
        events[1].position.to_string()
    );
    // A deleted post stays deleted.
    expect_problem(
        server.as_user(Method::DELETE, &path, &oz),
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(
        server.as_user(Method::DELETE, &format!("/v1/posts/{}", id + 100), &oz),
        StatusCode::NOT_FOUND,
    )
    .await;
    for bad in ["abc", "0", "-3"] {
        expect_problem(
            server.as_user(Method::DELETE, &format!("/v1/posts/{bad}"), &oz),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    assert_eq!(stream(&server.pool, "Post", &id.to_string()).await.len(), 2);
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_token_of_an_unknown_user_cannot_post(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let ghost = TokenKeys::new(JWT_SECRET.as_bytes(), Duration::from_secs(60))
        .issue(4242)
        .unwrap();
    let response = server
        .request(Method::POST, "/v1/posts")
        .header("authorization", bearer(&ghost))
        .json(&json!({"body": "boo"}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::NOT_FOUND).await;
    assert_count(&server.pool, "SELECT count(*) FROM events", 0).await;
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn every_event_has_a_global_position_and_transaction(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let quin = server.register("quin").await;
    let rae = server.register("rae").await;
    server
        .as_user(
            Method::PUT,
            &format!("/v1/users/{}/following/{}", quin.id, rae.id),
            &quin,
        )
        .send()
        .await
        .unwrap();
    server
        .as_user(Method::POST, "/v1/posts", &rae)
        .json(&json!({"body": "first"}))
        .send()
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT position, transaction_id::text AS xid, metadata FROM events ORDER BY position",
    )
    .fetch_all(&server.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6); // 2 claims, 2 users, 1 follow, 1 post
    let mut previous = Position::START;
    for row in rows {
        let at = Position::from_row(&row).unwrap();
        // Each command committed before the next began, so both parts increase.
        assert!(at > previous && at.position > previous.position);
        previous = at;
        let metadata = EventMetadata::from_json(&row.get::<Value, _>("metadata")).unwrap();
        assert!(!metadata.request_id.is_empty());
    }
    server.stop().await;
}
