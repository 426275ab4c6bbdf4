//! The audit trail (`murmur_projections::audit`) and the `replay` binary's commands and
//! errors, against the real PostgreSQL.

use murmur_projections::testkit as common;

use std::process::{Command, Output};

use chrono::{DateTime, Duration, Utc};
use common::*;
use murmur_domain::{EventMetadata, MurmurEvent, UserId};
use murmur_projections::audit::{self, AuditError, AuditEvent, AuditFilter};
use murmur_projections::runtime::catch_up;
use murmur_projections::Position;
use serde_json::Value;
use sqlx::PgPool;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Appends each event in its own transaction, with `actor` as its actor, a minute apart.
async fn append(pool: &PgPool, events: &[(MurmurEvent, Option<UserId>)]) {
    let mut conn = pool.acquire().await.unwrap();
    for (i, (event, actor)) in events.iter().enumerate() {
        let metadata = EventMetadata {
            actor_id: *actor,
            request_id: format!("req-{i}"),
            time: t0() + Duration::minutes(i as i64),
        };
        insert_with(&mut conn, event, &metadata).await;
    }
    drop(conn);
    settle(pool).await;
}

/// Users 1-3 register; 1 follows 2; 2 posts; 3 follows 1; 1 posts and deletes it; 3
/// unfollows 1; 2 follows 3.
fn story() -> Vec<(MurmurEvent, Option<UserId>)> {
    let mut events: Vec<(MurmurEvent, Option<UserId>)> = (1..=3)
        .flat_map(|id| register(id, &format!("user{id}")))
        .map(|e| (e, None))
        .collect();
    events.extend([
        (followed(1, 2), Some(1)),
        (created(10, 2), Some(2)),
        (followed(3, 1), Some(3)),
        (created(11, 1), Some(1)),
        (deleted(11, 1), Some(1)),
        (unfollowed(3, 1), Some(3)),
        (followed(2, 3), Some(2)),
    ]);
    events
}

async fn read_all(pool: &PgPool, filter: &AuditFilter, limit: i64) -> Vec<AuditEvent> {
    let mut conn = pool.acquire().await.unwrap();
    let (mut all, mut after) = (Vec::new(), Position::START);
    loop {
        let page = audit::read(&mut conn, filter, after, limit).await.unwrap();
        assert!(page.items.len() as i64 <= limit);
        all.extend(page.items);
        match page.next_after {
            Some(next) => after = next,
            None => return all,
        }
    }
}

fn streams(events: &[AuditEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}/{} {}", e.aggregate_type, e.aggregate_id, e.event_type))
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_reads_complete_ordered_histories(pool: PgPool) {
    append(&pool, &story()).await;

    // The whole log, in pages of 4: every event once, in commit order.
    let log = read_all(&pool, &AuditFilter::All { since: None }, 4).await;
    assert_eq!(log.len(), story().len());
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    let requests: Vec<&str> = log
        .iter()
        .map(|e| e.metadata.as_ref().unwrap().request_id.as_str())
        .collect();
    let expected: Vec<String> = (0..story().len()).map(|i| format!("req-{i}")).collect();
    assert_eq!(requests, expected);

    // Since a time: the events stamped from then on.
    let since = t0() + Duration::minutes(8);
    let recent = read_all(&pool, &AuditFilter::All { since: Some(since) }, 100).await;
    assert_eq!(recent.len(), story().len() - 8);
    assert!(recent
        .iter()
        .all(|e| e.metadata.as_ref().unwrap().time >= since));

    // User 1: their registration and claim, what they did, and what was done to them.
    let user1 = read_all(&pool, &AuditFilter::User(1), 2).await;
    assert_eq!(
        streams(&user1),
        [
            "Handle/user1 HandleClaimed",
            "User/1 UserRegistered",
            "Follow/1:2 Followed",
            "Follow/3:1 Followed",
            "Post/11 PostCreated",
            "Post/11 PostDeleted",
            "Follow/3:1 Unfollowed",
        ]
    );
    // User 2 is followed by 1, posts, follows 3; 3's follow of 1 is not theirs.
    let user2 = read_all(&pool, &AuditFilter::User(2), 100).await;
    assert_eq!(
        streams(&user2),
        [
            "Handle/user2 HandleClaimed",
            "User/2 UserRegistered",
            "Follow/1:2 Followed",
            "Post/10 PostCreated",
            "Follow/2:3 Followed",
        ]
    );
    assert!(read_all(&pool, &AuditFilter::User(99), 100)
        .await
        .is_empty());

    // One stream, in sequence order; an unknown stream has no events.
    let follow = AuditFilter::Stream {
        aggregate_type: "Follow".into(),
        aggregate_id: "3:1".into(),
    };
    let history = read_all(&pool, &follow, 100).await;
    let sequences: Vec<i64> = history.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2]);
    assert_eq!(history[1].metadata.as_ref().unwrap().actor_id, Some(3));
    let unknown = AuditFilter::Stream {
        aggregate_type: "Post".into(),
        aggregate_id: "404".into(),
    };
    assert!(read_all(&pool, &unknown, 100).await.is_empty());

    let mut conn = pool.acquire().await.unwrap();
    for bad in [0, 1001] {
        let refused = audit::read(&mut conn, &AuditFilter::User(1), Position::START, bad).await;
        assert!(matches!(refused, Err(AuditError::BadLimit(n)) if n == bad));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unreadable_event_is_shown_as_stored(pool: PgPool) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('Post', '5', 1, 'PostEdited', '1', '{\"PostEdited\": {\"post_id\": 5, \"author_id\": 4}}',
                 '{\"actor_id\": \"4\", \"request_id\": \"r\", \"time\": \"2026-01-01T00:00:00Z\"}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    settle(&pool).await;
    let shown = read_all(&pool, &AuditFilter::User(4), 10).await;
    assert_eq!(shown.len(), 1, "found through the author id in its payload");
    assert_eq!(shown[0].event_type, "PostEdited");
    assert!(!shown[0].upcast);
    assert!(shown[0].unreadable.is_some());
}

// ---- the `replay` binary ----

async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

fn replay(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .arg("--database-url")
        .arg(url)
        .args(args)
        .output()
        .expect("running replay")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_lines(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", stderr(output));
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_commands_print_tables_and_json_lines(pool: PgPool) {
    append(&pool, &story()).await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('User', '9', 1, 'UserRegistered', '1',
                 '{\"UserRegistered\": {\"user_id\": 9, \"handle\": \"Vintage\"}}',
                 '{\"request_id\": \"old\", \"time\": \"2019-05-01T00:00:00Z\"}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    settle(&pool).await;
    let url = database_url(&pool).await;

    let user1 = json_lines(&replay(&url, &["audit", "user", "1", "--json"]));
    let db = read_all(&pool, &AuditFilter::User(1), 100).await;
    assert_eq!(
        user1,
        serde_json::to_value(&db)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    );

    let log = json_lines(&replay(&url, &["audit", "log", "--json", "--limit", "3"]));
    assert_eq!(log.len(), 3);
    let after = log[2]["position"].as_str().unwrap().to_string();
    let rest = json_lines(&replay(
        &url,
        &["audit", "log", "--json", "--after", &after],
    ));
    assert_eq!(rest.len(), story().len() + 1 - 3);
    let since = json_lines(&replay(
        &url,
        &["audit", "log", "--json", "--since", "2026-03-01T00:10:00Z"],
    ));
    assert_eq!(since.len(), story().len() - 10);

    let table = replay(&url, &["audit", "stream", "User", "9"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("POSITION"));
    assert!(lines[1].contains("User/9"), "{text}");
    assert!(lines[1].contains("UserRegistered v2 (stored v1)"), "{text}");
    assert!(lines[1].contains(r#""display_name":"Vintage""#), "{text}");
}

#[sqlx::test(migrations = "../migrations")]
async fn rebuild_and_verify_from_the_command_line(pool: PgPool) {
    append(&pool, &story()).await;
    catch_up(&pool, &config(10_000, 100)).await.unwrap();
    let url = database_url(&pool).await;

    let verified = replay(&url, &["verify"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(
        stdout(&verified).lines().all(|l| l.starts_with("ok ")),
        "{}",
        stdout(&verified)
    );

    sqlx::query("UPDATE posts SET body = 'edited behind our back'")
        .execute(&pool)
        .await
        .unwrap();
    let differs = replay(&url, &["verify", "--projection", "posts"]);
    assert_eq!(differs.status.code(), Some(1));
    let out = stdout(&differs);
    assert!(out.contains("DIFFERS  posts.posts"), "{out}");
    assert!(
        out.contains("only live: (10,2,\"edited behind our back\""),
        "{out}"
    );

    let rebuilt = replay(&url, &["rebuild", "--all", "--batch-size", "3"]);
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    assert!(stdout(&rebuilt).starts_with("rebuilt profiles, posts, feeds: 13 events"));
    assert!(replay(&url, &["verify"]).status.success());
}

#[test]
fn bad_input_and_an_unreachable_database_are_clear_errors() {
    let url = "postgres://postgres@127.0.0.1:1/nowhere";
    for (args, code, message) in [
        (&["rebuild"][..], 2, "--all"),
        (
            &["rebuild", "--all", "--projection", "posts"],
            2,
            "cannot be used with",
        ),
        (
            &["rebuild", "--projection", "nope"],
            2,
            "possible values: profiles, posts, feeds",
        ),
        (&["verify", "--frobnicate"], 2, "unexpected argument"),
        (&["audit", "user", "abc"], 2, "invalid value"),
        (
            &["audit", "log", "--after", "12"],
            2,
            "<transaction id>:<position>",
        ),
        (
            &["audit", "log", "--since", "yesterday"],
            2,
            "neither RFC 3339",
        ),
        (&["audit", "log"], 1, "cannot connect to the database"),
    ] {
        let output = replay(url, args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    for command in [
        &["rebuild", "--help"][..],
        &["verify", "--help"],
        &["audit", "user", "--help"],
    ] {
        let help = replay(url, command);
        assert!(help.status.success());
        assert!(stdout(&help).contains("Usage: replay"), "{command:?}");
    }
}
