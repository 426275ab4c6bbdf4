//! The projections' durable copies in PostgreSQL: loading a state from its tables, writing
//! a batch's row changes, and writing a whole state (a rebuild). Every statement is
//! set-based (`UNNEST` arrays or binary `COPY`), never one per event.
//!
//! Tables are named unqualified, so that `replay` can point a connection at a shadow
//! schema (`search_path`) and use the same code to build shadow copies.

pub mod copy;
pub mod feeds;
pub mod posts;
pub mod profiles;
pub mod snapshot;
pub mod verify;

use cqrs_es::Aggregate;
use murmur_domain::{Follow, Post, User};
use sqlx::PgConnection;

pub use snapshot::Snapshot;

use crate::read_model::names;
use crate::state::feeds::Folding;
use crate::state::{FeedsState, Fold, PostsState, ProfilesState};

/// The settings a projection's contents depend on. They are stored with its checkpoint;
/// a projector configured otherwise refuses to continue from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub celebrity_threshold: i64,
    /// Post bodies held in memory per author: not part of the contents (not stored).
    pub resident_posts: usize,
    /// How the inbox journal is folded: not part of the contents either.
    pub folding: Folding,
}

/// A projection whose state has a durable copy.
#[async_trait::async_trait]
pub trait Durable: Fold + Sized {
    /// The checkpoint name (one of `read_model::names`).
    const NAME: &'static str;
    /// The tables of the durable copy, unqualified.
    const TABLES: &'static [&'static str];
    /// The aggregate types whose events `apply` needs; the others are not even decoded.
    const AGGREGATE_TYPES: &'static [&'static str];
    /// Indexes only queries read: a rebuild builds them after loading the rows.
    const DEFERRED_INDEXES: &'static [&'static str] = &[];

    /// An empty state.
    fn empty(settings: &Settings) -> Self;

    /// What of `settings` this projection depends on, as stored with its checkpoint.
    fn identity(settings: &Settings) -> serde_json::Value {
        let _ = settings;
        serde_json::json!({})
    }

    /// Reads the state from its tables, as `snapshot` sees them.
    async fn load(snapshot: &mut Snapshot, settings: &Settings) -> anyhow::Result<Self>;

    /// Writes the row changes of [`Fold::take_changes`], inside the caller's transaction.
    async fn write_changes(conn: &mut PgConnection, changes: &Self::Changes) -> anyhow::Result<()>;

    /// Writes the whole state into its (empty) tables.
    async fn write_all(&self, conn: &mut PgConnection) -> anyhow::Result<()>;
}

#[async_trait::async_trait]
impl Durable for ProfilesState {
    const NAME: &'static str = names::PROFILES;
    const TABLES: &'static [&'static str] = &["profiles"];
    const AGGREGATE_TYPES: &'static [&'static str] = &[User::TYPE, Follow::TYPE, Post::TYPE];
    // Unique, but the Handle aggregate already guarantees it; a duplicate would still fail
    // the rebuild when the index is built, before any swap.
    const DEFERRED_INDEXES: &'static [&'static str] = &["profiles_handle"];

    fn empty(_: &Settings) -> Self {
        ProfilesState::new()
    }

    async fn load(snapshot: &mut Snapshot, _: &Settings) -> anyhow::Result<Self> {
        profiles::load(snapshot).await
    }

    async fn write_changes(conn: &mut PgConnection, changes: &Self::Changes) -> anyhow::Result<()> {
        profiles::write_changes(conn, changes).await
    }

    async fn write_all(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        profiles::write_all(conn, self).await
    }
}

#[async_trait::async_trait]
impl Durable for PostsState {
    const NAME: &'static str = names::POSTS;
    const TABLES: &'static [&'static str] = &["posts"];
    const AGGREGATE_TYPES: &'static [&'static str] = &[Post::TYPE];
    const DEFERRED_INDEXES: &'static [&'static str] = &["posts_by_author"];

    fn empty(settings: &Settings) -> Self {
        PostsState::new(settings.resident_posts)
    }

    async fn load(snapshot: &mut Snapshot, settings: &Settings) -> anyhow::Result<Self> {
        posts::load(snapshot, settings.resident_posts).await
    }

    async fn write_changes(conn: &mut PgConnection, changes: &Self::Changes) -> anyhow::Result<()> {
        posts::write_changes(conn, changes).await
    }

    async fn write_all(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        posts::write_all(conn, self).await
    }
}

#[async_trait::async_trait]
impl Durable for FeedsState {
    const NAME: &'static str = names::FEEDS;
    const TABLES: &'static [&'static str] = &[
        "follows",
        "feed_posts",
        "feed_inbox",
        "feed_inbox_journal",
        "feed_celebrities",
    ];
    const AGGREGATE_TYPES: &'static [&'static str] = &[Follow::TYPE, Post::TYPE];
    // Only the follower and following lists read these; the state finds its rows in memory.
    const DEFERRED_INDEXES: &'static [&'static str] = &["follows_followers", "follows_following"];

    fn empty(settings: &Settings) -> Self {
        let mut state = FeedsState::new(settings.celebrity_threshold);
        state.set_folding(settings.folding);
        state
    }

    fn identity(settings: &Settings) -> serde_json::Value {
        serde_json::json!({ "celebrity_threshold": settings.celebrity_threshold })
    }

    async fn load(snapshot: &mut Snapshot, settings: &Settings) -> anyhow::Result<Self> {
        feeds::load(snapshot, settings.celebrity_threshold, settings.folding).await
    }

    async fn write_changes(conn: &mut PgConnection, changes: &Self::Changes) -> anyhow::Result<()> {
        feeds::write_changes(conn, changes).await
    }

    async fn write_all(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        feeds::write_all(conn, self).await
    }
}
