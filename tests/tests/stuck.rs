//! Projectors that cannot go on are visible: `/readyz` answers 503 naming the projection and
//! the event, and a runtime that stops makes the server say so (and `murmur serve` exit).

mod common;

use std::time::Duration;

use common::{problem, TestServer, ADMIN_TOKEN};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// An event no version of murmur wrote: every projection fails on it.
async fn append_undecodable(s: &TestServer) -> String {
    let row: (String, i64) = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('User', '424242', 1, 'Bogus', '1.0', '{\"Bogus\": {}}', '{}')
         RETURNING transaction_id::text, position",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    format!("{}:{}", row.0, row.1)
}

/// `/readyz` until it answers 503 (the projectors poll, so it takes a moment).
async fn unready(s: &TestServer) -> Value {
    for _ in 0..600 {
        let response = s.get("/readyz").send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            return problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered 503");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_event_that_cannot_be_applied_makes_readyz_name_it(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let s = TestServer::start(db).await;
    s.register("ivy").await;
    assert_eq!(
        s.get("/readyz").send().await.unwrap().status(),
        StatusCode::OK
    );
    let at = append_undecodable(&s).await;
    let body = unready(&s).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("projection is stuck"), "{detail}");
    assert!(detail.contains(&format!("event at {at}")), "{detail}");
    s.assert_metric("murmur_projection_failures_total").await;
    // The audit shows the row as stored, with the reason, and the rest of the page.
    let page: Value = s
        .get("/v1/audit/events?limit=1000")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{page}");
    let bogus = &items[2];
    assert_eq!(bogus["position"], at);
    assert_eq!(bogus["event_type"], "Bogus");
    assert_eq!(bogus["payload"], serde_json::json!({"Bogus": {}}));
    assert_eq!(bogus["metadata"], Value::Null);
    assert_eq!(bogus["stored_metadata"], serde_json::json!({}));
    assert!(bogus["unreadable"].as_str().is_some(), "{bogus}");
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_runtime_that_stops_makes_the_server_unready(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let ivy = s.register("ivy").await;
    s.durable_at_least(&ivy.position).await;
    // Tables that now claim other settings, and an event to fail on: after the failure the
    // projector reloads, finds the mismatch, and the runtime ends.
    sqlx::query("UPDATE projection_checkpoints SET settings = '{\"other\": true}'")
        .execute(&s.pool)
        .await
        .unwrap();
    append_undecodable(&s).await;
    let reason = tokio::time::timeout(Duration::from_secs(60), s.projectors_stopped())
        .await
        .expect("the runtime stops");
    assert!(reason.contains("failed"), "{reason}");
    let body = unready(&s).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("projectors failed"),
        "{body}"
    );
    // (A graceful stop would report the projectors' error.)
    drop(s);
}

#[sqlx::test(migrations = "../migrations")]
async fn readyz_names_the_transaction_that_holds_projectors_back(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let s = TestServer::start(db).await;
    // A write transaction left open (as a long CREATE INDEX elsewhere would be).
    let mut open = s.pool.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *open)
        .await
        .unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    s.register("kit").await;
    let mut named = None;
    for _ in 0..600 {
        let ready: Value = s.get("/readyz").send().await.unwrap().json().await.unwrap();
        named = ready["memory"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|m| m["held_back_by"]["pid"].as_i64());
        // (Another test's transaction may be the oldest for a while.)
        if named == Some(i64::from(pid)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(named, Some(i64::from(pid)));
    s.assert_metric("murmur_projection_held_back_seconds").await;
    open.rollback().await.unwrap();
    s.stop().await;
}
