//! The command side over HTTP: registration, login, follows, posts, auth, errors, health,
//! checked through the answers and directly in the `events` and `credentials` tables.

mod common;

use std::time::Duration;

use common::{problem, TestServer, TestUser, JWT_SECRET, PASSWORD};
use murmur_api::auth::{Passwords, TokenKeys};
use murmur_api::commands::{Commands, Registration};
use murmur_domain::{EventMetadata, HandleEvent, MurmurEvent};
use murmur_projections::Position;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

/// One stored event, as the tests look at it.
#[derive(Debug)]
struct Stored {
    event_type: String,
    sequence: i64,
    payload: Value,
    metadata: EventMetadata,
    position: Position,
}

async fn stream(pool: &PgPool, aggregate_type: &str, aggregate_id: &str) -> Vec<Stored> {
    sqlx::query(
        "SELECT event_type, sequence, payload, metadata, transaction_id::text AS xid, position
         FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await
    .expect("reading a stream")
    .into_iter()
    .map(|row| Stored {
        event_type: row.get("event_type"),
        sequence: row.get("sequence"),
        payload: row.get("payload"),
        metadata: EventMetadata::from_json(&row.get::<Value, _>("metadata"))
            .expect("readable metadata"),
        position: Position::new(
            row.get::<String, _>("xid").parse().expect("xid"),
            row.get("position"),
        ),
    })
    .collect()
}

/// Asserts that the `SELECT count(*) ...` query `sql` counts `expected` rows.
async fn assert_count(pool: &PgPool, sql: &str, expected: i64) {
    let counted: i64 = sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("counting");
    assert_eq!(counted, expected, "{sql}");
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Shorthands: requests as a signed-in user, and anonymous JSON posts.
trait Requests {
    fn as_user(&self, method: Method, path: &str, user: &TestUser) -> reqwest::RequestBuilder;
    fn post_json(&self, path: &str, body: Value) -> reqwest::RequestBuilder;
}

impl Requests for TestServer {
    fn post_json(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.request(Method::POST, path).json(&body)
    }

    fn as_user(&self, method: Method, path: &str, user: &TestUser) -> reqwest::RequestBuilder {
        self.request(method, path)
            .header("authorization", bearer(&user.token))
    }
}

/// Sends `request` and reads the problem+json answer it must get.
async fn expect_problem(request: reqwest::RequestBuilder, status: StatusCode) -> Value {
    problem(request.send().await.expect("an answer"), status).await
}

async fn json_of(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("a JSON body")
}

fn position(body: &Value) -> Position {
    body["position"]
        .as_str()
        .expect("a position")
        .parse()
        .expect("a well-formed position")
}

// ---------------------------------------------------------------- registration

#[sqlx::test(migrations = "../migrations")]
async fn registration_appends_claim_and_user_with_metadata(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let response = server
        .request(Method::POST, "/v1/users")
        .header("x-request-id", "req-register-1")
        .json(&json!({"handle": "Alice_1", "display_name": "  Alice A.  ", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"].to_str().unwrap(),
        "req-register-1"
    );
    let body = json_of(response, StatusCode::CREATED).await;
    let id = body["id"].as_i64().unwrap();
    assert!(id > 0);
    assert_eq!(body["handle"], "Alice_1");
    assert_eq!(body["display_name"], "Alice A.");

    let claim = stream(&server.pool, "Handle", "alice_1").await;
    assert_eq!(claim.len(), 1);
    assert_eq!(claim[0].event_type, "HandleClaimed");
    assert_eq!(
        claim[0].payload,
        json!({"HandleClaimed": {"user_id": id, "handle": "Alice_1", "display_name": "Alice A."}})
    );
    let user = stream(&server.pool, "User", &id.to_string()).await;
    assert_eq!(user.len(), 1);
    assert_eq!(user[0].event_type, "UserRegistered");
    assert_eq!(user[0].payload["UserRegistered"]["user_id"], id);
    // The answer's position is that of UserRegistered, which follows the claim.
    assert_eq!(position(&body), user[0].position);
    assert!(user[0].position.position > claim[0].position.position);
    for event in [&claim[0], &user[0]] {
        assert_eq!(event.metadata.actor_id, None, "nobody is signed in yet");
        assert_eq!(event.metadata.request_id, "req-register-1");
        let age = chrono::Utc::now() - event.metadata.time;
        assert!(age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(5));
    }

    // The token speaks for the new user.
    let keys = TokenKeys::new(JWT_SECRET.as_bytes(), Duration::from_secs(60));
    assert_eq!(keys.verify(body["token"].as_str().unwrap()), Some(id));

    // Only a hash is stored, and the password appears nowhere in the log.
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
            .bind(id)
            .fetch_one(&server.pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(!hash.contains(PASSWORD));
    let leaks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
         WHERE strpos(payload::text, $1) > 0 OR strpos(metadata::text, $1) > 0",
    )
    .bind(PASSWORD)
    .fetch_one(&server.pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0);
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_request_without_an_id_gets_one_recorded(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    let response = server
        .post_json(
            "/v1/users",
            json!({"handle": "bob", "display_name": "Bob", "password": PASSWORD}),
        )
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!generated.is_empty());
    let body = json_of(response, StatusCode::CREATED).await;
    let user = stream(&server.pool, "User", &body["id"].to_string()).await;
    assert_eq!(user[0].metadata.request_id, generated);
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn unfit_request_ids_are_replaced_and_the_recorded_one_is_echoed(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = TestServer::start(db).await;
    let longest = "r".repeat(murmur_api::http::MAX_REQUEST_ID);
    let cases = [
        (longest.clone(), true),
        ("r".repeat(murmur_api::http::MAX_REQUEST_ID + 1), false),
        ("r".repeat(5_000), false),
        ("has space".to_string(), false),
        ("tab\there".to_string(), false),
        ("caf\u{e9}".to_string(), false),
    ];
    for (n, (sent, kept)) in cases.into_iter().enumerate() {
        let value = reqwest::header::HeaderValue::from_bytes(sent.as_bytes()).unwrap();
        let response = server
            .post_json(
                "/v1/users",
                json!({"handle": format!("rid{n}"), "display_name": "R", "password": PASSWORD}),
            )
            .header("x-request-id", value)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let body = json_of(response, StatusCode::CREATED).await;
        let user = stream(&server.pool, "User", &body["id"].to_string()).await;
        assert_eq!(user[0].metadata.request_id, echoed, "{sent:.20}");
        if kept {
            assert_eq!(echoed, sent);
        } else {
            assert_ne!(echoed, sent);
            assert!(echoed.len() <= murmur_api::http::MAX_REQUEST_ID);
        }
    }
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn invalid_registrations_are_refused_and_write_nothing(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = TestServer::start(db).await;
    let cases = [
        (
            json!({"handle": "no spaces", "display_name": "x", "password": PASSWORD}),
            "handle",
        ),
        (
            json!({"handle": "", "display_name": "x", "password": PASSWORD}),
            "handle",
        ),
        (
            json!({"handle": "x".repeat(31), "display_name": "x", "password": PASSWORD}),
            "handle",
        ),
        (
            json!({"handle": "ok", "display_name": "   ", "password": PASSWORD}),
            "display name",
        ),
        (
            json!({"handle": "ok", "display_name": "x".repeat(51), "password": PASSWORD}),
            "display name",
        ),
        (
            json!({"handle": "ok", "display_name": "bell\u{7}", "password": PASSWORD}),
            "display name",
        ),
        (
            json!({"handle": "ok", "display_name": "x", "password": "short"}),
            "password",
        ),
        (
            json!({"handle": "ok", "display_name": "x", "password": "p".repeat(129)}),
            "password",
        ),
    ];
    for (request, rule) in cases {
        let response = server
            .post_json("/v1/users", request.clone())
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            body["detail"].as_str().unwrap().contains(rule),
            "{request}: {body}"
        );
    }
    assert_count(&server.pool, "SELECT count(*) FROM events", 0).await;
    assert_count(&server.pool, "SELECT count(*) FROM credentials", 0).await;
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn handles_are_unique_case_insensitively(_: PgPoolOptions, db: PgConnectOptions) {
    let server = TestServer::start(db).await;
    server.register("Carol").await;
    for taken in ["carol", "CAROL", "Carol"] {
        let response = server
            .post_json(
                "/v1/users",
                json!({"handle": taken, "display_name": "Other", "password": PASSWORD}),
            )
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::CONFLICT).await;
        assert!(body["detail"].as_str().unwrap().contains("taken"));
    }
    assert_count(
        &server.pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'User'",
        1,
    )
    .await;
    // The refused registrations left no credentials behind.
    assert_count(&server.pool, "SELECT count(*) FROM credentials", 1).await;
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_registrations_of_one_handle_make_one_user(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = TestServer::start(db).await;
    let attempts = (0..50).map(|i| {
        // The same handle in varying case.
        let handle = if i % 2 == 0 { "Racer" } else { "rACER" };
        server
            .post_json("/v1/users", json!({"handle": handle, "display_name": format!("racer {i}"), "password": PASSWORD}))
            .send()
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("an answer").status())
        .collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 49), "{statuses:?}");
    assert_count(
        &server.pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'Handle' AND aggregate_id = 'racer'",
        1,
    )
    .await;
    assert_count(
        &server.pool,
        "SELECT count(*) FROM events WHERE event_type = 'UserRegistered'",
        1,
    )
    .await;
    assert_count(&server.pool, "SELECT count(*) FROM credentials", 1).await;
    server.stop().await;
}

// ---------------------------------------------------------------- interrupted registrations

/// Writes what a registration leaves behind when it crashes right after claiming its handle:
/// credentials and `HandleClaimed`, but no `UserRegistered`.
async fn interrupted_registration(pool: &PgPool, handle: &str) -> i64 {
    let id: i64 = sqlx::query_scalar("SELECT nextval('user_ids')")
        .fetch_one(pool)
        .await
        .unwrap();
    let hash = Passwords::default().hash(PASSWORD).await.unwrap();
    sqlx::query("INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)")
        .bind(id)
        .bind(hash)
        .execute(pool)
        .await
        .unwrap();
    let claim = MurmurEvent::Handle(HandleEvent::HandleClaimed {
        user_id: id,
        handle: handle.into(),
        display_name: format!("{handle} name"),
    });
    let (aggregate_type, aggregate_id, event_type, version, payload) = claim.encode();
    let metadata = EventMetadata {
        actor_id: None,
        request_id: "crashed".into(),
        time: chrono::Utc::now(),
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ($1, $2, 1, $3, $4, $5, $6)",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(event_type)
    .bind(version)
    .bind(payload)
    .bind(metadata.to_json())
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn login(server: &TestServer, handle: &str, password: &str) -> reqwest::Response {
    server
        .post_json(
            "/v1/sessions",
            json!({"handle": handle, "password": password}),
        )
        .send()
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_interrupted_registration_is_completed_at_start_up(
    pool_options: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = pool_options.connect_with(db.clone()).await.unwrap();
    let id = interrupted_registration(&pool, "Dana").await;
    assert!(stream(&pool, "User", &id.to_string()).await.is_empty());

    let server = TestServer::start(db).await;
    // Completion runs in the background at start-up; give it a while.
    let mut user = Vec::new();
    for _ in 0..100 {
        user = stream(&server.pool, "User", &id.to_string()).await;
        if !user.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(user.len(), 1);
    assert!(user[0].metadata.request_id.starts_with("startup-"));
    assert_eq!(
        user[0].payload,
        json!({"UserRegistered": {"user_id": id, "handle": "Dana", "display_name": "Dana name"}})
    );
    let body = json_of(login(&server, "dana", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(body["user_id"], id);
    // Logging in again appends nothing more.
    assert_eq!(stream(&server.pool, "User", &id.to_string()).await.len(), 1);
    server.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_start_up_scan_completes_only_interrupted_registrations_across_pages(pool: PgPool) {
    let settings = murmur_projections::runtime::ProjectorConfig::default().settings();
    let commands = Commands::new(
        pool.clone(),
        murmur_projections::Image::new(&settings),
        murmur_projections::runtime::Wake::new(),
    );
    let mut interrupted = Vec::new();
    for i in 0..7 {
        let handle = format!("user_{i}");
        if i % 3 == 0 {
            interrupted.push(interrupted_registration(&pool, &handle).await);
        } else {
            let registration = Registration {
                handle,
                display_name: "someone".into(),
                password: PASSWORD.into(),
            };
            commands.register(registration, "setup").await.unwrap();
        }
    }
    assert_eq!(interrupted.len(), 3);
    // Pages of two claims: the scan must carry on past full pages.
    assert_eq!(
        commands
            .complete_interrupted_registrations(2)
            .await
            .unwrap(),
        3
    );
    for id in &interrupted {
        assert_eq!(stream(&pool, "User", &id.to_string()).await.len(), 1);
    }
    assert_count(
        &pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'User'",
        7,
    )
    .await;
    assert_eq!(
        commands
            .complete_interrupted_registrations(2)
            .await
            .unwrap(),
        0
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_interrupted_registration_is_completed_by_login_or_a_second_registrant(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = TestServer::start(db).await;

    let by_login = interrupted_registration(&server.pool, "Erin").await;
    let body = json_of(login(&server, "Erin", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(body["user_id"], by_login);
    assert_eq!(
        stream(&server.pool, "User", &by_login.to_string())
            .await
            .len(),
        1
    );

    let by_registrant = interrupted_registration(&server.pool, "Fay").await;
    let response = server
        .post_json(
            "/v1/users",
            json!({"handle": "FAY", "display_name": "Impostor", "password": PASSWORD}),
        )
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::CONFLICT).await;
    let user = stream(&server.pool, "User", &by_registrant.to_string()).await;
    assert_eq!(user.len(), 1);
    assert_eq!(
        user[0].payload["UserRegistered"]["display_name"],
        "Fay name"
    );
    let body = json_of(login(&server, "fay", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(body["user_id"], by_registrant);
    server.stop().await;
}

// ---------------------------------------------------------------- login and tokens

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

// ---------------------------------------------------------------- follows

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

// ---------------------------------------------------------------- posts

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

// ---------------------------------------------------------------- the log

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
        let at = Position::new(
            row.get::<String, _>("xid").parse().unwrap(),
            row.get("position"),
        );
        // Each command committed before the next began, so both parts increase.
        assert!(at > previous && at.position > previous.position);
        previous = at;
        let metadata = EventMetadata::from_json(&row.get::<Value, _>("metadata")).unwrap();
        assert!(!metadata.request_id.is_empty());
    }
    server.stop().await;
}

// ---------------------------------------------------------------- malformed requests

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

// ---------------------------------------------------------------- operations

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
