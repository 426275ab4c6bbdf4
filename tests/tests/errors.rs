//! Malformed requests on the command routes: problems, never a 500.

mod common;

use common::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[sqlx::test(migrations = "../migrations")]
async fn malformed_requests_get_problems_never_500(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let sam = server.register("sam").await;
    let raw = |path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = server
            .request(Method::POST, path)
            .header("authorization", bearer(&sam.token))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    const JSON: Option<&str> = Some("application/json");
    for path in ["/v1/users", "/v1/sessions", "/v1/posts"] {
        for (body, status) in [
            (b"{not json".to_vec(), StatusCode::BAD_REQUEST),
            (b"[]".to_vec(), StatusCode::BAD_REQUEST),
            (b"{}".to_vec(), StatusCode::BAD_REQUEST),
            (
                br#"{"handle": 1, "display_name": 2, "password": 3, "body": 4}"#.to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (b"".to_vec(), StatusCode::BAD_REQUEST),
        ] {
            problem(raw(path, JSON, body).await.unwrap(), status).await;
        }
        let big = serde_json::to_vec(&json!({"body": "x".repeat(70 * 1024)})).unwrap();
        problem(
            raw(path, JSON, big).await.unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
        for content_type in [None, Some("text/plain")] {
            let body = br#"{"body": "hi"}"#.to_vec();
            problem(
                raw(path, content_type, body).await.unwrap(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            )
            .await;
        }
    }
    // Odd but well-formed strings are answered by the rules, not by a crash.
    for odd in [
        "\u{0}",
        "\u{feff}",
        "🦀\u{200d}",
        &"ß".repeat(5000),
        "\\\"'; DROP TABLE events; --",
    ] {
        for (path, body) in [
            (
                "/v1/users",
                json!({"handle": odd, "display_name": odd, "password": odd}),
            ),
            ("/v1/sessions", json!({"handle": odd, "password": odd})),
            ("/v1/posts", json!({ "body": odd })),
        ] {
            let response = raw(path, JSON, serde_json::to_vec(&body).unwrap())
                .await
                .unwrap();
            assert!(
                response.status().is_client_error() || response.status().is_success(),
                "{path} {odd:?}: {}",
                response.status()
            );
        }
    }
    // And so are random strings of any characters (proptest's generator, fixed seed).
    let mut runner = TestRunner::deterministic();
    let any_text = "(?s).{0,300}";
    for _ in 0..40 {
        let mut sample = || any_text.new_tree(&mut runner).expect("a sample").current();
        for (path, body) in [
            (
                "/v1/users",
                json!({"handle": sample(), "display_name": sample(), "password": sample()}),
            ),
            (
                "/v1/sessions",
                json!({"handle": sample(), "password": sample()}),
            ),
            ("/v1/posts", json!({ "body": sample() })),
        ] {
            let response = raw(path, JSON, serde_json::to_vec(&body).unwrap())
                .await
                .unwrap();
            let status = response.status();
            assert!(
                status.is_client_error() || status.is_success(),
                "{path} {body}: {status}"
            );
        }
    }
    expect_problem(
        server.request(Method::GET, "/v1/nothing-here"),
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(
        server.request(Method::GET, "/v1/posts"),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    server.stop().await;
}
