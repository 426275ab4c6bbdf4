//! The audit routes over HTTP: complete, ordered histories of what the API wrote (and of a
//! v1 event shown upcast), paging, bad parameters, and admin-only access.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

async fn admin_get(server: &TestServer, path: &str) -> Value {
    let response = server
        .get(path)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("JSON body")
}

/// Every item of a route, following `next_after` page by page.
async fn all_items(server: &TestServer, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let page = admin_get(server, &format!("{path}?limit={limit}&after={after}")).await;
        let got = page["items"].as_array().expect("items");
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => return items,
        }
    }
}

fn summary(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|e| {
            format!(
                "{}/{} {}",
                e["aggregate_type"].as_str().unwrap(),
                e["aggregate_id"].as_str().unwrap(),
                e["event_type"].as_str().unwrap()
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_shows_complete_ordered_histories(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let ann = server.register("ann").await;
    let bob = server.register("bob").await;
    server.follow(&ann, bob.id).await;
    let (post, _) = server.post(&bob, "hello").await;
    server.follow(&bob, ann.id).await;
    server.unfollow(&ann, bob.id).await;
    server.delete_post(&bob, post).await;
    murmur_projections::testkit::settle(&server.pool).await;

    // The global log in small pages: everything once, in commit order.
    let log = all_items(&server, "/v1/audit/events", 2).await;
    assert_eq!(log.len(), 9, "{:#?}", summary(&log));
    let positions: Vec<murmur_projections::Position> = log
        .iter()
        .map(|e| e["position"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    // Ann: registered, followed Bob, was followed by Bob, unfollowed Bob; Bob's post is not hers.
    let ann_events = all_items(&server, &format!("/v1/audit/users/{}", ann.id), 100).await;
    let (a, b) = (ann.id, bob.id);
    assert_eq!(
        summary(&ann_events),
        [
            "Handle/ann HandleClaimed".to_string(),
            format!("User/{a} UserRegistered"),
            format!("Follow/{a}:{b} Followed"),
            format!("Follow/{b}:{a} Followed"),
            format!("Follow/{a}:{b} Unfollowed"),
        ]
    );
    let registered = &ann_events[1];
    assert_eq!(registered["metadata"]["actor_id"], Value::Null);
    assert_eq!(registered["upcast"], false);
    assert_eq!(
        registered["payload"]["UserRegistered"]["display_name"],
        "ann name"
    );
    let followed = &ann_events[2];
    assert_eq!(followed["metadata"]["actor_id"], a);
    assert!(followed["metadata"]["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert!(followed["metadata"]["time"].as_str().is_some());
    assert_eq!(followed["sequence"], 1);
    assert_eq!(followed["event_version"], followed["stored_version"]);

    // One stream's history, and an unknown one (none: 200, no items).
    let post_history = admin_get(&server, &format!("/v1/audit/streams/Post/{post}")).await;
    assert_eq!(
        summary(post_history["items"].as_array().unwrap()),
        [
            format!("Post/{post} PostCreated"),
            format!("Post/{post} PostDeleted")
        ]
    );
    assert_eq!(post_history["next_after"], Value::Null);
    let unknown = admin_get(&server, "/v1/audit/streams/Post/999999").await;
    assert_eq!(unknown, json!({"items": [], "next_after": null}));
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_v1_event_is_shown_upcast(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('User', '77', 1, 'UserRegistered', '1',
                 '{\"UserRegistered\": {\"user_id\": 77, \"handle\": \"Vintage\"}}',
                 '{\"request_id\": \"old\", \"time\": \"2019-05-01T00:00:00Z\"}')",
    )
    .execute(&server.pool)
    .await
    .unwrap();
    murmur_projections::testkit::settle(&server.pool).await;
    let page = admin_get(&server, "/v1/audit/users/77").await;
    let event = &page["items"][0];
    assert_eq!(event["event_version"], "2");
    assert_eq!(event["stored_version"], "1");
    assert_eq!(event["upcast"], true);
    assert_eq!(
        event["payload"],
        json!({"UserRegistered": {"user_id": 77, "handle": "Vintage", "display_name": "Vintage"}})
    );
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn only_the_admin_reads_the_audit(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let ann = server.register("ann").await;
    for path in [
        "/v1/audit/events".to_string(),
        "/v1/audit/streams/User/1".to_string(),
        format!("/v1/audit/users/{}", ann.id),
    ] {
        let anonymous = server.get(&path).send().await.unwrap();
        problem(anonymous, StatusCode::UNAUTHORIZED).await;
        let forged = server
            .get(&path)
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        problem(forged, StatusCode::UNAUTHORIZED).await;
        let user = server
            .get(&path)
            .bearer_auth(&ann.token)
            .send()
            .await
            .unwrap();
        problem(user, StatusCode::FORBIDDEN).await;
    }
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_parameters_are_problems(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    for path in [
        "/v1/audit/events?limit=0",
        "/v1/audit/events?limit=1001",
        "/v1/audit/events?limit=ten",
        "/v1/audit/events?after=12",
        "/v1/audit/events?after=a:b",
        "/v1/audit/users/abc",
        "/v1/audit/streams/Nope/1",
    ] {
        let response = server
            .get(path)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}"
        );
    }
    let limit = admin_get(&server, "/v1/audit/events?limit=1000").await;
    assert_eq!(limit["items"], json!([]));
    server.stop().await;
}
