//! `/healthz`, `/readyz` and `/metrics`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[sqlx::test(migrations = "../migrations")]
async fn health_readiness_and_metrics(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let health = json_of(server.get("/healthz").send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(health, json!({"status": "ok"}));
    let ready = json_of(server.get("/readyz").send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(ready["status"], "ok");
    assert!(ready["projections"].is_array());

    server.register("tia").await;
    let response = server.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("murmur_http_requests_total")
                && l.contains("route=\"/v1/users\"")
                && l.contains("status=\"201\"")),
        "{text}"
    );
    assert!(text.contains("murmur_http_request_duration_seconds_bucket"));
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn readyz_does_not_read_the_log(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    server.register("lee").await;
    // While nothing can read `events`, /readyz still answers from the projectors' own
    // figures (a count over the log, as it once ran, would wait for the lock).
    let mut locked = server.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locked)
        .await
        .unwrap();
    let ready = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        server.get("/readyz").send(),
    )
    .await
    .expect("/readyz answers while the log is locked")
    .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    locked.rollback().await.unwrap();
    server.stop().await;
}
