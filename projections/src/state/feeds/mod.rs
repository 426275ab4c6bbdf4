//! The `feeds` state: the follow graph and home feeds.
//!
//! Posts are fanned out on write into inboxes (the author's own and every follower's),
//! each holding the newest [`INBOX_CAP`] post ids. Authors with more than
//! `celebrity_threshold` followers are celebrities: their posts stay out of followers'
//! inboxes and are merged when a feed is read, from the reader's list of followed
//! celebrities. They go back to fan-out only at 10% below the threshold, so one user
//! following and unfollowing at the threshold cannot make every follower's inbox churn.
//!
//! Which posts of a followee belong in a feed is fixed by the follow: `feed_from`, the
//! followee's [`FOLLOW_BACKFILL`]th newest post when the follow happened (0 if fewer). A
//! follow copies those newest posts into the inbox; an unfollow removes the followee's
//! posts; a deleted post leaves every inbox. Crossing the threshold moves a followee's
//! posts between the two paths (out of inboxes going up; posts since `feed_from` back in,
//! at most [`INBOX_CAP`], going down), so nothing is lost or shown twice.
//!
//! A post is only ever in the inboxes of its author and the author's current followers
//! (unfollowing removes it, and it enters no other way), and never in a follower's inbox
//! while its author is a celebrity: that bounds the work of a deletion.
//!
//! Inboxes are written to the durable copy as a journal of their changes (an entry per
//! delivery or removal, [`inbox::replay`] applies them), and as whole rows now and then: a
//! flush writes every changed inbox whole when asked (at rest, at a last flush), and under
//! load, once the journal holds [`Folding::after`] entries, a folding round rewrites the
//! inboxes changed until then a [`Folding::chunk`] per flush, each row stamped with the
//! journal row it includes (`as_of`), and then deletes the journal up to the round's start.
//! A post reaches thousands of inboxes: rewriting each one it touched at every flush cost
//! the database far more than the commands did, and rewriting them all in one flush stalled
//! commands for seconds behind its WAL.

use chrono::{DateTime, Utc};
use murmur_domain::{FollowEvent, MurmurEvent, PostEvent, PostId, UserId};
use rustc_hash::FxHashMap;

pub mod inbox;
mod read;
pub use read::FollowedCelebrity;

use inbox::{inbox_insert, inbox_merge, inbox_remove_all, JournalEntry};

use super::ids::Ids;
use super::Fold;
use crate::StoredEvent;

/// Entries kept per inbox; a reader never sees more feed entries than this.
pub const INBOX_CAP: usize = 800;
/// How many of a followee's newest posts a new follow brings into the follower's feed.
pub const FOLLOW_BACKFILL: usize = 20;
/// The default celebrity threshold.
pub const DEFAULT_CELEBRITY_THRESHOLD: i64 = 10_000;
/// When and how fast the journal is folded into whole rows (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folding {
    /// Journal entries that start a folding round: bounds what a load replays (about 1.6 s
    /// per million entries at scale 1: 29 s for 18.7M) and the journal's size (16 bytes an
    /// entry). A round rewrites every inbox changed since the last one, nearly every
    /// reader's under a steady load, so its cost hardly depends on this: a larger one makes
    /// rounds rarer (at 10M, under `writes.lua` at scale 1, a round of over a minute began
    /// after every ~100 s of writes, and commands fell by a third while it ran).
    pub after: usize,
    /// Inboxes a flush of the round writes whole: spreads the rewrite (up to a row per
    /// reader) over many flushes, so that no flush's WAL holds commands up for long.
    pub chunk: usize,
}

impl Default for Folding {
    fn default() -> Self {
        Self {
            after: 50_000_000,
            chunk: 10_000,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct User {
    /// Dense indexes of followers, in ascending order of their user ids (follows arrive
    /// mostly in that order in bulk, so inserting is then mostly appending).
    followers: Vec<u32>,
    /// When each follower followed (parallel to `followers`, micros since the epoch); kept
    /// only with [`FeedsState::keep_since`], since a live state never needs it.
    since: Vec<i64>,
    /// The celebrities this user follows (dense indexes, any order).
    celebrities: Vec<u32>,
    /// Post ids, ascending, at most [`INBOX_CAP`].
    inbox: Vec<PostId>,
    /// The user's own live posts, ascending.
    posts: Vec<PostId>,
    celebrity: bool,
}

/// A row of `follows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FollowRow {
    pub follower_id: UserId,
    pub followee_id: UserId,
    pub since: DateTime<Utc>,
    pub feed_from: PostId,
}

/// Row changes of the feeds tables; within a table, deletes are written before inserts.
#[derive(Debug, Default)]
pub struct FeedsChanges {
    pub follows_deleted: Vec<(UserId, UserId)>,
    pub follows_inserted: Vec<FollowRow>,
    /// Inbox changes in the order they were made: (owner, entry); written as a journal.
    pub journal: Vec<(UserId, JournalEntry)>,
    /// Whole rows this time: `inboxes` holds every inbox changed since the last whole
    /// write, and the journal written since is to be emptied.
    pub complete: bool,
    /// Whole inboxes as they stand: every changed one when `complete` (empty: no row),
    /// else a folding round's chunk (empty: an empty row, which still says `as_of`).
    pub inboxes: Vec<(UserId, Vec<PostId>)>,
    /// A folding round starts with this flush's journal row (written even if empty).
    pub round_starts: bool,
    /// The round ends with this flush: the journal up to its start is folded.
    pub round_ends: bool,
    /// (post, author)
    pub posts_deleted: Vec<(PostId, UserId)>,
    /// (post, author)
    pub posts_inserted: Vec<(PostId, UserId)>,
    pub celebrities_deleted: Vec<UserId>,
    pub celebrities_inserted: Vec<UserId>,
}

#[derive(Debug, Clone, Copy)]
struct EdgeChange {
    /// The edge's row was in the durable copy before the first change.
    was: bool,
    /// Followed (at this time) by the last change; `None`: unfollowed.
    since: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Dirty {
    edges: FxHashMap<(u32, u32), EdgeChange>,
    /// Inboxes changed since the last whole write (kept across journal flushes).
    inbox_flags: Vec<bool>,
    inboxes: Vec<u32>,
    /// Inbox changes since the last flush.
    journal: Vec<(u32, JournalEntry)>,
    /// Post -> (was in the durable copy, author).
    posts: FxHashMap<PostId, (bool, u32)>,
    /// Author -> was a celebrity in the durable copy.
    celebrities: FxHashMap<u32, bool>,
}

pub struct FeedsState {
    threshold: i64,
    ids: Ids,
    users: Vec<User>,
    /// (follower, followee) -> `feed_from`, for the follows where it is not 0.
    feed_from: FxHashMap<(u32, u32), PostId>,
    /// Live posts -> author.
    post_author: FxHashMap<PostId, u32>,
    keep_since: bool,
    tracking: bool,
    dirty: Dirty,
    /// Journal entries in the durable copy (or pending) since its inboxes were last whole.
    journaled: usize,
    /// The next flush writes whole inboxes.
    complete_next: bool,
    folding: Folding,
    /// The inboxes of the folding round in progress still to write, in descending order of
    /// owner id (written from the end); empty: no round.
    round: Vec<u32>,
    /// Reused by inbox merges and removals.
    scratch: Vec<PostId>,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Two distinct users of one vector, the first mutable; `None` if they are the same.
fn pair(users: &mut [User], first: u32, second: u32) -> Option<(&mut User, &User)> {
    let (i, j) = (first as usize, second as usize);
    match i.cmp(&j) {
        std::cmp::Ordering::Less => {
            let (left, right) = users.split_at_mut(j);
            Some((&mut left[i], &right[0]))
        }
        std::cmp::Ordering::Greater => {
            let (left, right) = users.split_at_mut(i);
            Some((&mut right[0], &left[j]))
        }
        std::cmp::Ordering::Equal => None,
    }
}

impl FeedsState {
    pub fn new(celebrity_threshold: i64) -> Self {
        Self {
            threshold: celebrity_threshold,
            ids: Ids::default(),
            users: Vec::new(),
            feed_from: FxHashMap::default(),
            post_author: FxHashMap::default(),
            keep_since: false,
            tracking: true,
            dirty: Dirty::default(),
            journaled: 0,
            complete_next: false,
            folding: Folding::default(),
            round: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn celebrity_threshold(&self) -> i64 {
        self.threshold
    }

    pub fn set_folding(&mut self, folding: Folding) {
        self.folding = folding;
    }

    /// Keep every follow's time in memory, so that [`FeedsState::follows`] can list whole
    /// rows (a rebuild or verify; a live state writes only the follows it saw happen).
    pub fn keep_since(&mut self) {
        self.keep_since = true;
    }

    /// At or below this many followers a celebrity goes back to fan-out.
    fn back_to_fan_out(&self) -> i64 {
        self.threshold - self.threshold / 10
    }

    fn user(&mut self, id: UserId) -> u32 {
        let (i, new) = self.ids.intern(id);
        if new {
            self.users.push(User::default());
        }
        i
    }

    /// Notes a change of `owner`'s inbox (`entry`, as the journal holds it).
    fn touch_inbox(&mut self, owner: u32, entry: JournalEntry) {
        if !self.tracking {
            return;
        }
        self.dirty.journal.push((owner, entry));
        self.mark_inbox(owner);
    }

    /// Marks `owner`'s inbox as changed since its last whole write.
    fn mark_inbox(&mut self, owner: u32) {
        let slot = owner as usize;
        let flags = &mut self.dirty.inbox_flags;
        if flags.len() <= slot {
            flags.resize(self.users.len().max(slot + 1), false);
        }
        if !flags[slot] {
            flags[slot] = true;
            self.dirty.inboxes.push(owner);
        }
    }

    fn touch_edge(&mut self, key: (u32, u32), was: bool, since: Option<DateTime<Utc>>) {
        if self.tracking {
            let change = self
                .dirty
                .edges
                .entry(key)
                .or_insert(EdgeChange { was, since });
            change.since = since;
        }
    }

    fn touch_celebrity(&mut self, author: u32) {
        if self.tracking {
            let was = self.users[author as usize].celebrity;
            self.dirty.celebrities.entry(author).or_insert(was);
        }
    }

    fn touch_post(&mut self, post: PostId, was: bool, author: u32) {
        if self.tracking {
            self.dirty.posts.entry(post).or_insert((was, author));
        }
    }

    fn insert_into_inbox(&mut self, owner: u32, post: PostId) {
        if inbox_insert(&mut self.users[owner as usize].inbox, post) {
            self.touch_inbox(owner, post);
        }
    }

    fn remove_from_inbox(&mut self, owner: u32, post: PostId) {
        let inbox = &mut self.users[owner as usize].inbox;
        if let Ok(at) = inbox.binary_search(&post) {
            inbox.remove(at);
            self.touch_inbox(owner, -post);
        }
    }

    /// Takes `author`'s posts out of `owner`'s inbox.
    fn remove_author_from_inbox(&mut self, owner: u32, author: u32) {
        let Some((owner_user, author_user)) = pair(&mut self.users, owner, author) else {
            return;
        };
        let mut removed = std::mem::take(&mut self.scratch);
        removed.clear();
        if inbox_remove_all(&mut owner_user.inbox, &author_user.posts, &mut removed) {
            for &post in &removed {
                self.touch_inbox(owner, -post);
            }
        }
        self.scratch = removed;
    }

    /// `author`'s posts since `from` (the newest [`INBOX_CAP`] at most) into `owner`'s inbox.
    fn merge_author_into_inbox(&mut self, owner: u32, author: u32, from: PostId) {
        let Some((owner_user, author_user)) = pair(&mut self.users, owner, author) else {
            return;
        };
        let posts = &author_user.posts;
        let start = posts
            .partition_point(|&p| p < from)
            .max(posts.len().saturating_sub(INBOX_CAP));
        if start < posts.len()
            && inbox_merge(&mut owner_user.inbox, &posts[start..], &mut self.scratch)
            && self.tracking
        {
            // Journaled as the insertion of every merged post (see `inbox::replay`).
            let merged = &self.users[author as usize].posts[start..];
            self.dirty
                .journal
                .extend(merged.iter().map(|&post| (owner, post)));
            self.mark_inbox(owner);
        }
    }

    fn followed(&mut self, a: UserId, b: UserId, at: DateTime<Utc>) {
        if a == b {
            return;
        }
        let (ai, bi) = (self.user(a), self.user(b));
        let ids = &self.ids;
        let followee = &mut self.users[bi as usize];
        let Err(slot) = followee.followers.binary_search_by_key(&a, |&f| ids.id(f)) else {
            return;
        };
        followee.followers.insert(slot, ai);
        if self.keep_since {
            followee.since.insert(slot, micros(at));
        }
        let posts = &followee.posts;
        let from = posts
            .len()
            .checked_sub(FOLLOW_BACKFILL)
            .map_or(0, |k| posts[k]);
        let followers = followee.followers.len() as i64;
        let celebrity = followee.celebrity;
        if from != 0 {
            self.feed_from.insert((ai, bi), from);
        }
        self.touch_edge((ai, bi), false, Some(at));
        if !celebrity && followers > self.threshold {
            self.become_celebrity(bi);
        } else if celebrity {
            self.users[ai as usize].celebrities.push(bi);
        } else {
            self.merge_author_into_inbox(ai, bi, from);
        }
    }

    fn unfollowed(&mut self, a: UserId, b: UserId) {
        let (Some(ai), Some(bi)) = (self.ids.get(a), self.ids.get(b)) else {
            return;
        };
        let ids = &self.ids;
        let followee = &mut self.users[bi as usize];
        let Ok(slot) = followee.followers.binary_search_by_key(&a, |&f| ids.id(f)) else {
            return;
        };
        followee.followers.remove(slot);
        if self.keep_since {
            followee.since.remove(slot);
        }
        let followers = followee.followers.len() as i64;
        let celebrity = followee.celebrity;
        self.feed_from.remove(&(ai, bi));
        self.touch_edge((ai, bi), true, None);
        self.remove_author_from_inbox(ai, bi);
        let followed = &mut self.users[ai as usize].celebrities;
        if let Some(k) = followed.iter().position(|&c| c == bi) {
            followed.swap_remove(k);
        }
        if celebrity && followers <= self.back_to_fan_out() {
            self.stop_being_celebrity(bi);
        }
    }

    fn become_celebrity(&mut self, author: u32) {
        self.touch_celebrity(author);
        self.users[author as usize].celebrity = true;
        for k in 0..self.users[author as usize].followers.len() {
            let follower = self.users[author as usize].followers[k];
            self.remove_author_from_inbox(follower, author);
            self.users[follower as usize].celebrities.push(author);
        }
    }

    fn stop_being_celebrity(&mut self, author: u32) {
        self.touch_celebrity(author);
        self.users[author as usize].celebrity = false;
        for k in 0..self.users[author as usize].followers.len() {
            let follower = self.users[author as usize].followers[k];
            let followed = &mut self.users[follower as usize].celebrities;
            if let Some(j) = followed.iter().position(|&c| c == author) {
                followed.swap_remove(j);
            }
            let from = self.feed_from_of(follower, author);
            self.merge_author_into_inbox(follower, author, from);
        }
    }

    fn feed_from_of(&self, follower: u32, followee: u32) -> PostId {
        self.feed_from
            .get(&(follower, followee))
            .copied()
            .unwrap_or(0)
    }

    fn created(&mut self, post: PostId, author: UserId) {
        let ai = self.user(author);
        if self.post_author.contains_key(&post) {
            return;
        }
        self.touch_post(post, false, ai);
        self.post_author.insert(post, ai);
        let posts = &mut self.users[ai as usize].posts;
        let at = posts.partition_point(|&p| p < post);
        posts.insert(at, post);
        self.insert_into_inbox(ai, post);
        if !self.users[ai as usize].celebrity {
            for k in 0..self.users[ai as usize].followers.len() {
                let follower = self.users[ai as usize].followers[k];
                self.insert_into_inbox(follower, post);
            }
        }
    }

    fn deleted(&mut self, post: PostId) {
        let Some(ai) = self.post_author.remove(&post) else {
            return;
        };
        self.touch_post(post, true, ai);
        let posts = &mut self.users[ai as usize].posts;
        if let Ok(at) = posts.binary_search(&post) {
            posts.remove(at);
        }
        self.remove_from_inbox(ai, post);
        if !self.users[ai as usize].celebrity {
            for k in 0..self.users[ai as usize].followers.len() {
                let follower = self.users[ai as usize].followers[k];
                self.remove_from_inbox(follower, post);
            }
        }
    }
}

impl Fold for FeedsState {
    type Changes = FeedsChanges;

    fn apply(&mut self, stored: &StoredEvent) {
        match &stored.event {
            MurmurEvent::Follow(FollowEvent::Followed {
                follower_id,
                followee_id,
            }) => self.followed(*follower_id, *followee_id, stored.metadata.time),
            MurmurEvent::Follow(FollowEvent::Unfollowed {
                follower_id,
                followee_id,
            }) => self.unfollowed(*follower_id, *followee_id),
            MurmurEvent::Post(PostEvent::PostCreated {
                post_id, author_id, ..
            }) => self.created(*post_id, *author_id),
            MurmurEvent::Post(PostEvent::PostDeleted { post_id, .. }) => self.deleted(*post_id),
            MurmurEvent::Handle(_) | MurmurEvent::User(_) => {}
        }
    }

    fn take_changes(&mut self) -> FeedsChanges {
        let journal = std::mem::take(&mut self.dirty.journal);
        self.journaled += journal.len();
        let mut changes = FeedsChanges {
            complete: std::mem::take(&mut self.complete_next),
            ..FeedsChanges::default()
        };
        if changes.complete {
            self.take_inboxes(&mut changes);
        } else {
            changes.journal = journal
                .into_iter()
                .map(|(owner, entry)| (self.ids.id(owner), entry))
                .collect();
            self.fold_some(&mut changes);
        }
        let dirty = Dirty {
            edges: std::mem::take(&mut self.dirty.edges),
            posts: std::mem::take(&mut self.dirty.posts),
            celebrities: std::mem::take(&mut self.dirty.celebrities),
            ..Dirty::default()
        };
        let mut edges: Vec<((u32, u32), EdgeChange)> = dirty.edges.into_iter().collect();
        edges.sort_unstable_by_key(|&((a, b), _)| (self.ids.id(a), self.ids.id(b)));
        for ((a, b), change) in edges {
            let key = (self.ids.id(a), self.ids.id(b));
            if change.was {
                changes.follows_deleted.push(key);
            }
            if let Some(since) = change.since {
                changes.follows_inserted.push(FollowRow {
                    follower_id: key.0,
                    followee_id: key.1,
                    since,
                    feed_from: self.feed_from_of(a, b),
                });
            }
        }
        for (post, (was, author)) in dirty.posts {
            match (was, self.post_author.contains_key(&post)) {
                (true, false) => changes.posts_deleted.push((post, self.ids.id(author))),
                (false, true) => changes.posts_inserted.push((post, self.ids.id(author))),
                _ => {}
            }
        }
        for (author, was) in dirty.celebrities {
            match (was, self.users[author as usize].celebrity) {
                (true, false) => changes.celebrities_deleted.push(self.ids.id(author)),
                (false, true) => changes.celebrities_inserted.push(self.ids.id(author)),
                _ => {}
            }
        }
        changes
    }

    fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
    }

    fn pending_rows(&self) -> usize {
        self.dirty.edges.len()
            + self.dirty.journal.len()
            + self.dirty.posts.len()
            + self.dirty.celebrities.len()
    }

    fn complete_next(&mut self) {
        self.complete_next = true;
    }

    fn journaled(&self) -> bool {
        self.journaled > 0 || !self.dirty.journal.is_empty() || !self.round.is_empty()
    }
}

impl FeedsState {
    /// Every inbox changed since the last whole write (a folding round's unwritten ones
    /// included), as it stands, into `changes`; they are whole again from here on.
    fn take_inboxes(&mut self, changes: &mut FeedsChanges) {
        let mut owners = std::mem::take(&mut self.dirty.inboxes);
        owners.append(&mut self.round);
        owners.sort_unstable_by_key(|&o| self.ids.id(o));
        owners.dedup();
        for &owner in &owners {
            self.dirty.inbox_flags[owner as usize] = false;
            changes
                .inboxes
                .push((self.ids.id(owner), self.users[owner as usize].inbox.clone()));
        }
        self.journaled = 0;
    }

    /// Starts a folding round once the journal is long enough, and writes the next chunk
    /// of the round in progress. An inbox changed again after the round took it is
    /// marked anew, for the next round.
    fn fold_some(&mut self, changes: &mut FeedsChanges) {
        if self.round.is_empty() && self.journaled >= self.folding.after {
            let mut owners = std::mem::take(&mut self.dirty.inboxes);
            for &owner in &owners {
                self.dirty.inbox_flags[owner as usize] = false;
            }
            owners.sort_unstable_by_key(|&o| std::cmp::Reverse(self.ids.id(o)));
            self.round = owners;
            self.journaled = 0;
            changes.round_starts = true;
        }
        if self.round.is_empty() {
            return;
        }
        let from = self.round.len().saturating_sub(self.folding.chunk.max(1));
        for owner in self.round.drain(from..).rev() {
            let inbox = self.users[owner as usize].inbox.clone();
            changes.inboxes.push((self.ids.id(owner), inbox));
        }
        changes.round_ends = self.round.is_empty();
    }

    /// Replays a journal entry of the durable copy onto a loaded inbox (see
    /// [`inbox::replay`]); the inbox counts as changed until its next whole write, since
    /// its row does not show the entry.
    pub fn load_journal_entry(&mut self, owner: UserId, entry: JournalEntry) {
        let oi = self.user(owner);
        inbox::replay(&mut self.users[oi as usize].inbox, entry);
        self.mark_inbox(oi);
        self.journaled += 1;
    }
}
