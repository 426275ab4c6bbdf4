//! [`ReadModel`] over the PostgreSQL read-model tables: keyed lookups and keyset pages only
//! (cursors: [`read_model::cursor`]). The reference the memory-served read model is
//! compared with, and what serves the follower and following lists.

use chrono::{DateTime, Datelike, Utc};
use murmur_domain::{PostId, UserId};
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::checkpoints::{self, CheckpointView};
use crate::state::feeds;
use crate::state::posts::PostRow;

/// A feed shows at most this many entries, whichever path they came by.
const INBOX_CAP: i64 = feeds::INBOX_CAP as i64;
use crate::read_model::{
    self, cursor, split_page, Author, Page, PageRequest, PostItem, Profile, ReadError, ReadModel,
    UserListItem,
};
use crate::Position;

#[derive(Debug, Clone)]
pub struct PgReadModel {
    pool: PgPool,
    /// Where progress comes from when set; otherwise from the database, per call.
    checkpoints: Option<CheckpointView>,
}

impl PgReadModel {
    /// The rows of `ids` that the table has, in no order (for the memory-served model's
    /// posts whose bodies are not held in memory).
    pub async fn post_rows(&self, ids: &[PostId]) -> Result<Vec<PostRow>, ReadError> {
        let rows = sqlx::query(
            "SELECT post_id, author_id, body, created_at FROM posts WHERE post_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PostRow {
                    post_id: r.try_get("post_id")?,
                    author_id: r.try_get("author_id")?,
                    body: r.try_get::<String, _>("body")?.into(),
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ReadError::from)
    }

    /// Reads progress from `projection_checkpoints` on every call.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            checkpoints: None,
        }
    }

    /// Answers progress from `checkpoints` (no database round trip); keep it current with
    /// [`CheckpointView::spawn_listener`].
    pub fn with_checkpoints(pool: PgPool, checkpoints: CheckpointView) -> Self {
        Self {
            pool,
            checkpoints: Some(checkpoints),
        }
    }
}

// Statements are `&'static str` (no per-request formatting): sqlx prepares each once per
// connection and reuses it.
macro_rules! profile_select {
    ($where:literal) => {
        concat!(
            "SELECT user_id, handle, display_name, created_at, followers_count, following_count,
                    posts_count
             FROM profiles WHERE ",
            $where
        )
    };
}

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

/// A page of post keys (CTE `page(post_id)`, at most `limit + 1` newest first) and, in the
/// same statement, the posts with their authors. A key whose post row or author is not
/// there (yet) still counts for paging but shows no item.
macro_rules! post_page {
    ($page:literal) => {
        concat!(
            "WITH page AS (",
            $page,
            ")
             SELECT page.post_id, p.body, p.created_at, p.author_id, u.handle, u.display_name
             FROM page
             LEFT JOIN posts p ON p.post_id = page.post_id
             LEFT JOIN profiles u ON u.user_id = p.author_id
             ORDER BY page.post_id DESC"
        )
    };
}

/// The rows of a [`post_page!`] statement: every key, and the items that could be shown.
fn post_page_rows(rows: &[PgRow]) -> Result<(Vec<PostId>, Vec<Option<PostItem>>), sqlx::Error> {
    let mut keys = Vec::with_capacity(rows.len());
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let id: PostId = row.try_get("post_id")?;
        keys.push(id);
        let item = match (
            row.try_get::<Option<String>, _>("body")?,
            row.try_get::<Option<String>, _>("handle")?,
        ) {
            (Some(body), Some(handle)) => Some(PostItem {
                id,
                body,
                created_at: row.try_get("created_at")?,
                author: Author {
                    id: row.try_get("author_id")?,
                    handle,
                    display_name: row.try_get("display_name")?,
                },
            }),
            _ => None,
        };
        items.push(item);
    }
    Ok((keys, items))
}

/// The `listed` side of a user's edges (the user being the `of` side), newest first.
macro_rules! user_list {
    ($listed:literal, $of:literal) => {
        concat!(
            "SELECT f.",
            $listed,
            " AS user_id, u.handle, u.display_name, f.since
             FROM follows f JOIN profiles u ON u.user_id = f.",
            $listed,
            "
             WHERE f.",
            $of,
            " = $1 AND (f.since, f.",
            $listed,
            ") < ($2, $3)
             ORDER BY f.since DESC, f.",
            $listed,
            " DESC LIMIT $4"
        )
    };
}

impl PgReadModel {
    /// `owner`'s inbox as the durable copy holds it: its row with the owner's journal
    /// entries after the row's `as_of` replayed (one statement, one snapshot). Reads the whole journal: this read
    /// model is the reference, memory serves feeds.
    async fn inbox(&self, owner: UserId) -> Result<Vec<PostId>, ReadError> {
        let (base, journal): (Option<Vec<PostId>>, Vec<PostId>) = sqlx::query_as(
            "SELECT (SELECT post_ids FROM feed_inbox WHERE owner_id = $1),
                    ARRAY(SELECT x.entry
                          FROM feed_inbox_journal j,
                               unnest(j.owner_ids, j.entries) WITH ORDINALITY x(owner, entry, n)
                          WHERE x.owner = $1
                            AND j.seq > coalesce(
                                (SELECT as_of FROM feed_inbox WHERE owner_id = $1), 0)
                          ORDER BY j.seq, x.n)",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        let mut inbox = base.unwrap_or_default();
        for entry in journal {
            crate::state::feeds::inbox::replay(&mut inbox, entry);
        }
        Ok(inbox)
    }

    /// A page of `user`'s edges, by `sql` (a [`user_list!`] statement), newest first.
    async fn user_list(
        &self,
        sql: &'static str,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        let (since, id) = match &page.cursor {
            Some(cursor) => {
                let [micros, id] = cursor::decode::<2>(cursor)?;
                let since = DateTime::<Utc>::from_timestamp_micros(micros)
                    // Follow times are real ones; PostgreSQL could not even compare others.
                    .filter(|t| (1..=9999).contains(&t.year()))
                    .ok_or(ReadError::BadCursor)?;
                (since, cursor::key(id)?)
            }
            None => (DateTime::<Utc>::MAX_UTC, i64::MAX),
        };
        let limit = page.limit as usize;
        let rows = sqlx::query(sql)
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
            Some(last) if more => Some(cursor::encode(&[last.since.timestamp_micros(), last.id])),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }
}

#[async_trait::async_trait]
impl ReadModel for PgReadModel {
    async fn profile(&self, id: UserId) -> Result<Option<Profile>, ReadError> {
        let row = sqlx::query(profile_select!("user_id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(profile).transpose()?)
    }

    async fn profile_by_handle(&self, handle: &str) -> Result<Option<Profile>, ReadError> {
        let row = sqlx::query(profile_select!("lower(handle) = lower($1)"))
            .bind(handle)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(profile).transpose()?)
    }

    async fn feed(&self, user: UserId, page: &PageRequest) -> Result<Page<PostItem>, ReadError> {
        let (before, shown) = cursor::feed_start(page.cursor.as_deref(), INBOX_CAP)?;
        // A feed shows at most INBOX_CAP entries in all, whichever path they came by.
        let limit = (page.limit as i64).min(INBOX_CAP - shown).max(0);
        if limit == 0 {
            return Ok(Page {
                items: vec![],
                next_cursor: None,
            });
        }
        let inbox = self.inbox(user).await?;
        // The inbox page, merged with the newest posts of the celebrities the reader follows
        // (UNION drops a post found both ways), hydrated: one statement.
        let rows = sqlx::query(post_page!(
            "SELECT post_id FROM (
                 (SELECT p AS post_id FROM unnest($4::bigint[]) p
                  WHERE p < $2 ORDER BY p DESC LIMIT $3)
                 UNION
                 (SELECT p.post_id FROM follows f
                  JOIN feed_celebrities c ON c.author_id = f.followee_id
                  CROSS JOIN LATERAL (
                      SELECT post_id FROM feed_posts
                      WHERE author_id = f.followee_id AND post_id >= f.feed_from AND post_id < $2
                      ORDER BY post_id DESC LIMIT $3) p
                  WHERE f.follower_id = $1)
             ) merged
             ORDER BY post_id DESC LIMIT $3"
        ))
        .bind(user)
        .bind(before)
        .bind(limit + 1)
        .bind(&inbox)
        .fetch_all(&self.pool)
        .await?;
        let (ids, items) = post_page_rows(&rows)?;
        let (ids, more) = split_page(ids, limit as usize);
        let shown = shown + ids.len() as i64;
        let next_cursor = cursor::feed_next(ids.last(), more, shown, INBOX_CAP);
        Ok(Page {
            items: items.into_iter().take(ids.len()).flatten().collect(),
            next_cursor,
        })
    }

    async fn user_posts(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<PostItem>, ReadError> {
        let before = cursor::posts_start(page.cursor.as_deref())?;
        let limit = page.limit as usize;
        let rows = sqlx::query(post_page!(
            "SELECT post_id FROM posts WHERE author_id = $1 AND post_id < $2
             ORDER BY post_id DESC LIMIT $3"
        ))
        .bind(user)
        .bind(before)
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        let (ids, items) = post_page_rows(&rows)?;
        let (ids, more) = split_page(ids, limit);
        let next_cursor = cursor::posts_next(ids.last(), more);
        Ok(Page {
            items: items.into_iter().take(ids.len()).flatten().collect(),
            next_cursor,
        })
    }

    async fn followers(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        self.user_list(user_list!("follower_id", "followee_id"), user, page)
            .await
    }

    async fn following(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        self.user_list(user_list!("followee_id", "follower_id"), user, page)
            .await
    }

    async fn progress(&self, projections: &[&str]) -> Result<Position, ReadError> {
        match &self.checkpoints {
            Some(view) => Ok(view.progress(projections)),
            None => Ok(checkpoints::least(
                &checkpoints::read_all(&self.pool).await?,
                projections,
            )),
        }
    }

    async fn progress_reaching(
        &self,
        projections: &[&str],
        min: Position,
        timeout: Duration,
    ) -> Result<Position, ReadError> {
        match &self.checkpoints {
            Some(view) => view.wait_for(projections, min, timeout).await,
            None => read_model::poll_progress(self, projections, min, timeout).await,
        }
    }
}
