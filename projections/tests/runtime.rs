//! The projector runtime against the real PostgreSQL: commit order with late commits,
//! crashes mid-batch, split brain, leader takeover, NOTIFY wake-ups and lag reporting.

use murmur_projections::testkit as common;

use std::time::Duration;

use common::*;
use murmur_domain::MurmurEvent;
use murmur_projections::log::checkpoint::checkpoint;
use murmur_projections::log::read::read_batch;
use murmur_projections::read_model::names;
use murmur_projections::runtime::{
    catch_up, catch_up_projection, projections, spawn, status, Projector, ProjectorConfig, Stale,
    Step,
};
use murmur_projections::shutdown::Stop;
use murmur_projections::state::feeds::DEFAULT_CELEBRITY_THRESHOLD as DEFAULT_THRESHOLD;
use murmur_projections::{Kind, PgReadModel, Position, ReadModel};
use sqlx::PgPool;

/// A varied history: registrations, follows, unfollows, posts and deletions.
fn history() -> Vec<MurmurEvent> {
    let mut events = Vec::new();
    for id in 1..=6 {
        events.extend(register(id, &format!("user{id}")));
    }
    let mut post = 0;
    for round in 0..5i64 {
        for a in 1..=6i64 {
            let b = (a + round) % 6 + 1;
            if a != b {
                events.push(followed(a, b));
            }
            post += 1;
            events.push(created(post, a));
        }
        events.push(deleted(post - 2, (post - 3) % 6 + 1));
        if round % 2 == 1 {
            events.push(unfollowed(1, (1 + round) % 6 + 1));
        }
    }
    events
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    // A guard against hanging, not a timing assertion.
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}");
}

async fn caught_up(pool: &PgPool) -> bool {
    status(pool)
        .await
        .unwrap()
        .iter()
        .all(|s| s.lag_events == 0)
}

#[sqlx::test(migrations = "../migrations")]
async fn killed_mid_batch_ends_like_one_that_never_stopped(pool: PgPool) {
    Clock::default().append(&pool, &history()).await;
    let config = config(2, 7);
    catch_up(&pool, &config).await.unwrap();
    let never_stopped = dump(&pool).await;

    reset_read_models(&pool).await;
    for kind in projections(&config) {
        loop {
            // A crash in the middle of a flush (its changes written, not committed: the
            // session dies), then a restart from the tables and one good batch.
            let mut projector = Projector::load(&pool, kind, &config.settings())
                .await
                .unwrap();
            let mut conn = pool.acquire().await.unwrap().detach();
            let before = checkpoint(&mut conn, kind.name()).await.unwrap();
            if projector.step(&mut conn, config.batch_size).await.unwrap() == Step::Idle {
                break;
            }
            let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
            let to = projector.position();
            projector.flush_into(&mut tx, to, true).await.unwrap();
            let _ = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                .execute(&mut *tx)
                .await;
            assert!(tx.commit().await.is_err(), "the session survived");
            let mut conn = pool.acquire().await.unwrap().detach();
            assert_eq!(checkpoint(&mut conn, kind.name()).await.unwrap(), before);
            let mut projector = Projector::load(&pool, kind, &config.settings())
                .await
                .unwrap();
            projector.step(&mut conn, config.batch_size).await.unwrap();
            projector.flush(&mut conn).await.unwrap();
        }
    }
    assert_eq!(dump(&pool).await, never_stopped);
}

#[sqlx::test(migrations = "../migrations")]
async fn batch_size_does_not_change_the_result(pool: PgPool) {
    Clock::default().append(&pool, &history()).await;
    catch_up(&pool, &config(2, 1000)).await.unwrap();
    let whole = dump(&pool).await;
    reset_read_models(&pool).await;
    catch_up(&pool, &config(2, 1)).await.unwrap();
    assert_eq!(dump(&pool).await, whole);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_late_commit_with_a_lower_position_is_applied(pool: PgPool) {
    let mut clock = Clock::default();
    let mut setup = register(1, "a");
    setup.extend(register(2, "b"));
    setup.extend(register(3, "c"));
    clock.append(&pool, &setup).await;
    let config = ProjectorConfig::default();
    catch_up(&pool, &config).await.unwrap();

    // `early` takes the lower position but commits after `late`.
    let mut early = pool.begin().await.unwrap();
    clock.append_in(&mut early, &[followed(1, 2)]).await;
    let mut late = pool.begin().await.unwrap();
    clock.append_in(&mut late, &[followed(3, 2)]).await;
    late.commit().await.unwrap();

    let mut profiles = Projector::load(&pool, Kind::Profiles, &config.settings())
        .await
        .unwrap();
    let before = profiles.position();
    let mut conn = pool.acquire().await.unwrap();
    // The committed event waits behind the open transaction instead of being applied past it.
    assert_eq!(profiles.step(&mut conn, 100).await.unwrap(), Step::Idle);
    assert_eq!(profiles.position(), before);
    assert_eq!(checkpoint(&mut conn, "profiles").await.unwrap(), before);

    early.commit().await.unwrap();
    catch_up(&pool, &config).await.unwrap();
    let rm = PgReadModel::new(pool.clone());
    assert_eq!(rm.profile(2).await.unwrap().unwrap().followers_count, 2);
    assert_eq!(rm.profile(1).await.unwrap().unwrap().following_count, 1);
    assert_eq!(rm.profile(3).await.unwrap().unwrap().following_count, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_writers_lose_no_event(pool: PgPool) {
    Clock::default().append(&pool, &register(1, "writer")).await;
    let config = ProjectorConfig {
        batch_size: 5,
        poll_interval: Duration::from_millis(20),
        standby_retry: Duration::from_millis(100),
        ..ProjectorConfig::default()
    };
    let stop = Stop::new();
    let runtime = spawn(pool.clone(), config, stop.shutdown());
    let (writers, per_writer) = (4i64, 25i64);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut clock = Clock::default();
            for i in 0..per_writer {
                let mut tx = pool.begin().await.unwrap();
                let post = w * per_writer + i + 1;
                clock.append_in(&mut tx, &[created(post, 1)]).await;
                // Hold some transactions open so commits land out of position order.
                tokio::time::sleep(Duration::from_millis(((post * 7) % 5) as u64 * 3)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    wait_for("the projectors to catch up", || caught_up(&pool)).await;
    stop.stop();
    runtime.await.unwrap().unwrap();

    let total = writers * per_writer;
    let rm = PgReadModel::new(pool.clone());
    assert_eq!(rm.profile(1).await.unwrap().unwrap().posts_count, total);
    let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(posts, total);
    let inbox: i64 = sqlx::query_scalar(
        "SELECT cardinality(post_ids)::bigint FROM feed_inbox WHERE owner_id = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(inbox, total);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stale_checkpoint_never_applies_twice(pool: PgPool) {
    let mut clock = Clock::default();
    let mut events = register(1, "a");
    events.extend(register(2, "b"));
    events.push(followed(1, 2));
    clock.append(&pool, &events).await;
    let settings = ProjectorConfig::default().settings();
    let mut conn = pool.acquire().await.unwrap();
    // Other databases' transactions in the cluster can hold the events back for a while.
    let mut batch = Vec::new();
    wait_for("the events to be readable", async || {
        batch = read_batch(&mut conn, Position::START, 100).await.unwrap();
        !batch.is_empty()
    })
    .await;
    assert_eq!(batch.len(), 5);
    // Two "leaders" that loaded the same checkpoint and applied the same batch: only the
    // first one's flush counts; the second finds the checkpoint moved.
    let mut first = Projector::load(&pool, Kind::Profiles, &settings)
        .await
        .unwrap();
    let mut second = Projector::load(&pool, Kind::Profiles, &settings)
        .await
        .unwrap();
    for leader in [&mut first, &mut second] {
        assert!(matches!(
            leader.step(&mut conn, 100).await.unwrap(),
            Step::Applied { events: 5, .. }
        ));
    }
    first.flush(&mut conn).await.unwrap();
    let error = second.flush(&mut conn).await.unwrap_err();
    assert!(error.is::<Stale>(), "{error:?}");
    let rm = PgReadModel::new(pool.clone());
    assert_eq!(rm.profile(2).await.unwrap().unwrap().followers_count, 1);
    assert_eq!(
        rm.progress(&[names::PROFILES]).await.unwrap(),
        batch.last().unwrap().position
    );
}

async fn projection_locks_held(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn two_processes_never_both_apply_and_the_standby_takes_over(pool: PgPool) {
    let mut clock = Clock::default();
    let config = ProjectorConfig {
        poll_interval: Duration::from_millis(20),
        standby_retry: Duration::from_millis(100),
        ..ProjectorConfig::default()
    };
    let mut stops = Vec::new();
    let mut runtimes = Vec::new();
    for _ in 0..2 {
        let stop = Stop::new();
        runtimes.push(spawn(pool.clone(), config.clone(), stop.shutdown()));
        stops.push(stop);
    }
    let mut events = Vec::new();
    for id in 1..=5 {
        events.extend(register(id, &format!("u{id}")));
    }
    clock.append(&pool, &events).await;
    for follower in 2..=5 {
        clock.append(&pool, &[followed(follower, 1)]).await;
    }
    wait_for("the projectors to catch up", || caught_up(&pool)).await;
    // One holder per projection, whichever process it is.
    assert_eq!(projection_locks_held(&pool).await, 3);

    // Stop the first process; the second (if it was standing by) takes over.
    stops.remove(0).stop();
    runtimes.remove(0).await.unwrap().unwrap();
    clock
        .append(&pool, &[unfollowed(5, 1), created(1, 1)])
        .await;
    wait_for("the survivor to catch up", || caught_up(&pool)).await;

    let rm = PgReadModel::new(pool.clone());
    let profile = rm.profile(1).await.unwrap().unwrap();
    assert_eq!((profile.followers_count, profile.posts_count), (3, 1));
    for follower in 2..=5 {
        assert_eq!(
            rm.profile(follower).await.unwrap().unwrap().following_count,
            i64::from(follower != 5)
        );
    }
    stops.remove(0).stop();
    runtimes.remove(0).await.unwrap().unwrap();
    // The server ends a closed session (and its locks) a moment after the client.
    wait_for("every lock to be released", async || {
        projection_locks_held(&pool).await == 0
    })
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn another_process_announcement_wakes_an_idle_projector(pool: PgPool) {
    // Polling effectively off: only NOTIFY can wake the projectors.
    let config = ProjectorConfig {
        poll_interval: Duration::from_secs(3600),
        ..ProjectorConfig::default()
    };
    let stop = Stop::new();
    let runtime = spawn(pool.clone(), config, stop.shutdown());
    wait_for("the leaders and the listener", async || {
        let listening: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND query LIKE 'LISTEN%murmur_events%')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        listening && projection_locks_held(&pool).await == 3
    })
    .await;
    // Let the leaders finish their first (empty) read and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Appending notifies nobody (migration 0008); the appending process announces it after
    // its commit, as `Wake::announce` does.
    Clock::default().append(&pool, &register(1, "woken")).await;
    sqlx::query("SELECT pg_notify($1, 'another-process')")
        .bind(murmur_projections::runtime::CHANNEL)
        .execute(&pool)
        .await
        .unwrap();
    let rm = PgReadModel::new(pool.clone());
    wait_for("the registration to be applied", async || {
        rm.profile(1).await.unwrap().is_some()
    })
    .await;
    stop.stop();
    runtime.await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn status_reports_checkpoints_and_lag(pool: PgPool) {
    let mut clock = Clock::default();
    clock.append(&pool, &register(1, "a")).await;
    let lagging = status(&pool).await.unwrap();
    assert_eq!(
        lagging.iter().map(|s| s.name).collect::<Vec<_>>(),
        names::ALL.to_vec()
    );
    for s in &lagging {
        assert_eq!((s.checkpoint, s.lag_events), (Position::START, 2));
        assert!(s.lag_seconds > 0.0, "events stamped in the past are late");
    }
    catch_up_projection(&pool, Kind::Feeds, &config(DEFAULT_THRESHOLD, 10))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let end = read_batch(&mut conn, Position::START, 10)
        .await
        .unwrap()
        .last()
        .unwrap()
        .position;
    for s in status(&pool).await.unwrap() {
        if s.name == names::FEEDS {
            assert_eq!((s.checkpoint, s.lag_events, s.lag_seconds), (end, 0, 0.0));
        } else {
            assert_eq!(s.lag_events, 2);
        }
    }
}
