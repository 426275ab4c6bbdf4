//! The read horizon: an open write transaction holds every reader of the log back, unless
//! it is a registered flush, which writes no event and is passed over.

use murmur_projections::testkit as common;

use common::*;
use murmur_projections::log::horizon::{register_eventless, Registry};
use murmur_projections::log::read::read_batch;
use murmur_projections::Position;
use sqlx::{Connection, PgPool};

#[sqlx::test(migrations = "../migrations")]
async fn a_flush_in_flight_does_not_hold_readers_back_and_other_writers_do(pool: PgPool) {
    let mut clock = Clock::default();
    let mut reader = pool.acquire().await.unwrap();

    // A write transaction that registers as eventless (as a flush does), still open.
    let mut flush_conn = pool.acquire().await.unwrap();
    let mut flush = flush_conn.begin().await.unwrap();
    let registry = std::sync::Arc::new(Registry::new(&pool));
    let registered = register_eventless(&mut flush, &registry).await.unwrap();
    clock.append(&pool, &register(1, "ann")).await;
    let read = read_batch(&mut reader, Position::START, 100).await.unwrap();
    assert_eq!(read.len(), 2, "the open flush held the reader back");

    // Another open write transaction (it could still commit events below what follows).
    let mut other_conn = pool.acquire().await.unwrap();
    let mut other = other_conn.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *other)
        .await
        .unwrap();
    clock.append(&pool, &register(2, "bob")).await;
    let held = read_batch(&mut reader, read[1].position, 100)
        .await
        .unwrap();
    assert!(held.is_empty(), "read past an open writer: {held:?}");

    other.rollback().await.unwrap();
    let after = read_batch(&mut reader, read[1].position, 100)
        .await
        .unwrap();
    assert_eq!(after.len(), 2);

    // Once unregistered, the flush holds readers back like any writer.
    registered.release().await.unwrap();
    clock.append(&pool, &register(3, "cy")).await;
    let held = read_batch(&mut reader, after[1].position, 100)
        .await
        .unwrap();
    assert!(
        held.is_empty(),
        "read past an unregistered open writer: {held:?}"
    );
    flush.commit().await.unwrap();
    let last = read_batch(&mut reader, after[1].position, 100)
        .await
        .unwrap();
    assert_eq!(last.len(), 2);
}
