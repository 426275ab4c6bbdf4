//! [`ReadModel`] over the node's memory image: profiles, feeds (with the read-time merge of
//! followed celebrities) and post lists are answered from the projections' own states, by
//! the same keys, cursors and rules as [`PgReadModel`], which the comparison test holds it
//! to. Follower and following lists come from the tables (see [`Reads::FollowLists`]).
//!
//! Each read takes one projection's read lock at a time, copies out what it answers and
//! lets go before rendering; it never waits for the database or a whole batch.

use std::time::Duration;

use murmur_domain::{PostId, UserId};
use tokio::time::Instant;

use crate::projection::Kind;
use crate::read_model::{
    cursor, split_page, Author, Page, PageRequest, PostItem, Profile, ReadError, ReadModel, Reads,
    UserListItem,
};
use crate::runtime::{Image, Live};
use crate::state::feeds::INBOX_CAP;
use crate::state::{FeedsState, PostsState, ProfilesState};
use crate::{PgReadModel, Position};

#[derive(Clone)]
pub struct MemReadModel {
    image: Image,
    /// For the follower and following lists.
    tables: PgReadModel,
}

/// The part of an ascending slice below `before` (all of it on a first page, unsearched).
fn below(ids: &[PostId], before: PostId) -> &[PostId] {
    match ids.last() {
        Some(&last) if last >= before => &ids[..ids.partition_point(|&p| p < before)],
        _ => ids,
    }
}

/// The newest `n` of an ascending slice, below `before`, newest first.
fn newest_below(ids: &[PostId], before: PostId, n: usize) -> impl Iterator<Item = PostId> + '_ {
    let ids = below(ids, before);
    ids[ids.len().saturating_sub(n)..].iter().rev().copied()
}

/// Keeps in `page` (distinct, newest first, at most `n`) the newest `n` of itself and of
/// `more` (newest first). Stops at the first of `more` too old to enter: following many
/// prolific celebrities costs a few comparisons each, not a sort of all their posts.
fn merge_newest(page: &mut Vec<PostId>, more: impl Iterator<Item = PostId>, n: usize) {
    for id in more {
        if page.len() >= n && page.last().is_some_and(|&last| id <= last) {
            break;
        }
        let at = page.partition_point(|&p| p > id);
        if page.get(at) != Some(&id) {
            page.insert(at, id);
            page.truncate(n);
        }
    }
}

impl MemReadModel {
    pub fn new(image: Image, tables: PgReadModel) -> Self {
        Self { image, tables }
    }

    fn live(&self, kind: Kind) -> Result<&Live, ReadError> {
        let live = self.image.get(kind);
        if live.is_loaded() {
            Ok(live)
        } else {
            Err(ReadError::Loading)
        }
    }

    fn with<S, T>(
        &self,
        kind: Kind,
        get: impl FnOnce(&crate::AnyState) -> Option<&S>,
        read: impl FnOnce(&S) -> T,
    ) -> Result<T, ReadError> {
        let live = self.live(kind)?;
        let guard = live.read();
        let state = get(&guard).ok_or(ReadError::Loading)?;
        Ok(read(state))
    }

    fn profiles<T>(&self, read: impl FnOnce(&ProfilesState) -> T) -> Result<T, ReadError> {
        self.with(Kind::Profiles, crate::AnyState::as_profiles, read)
    }

    fn posts<T>(&self, read: impl FnOnce(&PostsState) -> T) -> Result<T, ReadError> {
        self.with(Kind::Posts, crate::AnyState::as_posts, read)
    }

    fn feeds<T>(&self, read: impl FnOnce(&FeedsState) -> T) -> Result<T, ReadError> {
        self.with(Kind::Feeds, crate::AnyState::as_feeds, read)
    }

    /// The items of a page of post keys (newest first): a key whose post or author is not
    /// there (yet) counts for paging but shows no item, as in [`PgReadModel`]. Bodies not
    /// held in memory (older than their author's newest) come from the table, kept only if
    /// the memory image still has the post (the table may be ahead of it, or behind).
    async fn hydrate(&self, keys: &[PostId]) -> Result<Vec<PostItem>, ReadError> {
        let (mut posts, missing) = self.posts(|s| {
            let mut found = Vec::with_capacity(keys.len());
            let mut missing = Vec::new();
            for &id in keys {
                match s.get(id) {
                    Some(p) => found.push(p.clone()),
                    None => missing.push(id),
                }
            }
            (found, missing)
        })?;
        if !missing.is_empty() {
            let mut stored = self.tables.post_rows(&missing).await?;
            self.posts(|s| stored.retain(|p| s.is_live(p.author_id, p.post_id)))?;
            posts.extend(stored);
            posts.sort_unstable_by_key(|p| std::cmp::Reverse(p.post_id));
        }
        self.profiles(|s| {
            posts
                .into_iter()
                .filter_map(|p| {
                    let a = s.profile(p.author_id)?;
                    Some(PostItem {
                        id: p.post_id,
                        body: p.body.into(),
                        created_at: p.created_at,
                        author: Author {
                            id: p.author_id,
                            handle: a.handle.to_string(),
                            display_name: a.display_name.to_string(),
                        },
                    })
                })
                .collect()
        })
    }

    /// The least position of `projections` in memory.
    fn least(&self, projections: &[&str]) -> Result<Position, ReadError> {
        let mut least = None::<Position>;
        for name in projections {
            let Some(kind) = Kind::from_name(name) else {
                return Ok(Position::START);
            };
            let at = self.live(kind)?.position();
            least = Some(least.map_or(at, |l| l.min(at)));
        }
        Ok(least.unwrap_or(Position::START))
    }
}

#[async_trait::async_trait]
impl ReadModel for MemReadModel {
    async fn profile(&self, id: UserId) -> Result<Option<Profile>, ReadError> {
        self.profiles(|s| s.profile(id).map(|row| row.to_profile()))
    }

    async fn profile_by_handle(&self, handle: &str) -> Result<Option<Profile>, ReadError> {
        self.profiles(|s| s.by_handle(handle).map(|row| row.to_profile()))
    }

    async fn feed(&self, user: UserId, page: &PageRequest) -> Result<Page<PostItem>, ReadError> {
        let cap = INBOX_CAP as i64;
        let (before, shown) = cursor::feed_start(page.cursor.as_deref(), cap)?;
        let limit = (page.limit as i64).min(cap - shown).max(0) as usize;
        if limit == 0 {
            return Ok(Page {
                items: vec![],
                next_cursor: None,
            });
        }
        // The inbox page merged with the followed celebrities' newest posts since each
        // follow's `feed_from`, a post found both ways once.
        let keys: Vec<PostId> = self.feeds(|s| {
            let mut keys = Vec::with_capacity(limit + 2);
            merge_newest(
                &mut keys,
                newest_below(s.inbox(user), before, limit + 1),
                limit + 1,
            );
            for celebrity in s.celebrities_followed(user) {
                let posts = below(celebrity.posts(), before);
                // Too old to enter a full page: skip the `feed_from` lookup too.
                let Some(&newest) = posts.last() else {
                    continue;
                };
                if keys.len() > limit && keys.last().is_some_and(|&last| newest <= last) {
                    continue;
                }
                let from = celebrity.feed_from();
                let since = posts.iter().rev().copied().take_while(|&p| p >= from);
                merge_newest(&mut keys, since.take(limit + 1), limit + 1);
            }
            keys
        })?;
        let (keys, more) = split_page(keys, limit);
        let shown = shown + keys.len() as i64;
        let next_cursor = cursor::feed_next(keys.last(), more, shown, cap);
        Ok(Page {
            items: self.hydrate(&keys).await?,
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
        let keys: Vec<PostId> =
            self.posts(|s| newest_below(s.of_author(user), before, limit + 1).collect())?;
        let (keys, more) = split_page(keys, limit);
        let next_cursor = cursor::posts_next(keys.last(), more);
        Ok(Page {
            items: self.hydrate(&keys).await?,
            next_cursor,
        })
    }

    async fn followers(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        self.tables.followers(user, page).await
    }

    async fn following(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserListItem>, ReadError> {
        self.tables.following(user, page).await
    }

    async fn progress(&self, projections: &[&str]) -> Result<Position, ReadError> {
        self.least(projections)
    }

    async fn progress_reaching(
        &self,
        projections: &[&str],
        min: Position,
        timeout: Duration,
    ) -> Result<Position, ReadError> {
        let deadline = Instant::now() + timeout;
        for name in projections {
            let Some(kind) = Kind::from_name(name) else {
                continue;
            };
            let mut changes = self.live(kind)?.subscribe();
            // Timing out is an answer (the position then), not an error.
            let _ = tokio::time::timeout_at(deadline, changes.wait_for(|at| *at >= min)).await;
        }
        self.least(projections)
    }

    async fn progress_of(&self, reads: Reads) -> Result<Position, ReadError> {
        match reads {
            Reads::State(projections) => self.least(projections),
            Reads::FollowLists => self.tables.progress_of(reads).await,
        }
    }

    async fn progress_of_reaching(
        &self,
        reads: Reads,
        min: Position,
        timeout: Duration,
    ) -> Result<Position, ReadError> {
        match reads {
            Reads::State(projections) => self.progress_reaching(projections, min, timeout).await,
            Reads::FollowLists => self.tables.progress_of_reaching(reads, min, timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_newest;

    #[test]
    fn merging_keeps_the_newest_distinct_ids() {
        let mut page = vec![];
        merge_newest(&mut page, [9, 7, 5, 3].into_iter(), 3);
        assert_eq!(page, vec![9, 7, 5]);
        merge_newest(&mut page, [8, 7, 6, 1].into_iter(), 3);
        assert_eq!(page, vec![9, 8, 7]);
        merge_newest(&mut page, [2, 1].into_iter(), 3);
        assert_eq!(page, vec![9, 8, 7]);
        merge_newest(&mut page, [10].into_iter(), 5);
        assert_eq!(page, vec![10, 9, 8, 7]);
    }
}
