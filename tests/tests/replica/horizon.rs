//! The commit-order horizon on a hot standby: a standby's snapshot lists no transaction in
//! flight (`pg_snapshot_xip` is empty there), so the horizon must be its xmin, which covers
//! the primary's transactions the standby has not seen end. Reading up to `xmax` instead
//! would pass an event that an older transaction still in flight commits below it later.

use murmur_projections::log::read::read_batch;
use murmur_projections::testkit::{register, Clock};
use murmur_projections::Position;
use sqlx::{Connection, PgPool};

use super::pair;

async fn snapshot_on(standby: &PgPool) -> (i64, String) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_snapshot_xip(pg_current_snapshot())),
                pg_snapshot_xmin(pg_current_snapshot())::text",
    )
    .fetch_one(standby)
    .await
    .unwrap()
}

#[tokio::test]
async fn on_a_standby_readers_stop_below_a_transaction_in_flight_on_the_primary() {
    let Some(pair) = pair::acquire() else { return };
    let db = pair.database("horizon").await;
    let primary = PgPool::connect_with(db.primary()).await.unwrap();
    murmur_api::server::migrate(&primary).await.unwrap();
    let mut clock = Clock::default();

    // An older transaction writes an event and stays open; a younger one commits another.
    let mut older_conn = primary.acquire().await.unwrap();
    let mut older = older_conn.begin().await.unwrap();
    clock.append_in(&mut older, &register(1, "ann")).await;
    let older_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *older)
        .await
        .unwrap();
    clock.append(&primary, &register(2, "bob")).await;
    db.replayed().await;

    let standby = db.replica_pool().await;
    let (listed, xmin) = snapshot_on(&standby).await;
    assert_eq!(
        listed, 0,
        "a standby's snapshot listed transactions in flight"
    );
    // Other tests' transactions on the pair may be older still.
    let older_xid: u64 = older_xid.parse().unwrap();
    assert!(
        xmin.parse::<u64>().unwrap() <= older_xid,
        "xmin {xmin} passed {older_xid}"
    );
    let mut reader = standby.acquire().await.unwrap();
    let read = read_batch(&mut reader, Position::START, 100).await.unwrap();
    assert!(
        read.is_empty(),
        "read past a transaction in flight: {read:?}"
    );

    older.commit().await.unwrap();
    db.replayed().await;
    let mut read = Vec::new();
    for _ in 0..1500 {
        read = read_batch(&mut reader, Position::START, 100).await.unwrap();
        if read.len() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let events: Vec<String> = read.iter().map(|e| format!("{:?}", e.event)).collect();
    assert_eq!(read.len(), 4, "{events:?}");
    // Commit order: the older transaction's events first, though they committed last.
    assert_eq!(read[0].position.transaction_id, older_xid);
    assert!(
        events[0].contains("ann") && events[3].contains("bob"),
        "{events:?}"
    );

    drop(reader);
    standby.close().await;
    drop(older_conn);
    primary.close().await;
    db.drop().await;
}
