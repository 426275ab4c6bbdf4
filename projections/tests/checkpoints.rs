//! The in-memory checkpoint view against the real PostgreSQL: the trigger's notifications
//! reach it, a lost notification never makes a waiter give up on a reached position, and the
//! projector runtime's checkpoints flow through to `PgReadModel::progress`.

use murmur_projections::testkit as common;

use std::time::Duration;

use common::*;
use murmur_projections::read_model::names;
use murmur_projections::runtime::spawn;
use murmur_projections::shutdown::Stop;
use murmur_projections::{CheckpointView, PgReadModel, Position, ReadModel};
use sqlx::PgPool;

/// Generous: these tests wait for an outcome, they do not time it.
const PATIENCE: Duration = Duration::from_secs(10);

async fn set_checkpoint(pool: &PgPool, projection: &str, at: Position) {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, transaction_id, position)
         VALUES ($1, $2::text::xid8, $3)
         ON CONFLICT (projection) DO UPDATE
         SET transaction_id = excluded.transaction_id, position = excluded.position",
    )
    .bind(projection)
    .bind(at.transaction_id.to_string())
    .bind(at.position)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn checkpoint_changes_reach_memory(pool: PgPool) {
    set_checkpoint(&pool, names::PROFILES, Position::new(10, 3)).await;
    let view = CheckpointView::load(pool.clone()).await.unwrap();
    assert_eq!(view.progress(&[names::PROFILES]), Position::new(10, 3));
    // A projection without a row has applied nothing.
    assert_eq!(
        view.progress(&[names::PROFILES, names::FEEDS]),
        Position::START
    );

    let stop = Stop::new();
    let listener = view.spawn_listener(stop.shutdown());
    // Changes after start: an UPDATE and an INSERT of a new row.
    set_checkpoint(&pool, names::PROFILES, Position::new(12, 7)).await;
    set_checkpoint(&pool, names::FEEDS, Position::new(11, 5)).await;
    let at = view
        .wait_for(
            &[names::PROFILES, names::FEEDS],
            Position::new(11, 5),
            PATIENCE,
        )
        .await
        .unwrap();
    assert_eq!(at, Position::new(11, 5));
    assert_eq!(view.progress(&[names::PROFILES]), Position::new(12, 7));

    stop.stop();
    listener.await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_missed_notification_does_not_fail_a_wait(pool: PgPool) {
    // No listener: memory learns nothing by itself, as after a lost notification.
    let view = CheckpointView::load(pool.clone()).await.unwrap();
    set_checkpoint(&pool, names::POSTS, Position::new(20, 9)).await;
    assert_eq!(view.progress(&[names::POSTS]), Position::START);
    let at = view
        .wait_for(
            &[names::POSTS],
            Position::new(20, 9),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
    assert_eq!(at, Position::new(20, 9));
    // Not reached even in the database: the wait answers the progress, below `min`.
    let at = view
        .wait_for(
            &[names::POSTS],
            Position::new(21, 1),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
    assert_eq!(at, Position::new(20, 9));
}

#[sqlx::test(migrations = "../migrations")]
async fn read_model_progress_follows_the_projectors_from_memory(pool: PgPool) {
    let view = CheckpointView::load(pool.clone()).await.unwrap();
    let stop = Stop::new();
    let listener = view.spawn_listener(stop.shutdown());
    let rm = PgReadModel::with_checkpoints(pool.clone(), view);
    let stop_projectors = Stop::new();
    let runtime = spawn(
        pool.clone(),
        config(10_000, 100),
        stop_projectors.shutdown(),
    );

    let mut clock = Clock::default();
    clock.append(&pool, &register(1, "reader")).await;
    clock.append(&pool, &[created(1, 1)]).await;
    let head: Position = sqlx::query_scalar::<_, String>(
        "SELECT transaction_id::text || ':' || position FROM events
         ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .parse()
    .unwrap();
    let at = rm
        .progress_reaching(&names::ALL, head, PATIENCE)
        .await
        .unwrap();
    assert!(at >= head, "{at} < {head}");
    // Memory reached the head only once the read models had it too.
    assert_eq!(rm.profile(1).await.unwrap().unwrap().posts_count, 1);
    assert!(rm.progress(&names::ALL).await.unwrap() >= head);
    // Never ahead of the database.
    let db = PgReadModel::new(pool.clone());
    assert!(rm.progress(&names::ALL).await.unwrap() <= db.progress(&names::ALL).await.unwrap());

    stop_projectors.stop();
    runtime.await.unwrap().unwrap();
    stop.stop();
    listener.await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn the_trigger_notifies_each_checkpoint_change_at_commit(pool: PgPool) {
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener
        .listen(murmur_projections::checkpoints::CHANNEL)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO projection_checkpoints (projection) VALUES ('feeds')")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE projection_checkpoints SET transaction_id = '42', position = 7
         WHERE projection = 'feeds'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    // Nothing before commit.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.recv())
            .await
            .is_err()
    );
    tx.commit().await.unwrap();
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let notification = tokio::time::timeout(PATIENCE, listener.recv())
            .await
            .unwrap()
            .unwrap();
        payloads.push(notification.payload().to_string());
    }
    assert_eq!(payloads, ["feeds 0:0", "feeds 42:7"]);
}
