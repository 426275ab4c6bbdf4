//! The `posts` state: every live post with its body; deleted posts are forgotten.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use murmur_domain::{MurmurEvent, PostEvent, PostId, UserId};
use rustc_hash::FxHashMap;

use super::Fold;
use crate::StoredEvent;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PostRow {
    pub post_id: PostId,
    pub author_id: UserId,
    pub body: Box<str>,
    pub created_at: DateTime<Utc>,
}

/// Row changes: posts to insert, ids to delete (disjoint).
#[derive(Debug, Default)]
pub struct PostsChanges {
    pub inserts: Vec<PostRow>,
    pub deletes: Vec<PostId>,
}

#[derive(Default)]
pub struct PostsState {
    posts: FxHashMap<PostId, PostRow>,
    /// Live post ids per author, ascending.
    by_author: FxHashMap<UserId, Vec<PostId>>,
    tracking: bool,
    /// Post id -> whether its row was in the durable copy before the first change since
    /// the last `take_changes`.
    dirty: BTreeMap<PostId, bool>,
}

impl PostsState {
    pub fn new() -> Self {
        Self {
            tracking: true,
            ..Self::default()
        }
    }

    pub fn get(&self, id: PostId) -> Option<&PostRow> {
        self.posts.get(&id)
    }

    /// An author's live post ids, ascending.
    pub fn of_author(&self, author: UserId) -> &[PostId] {
        self.by_author.get(&author).map_or(&[], Vec::as_slice)
    }

    pub fn rows(&self) -> impl Iterator<Item = &PostRow> {
        self.posts.values()
    }

    pub fn len(&self) -> usize {
        self.posts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }

    pub fn reserve(&mut self, n: usize) {
        self.posts.reserve(n);
    }

    fn touch(&mut self, id: PostId) {
        if self.tracking {
            let was = self.posts.contains_key(&id);
            self.dirty.entry(id).or_insert(was);
        }
    }

    /// Adds a post as loaded or created; a second creation of an id is ignored.
    pub fn insert(&mut self, row: PostRow) {
        if self.posts.contains_key(&row.post_id) {
            return;
        }
        self.touch(row.post_id);
        let list = self.by_author.entry(row.author_id).or_default();
        let at = list.partition_point(|&p| p < row.post_id);
        list.insert(at, row.post_id);
        self.posts.insert(row.post_id, row);
    }

    fn remove(&mut self, id: PostId) {
        self.touch(id);
        let Some(row) = self.posts.remove(&id) else {
            return;
        };
        if let Some(list) = self.by_author.get_mut(&row.author_id) {
            if let Ok(at) = list.binary_search(&id) {
                list.remove(at);
            }
            if list.is_empty() {
                self.by_author.remove(&row.author_id);
            }
        }
    }
}

impl Fold for PostsState {
    type Changes = PostsChanges;

    fn apply(&mut self, stored: &StoredEvent) {
        match &stored.event {
            MurmurEvent::Post(PostEvent::PostCreated {
                post_id,
                author_id,
                body,
            }) => self.insert(PostRow {
                post_id: *post_id,
                author_id: *author_id,
                body: body.as_str().into(),
                created_at: stored.metadata.time,
            }),
            MurmurEvent::Post(PostEvent::PostDeleted { post_id, .. }) => self.remove(*post_id),
            _ => {}
        }
    }

    fn take_changes(&mut self) -> PostsChanges {
        let mut changes = PostsChanges::default();
        for (id, was) in std::mem::take(&mut self.dirty) {
            match (was, self.posts.get(&id)) {
                (false, Some(row)) => changes.inserts.push(row.clone()),
                (true, None) => changes.deletes.push(id),
                // Created and deleted in between, or (impossible) changed in place.
                _ => {}
            }
        }
        changes
    }

    fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
    }

    fn pending_rows(&self) -> usize {
        self.dirty.len()
    }
}
