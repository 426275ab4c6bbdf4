//! Feed rules that small random histories rarely reach: the 800-entry cap, the 20-post
//! backfill on follow, an author crossing the celebrity threshold both ways while the
//! projector runs; plus cursor validation and upcast registrations.

use murmur_projections::testkit as common;

use common::*;
use murmur_domain::{PostId, UserId};
use murmur_projections::read_model::names;
use murmur_projections::runtime::catch_up;
use murmur_projections::state::feeds::{DEFAULT_CELEBRITY_THRESHOLD, INBOX_CAP};
use murmur_projections::{PageRequest, PgReadModel, Position, ReadError, ReadModel};
use sqlx::PgPool;

async fn feed_ids(rm: &PgReadModel, user: UserId, limit: u32) -> Vec<PostId> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = rm.feed(user, &PageRequest { limit, cursor }).await.unwrap();
        ids.extend(page.items.iter().map(|p| p.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_feed_holds_the_newest_800(pool: PgPool) {
    let mut clock = Clock::default();
    let mut events = register(1, "author");
    events.extend(register(2, "reader"));
    events.push(followed(2, 1));
    events.extend((1..=805).map(|post| created(post, 1)));
    clock.append(&pool, &events).await;
    let newest: Vec<PostId> = (6..=805).rev().collect();
    let rm = PgReadModel::new(pool.clone());
    for threshold in [DEFAULT_CELEBRITY_THRESHOLD, 0] {
        reset_read_models(&pool).await;
        catch_up(&pool, &config(threshold, 100)).await.unwrap();
        for user in [1, 2] {
            assert_eq!(
                feed_ids(&rm, user, 100).await,
                newest,
                "threshold {threshold}"
            );
        }
        assert_eq!(rm.profile(1).await.unwrap().unwrap().posts_count, 805);
    }
    // At the default threshold both inboxes were trimmed in the database, not just on read.
    reset_read_models(&pool).await;
    catch_up(&pool, &config(DEFAULT_CELEBRITY_THRESHOLD, 100))
        .await
        .unwrap();
    let cap = INBOX_CAP as i64;
    assert_eq!(
        count(
            &pool,
            "SELECT sum(cardinality(post_ids))::bigint FROM feed_inbox"
        )
        .await,
        2 * cap
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM feed_inbox").await, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn crossing_the_celebrity_threshold_loses_and_duplicates_nothing(pool: PgPool) {
    let mut clock = Clock::default();
    let rm = PgReadModel::new(pool.clone());
    let config = config(2, 3);
    let mut setup = Vec::new();
    for id in 1..=5 {
        setup.extend(register(id, &format!("u{id}")));
    }
    setup.extend((1..=25).map(|post| created(post, 2)));
    clock.append(&pool, &setup).await;

    let steps: Vec<(Vec<_>, Vec<PostId>, bool)> = vec![
        // A follow brings the followee's newest 20 posts.
        (vec![followed(1, 2)], (6..=25).rev().collect(), false),
        // Three followers > 2: user 2 becomes a celebrity; new posts are merged at read time.
        (
            vec![followed(3, 2), followed(4, 2), created(26, 2)],
            (6..=26).rev().collect(),
            true,
        ),
        (
            vec![deleted(10, 2), created(27, 1)],
            [
                27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 9, 8, 7, 6,
            ]
            .to_vec(),
            true,
        ),
        // Back to two followers: user 2's posts are fanned out again, the same ones.
        (
            vec![unfollowed(4, 2), created(28, 2)],
            [
                28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 9, 8, 7, 6,
            ]
            .to_vec(),
            false,
        ),
        // Unfollowing takes them all out; following again brings the newest 20 back.
        (vec![unfollowed(1, 2)], vec![27], false),
        (
            vec![followed(1, 2)],
            [
                28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 9, 8, 7,
            ]
            .to_vec(),
            false,
        ),
    ];
    for (i, (events, expected, celebrity)) in steps.into_iter().enumerate() {
        clock.append(&pool, &events).await;
        catch_up(&pool, &config).await.unwrap();
        assert_eq!(feed_ids(&rm, 1, 4).await, expected, "step {i}");
        // The step really took the path it is meant to test.
        let merged = count(
            &pool,
            "SELECT count(*) FROM follows f JOIN feed_celebrities c ON c.author_id = f.followee_id
             WHERE f.follower_id = 1",
        )
        .await;
        assert_eq!(merged == 1, celebrity, "step {i}");
    }
    // Rebuilt at the default threshold (never a celebrity), the feed is the same.
    let incremental = feed_ids(&rm, 1, 4).await;
    reset_read_models(&pool).await;
    catch_up(&pool, &super_config()).await.unwrap();
    assert_eq!(feed_ids(&rm, 1, 7).await, incremental);
}

fn super_config() -> murmur_projections::ProjectorConfig {
    config(DEFAULT_CELEBRITY_THRESHOLD, 1000)
}

#[sqlx::test(migrations = "../migrations")]
async fn garbage_cursors_are_refused(pool: PgPool) {
    let rm = PgReadModel::new(pool.clone());
    // Not base64; base64 of text; base64 of too many numbers; a feed cursor past the cap.
    for cursor in ["!!!", "aGVsbG8", "MToyOjM", "MTo4MDE"] {
        let page = PageRequest {
            limit: 10,
            cursor: Some(cursor.into()),
        };
        assert!(
            matches!(rm.feed(1, &page).await, Err(ReadError::BadCursor)),
            "{cursor}"
        );
        if cursor == "MTo4MDE" {
            // "1:801" is a fine user-list cursor.
            continue;
        }
        assert!(
            matches!(rm.followers(1, &page).await, Err(ReadError::BadCursor)),
            "{cursor}"
        );
        assert!(
            matches!(rm.following(1, &page).await, Err(ReadError::BadCursor)),
            "{cursor}"
        );
        assert!(
            matches!(rm.user_posts(1, &page).await, Err(ReadError::BadCursor)),
            "{cursor}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_version_1_registration_is_shown_by_its_handle(pool: PgPool) {
    sqlx::query(
        r#"INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
           VALUES ('User', '7', 1, 'UserRegistered', '1', '{"UserRegistered": {"user_id": 7, "handle": "Old_Timer"}}',
                   '{"request_id": "r", "time": "2020-01-02T03:04:05Z"}')"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let rm = PgReadModel::new(pool.clone());
    assert_eq!(
        rm.progress(&[names::PROFILES, "no such projection"])
            .await
            .unwrap(),
        Position::START
    );
    catch_up(&pool, &super_config()).await.unwrap();
    let profile = rm.profile_by_handle("old_timer").await.unwrap().unwrap();
    assert_eq!(
        (profile.id, profile.display_name.as_str()),
        (7, "Old_Timer")
    );
    assert_eq!(profile.created_at.to_rfc3339(), "2020-01-02T03:04:05+00:00");
    assert!(rm.profile(8).await.unwrap().is_none());
}
