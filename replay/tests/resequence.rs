//! A database restored into another cluster: its events' transaction ids are ahead of the
//! cluster's. murmur refuses to project it; `replay resequence` moves the log (and the
//! checkpoints) into the cluster's past in the same order, and every event, old and new, is
//! projected afterwards.

use murmur_projections::testkit as common;

use common::*;
use murmur_projections::log::restore::{self, TransactionIdsAhead};
use murmur_projections::runtime::{self, catch_up};
use sqlx::PgPool;

/// What a restore into a cluster ten million transactions younger leaves behind.
async fn as_if_restored_elsewhere(pool: &PgPool) {
    for table in ["events", "projection_checkpoints"] {
        sqlx::query(&format!(
            "UPDATE {table} SET transaction_id = (transaction_id::text::bigint + 10000000)::text::xid8
             WHERE transaction_id <> '0'"
        ))
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn post_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT post_id FROM posts ORDER BY post_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_restored_log_is_refused_then_resequenced_and_projected(pool: PgPool) {
    let config = config(10, 2);
    let mut clock = Clock::default();
    clock.append(&pool, &register(1, "ann")).await;
    clock.append(&pool, &register(2, "bo")).await;
    clock.append(&pool, &[followed(2, 1), created(10, 1)]).await;
    catch_up(&pool, &config).await.unwrap();
    let before = dump(&pool).await;
    as_if_restored_elsewhere(&pool).await;

    // Refused, with the fix named: by the start-up check and by the projector runtime.
    let refused = runtime::check_settings(&pool, &config).await.unwrap_err();
    assert!(refused.is::<TransactionIdsAhead>(), "{refused:#}");
    assert!(
        refused.to_string().contains("replay resequence"),
        "{refused}"
    );
    let never = murmur_projections::shutdown::Stop::new();
    let ran = runtime::run(pool.clone(), config.clone(), never.shutdown()).await;
    assert!(ran.unwrap_err().is::<TransactionIdsAhead>());

    let done = restore::resequence(&pool).await.unwrap();
    assert_eq!((done.events, done.checkpoints), (6, 3));
    runtime::check_settings(&pool, &config).await.unwrap();
    // Nothing new to apply: the checkpoints moved with the log.
    catch_up(&pool, &config).await.unwrap();
    assert_eq!(dump(&pool).await, before);
    // Once is enough.
    assert_eq!(restore::resequence(&pool).await.unwrap().events, 0);

    // Events written by this cluster come after the restored ones, and are projected.
    clock.append(&pool, &[created(11, 1), created(12, 2)]).await;
    catch_up(&pool, &config).await.unwrap();
    assert_eq!(post_ids(&pool).await, vec![10, 11, 12]);
    // The same as folding the whole resequenced log from scratch.
    let live = dump(&pool).await;
    reset_read_models(&pool).await;
    catch_up(&pool, &config).await.unwrap();
    assert_eq!(dump(&pool).await, live);
}
