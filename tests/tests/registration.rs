//! Registration over HTTP: the claim and the user, request ids, refusals, unique handles,
//! concurrency, and registrations a crash interrupted (completed at start-up, at login or
//! by a second registrant).

mod common;

use std::time::Duration;

use common::*;
use murmur_api::auth::{Passwords, TokenKeys};
use murmur_api::commands::{Commands, Registration};
use murmur_domain::{EventMetadata, HandleEvent, MurmurEvent};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

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
