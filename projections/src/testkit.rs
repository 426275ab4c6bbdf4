//! The test kit the test crates share (feature `testkit`, for tests only): writing events
//! straight into the log (as the API would, through `MurmurEvent::encode`), resetting and
//! dumping the read models, waiting until the log is readable.

use crate::runtime::{projections, ProjectorConfig};
use chrono::{DateTime, Duration, Utc};
use murmur_domain::{
    EventMetadata, FollowEvent, HandleEvent, MurmurEvent, PostEvent, PostId, UserEvent, UserId,
};
use sqlx::{PgConnection, PgPool};

pub fn register(user_id: UserId, handle: &str) -> Vec<MurmurEvent> {
    let display_name = format!("{handle} display");
    vec![
        MurmurEvent::Handle(HandleEvent::HandleClaimed {
            user_id,
            handle: handle.into(),
            display_name: display_name.clone(),
        }),
        MurmurEvent::User(UserEvent::UserRegistered {
            user_id,
            handle: handle.into(),
            display_name,
        }),
    ]
}

pub fn followed(follower_id: UserId, followee_id: UserId) -> MurmurEvent {
    MurmurEvent::Follow(FollowEvent::Followed {
        follower_id,
        followee_id,
    })
}

pub fn unfollowed(follower_id: UserId, followee_id: UserId) -> MurmurEvent {
    MurmurEvent::Follow(FollowEvent::Unfollowed {
        follower_id,
        followee_id,
    })
}

pub fn created(post_id: PostId, author_id: UserId) -> MurmurEvent {
    MurmurEvent::Post(PostEvent::PostCreated {
        post_id,
        author_id,
        body: format!("post {post_id} by {author_id}"),
    })
}

pub fn deleted(post_id: PostId, author_id: UserId) -> MurmurEvent {
    MurmurEvent::Post(PostEvent::PostDeleted { post_id, author_id })
}

/// Hands out event times one second apart, so every event has its own time.
pub struct Clock(DateTime<Utc>);

impl Default for Clock {
    fn default() -> Self {
        Self(
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        )
    }
}

impl Clock {
    /// The time the next event will get.
    pub fn next(&self) -> DateTime<Utc> {
        self.0 + Duration::seconds(1)
    }

    pub fn tick(&mut self) -> DateTime<Utc> {
        self.0 += Duration::seconds(1);
        self.0
    }

    /// Appends `events` in one transaction of their own.
    pub async fn append(&mut self, pool: &PgPool, events: &[MurmurEvent]) {
        let mut tx = pool.begin().await.unwrap();
        self.append_in(&mut tx, events).await;
        tx.commit().await.unwrap();
    }

    /// Appends `events` on `conn` (inside whatever transaction it is in).
    pub async fn append_in(&mut self, conn: &mut PgConnection, events: &[MurmurEvent]) {
        for event in events {
            let time = self.tick();
            insert(conn, event, time).await;
        }
    }
}

/// One event row, as cqrs-es would write it (next sequence of its stream).
pub async fn insert(conn: &mut PgConnection, event: &MurmurEvent, time: DateTime<Utc>) {
    let metadata = EventMetadata {
        actor_id: None,
        request_id: "test".into(),
        time,
    };
    insert_with(conn, event, &metadata).await;
}

/// [`insert`] with the given metadata.
pub async fn insert_with(conn: &mut PgConnection, event: &MurmurEvent, metadata: &EventMetadata) {
    let (aggregate_type, aggregate_id, event_type, version, payload) = event.encode();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT $1, $2, coalesce(max(sequence), 0) + 1, $3, $4, $5, $6
         FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(&aggregate_id)
    .bind(&event_type)
    .bind(&version)
    .bind(&payload)
    .bind(metadata.to_json())
    .execute(conn)
    .await
    .unwrap();
}

fn all_tables() -> Vec<&'static str> {
    projections(&ProjectorConfig::default())
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect()
}

/// Empties every read model and checkpoint (the log stays).
pub async fn reset_read_models(pool: &PgPool) {
    let tables = all_tables().join(", ");
    sqlx::query(&format!("TRUNCATE projection_checkpoints, {tables}"))
        .execute(pool)
        .await
        .unwrap();
}

/// Every read-model table's rows as text, sorted: equal dumps mean equal read models.
pub async fn dump(pool: &PgPool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in all_tables() {
        // An inbox row's `as_of` is bookkeeping for the journal (empty once at rest).
        let from = match table {
            "feed_inbox" => "(SELECT owner_id, post_ids FROM feed_inbox)",
            other => other,
        };
        let rows: Option<String> = sqlx::query_scalar(&format!(
            "SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM {from} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((table.to_string(), rows.unwrap_or_default()));
    }
    out
}

pub fn config(celebrity_threshold: i64, batch_size: i64) -> ProjectorConfig {
    ProjectorConfig {
        celebrity_threshold,
        batch_size,
        ..ProjectorConfig::default()
    }
}

/// Waits until every event is below the oldest running transaction, where readers of the
/// log (the audit, a projector) see it. Only a long transaction elsewhere in the cluster
/// makes this wait.
pub async fn settle(pool: &PgPool) {
    for _ in 0..6000 {
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM events
                           WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))",
        )
        .fetch_one(pool)
        .await
        .expect("checking for pending events");
        if !pending {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("events stayed behind a running transaction for two minutes");
}
