//! The benchmark dataset: the seed's users, follow graph and posts, written as murmur's own
//! events (`MurmurEvent::encode` + `EventMetadata`) straight into the event store by bulk
//! `COPY`. The read models are built afterwards by `replay rebuild --all`.
//!
//! Everything is derived from `(scale, seed)`: per-user out-degrees, the set of user 1's
//! followers and a popularity table are computed up front (a few bytes per user); each user's
//! follow targets are drawn from an RNG seeded by (seed, user), so the 50M edges at scale 1
//! are streamed and never held in memory.
//!
//! Log layout: all registrations (`HandleClaimed`, then `UserRegistered`, per user in id
//! order) during 2024, then follows (user by user) with posts interleaved evenly during
//! 2025. Event times increase strictly with position.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Duration, TimeZone, Utc};
use murmur_domain::{
    EventMetadata, FollowEvent, HandleEvent, MurmurEvent, PostEvent, UserEvent, UserId,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

/// The seed's dataset at scale 1.
pub const SEED_USERS: u64 = 1_091_000;
pub const SEED_FOLLOWS: u64 = 50_368_293;
pub const SEED_POSTS: u64 = 73_817;
pub const SEED_USER1_FOLLOWERS: u64 = 1_026_999;

/// Nobody follows more than this many users ("a few follow around 5,000").
pub const MAX_FOLLOWING: u32 = 5_000;

/// The password of every generated user (stored as one precomputed argon2id hash).
pub const BENCH_PASSWORD: &str = "murmur-bench-password";

/// Share of users who follow hundreds to thousands of accounts.
const POWER_USER_SHARE: f64 = 0.005;
/// Followee popularity falls off as id^-POPULARITY_EXPONENT (early users are followed more).
const POPULARITY_EXPONENT: f64 = 0.8;
/// Share of posts written by user 1, the celebrity.
const USER1_POST_SHARE: f64 = 0.01;

/// How many of each thing a scale stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub users: u64,
    /// All follow edges, including those to user 1.
    pub follows: u64,
    pub posts: u64,
    pub user1_followers: u64,
}

impl Counts {
    /// The seed's figures times `scale`, rounded.
    pub fn at_scale(scale: f64) -> Result<Self> {
        ensure!(
            scale.is_finite() && scale > 0.0,
            "scale must be positive, got {scale}"
        );
        let of = |n: u64| (n as f64 * scale).round() as u64;
        let counts = Self {
            users: of(SEED_USERS),
            follows: of(SEED_FOLLOWS),
            posts: of(SEED_POSTS),
            user1_followers: of(SEED_USER1_FOLLOWERS),
        };
        ensure!(counts.users >= 3, "scale {scale} gives fewer than 3 users");
        ensure!(
            counts.user1_followers < counts.users,
            "user 1 cannot have {} followers among {} users",
            counts.user1_followers,
            counts.users
        );
        let others = counts.follows.saturating_sub(counts.user1_followers);
        ensure!(
            others <= counts.users * u64::from(max_following(counts.users)),
            "scale {scale}: {others} follows do not fit among {} users",
            counts.users
        );
        Ok(counts)
    }

    /// Events in the log: two per registration, one per follow and per post.
    pub fn events(&self) -> u64 {
        2 * self.users + self.follows + self.posts
    }
}

/// The out-degree cap: at most `MAX_FOLLOWING`, and never more than there are other users
/// (besides the user and user 1, whose followers are chosen separately).
fn max_following(users: u64) -> u32 {
    (users.saturating_sub(2)).min(u64::from(MAX_FOLLOWING)) as u32
}

/// An RNG for one purpose (and one user), derived from the dataset's seed.
fn rng_for(seed: u64, purpose: u64, index: u64) -> StdRng {
    // splitmix64-style mixing so neighbouring (purpose, index) pairs give unrelated streams.
    let mut z = seed
        ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

const DEGREES: u64 = 1;
const USER1_FOLLOWERS: u64 = 2;
const TARGETS: u64 = 3;
const POSTS: u64 = 4;
const NAMES: u64 = 5;

/// Everything about the dataset that is decided before streaming: small per-user tables.
pub struct Plan {
    pub counts: Counts,
    seed: u64,
    /// Out-degree of user `u` (index `u - 1`), not counting a follow of user 1.
    degree: Vec<u32>,
    /// Whether user `u` (index `u - 1`) follows user 1.
    follows_user1: Vec<bool>,
    /// Cumulative popularity of users 2..=N (index `v - 2`), for drawing followees and authors.
    popularity: Vec<f64>,
}

impl Plan {
    pub fn new(counts: Counts, seed: u64) -> Self {
        let n = counts.users as usize;
        let mut popularity = Vec::with_capacity(n - 1);
        let mut total = 0.0;
        for v in 2..=n {
            total += (v as f64).powf(-POPULARITY_EXPONENT);
            popularity.push(total);
        }
        Self {
            counts,
            seed,
            degree: degrees(&counts, seed),
            follows_user1: user1_followers(&counts, seed),
            popularity,
        }
    }

    /// How many users user `u` follows, user 1 included.
    pub fn following_count(&self, u: UserId) -> u64 {
        let i = (u - 1) as usize;
        u64::from(self.degree[i]) + u64::from(self.follows_user1[i])
    }

    /// A user in 2..=N, drawn by popularity.
    fn popular_user(&self, rng: &mut StdRng) -> UserId {
        let total = self.popularity.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        let i = self.popularity.partition_point(|&c| c <= x);
        (i.min(self.popularity.len() - 1) + 2) as UserId
    }

    /// Whom user `u` follows besides user 1: distinct, never `u`, popular users more often.
    pub fn targets(&self, u: UserId) -> Vec<UserId> {
        let d = self.degree[(u - 1) as usize] as usize;
        let n = self.counts.users as UserId;
        let mut rng = rng_for(self.seed, TARGETS, u as u64);
        let candidates = (n - 1) as usize - usize::from(u >= 2);
        if d * 2 > candidates {
            // Only at tiny scales: most candidates are taken, so pick uniformly instead.
            let mut all: Vec<UserId> = (2..=n).filter(|&v| v != u).collect();
            all.shuffle(&mut rng);
            all.truncate(d);
            return all;
        }
        let mut chosen = Vec::with_capacity(d);
        let mut seen = HashSet::with_capacity(d);
        while chosen.len() < d {
            let v = self.popular_user(&mut rng);
            if v != u && seen.insert(v) {
                chosen.push(v);
            }
        }
        chosen
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Per-user out-degrees (excluding user 1) summing exactly to the follows not going to
/// user 1: mostly log-normal around a few dozen, with a few power users up to 5,000.
fn degrees(counts: &Counts, seed: u64) -> Vec<u32> {
    let n = counts.users as usize;
    let cap = max_following(counts.users);
    let target = counts.follows - counts.user1_followers;
    let mut rng = rng_for(seed, DEGREES, 0);
    let raw: Vec<f64> = (0..n)
        .map(|_| {
            if rng.random::<f64>() < POWER_USER_SHARE {
                // log-uniform between 500 and 5,000
                (500f64.ln() + rng.random::<f64>() * (10f64).ln()).exp()
            } else {
                (26f64.ln() + 0.8 * normal(&mut rng)).exp()
            }
        })
        .collect();
    let factor = target as f64 / raw.iter().sum::<f64>();
    let mut degree: Vec<u32> = raw
        .iter()
        .map(|&x| (x * factor).round().clamp(0.0, f64::from(cap)) as u32)
        .collect();
    // Rounding and the cap leave a small residue: spread it one follow at a time.
    let min = u32::from(target >= 2 * counts.users);
    let mut sum: u64 = degree.iter().map(|&d| u64::from(d)).sum();
    while sum != target {
        let i = rng.random_range(0..n);
        if sum < target && degree[i] < cap {
            degree[i] += 1;
            sum += 1;
        } else if sum > target && degree[i] > min {
            degree[i] -= 1;
            sum -= 1;
        }
    }
    degree
}

/// Exactly `user1_followers` of users 2..=N, chosen by selection sampling (Knuth's S).
fn user1_followers(counts: &Counts, seed: u64) -> Vec<bool> {
    let mut rng = rng_for(seed, USER1_FOLLOWERS, 0);
    let mut needed = counts.user1_followers;
    let mut left = counts.users - 1;
    let mut follows = vec![false; counts.users as usize];
    for flag in follows.iter_mut().skip(1) {
        if rng.random_range(0..left) < needed {
            *flag = true;
            needed -= 1;
        }
        left -= 1;
    }
    follows
}

const FIRST_NAMES: [&str; 16] = [
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis",
    "Radia", "Linus", "Sophie", "Tim", "Hedy", "John",
];
const LAST_NAMES: [&str; 16] = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Torvalds",
    "Wilson",
    "Berners-Lee",
    "Lamarr",
    "Backus",
];
const WORDS: [&str; 32] = [
    "murmur",
    "coffee",
    "today",
    "shipping",
    "the",
    "a",
    "new",
    "release",
    "is",
    "out",
    "love",
    "this",
    "city",
    "rain",
    "again",
    "weekend",
    "reading",
    "about",
    "databases",
    "events",
    "never",
    "lose",
    "data",
    "hello",
    "world",
    "fast",
    "slow",
    "queries",
    "feeds",
    "music",
    "tonight",
    "!",
];

/// The registration period (2024) and the activity period (2025).
fn periods() -> [(DateTime<Utc>, DateTime<Utc>); 2] {
    let at = |y| {
        Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    };
    [(at(2024), at(2025)), (at(2025), at(2026))]
}

/// The time of event `i` of `n` spread evenly over `(start, end)`, to the microsecond.
fn time_at(i: u64, n: u64, (start, end): (DateTime<Utc>, DateTime<Utc>)) -> DateTime<Utc> {
    let span = (end - start).num_microseconds().unwrap_or(0) as u128;
    let offset = span * u128::from(i) / u128::from(n.max(1));
    start + Duration::microseconds(offset as i64)
}

/// The dataset's events in log order, each with its metadata.
pub struct Events<'a> {
    plan: &'a Plan,
    /// Events produced so far.
    index: u64,
    /// Registration phase: next user and whether their handle is already claimed.
    next_user: UserId,
    claimed: bool,
    display_name: String,
    names: StdRng,
    /// Activity phase: current follower, their remaining targets, edges and posts so far.
    follower: UserId,
    pending: std::vec::IntoIter<UserId>,
    follows_done: u64,
    posts_done: u64,
    posts: StdRng,
}

impl<'a> Events<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        Self {
            plan,
            index: 0,
            next_user: 1,
            claimed: false,
            display_name: String::new(),
            names: rng_for(plan.seed, NAMES, 0),
            follower: 0,
            pending: Vec::new().into_iter(),
            follows_done: 0,
            posts_done: 0,
            posts: rng_for(plan.seed, POSTS, 0),
        }
    }

    fn meta(&mut self, actor_id: Option<UserId>) -> EventMetadata {
        let counts = &self.plan.counts;
        let registrations = 2 * counts.users;
        let time = if self.index < registrations {
            time_at(self.index, registrations, periods()[0])
        } else {
            time_at(
                self.index - registrations,
                counts.follows + counts.posts,
                periods()[1],
            )
        };
        let meta = EventMetadata {
            actor_id,
            request_id: format!("bench-{}-{}", self.plan.seed, self.index),
            time,
        };
        self.index += 1;
        meta
    }

    fn registration(&mut self) -> (MurmurEvent, EventMetadata) {
        let user_id = self.next_user;
        let handle = format!("user{user_id}");
        if !self.claimed {
            self.display_name = format!(
                "{} {}",
                FIRST_NAMES[self.names.random_range(0..FIRST_NAMES.len())],
                LAST_NAMES[self.names.random_range(0..LAST_NAMES.len())]
            );
            self.claimed = true;
            let event = MurmurEvent::Handle(HandleEvent::HandleClaimed {
                user_id,
                handle,
                display_name: self.display_name.clone(),
            });
            return (event, self.meta(None));
        }
        self.claimed = false;
        self.next_user += 1;
        let event = MurmurEvent::User(UserEvent::UserRegistered {
            user_id,
            handle,
            display_name: std::mem::take(&mut self.display_name),
        });
        (event, self.meta(None))
    }

    /// Post `j` is due once this many follows are out, so posts spread evenly over the period.
    fn post_due(&self) -> bool {
        let counts = &self.plan.counts;
        if self.posts_done >= counts.posts {
            return false;
        }
        let due_after = u128::from(self.posts_done + 1) * u128::from(counts.follows)
            / u128::from(counts.posts + 1);
        u128::from(self.follows_done) >= due_after
    }

    fn post(&mut self) -> (MurmurEvent, EventMetadata) {
        self.posts_done += 1;
        let post_id = self.posts_done as i64;
        let author_id = if self.posts.random::<f64>() < USER1_POST_SHARE {
            1
        } else {
            self.plan.popular_user(&mut self.posts)
        };
        let words = self.posts.random_range(3..30);
        let body = (0..words)
            .map(|_| WORDS[self.posts.random_range(0..WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ");
        let event = MurmurEvent::Post(PostEvent::PostCreated {
            post_id,
            author_id,
            body: format!("{body} #{post_id}"),
        });
        (event, self.meta(Some(author_id)))
    }

    fn follow(&mut self) -> Option<(MurmurEvent, EventMetadata)> {
        let followee_id = loop {
            if let Some(v) = self.pending.next() {
                break v;
            }
            if self.follower >= self.plan.counts.users as UserId {
                return None;
            }
            self.follower += 1;
            let mut targets = Vec::new();
            if self.plan.follows_user1[(self.follower - 1) as usize] {
                targets.push(1);
            }
            targets.extend(self.plan.targets(self.follower));
            self.pending = targets.into_iter();
        };
        self.follows_done += 1;
        let follower_id = self.follower;
        let event = MurmurEvent::Follow(FollowEvent::Followed {
            follower_id,
            followee_id,
        });
        Some((event, self.meta(Some(follower_id))))
    }
}

impl Iterator for Events<'_> {
    type Item = (MurmurEvent, EventMetadata);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_user <= self.plan.counts.users as UserId {
            return Some(self.registration());
        }
        if self.post_due() {
            return Some(self.post());
        }
        self.follow()
            .or_else(|| self.post_due().then(|| self.post()))
    }
}

/// The columns the generator writes; `position` and `transaction_id` take their defaults.
const COPY_EVENTS: &str = "COPY events (aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata) FROM STDIN";

/// Appends `bytes` as one field of COPY's text format.
fn push_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

/// Appends one `events` row in COPY text format. Every generated event opens its stream,
/// so its sequence is 1.
pub fn push_row(buf: &mut Vec<u8>, json: &mut Vec<u8>, event: &MurmurEvent, meta: &EventMetadata) {
    let (aggregate_type, aggregate_id, event_type, event_version, payload) = event.encode();
    push_field(buf, aggregate_type.as_bytes());
    buf.push(b'\t');
    push_field(buf, aggregate_id.as_bytes());
    buf.extend_from_slice(b"\t1\t");
    push_field(buf, event_type.as_bytes());
    buf.push(b'\t');
    push_field(buf, event_version.as_bytes());
    for value in [&payload, &meta.to_json()] {
        buf.push(b'\t');
        json.clear();
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *json, value);
        push_field(buf, json);
    }
    buf.push(b'\n');
}

/// How the generator writes.
#[derive(Debug, Clone)]
pub struct Options {
    pub scale: f64,
    pub seed: u64,
    /// Rows per COPY (one transaction each). Short transactions, because projectors in every
    /// database of the cluster wait for the oldest open write transaction.
    pub chunk_rows: u64,
    /// Drop the events table's indexes during the load and rebuild them after.
    pub drop_indexes: bool,
    /// Also write a `credentials` row per user (all with the hash of [`BENCH_PASSWORD`]).
    pub credentials: bool,
}

impl Options {
    pub fn new(scale: f64, seed: u64) -> Self {
        Self {
            scale,
            seed,
            chunk_rows: 50_000,
            drop_indexes: true,
            credentials: true,
        }
    }
}

/// What a generation wrote and how fast.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub counts: Counts,
    pub events: u64,
    /// Time of the COPYs alone.
    pub copy_seconds: f64,
    /// Time to rebuild the indexes (0 when they were kept).
    pub index_seconds: f64,
    /// Everything: plan, COPY, indexes, credentials, sequences.
    pub total_seconds: f64,
    /// `events / total_seconds`.
    pub events_per_second: f64,
}

/// A block of COPY data, or the end of a COPY (commit it).
enum Block {
    Data(Vec<u8>),
    Commit(u64),
}

const BLOCK_BYTES: usize = 4 << 20;

/// Produces the COPY text of all events, on a plain thread, in blocks.
fn produce(plan: &Plan, chunk_rows: u64, tx: tokio::sync::mpsc::Sender<Block>) {
    let mut buf = Vec::with_capacity(BLOCK_BYTES + 4096);
    let mut json = Vec::with_capacity(1024);
    let mut in_chunk = 0u64;
    for (event, meta) in Events::new(plan) {
        push_row(&mut buf, &mut json, &event, &meta);
        in_chunk += 1;
        let end_of_chunk = in_chunk == chunk_rows;
        if buf.len() >= BLOCK_BYTES || end_of_chunk {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(BLOCK_BYTES + 4096));
            if tx.blocking_send(Block::Data(full)).is_err() {
                return; // the writer failed and reports why
            }
        }
        if end_of_chunk {
            if tx.blocking_send(Block::Commit(in_chunk)).is_err() {
                return;
            }
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        let _ = tx.blocking_send(Block::Data(buf));
        let _ = tx.blocking_send(Block::Commit(in_chunk));
    }
}

/// The events table's keys and indexes as the migrations left them, so they can be dropped
/// for the load and recreated exactly (whatever later migrations add).
struct EventIndexes {
    /// (name, definition) of primary-key and unique constraints.
    constraints: Vec<(String, String)>,
    /// (name, `CREATE INDEX` statement) of the other indexes.
    indexes: Vec<(String, String)>,
}

impl EventIndexes {
    async fn read(conn: &mut sqlx::PgConnection) -> Result<Self> {
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'events'::regclass AND contype IN ('p', 'u') ORDER BY conname",
        )
        .fetch_all(&mut *conn)
        .await
        .context("reading the events constraints")?;
        let indexes = sqlx::query_as(
            "SELECT indexname::text, indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename = 'events' \
               AND indexname <> ALL($1) ORDER BY indexname",
        )
        .bind(
            constraints
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await
        .context("reading the events indexes")?;
        Ok(Self {
            constraints,
            indexes,
        })
    }

    async fn drop(&self, conn: &mut sqlx::PgConnection) -> Result<()> {
        for (name, _) in &self.constraints {
            sqlx::query(&format!("ALTER TABLE events DROP CONSTRAINT \"{name}\""))
                .execute(&mut *conn)
                .await
                .with_context(|| format!("dropping {name}"))?;
        }
        for (name, _) in &self.indexes {
            sqlx::query(&format!("DROP INDEX \"{name}\""))
                .execute(&mut *conn)
                .await
                .with_context(|| format!("dropping {name}"))?;
        }
        Ok(())
    }

    async fn create(&self, conn: &mut sqlx::PgConnection) -> Result<()> {
        sqlx::query("SET maintenance_work_mem = '1GB'")
            .execute(&mut *conn)
            .await?;
        for (name, definition) in &self.constraints {
            sqlx::query(&format!(
                "ALTER TABLE events ADD CONSTRAINT \"{name}\" {definition}"
            ))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("recreating {name}"))?;
        }
        for (name, statement) in &self.indexes {
            sqlx::query(statement)
                .execute(&mut *conn)
                .await
                .with_context(|| format!("recreating {name}"))?;
        }
        Ok(())
    }
}

/// Writes the dataset into an empty event store. `progress` is told after every commit.
pub async fn generate(
    pool: &PgPool,
    options: &Options,
    mut progress: impl FnMut(u64, f64),
) -> Result<Report> {
    let started = Instant::now();
    let counts = Counts::at_scale(options.scale)?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1) e")
        .fetch_one(pool)
        .await
        .context("reading the event store")?;
    if existing > 0 {
        bail!("the event store is not empty: generate into a fresh database");
    }
    let plan = std::sync::Arc::new(Plan::new(counts, options.seed));

    let mut conn = pool.acquire().await.context("connecting")?;
    let indexes = EventIndexes::read(&mut conn).await?;
    if options.drop_indexes {
        indexes.drop(&mut conn).await?;
    }

    let copy_started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let producer = {
        let plan = plan.clone();
        let chunk_rows = options.chunk_rows.max(1);
        tokio::task::spawn_blocking(move || produce(&plan, chunk_rows, tx))
    };
    // Bulk load: losing the last commits on a crash is fine, a failed run starts over.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut *conn)
        .await?;
    let mut written = 0u64;
    while let Some(mut block) = rx.recv().await {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut copy = tx.copy_in_raw(COPY_EVENTS).await.context("starting COPY")?;
        let rows = loop {
            match block {
                Block::Data(bytes) => {
                    copy.send(bytes).await.context("sending COPY data")?;
                }
                Block::Commit(rows) => break rows,
            }
            block = rx
                .recv()
                .await
                .context("the event producer stopped mid-chunk")?;
        };
        copy.finish().await.context("finishing COPY")?;
        tx.commit().await.context("committing a chunk")?;
        written += rows;
        progress(written, copy_started.elapsed().as_secs_f64());
    }
    producer.await.context("the event producer panicked")?;
    ensure!(
        written == counts.events(),
        "wrote {written} events, expected {}",
        counts.events()
    );
    let copy_seconds = copy_started.elapsed().as_secs_f64();

    let index_started = Instant::now();
    if options.drop_indexes {
        indexes.create(&mut conn).await?;
    }
    let index_seconds = if options.drop_indexes {
        index_started.elapsed().as_secs_f64()
    } else {
        0.0
    };

    if options.credentials {
        write_credentials(&mut conn, counts.users).await?;
    }
    // The live API hands out ids after the generated ones.
    sqlx::query("SELECT setval('user_ids', $1), setval('post_ids', greatest($2, 1), $2 > 0)")
        .bind(counts.users as i64)
        .bind(counts.posts as i64)
        .execute(&mut *conn)
        .await
        .context("advancing the id sequences")?;
    sqlx::query("ANALYZE events").execute(&mut *conn).await?;

    let total_seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        counts,
        events: written,
        copy_seconds,
        index_seconds,
        total_seconds,
        events_per_second: written as f64 / total_seconds,
    })
}

/// The argon2id hash of [`BENCH_PASSWORD`] with a fixed salt (so datasets are identical).
pub fn bench_password_hash() -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::from_b64("bXVybXVyLWJlbmNo").map_err(|e| anyhow::anyhow!("{e}"))?;
    argon2::Argon2::default()
        .hash_password(BENCH_PASSWORD.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the bench password: {e}"))
}

async fn write_credentials(conn: &mut sqlx::PgConnection, users: u64) -> Result<()> {
    let hash = bench_password_hash()?;
    let mut copy = conn
        .copy_in_raw("COPY credentials (user_id, password_hash) FROM STDIN")
        .await
        .context("starting the credentials COPY")?;
    let mut buf = Vec::with_capacity(BLOCK_BYTES + 4096);
    for user in 1..=users {
        buf.extend_from_slice(user.to_string().as_bytes());
        buf.push(b'\t');
        push_field(&mut buf, hash.as_bytes());
        buf.push(b'\n');
        if buf.len() >= BLOCK_BYTES {
            copy.send(std::mem::take(&mut buf)).await?;
        }
    }
    copy.send(buf).await?;
    copy.finish().await.context("writing credentials")?;
    Ok(())
}
