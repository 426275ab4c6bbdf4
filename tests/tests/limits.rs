//! Slow clients: connections whose request head stalls are closed after the header timeout
//! while others are served; a request whose body stalls gets a 408 problem.

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above the timeouts configured below: only a server that never closes misses it.
const DEADLINE: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection; what it sent meanwhile.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn stalled_request_heads_are_closed_while_others_are_served(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let s = TestServer::start_with(db, |c| {
        c.header_timeout = Duration::from_secs(1);
        c.max_connections = 100;
    })
    .await;
    let addr = s.url("").trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        // Half a request head, never finished.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x")
            .await
            .unwrap();
        stalled.push(stream);
    }
    // A new connection per request: the header timeout also closes idle keep-alive
    // connections, and a pooled one could be reused just as the server closes it.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let healthy = fresh.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), StatusCode::OK);
    for stream in &mut stalled {
        let answer = until_closed(stream).await;
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    assert_eq!(
        fresh.get(s.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stalled_body_gets_a_408_problem(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start_with(db, |c| c.request_timeout = Duration::from_secs(1)).await;
    let addr = s.url("").trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"handle\":",
        )
        .await
        .unwrap();
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn shutdown_waits_for_requests_at_most_the_grace_period(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let s = TestServer::start_with(db, |c| c.shutdown_grace = Duration::from_millis(200)).await;
    // A read that waits for a position the log will not reach (up to its 5 s limit).
    let far = format!("{}:1", u64::MAX);
    let waiting = s
        .get("/v1/users/1")
        .header("x-murmur-min-position", far)
        .send();
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stop().await;
    // Cut at the deadline: the connection is closed before the read's own answer (a 503).
    let answer = waiting.await.unwrap();
    assert!(answer.is_err(), "{answer:?}");
}
