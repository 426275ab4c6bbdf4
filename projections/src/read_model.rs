//! The query side's one door to the read models. HTTP handlers see only this trait, so a
//! memory-resident copy kept current by the projectors can later serve them unchanged.
//! Every method is a keyed lookup or a keyset page: its cost does not grow with follower
//! or following counts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use murmur_domain::{PostId, UserId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::Position;

// The types served as they are: the OpenAPI schemas are derived here. Ids are the domain's
// `i64` aliases, stated as integers.

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Profile {
    #[schema(value_type = i64)]
    pub id: UserId,
    pub handle: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub followers_count: i64,
    pub following_count: i64,
    pub posts_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Author {
    #[schema(value_type = i64)]
    pub id: UserId,
    pub handle: String,
    pub display_name: String,
}

/// A post as feeds and post lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PostItem {
    #[schema(value_type = i64)]
    pub id: PostId,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub author: Author,
}

/// A follower or followee; `since` is when the follow happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserListItem {
    #[schema(value_type = i64)]
    pub id: UserId,
    pub handle: String,
    pub display_name: String,
    pub since: DateTime<Utc>,
}

/// Which page to read: at most `limit` items after the opaque `cursor` (none: the first page).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

/// A page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page (an opaque keyset cursor).
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client sent a cursor this read model did not issue (answer 400).
    #[error("malformed cursor")]
    BadCursor,
    /// The read model is still loading (answer 503).
    #[error("the read model is loading")]
    Loading,
    #[error("read model unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

/// Names of the projections, as stored in checkpoints and used by `replay --projection`.
pub mod names {
    pub const PROFILES: &str = "profiles";
    pub const POSTS: &str = "posts";
    pub const FEEDS: &str = "feeds";
    /// The follow graph is kept by the feeds projection (fan-out reads it, and a projection
    /// reads only its own tables), so it shares that projection's name and checkpoint.
    pub const GRAPH: &str = FEEDS;
    /// Every projection, once each.
    pub const ALL: [&str; 3] = [PROFILES, POSTS, FEEDS];
}

/// What a query reads, so that its answer carries the progress of just that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// These projections' state (held in memory by a memory-served read model).
    State(&'static [&'static str]),
    /// The follower and following lists, which are always read from the tables (their
    /// timestamps do not fit the memory budget), so from the durable copies' progress.
    FollowLists,
}

impl Reads {
    /// The projections read.
    pub fn projections(self) -> &'static [&'static str] {
        match self {
            Reads::State(projections) => projections,
            Reads::FollowLists => &[names::PROFILES, names::GRAPH],
        }
    }
}

#[async_trait::async_trait]
pub trait ReadModel: Send + Sync {
    async fn profile(&self, id: UserId) -> Result<Option<Profile>, ReadError>;
    /// Case-insensitive.
    async fn profile_by_handle(&self, handle: &str) -> Result<Option<Profile>, ReadError>;
    /// The home feed: the user's own posts and those of everyone they follow (celebrity
    /// authors merged at read time), newest first, no deleted post, no post twice.
    async fn feed(&self, user: UserId, page: &PageRequest) -> Result<Page<PostItem>, ReadError>;
    /// One author's posts, newest first.
    async fn user_posts(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<PostItem>, ReadError>;
    /// Who follows `user`, newest first.
    async fn followers(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError>;
    /// Whom `user` follows, newest first.
    async fn following(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError>;
    /// How far the named projections have applied the log: the least of their checkpoints.
    /// May lag the database by a moment, never lead it.
    async fn progress(&self, projections: &[&str]) -> Result<Position, ReadError>;
    /// Waits (at most `timeout`) until [`ReadModel::progress`] reaches `min`, and answers the
    /// progress then: below `min` only if it was not reached in time.
    async fn progress_reaching(
        &self,
        projections: &[&str],
        min: Position,
        timeout: Duration,
    ) -> Result<Position, ReadError> {
        poll_progress(self, projections, min, timeout).await
    }
    /// How far what `reads` reads has applied the log.
    async fn progress_of(&self, reads: Reads) -> Result<Position, ReadError> {
        self.progress(reads.projections()).await
    }
    /// [`ReadModel::progress_reaching`] for what `reads` reads.
    async fn progress_of_reaching(
        &self,
        reads: Reads,
        min: Position,
        timeout: Duration,
    ) -> Result<Position, ReadError> {
        self.progress_reaching(reads.projections(), min, timeout)
            .await
    }
}

/// [`ReadModel::progress_reaching`] by asking [`ReadModel::progress`] again and again (no
/// connection is held in between): for read models that cannot be notified of progress.
pub async fn poll_progress<R: ReadModel + ?Sized>(
    read_model: &R,
    projections: &[&str],
    min: Position,
    timeout: Duration,
) -> Result<Position, ReadError> {
    // Short at first, since projectors usually follow within milliseconds, then longer, so
    // many waiting requests do not flood the database.
    const FIRST_POLL: Duration = Duration::from_millis(5);
    const MAX_POLL: Duration = Duration::from_millis(25);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = FIRST_POLL;
    loop {
        let at = read_model.progress(projections).await?;
        if at >= min || tokio::time::Instant::now() + interval > deadline {
            return Ok(at);
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(MAX_POLL);
    }
}

/// Cursors are base64url (no padding) of the keyset key in text: `<post id>:<entries shown>`
/// for feeds, `<post id>` for post lists, `<since, µs>:<user id>` for user lists. Every
/// read model issues and accepts the same ones.
pub mod cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::ReadError;

    pub fn encode(parts: &[i64]) -> String {
        let text: Vec<String> = parts.iter().map(i64::to_string).collect();
        URL_SAFE_NO_PAD.encode(text.join(":"))
    }

    /// The `N` numbers of a cursor [`encode`] made; `BadCursor` for anything else.
    pub fn decode<const N: usize>(cursor: &str) -> Result<[i64; N], ReadError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| ReadError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| ReadError::BadCursor)?;
        let numbers: Vec<i64> = text
            .split(':')
            .map(|part| part.parse().map_err(|_| ReadError::BadCursor))
            .collect::<Result<_, _>>()?;
        numbers.try_into().map_err(|_| ReadError::BadCursor)
    }

    /// A key a cursor carries: an id as murmur hands them out (1 to 2^53 - 1); anything
    /// else did not come from murmur.
    pub fn key(n: i64) -> Result<i64, ReadError> {
        if (1..=murmur_domain::MAX_ID).contains(&n) {
            Ok(n)
        } else {
            Err(ReadError::BadCursor)
        }
    }

    /// Where a page of an author's posts starts: below which post id.
    pub fn posts_start(cursor: Option<&str>) -> Result<i64, ReadError> {
        match cursor {
            Some(cursor) => key(decode::<1>(cursor)?[0]),
            None => Ok(i64::MAX),
        }
    }

    /// The cursor after a page of an author's posts whose last key is `last`, if `more`.
    pub fn posts_next(last: Option<&i64>, more: bool) -> Option<String> {
        last.filter(|_| more).map(|last| encode(&[*last]))
    }

    /// The cursor after a feed page whose last key is `last`, `shown` entries in, if `more`
    /// and the feed may show more than `shown` (at most `cap`).
    pub fn feed_next(last: Option<&i64>, more: bool, shown: i64, cap: i64) -> Option<String> {
        last.filter(|_| more && shown < cap)
            .map(|last| encode(&[*last, shown]))
    }

    /// Where a feed page starts: below which post id, after how many entries shown (at most
    /// `cap`, the most a feed shows in all).
    pub fn feed_start(cursor: Option<&str>, cap: i64) -> Result<(i64, i64), ReadError> {
        match cursor {
            Some(cursor) => {
                let [before, shown] = decode::<2>(cursor)?;
                if !(0..=cap).contains(&shown) {
                    return Err(ReadError::BadCursor);
                }
                Ok((key(before)?, shown))
            }
            None => Ok((i64::MAX, 0)),
        }
    }
}

/// Splits `limit + 1` fetched keys into the page's keys and whether more follow.
pub(crate) fn split_page<T>(mut keys: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = keys.len() > limit;
    keys.truncate(limit);
    (keys, more)
}
