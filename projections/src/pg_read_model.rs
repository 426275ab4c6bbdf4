//! [`ReadModel`] over the PostgreSQL read-model tables: keyed lookups and keyset pages only.
//!
//! Cursors are base64url (no padding) of the keyset key in text: `<post id>:<entries shown>`
//! for feeds, `<post id>` for post lists, `<since, µs>:<user id>` for user lists.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use murmur_domain::{PostId, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::feeds::INBOX_CAP;
use crate::read_model::{
    Author, Page, PageRequest, PostItem, Profile, ReadError, ReadModel, UserListItem,
};
use crate::Position;

#[derive(Debug, Clone)]
pub struct PgReadModel {
    pool: PgPool,
}

impl PgReadModel {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn encode_cursor(parts: &[i64]) -> String {
    let text: Vec<String> = parts.iter().map(i64::to_string).collect();
    URL_SAFE_NO_PAD.encode(text.join(":"))
}

/// The `N` numbers of a cursor this module issued; `BadCursor` for anything else.
fn decode_cursor<const N: usize>(cursor: &str) -> Result<[i64; N], ReadError> {
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

const PROFILE_COLUMNS: &str =
    "user_id, handle, display_name, created_at, followers_count, following_count, posts_count";

fn profile(row: &PgRow) -> Result<Profile, sqlx::Error> {
    Ok(Profile {
        id: row.try_get("user_id")?,
        handle: row.try_get("handle")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
        followers_count: row.try_get("followers_count")?,
        following_count: row.try_get("following_count")?,
        posts_count: row.try_get("posts_count")?,
    })
}

/// Loads posts with their authors by primary key, in the order of `ids`. A post whose row
/// or author is not there (yet) is left out.
async fn hydrate(pool: &PgPool, ids: &[PostId]) -> Result<Vec<PostItem>, ReadError> {
    let rows = sqlx::query(
        "SELECT p.post_id, p.body, p.created_at, p.author_id, u.handle, u.display_name
         FROM posts p JOIN profiles u ON u.user_id = p.author_id
         WHERE p.post_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut by_id = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let item = PostItem {
            id: row.try_get("post_id")?,
            body: row.try_get("body")?,
            created_at: row.try_get("created_at")?,
            author: Author {
                id: row.try_get("author_id")?,
                handle: row.try_get("handle")?,
                display_name: row.try_get("display_name")?,
            },
        };
        by_id.insert(item.id, item);
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// Splits `limit + 1` fetched keys into the page's keys and whether more follow.
fn split_page<T>(mut keys: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = keys.len() > limit;
    keys.truncate(limit);
    (keys, more)
}

impl PgReadModel {
    /// The `listed` side of `user`'s edges (`user` being the `of` side), newest first.
    async fn user_list(
        &self,
        listed: &str,
        of: &str,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        let (since, id) = match &page.cursor {
            Some(cursor) => {
                let [micros, id] = decode_cursor::<2>(cursor)?;
                let since =
                    DateTime::<Utc>::from_timestamp_micros(micros).ok_or(ReadError::BadCursor)?;
                (since, id)
            }
            None => (DateTime::<Utc>::MAX_UTC, i64::MAX),
        };
        let limit = page.limit as usize;
        let sql = format!(
            "SELECT f.{listed} AS user_id, u.handle, u.display_name, f.since
             FROM follows f JOIN profiles u ON u.user_id = f.{listed}
             WHERE f.{of} = $1 AND (f.since, f.{listed}) < ($2, $3)
             ORDER BY f.since DESC, f.{listed} DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(user)
            .bind(since)
            .bind(id)
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(UserListItem {
                    id: row.try_get("user_id")?,
                    handle: row.try_get("handle")?,
                    display_name: row.try_get("display_name")?,
                    since: row.try_get("since")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let (items, more) = split_page(items, limit);
        let next_cursor = match items.last() {
            Some(last) if more => Some(encode_cursor(&[last.since.timestamp_micros(), last.id])),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }
}

#[async_trait::async_trait]
impl ReadModel for PgReadModel {
    async fn profile(&self, id: UserId) -> Result<Option<Profile>, ReadError> {
        let row = sqlx::query(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE user_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(profile).transpose()?)
    }

    async fn profile_by_handle(&self, handle: &str) -> Result<Option<Profile>, ReadError> {
        let row = sqlx::query(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE lower(handle) = lower($1)"
        ))
        .bind(handle)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(profile).transpose()?)
    }

    async fn feed(&self, user: UserId, page: &PageRequest) -> Result<Page<PostItem>, ReadError> {
        let (before, shown) = match &page.cursor {
            Some(cursor) => {
                let [before, shown] = decode_cursor::<2>(cursor)?;
                if !(0..=INBOX_CAP).contains(&shown) {
                    return Err(ReadError::BadCursor);
                }
                (before, shown)
            }
            None => (i64::MAX, 0),
        };
        // A feed shows at most INBOX_CAP entries in all, whichever path they came by.
        let limit = (page.limit as i64).min(INBOX_CAP - shown).max(0);
        if limit == 0 {
            return Ok(Page {
                items: vec![],
                next_cursor: None,
            });
        }
        // The inbox page, merged with the newest posts of the celebrities the reader follows
        // (UNION drops a post found both ways).
        let ids: Vec<PostId> = sqlx::query_scalar(
            "SELECT post_id FROM (
                 (SELECT post_id FROM feed_inbox
                  WHERE owner_id = $1 AND post_id < $2 ORDER BY post_id DESC LIMIT $3)
                 UNION
                 (SELECT p.post_id FROM feed_celebrity_follows c
                  CROSS JOIN LATERAL (
                      SELECT post_id FROM feed_posts
                      WHERE author_id = c.author_id AND post_id >= c.feed_from AND post_id < $2
                      ORDER BY post_id DESC LIMIT $3) p
                  WHERE c.reader_id = $1)
             ) merged
             ORDER BY post_id DESC LIMIT $3",
        )
        .bind(user)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let (ids, more) = split_page(ids, limit as usize);
        let shown = shown + ids.len() as i64;
        let next_cursor = match ids.last() {
            Some(last) if more && shown < INBOX_CAP => Some(encode_cursor(&[*last, shown])),
            _ => None,
        };
        Ok(Page {
            items: hydrate(&self.pool, &ids).await?,
            next_cursor,
        })
    }

    async fn user_posts(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<PostItem>, ReadError> {
        let before = match &page.cursor {
            Some(cursor) => decode_cursor::<1>(cursor)?[0],
            None => i64::MAX,
        };
        let limit = page.limit as usize;
        let ids: Vec<PostId> = sqlx::query_scalar(
            "SELECT post_id FROM posts WHERE author_id = $1 AND post_id < $2
             ORDER BY post_id DESC LIMIT $3",
        )
        .bind(user)
        .bind(before)
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        let (ids, more) = split_page(ids, limit);
        let next_cursor = match ids.last() {
            Some(last) if more => Some(encode_cursor(&[*last])),
            _ => None,
        };
        Ok(Page {
            items: hydrate(&self.pool, &ids).await?,
            next_cursor,
        })
    }

    async fn followers(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        self.user_list("follower_id", "followee_id", user, page)
            .await
    }

    async fn following(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        self.user_list("followee_id", "follower_id", user, page)
            .await
    }

    async fn progress(&self, projections: &[&str]) -> Result<Position, ReadError> {
        let rows = sqlx::query(
            "SELECT projection, transaction_id::text AS xid, position FROM projection_checkpoints
             WHERE projection = ANY($1)",
        )
        .bind(projections)
        .fetch_all(&self.pool)
        .await?;
        let mut least: Option<Position> = None;
        for name in projections {
            let at = match rows
                .iter()
                .find(|row| row.try_get::<&str, _>("projection").ok() == Some(*name))
            {
                Some(row) => {
                    let xid: String = row.try_get("xid")?;
                    Position::new(
                        xid.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                        row.try_get("position")?,
                    )
                }
                None => Position::START,
            };
            least = Some(least.map_or(at, |l| l.min(at)));
        }
        Ok(least.unwrap_or(Position::START))
    }
}
