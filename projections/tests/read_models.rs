//! The read models against a model computed directly from the commands: arbitrary histories
//! of register/follow/unfollow/post/delete, at celebrity thresholds 0, 2 and the default,
//! applied live in batches of random sizes. The memory-served read model and the tables'
//! read model must also give the same pages, cursors and errors, page by page.

use murmur_projections::testkit as common;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use common::*;
use murmur_domain::{MurmurEvent, PostId, UserId};
use murmur_projections::log::checkpoint::committed_after;
use murmur_projections::read_model::names;
use murmur_projections::runtime::{Image, Projector, ProjectorConfig, Step};
use murmur_projections::state::feeds::{DEFAULT_CELEBRITY_THRESHOLD, FOLLOW_BACKFILL, INBOX_CAP};
use murmur_projections::{
    Kind, MemReadModel, PageRequest, PgReadModel, Position, Profile, ReadError, ReadModel,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use sqlx::PgPool;

#[derive(Debug, Clone)]
enum Command {
    Register,
    Follow(usize, usize),
    Unfollow(usize, usize),
    Post(usize),
    Delete(usize),
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        2 => Just(Command::Register),
        4 => (0..8usize, 0..8usize).prop_map(|(a, b)| Command::Follow(a, b)),
        1 => (0..8usize, 0..8usize).prop_map(|(a, b)| Command::Unfollow(a, b)),
        4 => (0..8usize).prop_map(Command::Post),
        1 => (0..64usize).prop_map(Command::Delete),
    ]
}

/// What the read models should say, computed from the commands alone.
#[derive(Default)]
struct Model {
    users: Vec<(UserId, String, DateTime<Utc>)>,
    /// (follower, followee) -> (since, oldest post of the followee the follower's feed shows)
    follows: HashMap<(UserId, UserId), (DateTime<Utc>, PostId)>,
    /// Live posts: id -> author.
    posts: BTreeMap<PostId, UserId>,
    next_post: PostId,
}

impl Model {
    fn user(&self, i: usize) -> Option<UserId> {
        (!self.users.is_empty()).then(|| self.users[i % self.users.len()].0)
    }

    fn posts_of(&self, author: UserId) -> Vec<PostId> {
        self.posts
            .iter()
            .rev()
            .filter(|(_, a)| **a == author)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Runs a command as the domain would, returning the events it appends.
    fn run(&mut self, command: &Command, clock: &Clock) -> Vec<MurmurEvent> {
        // Every event gets its own clock tick: this is the command's first.
        let mut next_time = clock.next();
        match *command {
            Command::Register => {
                let id = self.users.len() as UserId + 1;
                let handle = format!("User_{id}");
                // HandleClaimed takes one tick, UserRegistered the next.
                next_time += chrono::Duration::seconds(1);
                self.users.push((id, handle.clone(), next_time));
                register(id, &handle)
            }
            Command::Follow(a, b) | Command::Unfollow(a, b) => {
                let (Some(a), Some(b)) = (self.user(a), self.user(b)) else {
                    return vec![];
                };
                let follow = matches!(command, Command::Follow(..));
                if a == b || follow == self.follows.contains_key(&(a, b)) {
                    return vec![];
                }
                if follow {
                    let recent = self.posts_of(b);
                    let from = recent.get(FOLLOW_BACKFILL - 1).copied().unwrap_or(0);
                    self.follows.insert((a, b), (next_time, from));
                    vec![followed(a, b)]
                } else {
                    self.follows.remove(&(a, b));
                    vec![unfollowed(a, b)]
                }
            }
            Command::Post(a) => {
                let Some(a) = self.user(a) else { return vec![] };
                self.next_post += 1;
                self.posts.insert(self.next_post, a);
                vec![created(self.next_post, a)]
            }
            Command::Delete(k) => {
                if self.posts.is_empty() {
                    return vec![];
                }
                let (&post, &author) = self.posts.iter().nth(k % self.posts.len()).unwrap();
                self.posts.remove(&post);
                vec![deleted(post, author)]
            }
        }
    }

    fn profile(&self, (id, handle, created_at): &(UserId, String, DateTime<Utc>)) -> Profile {
        Profile {
            id: *id,
            handle: handle.clone(),
            display_name: format!("{handle} display"),
            created_at: *created_at,
            followers_count: self.follows.keys().filter(|(_, b)| b == id).count() as i64,
            following_count: self.follows.keys().filter(|(a, _)| a == id).count() as i64,
            posts_count: self.posts.values().filter(|a| *a == id).count() as i64,
        }
    }

    /// (user, since) newest first, for one side of the graph.
    fn list(
        &self,
        pick: impl Fn(&(UserId, UserId)) -> Option<UserId>,
    ) -> Vec<(UserId, DateTime<Utc>)> {
        let mut list: Vec<_> = self
            .follows
            .iter()
            .filter_map(|(edge, (since, _))| pick(edge).map(|u| (u, *since)))
            .collect();
        list.sort_by_key(|&(user, since)| std::cmp::Reverse((since, user)));
        list
    }

    fn feed(&self, reader: UserId) -> Vec<PostId> {
        self.posts
            .iter()
            .rev()
            .filter(|(post, author)| {
                **author == reader
                    || self
                        .follows
                        .get(&(reader, **author))
                        .is_some_and(|(_, from)| *post >= from)
            })
            .map(|(post, _)| *post)
            .take(INBOX_CAP)
            .collect()
    }
}

/// Reads every page of a paged list.
macro_rules! all_pages {
    ($read:expr, $user:expr, $limit:expr, |$item:ident| $key:expr) => {{
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = $read(
                $user,
                &PageRequest {
                    limit: $limit,
                    cursor: cursor.clone(),
                },
            )
            .await
            .unwrap();
            assert!(page.items.len() <= $limit as usize);
            out.extend(page.items.into_iter().map(|$item| $key));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        out
    }};
}

async fn check(pool: &PgPool, rm: &dyn ReadModel, model: &Model, context: &str) {
    for user in &model.users {
        let expected = model.profile(user);
        assert_eq!(
            rm.profile(user.0).await.unwrap(),
            Some(expected.clone()),
            "{context}"
        );
        assert_eq!(
            rm.profile_by_handle(&user.1.to_uppercase()).await.unwrap(),
            Some(expected),
            "{context}"
        );
        let id = user.0;
        let followers = all_pages!(|u, p| rm.followers(u, p), id, 2, |i| (i.id, i.since));
        assert_eq!(
            followers,
            model.list(|&(a, b)| (b == id).then_some(a)),
            "followers of {id}: {context}"
        );
        let following = all_pages!(|u, p| rm.following(u, p), id, 2, |i| (i.id, i.since));
        assert_eq!(
            following,
            model.list(|&(a, b)| (a == id).then_some(b)),
            "following of {id}: {context}"
        );
        let posts = all_pages!(|u, p| rm.user_posts(u, p), id, 3, |i| (i.id, i.author.id));
        let expected: Vec<_> = model.posts_of(id).into_iter().map(|p| (p, id)).collect();
        assert_eq!(posts, expected, "posts of {id}: {context}");
        let feed = all_pages!(|u, p| rm.feed(u, p), id, 3, |i| i.id);
        assert_eq!(feed, model.feed(id), "feed of {id}: {context}");
    }
    // Every projection has applied the whole log.
    let end: Option<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id::text AS xid, position FROM events
         ORDER BY events.transaction_id DESC, position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .unwrap();
    if let Some((xid, pos)) = end {
        let end = Position::new(xid.parse().unwrap(), pos);
        assert_eq!(rm.progress(&names::ALL).await.unwrap(), end, "{context}");
    }
}

/// Applies the log live, as a leader does (a step of `batch_size`, then a flush), into a
/// fresh image: its memory and the tables then hold the same fold at the same position.
async fn project_live(pool: &PgPool, config: &ProjectorConfig) -> Image {
    let settings = config.settings();
    let image = Image::new(&settings);
    let mut conn = pool.acquire().await.unwrap();
    for kind in Kind::ALL {
        let mut projector = Projector::load_into(pool, image.get(kind).clone(), &settings, true)
            .await
            .unwrap();
        loop {
            match projector.step(&mut conn, config.batch_size).await.unwrap() {
                Step::Applied { .. } => projector.flush(&mut conn).await.unwrap(),
                // Idle may only mean held back by a transaction elsewhere in the cluster.
                Step::Idle
                    if committed_after(&mut conn, projector.position())
                        .await
                        .unwrap() =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Step::Idle => break,
            }
        }
    }
    image
}

/// Every page both read models give for `user`, walked with the cursors they hand out,
/// must be equal (items, order, cursors); so must their answers to cursors they did not
/// issue.
async fn compare(pg: &PgReadModel, mem: &MemReadModel, user: UserId, context: &str) {
    assert_eq!(
        pg.profile(user).await.unwrap(),
        mem.profile(user).await.unwrap(),
        "profile of {user}: {context}"
    );
    for limit in [1, 3, 20] {
        for feed in [true, false] {
            let mut cursor = None;
            loop {
                let page = PageRequest {
                    limit,
                    cursor: cursor.clone(),
                };
                let (a, b) = if feed {
                    (pg.feed(user, &page).await, mem.feed(user, &page).await)
                } else {
                    (
                        pg.user_posts(user, &page).await,
                        mem.user_posts(user, &page).await,
                    )
                };
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_eq!(
                    a, b,
                    "feed {feed}, limit {limit}, {page:?} of {user}: {context}"
                );
                match a.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
    }
    let foreign = [
        "not base64!".to_string(),
        murmur_projections::read_model::cursor::encode(&[5, INBOX_CAP as i64 + 1]),
        murmur_projections::read_model::cursor::encode(&[1, 2, 3]),
    ];
    for cursor in foreign {
        let page = PageRequest {
            limit: 5,
            cursor: Some(cursor.clone()),
        };
        assert!(
            matches!(pg.feed(user, &page).await, Err(ReadError::BadCursor)),
            "{cursor}"
        );
        assert!(
            matches!(mem.feed(user, &page).await, Err(ReadError::BadCursor)),
            "{cursor}"
        );
    }
    // A feed cursor as far as a feed goes: the end, for both.
    let page = PageRequest {
        limit: 5,
        cursor: Some(murmur_projections::read_model::cursor::encode(&[
            murmur_domain::MAX_ID,
            INBOX_CAP as i64,
        ])),
    };
    assert_eq!(
        pg.feed(user, &page).await.unwrap(),
        mem.feed(user, &page).await.unwrap()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn read_models_match_the_commands_at_every_celebrity_threshold(pool: PgPool) {
    let cases = 16;
    let strategy = (proptest::collection::vec(command(), 1..40), 1..30i64);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    for case in 0..cases {
        let (history, batch_size) = strategy.new_tree(&mut runner).unwrap().current();
        sqlx::query("TRUNCATE events").execute(&pool).await.unwrap();
        let mut model = Model::default();
        let mut clock = Clock::default();
        for command in &history {
            let events = model.run(command, &clock);
            if events.is_empty() {
                continue;
            }
            clock.append(&pool, &events).await;
        }
        // Few bodies held per author, so that pages and feeds also read the table's.
        for (threshold, resident) in [(0, 1), (2, 3), (DEFAULT_CELEBRITY_THRESHOLD, 800)] {
            reset_read_models(&pool).await;
            let config = ProjectorConfig {
                resident_posts: resident,
                ..config(threshold, batch_size)
            };
            let image = project_live(&pool, &config).await;
            let pg = PgReadModel::new(pool.clone());
            let mem = MemReadModel::new(image, pg.clone());
            let context = format!(
                "case {case}, threshold {threshold}, {resident} bodies, batch {batch_size}, \
                 history {history:?}"
            );
            check(&pool, &pg, &model, &context).await;
            check(&pool, &mem, &model, &format!("memory: {context}")).await;
            for user in model.users.iter().map(|u| u.0).chain([0, 9_999]) {
                compare(&pg, &mem, user, &context).await;
            }
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn list_cursors_with_impossible_times_are_refused(pool: PgPool) {
    Clock::default().append(&pool, &register(1, "ann")).await;
    let rm = PgReadModel::new(pool.clone());
    // "-1000000000000000000:1": a time chrono can hold and PostgreSQL cannot (was a 500).
    for micros in [-1_000_000_000_000_000_000, 9_000_000_000_000_000_000] {
        let page = PageRequest {
            limit: 5,
            cursor: Some(murmur_projections::read_model::cursor::encode(&[micros, 1])),
        };
        assert!(matches!(
            rm.followers(1, &page).await,
            Err(ReadError::BadCursor)
        ));
        assert!(matches!(
            rm.following(1, &page).await,
            Err(ReadError::BadCursor)
        ));
    }
}
