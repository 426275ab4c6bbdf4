//! Old event versions stay readable, end to end: a `UserRegistered` stored as version 1
//! (before `display_name` existed) loads into the `User` aggregate through postgres-es, is
//! projected into a profile shown by handle, is rebuilt the same, and shows in the audit
//! upcast with its stored version flagged.

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework};
use murmur_domain::{DomainError, EventMetadata, MurmurUpcaster, User, UserCommand};
use murmur_projections::audit::{self, AuditFilter};
use murmur_projections::runtime::{catch_up, ProjectorConfig};
use murmur_projections::Position;
use murmur_replay::{rebuild, select, Options, ProgressMode};
use postgres_es::PostgresEventRepository;
use serde_json::json;
use sqlx::PgPool;

const LEGACY_META: &str = r#"{"request_id": "legacy-1", "time": "2020-01-02T03:04:05.000000Z"}"#;

/// The rows a murmur of the v1 era wrote for registering `Old_Timer` as user 7.
async fn insert_v1_registration(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('Handle', 'old_timer', 1, 'HandleClaimed', '1', $1, $3::jsonb),
                ('User', '7', 1, 'UserRegistered', '1', $2, $3::jsonb)",
    )
    .bind(json!({"HandleClaimed": {"user_id": 7, "handle": "Old_Timer", "display_name": "Old_Timer"}}))
    .bind(json!({"UserRegistered": {"user_id": 7, "handle": "Old_Timer"}}))
    .bind(LEGACY_META)
    .execute(pool)
    .await
    .unwrap();
}

fn register(display_name: &str) -> UserCommand {
    UserCommand::Register {
        user_id: 7,
        handle: "Old_Timer".into(),
        display_name: display_name.into(),
    }
}

async fn user_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'User'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_v1_user_registered_loads_everywhere(pool: PgPool) {
    insert_v1_registration(&pool).await;

    // The aggregate, through postgres-es with murmur's upcaster: the v1 event is the user,
    // with display_name = handle, so registering again with that data changes nothing...
    let store = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
        .with_upcasters(vec![Box::new(MurmurUpcaster)]);
    let users = CqrsFramework::<User, _>::new(store, vec![], ());
    let metadata = EventMetadata {
        actor_id: None,
        request_id: "again".into(),
        time: chrono::Utc::now(),
    };
    users
        .execute_with_metadata("7", register("Old_Timer"), metadata.to_map())
        .await
        .unwrap();
    assert_eq!(user_events(&pool).await, 1, "Register was a no-op");
    // ...and other data is refused: the loaded state is the upcast v1 registration.
    let refused = users.execute("7", register("Someone Else")).await;
    assert!(
        matches!(
            refused,
            Err(AggregateError::UserError(DomainError::AlreadyRegistered(7)))
        ),
        "{refused:?}"
    );
    // Without the upcaster the stored event cannot even be loaded.
    let bare = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
    let bare = CqrsFramework::<User, _>::new(bare, vec![], ());
    assert!(bare.execute("7", register("Old_Timer")).await.is_err());

    // The projector.
    let config = ProjectorConfig::default();
    catch_up(&pool, &config).await.unwrap();
    let profile: (String, String) =
        sqlx::query_as("SELECT handle, display_name FROM profiles WHERE user_id = 7")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(profile, ("Old_Timer".into(), "Old_Timer".into()));

    // A rebuild reads it the same way.
    let options = Options {
        progress: ProgressMode::Off,
        ..Options::default()
    };
    let profiles = select(&["profiles".into()]).unwrap();
    rebuild(&pool, profiles, &options).await.unwrap();
    let rebuilt: String = sqlx::query_scalar("SELECT display_name FROM profiles WHERE user_id = 7")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rebuilt, "Old_Timer");

    // The audit: the user's two events, the v1 one upcast and flagged.
    let mut conn = pool.acquire().await.unwrap();
    let page = audit::read(&mut conn, &AuditFilter::User(7), Position::START, 100)
        .await
        .unwrap();
    let shown: Vec<_> = page
        .items
        .iter()
        .map(|e| (e.aggregate_type.as_str(), e.event_type.as_str(), e.upcast))
        .collect();
    assert_eq!(
        shown,
        [
            ("Handle", "HandleClaimed", false),
            ("User", "UserRegistered", true)
        ]
    );
    let registered = &page.items[1];
    assert_eq!(
        (
            registered.stored_version.as_str(),
            registered.event_version.as_str()
        ),
        ("1", "2")
    );
    assert_eq!(
        registered.payload,
        json!({"UserRegistered": {"user_id": 7, "handle": "Old_Timer", "display_name": "Old_Timer"}})
    );
    assert_eq!(registered.metadata.as_ref().unwrap().request_id, "legacy-1");
    assert_eq!(registered.unreadable, None);
}
