//! Projectors are woken by commits, not by a trigger in the appending transaction: the
//! process that appended wakes its own projectors and announces the commit to the others.
//! Both servers here poll only once an hour, so a read of a write answers only if the
//! wake-up reached that node's projectors.

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

const NO_POLLING: Duration = Duration::from_secs(3600);

async fn feed_ids(s: &TestServer, user: &common::TestUser, at: &str) -> Vec<i64> {
    let response = s
        .read(
            &format!("/v1/users/{}/feed", user.id),
            Some(&user.token),
            at,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("a JSON page");
    common::ids(&page)
}

#[sqlx::test(migrations = "../migrations")]
async fn commits_wake_this_node_and_other_nodes(_: PgPoolOptions, db: PgConnectOptions) {
    let writer = TestServer::start_with(db.clone(), |c| c.poll_interval = NO_POLLING).await;
    let reader = TestServer::start_with(db, |c| {
        c.poll_interval = NO_POLLING;
        c.no_projectors = true;
    })
    .await;
    let alice = writer.register("alice").await;
    let bob = writer.register("bob").await;
    writer.follow(&bob, alice.id).await;
    for n in 0..3 {
        let (post, at) = writer.post(&alice, &format!("post {n}")).await;
        assert_eq!(feed_ids(&writer, &bob, &at).await.first(), Some(&post));
        assert_eq!(feed_ids(&reader, &bob, &at).await.first(), Some(&post));
    }
    reader.stop().await;
    writer.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn appends_carry_no_notification(pool: PgPool) {
    // The trigger of migration 0001 is gone (0008): nothing notifies inside an append.
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(triggers.is_empty(), "{triggers:?}");
}
