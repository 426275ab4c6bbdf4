//! Follow and unfollow over HTTP: one event each, idempotent, the rules, concurrency.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[sqlx::test(migrations = "../migrations")]
async fn follow_and_unfollow_append_once_with_metadata(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let jo = server.register("jo").await;
    let kim = server.register("kim").await;
    let path = format!("/v1/users/{}/following/{}", jo.id, kim.id);
    let edge = format!("{}:{}", jo.id, kim.id);

    let send = |method: Method, request_id: &'static str| {
        server
            .as_user(method, &path, &jo)
            .header("x-request-id", request_id)
            .send()
    };
    let followed = json_of(send(Method::PUT, "follow-1").await.unwrap(), StatusCode::OK).await;
    assert_eq!(followed["following"], true);
    let events = stream(&server.pool, "Follow", &edge).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "Followed");
    assert_eq!(
        events[0].payload,
        json!({"Followed": {"follower_id": jo.id, "followee_id": kim.id}})
    );
    assert_eq!(events[0].metadata.actor_id, Some(jo.id));
    assert_eq!(events[0].metadata.request_id, "follow-1");
    assert_eq!(position(&followed), events[0].position);

    // Following again appends nothing and answers the same position.
    let again = json_of(send(Method::PUT, "follow-2").await.unwrap(), StatusCode::OK).await;
    assert_eq!(again["following"], true);
    assert_eq!(position(&again), events[0].position);
    assert_eq!(stream(&server.pool, "Follow", &edge).await.len(), 1);

    let unfollowed = json_of(
        send(Method::DELETE, "unfollow-1").await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(unfollowed["following"], false);
    let events = stream(&server.pool, "Follow", &edge).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_type, "Unfollowed");
    assert_eq!(events[1].metadata.request_id, "unfollow-1");
    assert_eq!(position(&unfollowed), events[1].position);
    assert!(events[1].position > events[0].position);

    let again = json_of(
        send(Method::DELETE, "unfollow-2").await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["following"], false);
    assert_eq!(position(&again), events[1].position);
    assert_eq!(stream(&server.pool, "Follow", &edge).await.len(), 2);

    // Following again: a third event on the stream (decided on its loaded state, since the
    // first attempt's presumption of an empty stream conflicts), answered with its position.
    let refollowed = json_of(send(Method::PUT, "follow-3").await.unwrap(), StatusCode::OK).await;
    assert_eq!(refollowed["following"], true);
    let events = stream(&server.pool, "Follow", &edge).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].event_type, "Followed");
    assert_eq!(events[2].sequence, 3);
    assert_eq!(position(&refollowed), events[2].position);

    // Unfollowing someone never followed: nothing to point at.
    let never = format!("/v1/users/{}/following/{}", kim.id, jo.id);
    let body = json_of(
        server
            .as_user(Method::DELETE, &never, &kim)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(body, json!({"following": false, "position": "0:0"}));
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn follow_rules_and_bad_paths(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let lee = server.register("lee").await;
    let own = format!("/v1/users/{}/following/{}", lee.id, lee.id);
    let body = expect_problem(
        server.as_user(Method::PUT, &own, &lee),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("themselves"));

    let unknown = format!("/v1/users/{}/following/{}", lee.id, lee.id + 1000);
    for method in [Method::PUT, Method::DELETE] {
        let body = expect_problem(
            server.as_user(method, &unknown, &lee),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains("unknown user"));
    }
    for target in [
        "abc",
        "0",
        "-1",
        "1.5",
        "99999999999999999999",
        "9007199254740992",
    ] {
        let path = format!("/v1/users/{}/following/{target}", lee.id);
        expect_problem(
            server.as_user(Method::PUT, &path, &lee),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let path = format!("/v1/users/x/following/{}", lee.id);
    expect_problem(
        server.as_user(Method::PUT, &path, &lee),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_count(
        &server.pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'Follow'",
        0,
    )
    .await;
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_follows_of_one_pair_append_one_event(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = TestServer::start(db).await;
    let max = server.register("max").await;
    let nia = server.register("nia").await;
    let path = format!("/v1/users/{}/following/{}", max.id, nia.id);
    let answers =
        futures::future::join_all((0..50).map(|_| server.as_user(Method::PUT, &path, &max).send()))
            .await;
    let mut positions = Vec::new();
    for answer in answers {
        let body = json_of(answer.expect("an answer"), StatusCode::OK).await;
        assert_eq!(body["following"], true);
        positions.push(position(&body));
    }
    let events = stream(&server.pool, "Follow", &format!("{}:{}", max.id, nia.id)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "Followed");
    assert!(positions.iter().all(|p| *p == events[0].position));
    server.stop().await;
}
