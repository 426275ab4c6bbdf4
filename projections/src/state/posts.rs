//! The `posts` state: every live post's id by author, and the bodies of each author's
//! newest [`RESIDENT_POSTS`] (what feeds and first pages show); older bodies stay only in
//! the durable copy, where reads find them. Deleted posts are forgotten.
//!
//! Memory per live post: 8 bytes of id in its author's list, plus for a resident post its
//! row (about 90 bytes and the body's length). A rebuild or verify keeps every body
//! ([`PostsState::keep_all`]): it writes or compares the whole table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use murmur_domain::{MurmurEvent, PostEvent, PostId, UserId};
use rustc_hash::FxHashMap;

use super::Fold;
use crate::StoredEvent;

/// Bodies held per author: an inbox holds at most 800 posts, so a post older than an
/// author's newest 800 reaches a feed only through an inbox that has kept it.
pub const RESIDENT_POSTS: usize = 800;

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
    /// Resident rows (all rows with `keep_all`).
    bodies: FxHashMap<PostId, PostRow>,
    /// Live post ids per author, ascending, resident or not.
    by_author: FxHashMap<UserId, Vec<PostId>>,
    /// Bodies kept per author; `None` keeps all.
    resident: Option<usize>,
    /// Rows evicted before the durable copy had them: written by the next `take_changes`.
    unwritten: FxHashMap<PostId, PostRow>,
    /// Rows the last `take_changes` handed out after evicting them: readers find them here
    /// until the batch writing them has committed (by the next `take_changes`).
    in_flight: FxHashMap<PostId, PostRow>,
    tracking: bool,
    /// Post id -> (whether it was live in the durable copy before the first change since
    /// the last `take_changes`, its author).
    dirty: BTreeMap<PostId, (bool, UserId)>,
}

impl PostsState {
    /// Holds the newest `resident` bodies per author.
    pub fn new(resident: usize) -> Self {
        Self {
            tracking: true,
            resident: Some(resident),
            ..Self::default()
        }
    }

    /// Holds every body from now on (a rebuild, verify).
    pub fn keep_all(&mut self) {
        self.resident = None;
    }

    /// A post's row, if its body is held here.
    pub fn get(&self, id: PostId) -> Option<&PostRow> {
        self.bodies
            .get(&id)
            .or_else(|| self.unwritten.get(&id))
            .or_else(|| self.in_flight.get(&id))
    }

    /// An author's live post ids, ascending.
    pub fn of_author(&self, author: UserId) -> &[PostId] {
        self.by_author.get(&author).map_or(&[], Vec::as_slice)
    }

    /// The resident rows: every live row with [`PostsState::keep_all`].
    pub fn rows(&self) -> impl Iterator<Item = &PostRow> {
        self.bodies.values()
    }

    /// Whether `author`'s post `id` is live (resident or not).
    pub fn is_live(&self, author: UserId, id: PostId) -> bool {
        self.of_author(author).binary_search(&id).is_ok()
    }

    fn touch(&mut self, author: UserId, id: PostId) {
        if self.tracking && !self.dirty.contains_key(&id) {
            let was = self.is_live(author, id);
            self.dirty.insert(id, (was, author));
        }
    }

    /// Adds a post as created; a second creation of an id is ignored.
    pub fn insert(&mut self, row: PostRow) {
        if self.is_live(row.author_id, row.post_id) {
            return;
        }
        self.touch(row.author_id, row.post_id);
        let list = self.by_author.entry(row.author_id).or_default();
        let at = list.partition_point(|&p| p < row.post_id);
        list.insert(at, row.post_id);
        let Some(cap) = self.resident else {
            self.bodies.insert(row.post_id, row);
            return;
        };
        let len = list.len();
        // Newer than the author's cap-th newest post: resident, pushing that one out.
        let evicted = (len > cap).then(|| list[len - cap - 1]);
        if len - at > cap {
            // Older than the author's newest `cap` already (commits out of id order).
            self.evict(row);
            return;
        }
        self.bodies.insert(row.post_id, row);
        if let Some(out) = evicted.and_then(|out| self.bodies.remove(&out)) {
            self.evict(out);
        }
    }

    /// Drops a body, keeping it until written if the durable copy does not have it yet.
    fn evict(&mut self, row: PostRow) {
        if matches!(self.dirty.get(&row.post_id), Some((false, _))) {
            self.unwritten.insert(row.post_id, row);
        }
    }

    fn remove(&mut self, author: UserId, id: PostId) {
        self.touch(author, id);
        let Some(list) = self.by_author.get_mut(&author) else {
            return;
        };
        let Ok(at) = list.binary_search(&id) else {
            return;
        };
        list.remove(at);
        if list.is_empty() {
            self.by_author.remove(&author);
        }
        self.bodies.remove(&id);
        self.unwritten.remove(&id);
        self.in_flight.remove(&id);
    }
}

/// Loading the durable copy: first every (post, author) key, then the rows worth keeping.
impl PostsState {
    pub fn load_key(&mut self, post: PostId, author: UserId) {
        self.by_author.entry(author).or_default().push(post);
    }

    /// Sorts the lists once all keys are in.
    pub fn finish_keys(&mut self) {
        for list in self.by_author.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
    }

    /// Whether a loaded row's body is held (among its author's newest).
    fn wants_body(&self, post: PostId, author: UserId) -> bool {
        let list = self.of_author(author);
        match self.resident {
            Some(cap) => list.len() <= cap || post >= list[list.len() - cap],
            None => true,
        }
    }

    pub fn load_body(&mut self, row: PostRow) {
        if self.wants_body(row.post_id, row.author_id) {
            self.bodies.insert(row.post_id, row);
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
            MurmurEvent::Post(PostEvent::PostDeleted { post_id, author_id }) => {
                self.remove(*author_id, *post_id)
            }
            _ => {}
        }
    }

    fn take_changes(&mut self) -> PostsChanges {
        let mut changes = PostsChanges::default();
        let unwritten = std::mem::take(&mut self.unwritten);
        for (id, (was, author)) in std::mem::take(&mut self.dirty) {
            match (was, self.is_live(author, id)) {
                (false, true) => {
                    if let Some(row) = self.bodies.get(&id).or_else(|| unwritten.get(&id)) {
                        changes.inserts.push(row.clone());
                    }
                }
                (true, false) => changes.deletes.push(id),
                // Created and deleted in between, or unchanged.
                _ => {}
            }
        }
        self.in_flight = unwritten;
        changes
    }

    fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
    }

    fn pending_rows(&self) -> usize {
        self.dirty.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(post_id: PostId, author_id: UserId) -> PostRow {
        PostRow {
            post_id,
            author_id,
            body: format!("post {post_id}").into(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn resident(s: &PostsState) -> Vec<PostId> {
        let mut ids: Vec<PostId> = s.rows().map(|r| r.post_id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn holds_the_newest_bodies_of_each_author_and_writes_every_row() {
        let mut s = PostsState::new(2);
        for id in [1, 2, 4, 5] {
            s.insert(row(id, 7));
        }
        // Committed out of id order: older than the newest two, so never resident.
        s.insert(row(3, 7));
        s.insert(row(10, 8));
        assert_eq!(s.of_author(7), &[1, 2, 3, 4, 5]);
        assert_eq!(resident(&s), vec![4, 5, 10]);
        // Evicted before being written: still readable, and written.
        assert!(s.get(1).is_some() && s.get(3).is_some());
        let changes = s.take_changes();
        let mut written: Vec<PostId> = changes.inserts.iter().map(|r| r.post_id).collect();
        written.sort_unstable();
        assert_eq!(written, vec![1, 2, 3, 4, 5, 10]);
        // Readable until the next batch is taken (the first one has committed by then).
        assert!(s.get(1).is_some());
        s.insert(row(6, 7));
        assert_eq!(s.take_changes().inserts, vec![row(6, 7)]);
        assert!(s.get(1).is_none() && s.get(4).is_none());
        assert_eq!(resident(&s), vec![5, 6, 10]);
    }

    #[test]
    fn deleting_a_post_whose_body_is_not_held_deletes_its_row() {
        let mut s = PostsState::new(1);
        s.set_tracking(false);
        for id in [1, 2, 3] {
            s.load_key(id, 7);
        }
        s.finish_keys();
        for id in [1, 2, 3] {
            s.load_body(row(id, 7));
        }
        s.set_tracking(true);
        assert_eq!(resident(&s), vec![3]);
        for (post_id, author_id) in [(1, 7), (3, 7), (9, 7), (2, 8)] {
            s.remove(author_id, post_id);
        }
        let changes = s.take_changes();
        assert!(changes.inserts.is_empty());
        assert_eq!(changes.deletes, vec![1, 3]);
        assert_eq!(s.of_author(7), &[2]);
        assert!(s.is_live(7, 2) && !s.is_live(7, 1));
        // Post 2 is now the newest but its body stays in the table.
        assert!(s.get(2).is_none());
    }

    #[test]
    fn keep_all_holds_every_body() {
        let mut s = PostsState::new(1);
        s.keep_all();
        for id in 1..=5 {
            s.insert(row(id, 7));
        }
        assert_eq!(resident(&s), vec![1, 2, 3, 4, 5]);
    }
}
