//! The memory image's one property: however a history is cut (live batches of random
//! sizes, crashes before a flush commits, restarts from the durable copy, a rebuild in
//! batches of another size), the tables and feed pages are the same, and they are what a
//! simple reference model of the feed rules says. Plus the two histories where the old
//! SQL batch netting made live and rebuilt feeds differ.

use murmur_projections::testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use murmur_domain::{FollowEvent, MurmurEvent, PostEvent, PostId, UserEvent, UserId};
use murmur_projections::log::checkpoint;
use murmur_projections::runtime::{Projector, ProjectorConfig, Step};
use murmur_projections::state::feeds::{
    Folding, DEFAULT_CELEBRITY_THRESHOLD, FOLLOW_BACKFILL, INBOX_CAP,
};
use murmur_projections::{Image, Kind, MemReadModel, PageRequest, PgReadModel, ReadModel};
use murmur_replay::{rebuild, select, verify, Options, ProgressMode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use sqlx::{Connection, PgConnection, PgPool};

fn options(threshold: i64, batch_size: i64) -> Options {
    Options {
        batch_size,
        projector: config(threshold, batch_size),
        lock_timeout: Duration::from_secs(10),
        progress: ProgressMode::Off,
        after_batch: None,
    }
}

/// The feed rules, written as plainly as possible: sets and full scans.
#[derive(Default)]
struct Reference {
    threshold: i64,
    /// (follower, followee) -> (since, feed_from)
    follows: BTreeMap<(UserId, UserId), (DateTime<Utc>, PostId)>,
    /// post -> author
    posts: BTreeMap<PostId, UserId>,
    inboxes: BTreeMap<UserId, BTreeSet<PostId>>,
    celebrities: BTreeSet<UserId>,
}

impl Reference {
    fn followers(&self, b: UserId) -> Vec<UserId> {
        self.follows
            .keys()
            .filter(|k| k.1 == b)
            .map(|k| k.0)
            .collect()
    }

    fn posts_of(&self, author: UserId) -> Vec<PostId> {
        self.posts
            .iter()
            .filter(|(_, a)| **a == author)
            .map(|(p, _)| *p)
            .collect()
    }

    fn add(&mut self, owner: UserId, posts: &[PostId]) {
        let inbox = self.inboxes.entry(owner).or_default();
        inbox.extend(posts);
        while inbox.len() > INBOX_CAP {
            inbox.pop_first();
        }
    }

    fn remove_author(&mut self, owner: UserId, author: UserId) {
        let posts = &self.posts;
        if let Some(inbox) = self.inboxes.get_mut(&owner) {
            inbox.retain(|p| posts.get(p) != Some(&author));
        }
    }

    fn apply(&mut self, event: &MurmurEvent, time: DateTime<Utc>) {
        match *event {
            MurmurEvent::Follow(FollowEvent::Followed {
                follower_id: a,
                followee_id: b,
            }) => {
                let posts = self.posts_of(b);
                let from = posts
                    .len()
                    .checked_sub(FOLLOW_BACKFILL)
                    .map_or(0, |k| posts[k]);
                self.follows.insert((a, b), (time, from));
                let n = self.followers(b).len() as i64;
                if !self.celebrities.contains(&b) && n > self.threshold {
                    self.celebrities.insert(b);
                    for f in self.followers(b) {
                        self.remove_author(f, b);
                    }
                } else if !self.celebrities.contains(&b) {
                    let newest: Vec<PostId> = posts.into_iter().filter(|p| *p >= from).collect();
                    self.add(a, &newest);
                }
            }
            MurmurEvent::Follow(FollowEvent::Unfollowed {
                follower_id: a,
                followee_id: b,
            }) => {
                self.follows.remove(&(a, b));
                self.remove_author(a, b);
                let n = self.followers(b).len() as i64;
                if self.celebrities.contains(&b) && n <= self.threshold - self.threshold / 10 {
                    self.celebrities.remove(&b);
                    for f in self.followers(b) {
                        let from = self.follows[&(f, b)].1;
                        let mut since: Vec<PostId> = self
                            .posts_of(b)
                            .into_iter()
                            .filter(|p| *p >= from)
                            .collect();
                        since.drain(..since.len().saturating_sub(INBOX_CAP));
                        self.add(f, &since);
                    }
                }
            }
            MurmurEvent::Post(PostEvent::PostCreated {
                post_id, author_id, ..
            }) => {
                self.posts.insert(post_id, author_id);
                self.add(author_id, &[post_id]);
                if !self.celebrities.contains(&author_id) {
                    for f in self.followers(author_id) {
                        self.add(f, &[post_id]);
                    }
                }
            }
            MurmurEvent::Post(PostEvent::PostDeleted { post_id, .. }) => {
                self.posts.remove(&post_id);
                for inbox in self.inboxes.values_mut() {
                    inbox.remove(&post_id);
                }
            }
            MurmurEvent::Handle(_) | MurmurEvent::User(UserEvent::UserRegistered { .. }) => {}
        }
    }

    /// A reader's whole feed, newest first.
    fn feed(&self, reader: UserId) -> Vec<PostId> {
        let mut feed: BTreeSet<PostId> = self.inboxes.get(&reader).cloned().unwrap_or_default();
        for (&(a, b), &(_, from)) in &self.follows {
            if a == reader && self.celebrities.contains(&b) {
                feed.extend(self.posts_of(b).into_iter().filter(|p| *p >= from));
            }
        }
        feed.into_iter().rev().take(INBOX_CAP).collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Follow(UserId, UserId),
    Unfollow(UserId, UserId),
    /// So many posts by one author in a row (bursts fill inboxes past the cap).
    Posts(UserId, usize),
    Delete(usize),
}

fn op(users: UserId) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=users, 1..=users).prop_map(|(a, b)| Op::Follow(a, b)),
        // User 1 is followed more, so it crosses the threshold both ways.
        3 => (1..=users).prop_map(|a| Op::Follow(a, 1)),
        3 => (1..=users, 1..=users).prop_map(|(a, b)| Op::Unfollow(a, b)),
        2 => (1..=users).prop_map(|a| Op::Unfollow(a, 1)),
        3 => (1..=users).prop_map(|a| Op::Posts(a, 1)),
        1 => (1..=users, 100..300usize).prop_map(|(a, n)| Op::Posts(a, n)),
        1 => any::<usize>().prop_map(Op::Delete),
    ]
}

/// What the live projector does after each step.
#[derive(Debug, Clone, Copy)]
enum After {
    Continue,
    Flush,
    /// A flush under load: inbox changes written as a journal.
    FlushJournal,
    /// Writes the flush (whole rows, or a journal), then the process dies before the
    /// commit; restart from the tables.
    CrashInFlush(bool),
    /// Restart from the tables without flushing (what was in memory is gone).
    Restart,
}

fn schedule() -> impl Strategy<Value = Vec<(i64, After)>> {
    prop::collection::vec(
        (
            5..200i64,
            prop_oneof![
                4 => Just(After::Continue),
                2 => Just(After::Flush),
                2 => Just(After::FlushJournal),
                1 => any::<bool>().prop_map(After::CrashInFlush),
                1 => Just(After::Restart),
            ],
        ),
        1..12,
    )
}

/// The events a history's operations make, as the domain allows them.
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
            Op::Posts(author, n) => {
                for _ in 0..n {
                    next_post += 1;
                    posts.insert(next_post, author);
                    events.push(created(next_post, author));
                }
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

/// Runs each projection live over the whole log following `schedule` (cycled), into an
/// image as a node's projector tasks do (a restart reloads the tables and catches up with
/// what the image showed).
async fn project_live(pool: &PgPool, config: &ProjectorConfig, schedule: &[(i64, After)]) -> Image {
    let db = pool.connect_options();
    let settings = config.settings();
    let image = Image::new(&settings);
    let load = |kind: Kind| Projector::load_into(pool, image.get(kind).clone(), &settings, true);
    for kind in Kind::ALL {
        let mut projector = load(kind).await.unwrap();
        let mut conn = PgConnection::connect_with(&db).await.unwrap();
        // Each pass over the schedule ends with a step and a flush, so that restarts
        // cannot undo every pass's work.
        let passes = schedule.iter().copied().chain([(50, After::Flush)]).cycle();
        for (batch, after) in passes {
            let step = projector.step(&mut conn, batch).await.unwrap();
            match after {
                After::Continue => {}
                After::Flush => projector.flush(&mut conn).await.unwrap(),
                After::FlushJournal => projector.flush_journal(&mut conn).await.unwrap(),
                After::CrashInFlush(complete) => {
                    let mut tx = Connection::begin(&mut conn).await.unwrap();
                    let to = projector.position();
                    projector.flush_into(&mut tx, to, complete).await.unwrap();
                    // The process dies: its session ends with the transaction open.
                    drop(tx);
                    conn.close_hard().await.unwrap();
                    conn = PgConnection::connect_with(&db).await.unwrap();
                    projector = load(kind).await.unwrap();
                }
                After::Restart => projector = load(kind).await.unwrap(),
            }
            if step == Step::Idle
                && !checkpoint::committed_after(&mut conn, projector.position())
                    .await
                    .unwrap()
            {
                break;
            }
        }
        // The durable copy with a journal left in it reads as what memory holds.
        projector.flush_journal(&mut conn).await.unwrap();
        let memory: Option<Vec<(UserId, Vec<PostId>)>> = image
            .get(kind)
            .read()
            .as_feeds()
            .map(|feeds| feeds.inboxes().map(|(o, p)| (o, p.to_vec())).collect());
        if let Some(mut memory) = memory {
            memory.sort_unstable();
            let durable = murmur_projections::store::feeds::inboxes(&mut conn)
                .await
                .unwrap();
            assert_eq!(durable, memory, "journaled inboxes differ from memory");
        }
        projector.flush(&mut conn).await.unwrap();
    }
    image
}

async fn feed_pages(rm: &dyn ReadModel, reader: UserId, limit: u32) -> Vec<PostId> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = rm
            .feed(reader, &PageRequest { limit, cursor })
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|p| p.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

/// The stored tables against the reference model.
async fn check_against_reference(
    pool: &PgPool,
    image: Image,
    reference: &Reference,
    users: UserId,
) {
    let follows: Vec<(i64, i64, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT follower_id, followee_id, since, feed_from FROM follows ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let expected: Vec<_> = reference
        .follows
        .iter()
        .map(|(&(a, b), &(since, from))| (a, b, since, from))
        .collect();
    assert_eq!(follows, expected, "follows");
    let inboxes: Vec<(i64, Vec<i64>)> =
        sqlx::query_as("SELECT owner_id, post_ids FROM feed_inbox ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected: Vec<(i64, Vec<i64>)> = reference
        .inboxes
        .iter()
        .filter(|(_, inbox)| !inbox.is_empty())
        .map(|(&owner, inbox)| (owner, inbox.iter().copied().collect()))
        .collect();
    assert_eq!(inboxes, expected, "inboxes");
    let celebrities: Vec<i64> =
        sqlx::query_scalar("SELECT author_id FROM feed_celebrities ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected: Vec<i64> = reference.celebrities.iter().copied().collect();
    assert_eq!(celebrities, expected, "celebrities");
    let posts: Vec<(i64, i64)> = sqlx::query_as("SELECT post_id, author_id FROM posts ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap();
    let expected: Vec<(i64, i64)> = reference.posts.iter().map(|(&p, &a)| (p, a)).collect();
    assert_eq!(posts, expected, "posts");
    let pg = PgReadModel::new(pool.clone());
    let mem = MemReadModel::new(image, pg.clone());
    for user in 1..=users {
        for rm in [&pg as &dyn ReadModel, &mem] {
            let profile = rm.profile(user).await.unwrap().unwrap();
            let followers = reference.followers(user).len() as i64;
            let following = reference.follows.keys().filter(|k| k.0 == user).count() as i64;
            let posts = reference.posts_of(user).len() as i64;
            assert_eq!(
                (
                    profile.followers_count,
                    profile.following_count,
                    profile.posts_count
                ),
                (followers, following, posts),
                "profile of {user}"
            );
            assert_eq!(
                feed_pages(rm, user, 100).await,
                reference.feed(user),
                "feed of {user}"
            );
        }
        // Page by page, cursors included, the memory and the tables answer alike.
        let mut cursor = None;
        loop {
            let page = PageRequest { limit: 7, cursor };
            let (a, b) = (pg.feed(user, &page).await, mem.feed(user, &page).await);
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a, b, "feed page {page:?} of {user}");
            match a.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
}

async fn clear(pool: &PgPool) {
    reset_read_models(pool).await;
    sqlx::query("TRUNCATE events").execute(pool).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn live_with_crashes_rebuild_and_the_reference_agree(pool: PgPool) {
    let thresholds = [0, 2, 10, DEFAULT_CELEBRITY_THRESHOLD];
    let mut runner = TestRunner::new(ProptestConfig::with_cases(12));
    let history = (3..14i64).prop_flat_map(|users| {
        (
            Just(users),
            prop::collection::vec(op(users), 0..80),
            schedule(),
            1..400i64,
        )
    });
    for case in 0..12 {
        let (users, ops, schedule, rebuild_batch) =
            history.new_tree(&mut runner).unwrap().current();
        let threshold = thresholds[case % thresholds.len()];
        clear(&pool).await;
        let events = events_of(users, &ops);
        let mut reference = Reference {
            threshold,
            ..Reference::default()
        };
        // The same ticks as the clock that appends (one second per event).
        let mut times = Clock::default();
        for event in &events {
            reference.apply(event, times.tick());
        }
        let mut clock = Clock::default();
        for chunk in events.chunks(250) {
            clock.append(&pool, chunk).await;
        }
        let context = format!("case {case}: threshold {threshold}, {users} users, {schedule:?}");

        // Few bodies held per author in some cases: evicted rows must still be written,
        // reloaded and read from the table. Folding rounds that start after a few journal
        // entries and write one or a few inboxes a flush, in most cases: rounds then span
        // flushes, crashes and restarts.
        let config = ProjectorConfig {
            resident_posts: [1, 3, 800][case % 3],
            folding: [
                Folding { after: 1, chunk: 1 },
                Folding {
                    after: 20,
                    chunk: 3,
                },
                Folding::default(),
                Folding { after: 5, chunk: 2 },
            ][case % 4],
            ..config(threshold, 50)
        };
        let image = project_live(&pool, &config, &schedule).await;
        let live = dump(&pool).await;
        check_against_reference(&pool, image, &reference, users).await;

        let options = options(threshold, rebuild_batch);
        rebuild(&pool, select(&[]).unwrap(), &options)
            .await
            .unwrap();
        assert_eq!(dump(&pool).await, live, "{context}");
        let verified = verify(&pool, select(&[]).unwrap(), &options).await.unwrap();
        assert!(verified.ok(), "{context}: {verified:?}");
    }
}

/// Applies `events` live one at a time, then checks a rebuild in one batch gives the same.
async fn live_one_by_one_equals_one_batch(pool: &PgPool, threshold: i64, events: &[MurmurEvent]) {
    Clock::default().append(pool, events).await;
    project_live(pool, &config(threshold, 1), &[(1, After::Flush)]).await;
    let live = dump(pool).await;
    let options = options(threshold, 100_000);
    let verified = verify(pool, select(&[]).unwrap(), &options).await.unwrap();
    assert!(verified.ok(), "{verified:?}");
    rebuild(pool, select(&[]).unwrap(), &options).await.unwrap();
    assert_eq!(dump(pool).await, live);
}

#[sqlx::test(migrations = "../migrations")]
async fn eleven_followers_lose_three_and_gain_two_at_threshold_ten(pool: PgPool) {
    let mut events: Vec<MurmurEvent> = (1..=14)
        .flat_map(|id| register(id, &format!("user{id}")))
        .collect();
    events.extend((2..=12).map(|f| followed(f, 1)));
    events.extend((2..=4).map(|f| unfollowed(f, 1)));
    events.extend((13..=14).map(|f| followed(f, 1)));
    live_one_by_one_equals_one_batch(&pool, 10, &events).await;
    // 11 > 10: a celebrity; at 9 (10 - 10/10) back to fan-out, and 10 is not above 10.
    let celebrities: i64 = sqlx::query_scalar("SELECT count(*) FROM feed_celebrities")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(celebrities, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_author_crossing_up_beside_a_post_into_a_full_inbox(pool: PgPool) {
    // Reader 1 follows 2 (795 posts) and 3 (10 newer posts): a full inbox holding 3's posts.
    // Then 4 posts, and two follows make 3 a celebrity (threshold 2): applied one by one
    // the post trims one of 2's posts before 3's ten leave, so 790 entries remain.
    let mut events: Vec<MurmurEvent> = (1..=6)
        .flat_map(|id| register(id, &format!("user{id}")))
        .collect();
    events.extend([followed(1, 2), followed(1, 3), followed(1, 4)]);
    let mut post = 0;
    for author in std::iter::repeat_n(2, 795).chain(std::iter::repeat_n(3, 10)) {
        post += 1;
        events.push(created(post, author));
    }
    events.extend([created(post + 1, 4), followed(5, 3), followed(6, 3)]);
    live_one_by_one_equals_one_batch(&pool, 2, &events).await;
    let entries: i32 =
        sqlx::query_scalar("SELECT cardinality(post_ids) FROM feed_inbox WHERE owner_id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(entries, 790);
}

/// The inboxes memory holds, ascending by owner.
fn memory_inboxes(image: &Image) -> Vec<(UserId, Vec<PostId>)> {
    let state = image.get(Kind::Feeds).read();
    let feeds = state.as_feeds().unwrap();
    let mut inboxes: Vec<_> = feeds.inboxes().map(|(o, p)| (o, p.to_vec())).collect();
    inboxes.sort_unstable();
    inboxes
}

/// Folding rounds that span many flushes while the inboxes keep changing (posts, unfollows,
/// deletions between chunks): after every flush the durable copy (rows, with the journal
/// rows after their `as_of` replayed) reads as memory does, a reload holds the same, and
/// a rebuild and `verify` agree with the live tables.
#[sqlx::test(migrations = "../migrations")]
async fn folding_rounds_spanning_flushes_keep_the_inboxes(pool: PgPool) {
    let users = 9;
    let mut ops: Vec<Op> = (1..=users)
        .flat_map(|a| (1..=users).map(move |b| Op::Follow(a, b)))
        .collect();
    for i in 0..120usize {
        let author = (i % users as usize) as UserId + 1;
        ops.push(match i % 13 {
            5 => Op::Unfollow(author % users + 1, author),
            9 => Op::Follow(author % users + 1, author),
            11 => Op::Delete(i * 7),
            // Bursts fill inboxes past the cap, where replaying an entry twice would show.
            3 => Op::Posts(author, 90),
            _ => Op::Posts(author, 1 + i % 3),
        });
    }
    Clock::default()
        .append(&pool, &events_of(users, &ops))
        .await;
    let config = ProjectorConfig {
        folding: Folding { after: 4, chunk: 2 },
        ..config(DEFAULT_CELEBRITY_THRESHOLD, 7)
    };
    let settings = config.settings();
    let image = Image::new(&settings);
    let live = image.get(Kind::Feeds).clone();
    let mut projector = Projector::load_into(&pool, live.clone(), &settings, true)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for round in 0.. {
        let step = projector.step(&mut conn, 7).await.unwrap();
        projector.flush_journal(&mut conn).await.unwrap();
        let durable = murmur_projections::store::feeds::inboxes(&mut conn)
            .await
            .unwrap();
        assert_eq!(durable, memory_inboxes(&image), "after flush {round}");
        if round % 7 == 6 {
            let before = memory_inboxes(&image);
            projector = Projector::load_into(&pool, live.clone(), &settings, true)
                .await
                .unwrap();
            assert_eq!(
                memory_inboxes(&image),
                before,
                "reloaded after flush {round}"
            );
        }
        if step == Step::Idle {
            break;
        }
    }
    let journal: i64 = sqlx::query_scalar("SELECT count(*) FROM feed_inbox_journal")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(journal > 0, "the history ends with a journal to replay");
    projector.flush(&mut conn).await.unwrap();
    let options = options(DEFAULT_CELEBRITY_THRESHOLD, 50);
    let verified = verify(&pool, select(&[]).unwrap(), &options).await.unwrap();
    assert!(verified.ok(), "{verified:?}");
}
