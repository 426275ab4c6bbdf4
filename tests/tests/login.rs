//! Login over HTTP: tokens, refusals that say the same whichever part was wrong, what a
//! token allows, and throttling per handle and per client address (429 with `Retry-After`).

mod common;

use std::time::Duration;

use common::*;
use murmur_api::auth::TokenKeys;
use murmur_api::throttle::{MAX_FAILURES, MAX_FAILURES_PER_ADDRESS, WINDOW};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn failed_logins_for_a_handle_are_throttled(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    s.register("tess").await;
    for _ in 0..MAX_FAILURES {
        problem(
            login(&s, "tess", "wrong password").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    // Now even the right password waits (it is not checked), whatever the handle's case.
    for handle in ["tess", "TESS"] {
        let held = login(&s, handle, PASSWORD).await;
        let wait = retry_after(&held);
        assert!(wait > 0 && wait <= WINDOW.as_secs(), "{wait}");
        problem(held, StatusCode::TOO_MANY_REQUESTS).await;
    }
    // Other handles are not held by it.
    s.register("uma").await;
    assert_eq!(login(&s, "uma", PASSWORD).await.status(), StatusCode::OK);
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn failed_logins_from_an_address_are_throttled(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    s.register("vic").await;
    // Guessing across many handles (fewer failures each than the per-handle limit).
    for n in 0..MAX_FAILURES_PER_ADDRESS {
        let handle = format!("guess_{n}");
        problem(
            login(&s, &handle, "wrong password").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let held = login(&s, "vic", PASSWORD).await;
    assert!(retry_after(&held) > 0);
    problem(held, StatusCode::TOO_MANY_REQUESTS).await;
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn login_answers_a_token_and_refuses_alike(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let gus = server.register("Gus").await;
    let body = json_of(login(&server, "gUS", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(body["user_id"], gus.id);
    let keys = TokenKeys::new(JWT_SECRET.as_bytes(), Duration::from_secs(60));
    assert_eq!(keys.verify(body["token"].as_str().unwrap()), Some(gus.id));

    let wrong_password = problem(
        login(&server, "Gus", "not the password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let unknown_handle = problem(
        login(&server, "nobody", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let invalid_handle = problem(
        login(&server, "not a handle!", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(wrong_password, unknown_handle);
    assert_eq!(wrong_password, invalid_handle);
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn commands_need_a_valid_token_of_the_acting_user(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let hal = server.register("hal").await;
    let ivy = server.register("ivy").await;
    let follow = format!("/v1/users/{}/following/{}", hal.id, ivy.id);
    let forged = TokenKeys::new(b"not the secret", Duration::from_secs(60))
        .issue(hal.id)
        .unwrap();
    let short_lived = TokenKeys::new(JWT_SECRET.as_bytes(), Duration::from_secs(1))
        .issue(hal.id)
        .unwrap();
    // Wait out the one-second lifetime (validation has no leeway).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let unauthorized = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer not.a.token".to_string()),
        Some(format!("Basic {}", hal.token)),
        Some(bearer(&forged)),
        Some(bearer(&short_lived)),
    ];
    for authorization in unauthorized {
        for (method, path, body) in [
            (Method::PUT, follow.as_str(), None),
            (Method::DELETE, follow.as_str(), None),
            (Method::POST, "/v1/posts", Some(json!({"body": "hi"}))),
            (Method::DELETE, "/v1/posts/1", None),
        ] {
            let mut request = server.request(method.clone(), path);
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.headers()["www-authenticate"].to_str().unwrap(),
                "Bearer"
            );
            problem(response, StatusCode::UNAUTHORIZED).await;
        }
    }
    // A valid token, but acting as someone else.
    for method in [Method::PUT, Method::DELETE] {
        let response = server.as_user(method, &follow, &ivy).send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
    assert_count(
        &server.pool,
        "SELECT count(*) FROM events WHERE aggregate_type IN ('Follow', 'Post')",
        0,
    )
    .await;
    server.stop().await;
}
