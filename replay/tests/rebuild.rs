//! `rebuild` and `verify` against the real PostgreSQL: rebuilt read models equal the live
//! ones after random histories; an interrupted rebuild leaves the live models untouched;
//! events written during a rebuild (with a live projector running) are not lost; verify
//! catches a tampered row.

// The projection tests' helpers (writing events as the API would, dumping read models).
use murmur_projections::testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::FutureExt;
use murmur_domain::{MurmurEvent, PostId, UserId};
use murmur_projections::read_model::names;
use murmur_projections::runtime::{self, catch_up, ProjectorConfig};
use murmur_projections::{Kind, Position};
use murmur_replay::rebuild::BatchHook;
use murmur_replay::{rebuild, select, shadow, verify, Options, ProgressMode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use sqlx::PgPool;

const THRESHOLD: i64 = 2;

fn options(batch_size: i64) -> Options {
    Options {
        batch_size,
        projector: config(THRESHOLD, batch_size),
        lock_timeout: Duration::from_secs(10),
        progress: ProgressMode::Off,
        after_batch: None,
    }
}

fn all(_: &ProjectorConfig) -> Vec<Kind> {
    select(&[]).expect("every projection")
}

async fn checkpoints(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT projection, transaction_id::text || ':' || position FROM projection_checkpoints
         ORDER BY projection",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn log_end(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT transaction_id::text || ':' || position FROM events
         ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn shadow_schemas(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace
         WHERE nspname LIKE 'murmur\\_shadow\\_%' OR nspname LIKE 'murmur\\_retired\\_%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The public schema's relations and constraints with their kind and persistence: a swap
/// must leave the same names, all crash-safe (logged), with the same index definitions
/// (deferred ones included) and storage parameters.
async fn relations(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT relname::text,
                relkind::text || coalesce(' ' || pg_get_indexdef(oid), '')
                    || coalesce(' ' || array_to_string(reloptions, ','), ''),
                relpersistence::text FROM pg_class
         WHERE relnamespace = 'public'::regnamespace
         UNION ALL
         SELECT conname::text, 'constraint ' || contype::text, '' FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// One step of a random history, interpreted against the state so far (see [`events_of`]).
#[derive(Debug, Clone)]
enum Op {
    Follow(UserId, UserId),
    Unfollow(UserId, UserId),
    Post(UserId),
    /// Deletes the n-th live post (modulo their number), by its author.
    Delete(usize),
}

fn op(users: UserId) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=users, 1..=users).prop_map(|(a, b)| Op::Follow(a, b)),
        2 => (1..=users, 1..=users).prop_map(|(a, b)| Op::Unfollow(a, b)),
        3 => (1..=users).prop_map(Op::Post),
        1 => any::<usize>().prop_map(Op::Delete),
    ]
}

/// A history: how many users, what they do, and how the events are cut into transactions.
fn history() -> impl Strategy<Value = (UserId, Vec<Op>, Vec<usize>)> {
    (3..7i64).prop_flat_map(|users| {
        (
            Just(users),
            prop::collection::vec(op(users), 0..80),
            prop::collection::vec(1..12usize, 1..40),
        )
    })
}

/// The events of a history, as the domain would allow them (no double follow, no unfollow
/// of a stranger, deletions of live posts only).
fn events_of(users: UserId, ops: &[Op]) -> Vec<MurmurEvent> {
    let mut events: Vec<MurmurEvent> = (1..=users)
        .flat_map(|id| register(id, &format!("user{id}")))
        .collect();
    let mut follows = BTreeSet::new();
    let mut posts: BTreeMap<PostId, UserId> = BTreeMap::new();
    let mut next_post = 0;
    for op in ops {
        match *op {
            Op::Follow(a, b) if a != b && follows.insert((a, b)) => events.push(followed(a, b)),
            Op::Unfollow(a, b) if follows.remove(&(a, b)) => events.push(unfollowed(a, b)),
            Op::Post(author) => {
                next_post += 1;
                posts.insert(next_post, author);
                events.push(created(next_post, author));
            }
            Op::Delete(n) if !posts.is_empty() => {
                let (&post, &author) = posts.iter().nth(n % posts.len()).unwrap();
                posts.remove(&post);
                events.push(deleted(post, author));
            }
            _ => {}
        }
    }
    events
}

/// Appends `events` in transactions of the given sizes (cycled).
async fn append_chunked(pool: &PgPool, clock: &mut Clock, events: &[MurmurEvent], sizes: &[usize]) {
    let mut rest = events;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        clock.append(pool, chunk).await;
        rest = tail;
    }
}

async fn clear(pool: &PgPool) {
    reset_read_models(pool).await;
    sqlx::query("TRUNCATE events").execute(pool).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn rebuilt_read_models_equal_the_live_ones_after_random_histories(pool: PgPool) {
    let before = relations(&pool).await;
    let mut runner = TestRunner::new(ProptestConfig::with_cases(5));
    for case in 0..5 {
        let (users, ops, sizes) = history().new_tree(&mut runner).unwrap().current();
        clear(&pool).await;
        let events = events_of(users, &ops);
        append_chunked(&pool, &mut Clock::default(), &events, &sizes).await;
        // Live: small batches that cut the history anywhere.
        catch_up(&pool, &config(THRESHOLD, 3)).await.unwrap();
        let live = dump(&pool).await;

        // Rebuild with other batch boundaries; the result must be the same rows.
        let options = options(5 + case);
        let report = rebuild(&pool, all(&options.projector), &options)
            .await
            .unwrap();
        assert_eq!(report.events, events.len() as u64, "case {case}: {ops:?}");
        assert_eq!(
            dump(&pool).await,
            live,
            "case {case}: {users} users, {ops:?}"
        );
        let end = log_end(&pool).await;
        for (projection, at) in checkpoints(&pool).await {
            assert_eq!(at, end, "{projection} continues from the log's end");
        }
        assert!(shadow_schemas(&pool).await.is_empty());
        assert_eq!(
            relations(&pool).await,
            before,
            "same tables, indexes and constraints"
        );
        let verified = verify(&pool, all(&options.projector), &options)
            .await
            .unwrap();
        assert!(verified.ok(), "case {case}: {verified:?}");
    }
}

/// A fixed, varied history.
fn fixed_history() -> Vec<MurmurEvent> {
    let ops: Vec<Op> = (0..100)
        .map(|i: i64| match i % 10 {
            k @ 0..=4 => Op::Follow(i % 6 + 1, (i / 3 + k) % 6 + 1),
            5 | 6 | 8 => Op::Post(i % 6 + 1),
            7 => Op::Unfollow((i / 10) % 6 + 1, (i / 7) % 6 + 1),
            _ => Op::Delete(i as usize),
        })
        .collect();
    events_of(6, &ops)
}

#[sqlx::test(migrations = "../migrations")]
async fn an_interrupted_rebuild_leaves_the_live_models_untouched(pool: PgPool) {
    let events = fixed_history();
    Clock::default().append(&pool, &events).await;
    catch_up(&pool, &config(THRESHOLD, 1000)).await.unwrap();
    let (live, live_checkpoints) = (dump(&pool).await, checkpoints(&pool).await);

    // Stop the rebuild after its third batch, the way Ctrl-C or a lost client would: the
    // future is dropped with its connections mid-work.
    let (reached, stop) = tokio::sync::oneshot::channel::<()>();
    let reached = Arc::new(std::sync::Mutex::new(Some(reached)));
    let hook: BatchHook = Arc::new(move |read| {
        if read >= 15 {
            if let Some(tx) = reached.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
        // Stay inside the rebuild until the test drops it.
        async move {
            if read >= 15 {
                futures::future::pending::<()>().await;
            }
        }
        .boxed()
    });
    let interrupted = Options {
        after_batch: Some(hook),
        ..options(5)
    };
    let projections = all(&interrupted.projector);
    tokio::select! {
        _ = rebuild(&pool, projections, &interrupted) => panic!("the rebuild should not finish"),
        _ = stop => {}
    }
    // The shadows were being built, and nothing live moved.
    assert_eq!(shadow_schemas(&pool).await.len(), names::ALL.len());
    assert_eq!(dump(&pool).await, live);
    assert_eq!(checkpoints(&pool).await, live_checkpoints);

    // Running it again starts cleanly and ends where a clean rebuild would.
    let options = options(7);
    rebuild(&pool, all(&options.projector), &options)
        .await
        .unwrap();
    assert_eq!(dump(&pool).await, live);
    assert!(shadow_schemas(&pool).await.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn events_written_during_a_rebuild_appear_after_the_swap(pool: PgPool) {
    let events = fixed_history();
    let mut clock = Clock::default();
    clock.append(&pool, &events).await;
    catch_up(&pool, &config(THRESHOLD, 4)).await.unwrap();
    // A live projector runs throughout, as under `murmur serve`.
    let stop_live = murmur_projections::shutdown::Stop::new();
    let live_config = ProjectorConfig {
        poll_interval: Duration::from_millis(20),
        standby_retry: Duration::from_millis(50),
        ..config(THRESHOLD, 4)
    };
    let live = runtime::spawn(pool.clone(), live_config, stop_live.shutdown());

    // While the rebuild replays, new users register, follow and post.
    let (writes_tx, mut writes_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let hook: BatchHook = Arc::new(move |read| {
        let _ = writes_tx.send(read);
        async {}.boxed()
    });
    let during = Options {
        after_batch: Some(hook),
        ..options(6)
    };
    let writer_pool = pool.clone();
    let writer = tokio::spawn(async move {
        let mut written = 0;
        while let Some(read) = writes_rx.recv().await {
            if written < 5 && read % 12 == 0 {
                written += 1;
                let id = 100 + written;
                let mut new = register(id, &format!("late{id}"));
                new.push(followed(id, 1));
                new.push(created(1000 + id, id));
                clock.append(&writer_pool, &new).await;
            }
        }
        written
    });
    let report = rebuild(&pool, all(&during.projector), &during)
        .await
        .unwrap();
    drop(during);
    let written = writer.await.unwrap();
    assert!(written > 0, "no events were written during the rebuild");
    assert!(report.events >= events.len() as u64);

    // The live projector continues from the rebuilt checkpoint up to the log's end.
    let end = log_end(&pool).await;
    let mut waited = 0;
    while checkpoints(&pool).await.iter().any(|(_, at)| *at != end) {
        waited += 1;
        assert!(
            waited < 500,
            "the live projector did not catch up: {:?}",
            checkpoints(&pool).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in 101..=100 + written {
        let handle: Option<String> =
            sqlx::query_scalar("SELECT handle FROM profiles WHERE user_id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap();
        assert_eq!(handle, Some(format!("late{id}")));
        let post: bool =
            sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM posts WHERE post_id = $1)")
                .bind(1000 + id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(post, "post of late user {id}");
    }
    stop_live.stop();
    live.await.unwrap().unwrap();
    // Nothing lost or applied twice: the swapped-in models equal a fresh rebuild.
    let options = options(50);
    let verified = verify(&pool, all(&options.projector), &options)
        .await
        .unwrap();
    assert!(verified.ok(), "{verified:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn verify_passes_on_a_clean_system_and_fails_on_a_tampered_row(pool: PgPool) {
    Clock::default().append(&pool, &fixed_history()).await;
    catch_up(&pool, &config(THRESHOLD, 4)).await.unwrap();
    let options = options(9);
    let clean = verify(&pool, all(&options.projector), &options)
        .await
        .unwrap();
    assert!(clean.ok(), "{clean:?}");
    let tables: usize = all(&options.projector)
        .iter()
        .map(|p| p.tables().len())
        .sum();
    assert_eq!(clean.tables.len(), tables);

    sqlx::query("UPDATE profiles SET display_name = 'tampered' WHERE user_id = 2")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM follows WHERE follower_id = (SELECT min(follower_id) FROM follows)")
        .execute(&pool)
        .await
        .unwrap();
    let tampered = verify(&pool, all(&options.projector), &options)
        .await
        .unwrap();
    assert!(!tampered.ok());
    let failed: BTreeMap<&str, &murmur_replay::rebuild::TableCheck> = tampered
        .tables
        .iter()
        .filter(|t| !t.matches)
        .map(|t| (t.table, t))
        .collect();
    assert_eq!(
        failed.keys().copied().collect::<Vec<_>>(),
        ["follows", "profiles"]
    );
    let profiles = failed["profiles"];
    assert_eq!(profiles.live_rows, profiles.rebuilt_rows);
    assert!(profiles
        .differences
        .iter()
        .any(|d| d.starts_with("only live: (2,") && d.contains("tampered")));
    assert!(profiles
        .differences
        .iter()
        .any(|d| d.starts_with("only rebuilt: (2,")));
    let follows = failed["follows"];
    assert!(follows.live_rows < follows.rebuilt_rows);
    assert!(follows
        .differences
        .iter()
        .all(|d| d.starts_with("only rebuilt: ")));
    // Verify changes nothing live and leaves no shadow behind.
    assert!(shadow_schemas(&pool).await.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn verify_compares_at_the_live_checkpoint_not_the_log_end(pool: PgPool) {
    let events = fixed_history();
    let (first, second) = events.split_at(events.len() / 2);
    let mut clock = Clock::default();
    clock.append(&pool, first).await;
    catch_up(&pool, &config(THRESHOLD, 10)).await.unwrap();
    // The live projections lag behind these.
    clock.append(&pool, second).await;
    let options = options(8);
    let report = verify(&pool, all(&options.projector), &options)
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    let live = checkpoints(&pool).await;
    for (projection, at) in &report.at {
        let expected = live.iter().find(|(p, _)| p == projection).unwrap();
        assert_eq!(at.to_string(), expected.1);
        assert!(*at < log_end(&pool).await.parse::<Position>().unwrap());
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn one_projection_is_rebuilt_alone_and_names_are_checked(pool: PgPool) {
    Clock::default().append(&pool, &fixed_history()).await;
    catch_up(&pool, &config(THRESHOLD, 1000)).await.unwrap();
    let before = dump(&pool).await;
    let relations = "SELECT 'profiles'::regclass::oid::bigint, 'follows'::regclass::oid::bigint,
                            'posts'::regclass::oid::bigint";
    let (profiles, follows, old_posts): (i64, i64, i64) =
        sqlx::query_as(relations).fetch_one(&pool).await.unwrap();
    sqlx::query("UPDATE posts SET body = 'tampered'")
        .execute(&pool)
        .await
        .unwrap();
    let options = options(10);
    let posts = select(&["posts".to_string()]).unwrap();
    let report = rebuild(&pool, posts, &options).await.unwrap();
    assert_eq!(report.projections, ["posts"]);
    assert_eq!(
        dump(&pool).await,
        before,
        "the rebuild repaired the tampered posts"
    );
    // Only the posts table was replaced.
    let after: (i64, i64, i64) = sqlx::query_as(relations).fetch_one(&pool).await.unwrap();
    assert_eq!((after.0, after.1), (profiles, follows));
    assert_ne!(after.2, old_posts);
    let error = select(&["nope".to_string()]).err().unwrap();
    assert!(
        error.to_string().contains("unknown projection \"nope\""),
        "{error}"
    );
    assert_eq!(shadow::schema("posts"), "murmur_shadow_posts");
}
