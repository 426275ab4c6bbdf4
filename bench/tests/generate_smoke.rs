//! The generator at a tiny scale against a real database: what it writes is murmur's own
//! events, in the promised numbers, and the same seed writes the same log.

use murmur_bench::generate::{generate, Counts, Options};
use murmur_domain::{EventMetadata, FollowEvent, MurmurEvent, PostEvent};
use sqlx::PgPool;

/// 546 users, 25,184 follows (513 of them to user 1), 37 posts.
const SCALE: f64 = 0.0005;

type Row = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    serde_json::Value,
    serde_json::Value,
);

async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata FROM events ORDER BY transaction_id, position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The log without what the database assigns (positions, transaction ids).
fn content(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|(_, t, id, seq, ty, v, p, m)| format!("{t}|{id}|{seq}|{ty}|{v}|{p}|{m}"))
        .collect()
}

async fn event_indexes(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'events' \
         ORDER BY indexname",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn regenerate(pool: &PgPool, seed: u64) -> Vec<Row> {
    sqlx::query("TRUNCATE events, credentials")
        .execute(pool)
        .await
        .unwrap();
    generate(pool, &Options::new(SCALE, seed), |_, _| {})
        .await
        .unwrap();
    rows(pool).await
}

#[sqlx::test(migrations = "../migrations")]
async fn tiny_scale_dataset(pool: PgPool) {
    let counts = Counts::at_scale(SCALE).unwrap();
    assert_eq!(
        counts,
        Counts {
            users: 546,
            follows: 25_184,
            posts: 37,
            user1_followers: 513
        }
    );
    let indexes_before = event_indexes(&pool).await;
    let report = generate(&pool, &Options::new(SCALE, 7), |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.events, counts.events());

    let rows = rows(&pool).await;
    assert_eq!(rows.len() as u64, counts.events());
    let mut by_type = std::collections::BTreeMap::<&str, u64>::new();
    let mut user1_followers = 0;
    let mut previous_time = None;
    for (_, aggregate_type, aggregate_id, sequence, event_type, version, payload, metadata) in &rows
    {
        *by_type.entry(event_type.as_str()).or_default() += 1;
        assert_eq!(*sequence, 1);
        let event = MurmurEvent::decode(aggregate_type, event_type, version, payload.clone())
            .unwrap_or_else(|e| panic!("row {aggregate_type}/{aggregate_id}: {e}"));
        // The row is exactly what encode() makes of the decoded event.
        let (t, id, ty, v, p) = event.encode();
        assert_eq!(
            (t, &id, &ty, &v, &p),
            (
                aggregate_type.as_str(),
                aggregate_id,
                event_type,
                version,
                payload
            )
        );
        let meta = EventMetadata::from_json(metadata).unwrap();
        assert!(
            previous_time < Some(meta.time),
            "event times must increase with position"
        );
        previous_time = Some(meta.time);
        match event {
            MurmurEvent::Follow(FollowEvent::Followed {
                follower_id,
                followee_id,
            }) => {
                assert_ne!(follower_id, followee_id);
                assert_eq!(meta.actor_id, Some(follower_id));
                user1_followers += u64::from(followee_id == 1);
            }
            MurmurEvent::Post(PostEvent::PostCreated { author_id, .. }) => {
                assert_eq!(meta.actor_id, Some(author_id));
            }
            MurmurEvent::Handle(_) | MurmurEvent::User(_) => assert_eq!(meta.actor_id, None),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(by_type["HandleClaimed"], 546);
    assert_eq!(by_type["UserRegistered"], 546);
    assert_eq!(by_type["Followed"], 25_184);
    assert_eq!(by_type["PostCreated"], 37);
    assert_eq!(user1_followers, 513);

    // The indexes dropped for the load are back, as the migrations defined them.
    assert!(indexes_before
        .iter()
        .any(|(name, _)| name == "events_position"));
    assert_eq!(event_indexes(&pool).await, indexes_before);
    // The live API continues after the generated ids.
    let next: (i64, i64) = sqlx::query_as("SELECT nextval('user_ids'), nextval('post_ids')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(next, (547, 38));
    let credentials: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(credentials, 546);

    // Same seed, same log; another seed, another graph.
    assert_eq!(content(&regenerate(&pool, 7).await), content(&rows));
    assert_ne!(content(&regenerate(&pool, 8).await), content(&rows));
}

#[test]
fn the_bench_password_hash_verifies() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let hash = murmur_bench::generate::bench_password_hash().unwrap();
    let parsed = PasswordHash::new(&hash).unwrap();
    assert_eq!(parsed.algorithm.as_str(), "argon2id");
    assert!(argon2::Argon2::default()
        .verify_password(murmur_bench::generate::BENCH_PASSWORD.as_bytes(), &parsed)
        .is_ok());
}

#[test]
fn scale_one_is_the_seed_and_a_tenth_is_a_tenth() {
    let one = Counts::at_scale(1.0).unwrap();
    assert_eq!(
        one,
        Counts {
            users: 1_091_000,
            follows: 50_368_293,
            posts: 73_817,
            user1_followers: 1_026_999
        }
    );
    assert_eq!(Counts::at_scale(0.1).unwrap().user1_followers, 102_700);
    assert!(Counts::at_scale(0.0).is_err());
}
