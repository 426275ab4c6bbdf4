//! Login throttling over HTTP: per handle and per client address, 429 with `Retry-After`.

mod common;

use common::{problem, TestServer, PASSWORD};
use murmur_api::throttle::{MAX_FAILURES, MAX_FAILURES_PER_ADDRESS, WINDOW};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

async fn login(s: &TestServer, handle: &str, password: &str) -> reqwest::Response {
    s.request(Method::POST, "/v1/sessions")
        .json(&json!({"handle": handle, "password": password}))
        .send()
        .await
        .unwrap()
}

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
