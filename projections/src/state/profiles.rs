//! The `profiles` state: every registered user with follower, following and post counts,
//! and a case-insensitive handle index.

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use murmur_domain::{FollowEvent, MurmurEvent, PostEvent, UserEvent, UserId};
use rustc_hash::FxBuildHasher;
use std::hash::{BuildHasher, Hasher};

use super::ids::Ids;
use super::Fold;
use crate::read_model::Profile;
use crate::StoredEvent;

/// One user, as stored (`handle` as registered; lookups ignore case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProfileRow {
    pub user_id: UserId,
    pub handle: Box<str>,
    pub display_name: Box<str>,
    pub created_at: DateTime<Utc>,
    pub followers: i64,
    pub following: i64,
    pub posts: i64,
}

impl ProfileRow {
    pub fn to_profile(&self) -> Profile {
        Profile {
            id: self.user_id,
            handle: self.handle.to_string(),
            display_name: self.display_name.to_string(),
            created_at: self.created_at,
            followers_count: self.followers,
            following_count: self.following,
            posts_count: self.posts,
        }
    }
}

#[derive(Default)]
pub struct ProfilesState {
    ids: Ids,
    /// By dense index; `None` until registered (counters of unknown users are not kept).
    rows: Vec<Option<ProfileRow>>,
    /// Dense indexes of registered users, hashed by lowercased handle.
    by_handle: HashTable<u32>,
    hasher: FxBuildHasher,
    tracking: bool,
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
}

/// Hash of the lowercased handle, without allocating it.
fn handle_hash(hasher: &FxBuildHasher, handle: &str) -> u64 {
    let mut state = hasher.build_hasher();
    for byte in handle.bytes() {
        state.write_u8(byte.to_ascii_lowercase());
    }
    state.write_u8(0xff);
    state.finish()
}

impl ProfilesState {
    pub fn new() -> Self {
        Self {
            tracking: true,
            ..Self::default()
        }
    }

    pub fn profile(&self, id: UserId) -> Option<&ProfileRow> {
        let i = self.ids.get(id)?;
        self.rows[i as usize].as_ref()
    }

    /// Case-insensitive.
    pub fn by_handle(&self, handle: &str) -> Option<&ProfileRow> {
        let hash = handle_hash(&self.hasher, handle);
        let rows = &self.rows;
        let i = self.by_handle.find(hash, |&i| {
            rows[i as usize]
                .as_ref()
                .is_some_and(|r| r.handle.eq_ignore_ascii_case(handle))
        })?;
        rows[*i as usize].as_ref()
    }

    /// Every registered user (any order).
    pub fn rows(&self) -> impl Iterator<Item = &ProfileRow> {
        self.rows.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.by_handle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_handle.is_empty()
    }

    /// Adds a user as loaded or registered; a second registration of an id is ignored.
    pub fn insert(&mut self, row: ProfileRow) {
        let (i, _) = self.ids.intern(row.user_id);
        let slot = i as usize;
        if self.rows.len() <= slot {
            self.rows.resize(slot + 1, None);
        }
        if self.rows[slot].is_some() {
            return;
        }
        let hash = handle_hash(&self.hasher, &row.handle);
        self.rows[slot] = Some(row);
        let (rows, hasher) = (&self.rows, &self.hasher);
        self.by_handle.insert_unique(hash, i, |&j| {
            let handle = rows[j as usize].as_ref().map_or("", |r| &r.handle);
            handle_hash(hasher, handle)
        });
        self.touch(i);
    }

    pub fn reserve(&mut self, n: usize) {
        self.ids.reserve(n);
        self.rows.reserve(n);
        let (rows, hasher) = (&self.rows, &self.hasher);
        self.by_handle.reserve(n, |&j| {
            let handle = rows[j as usize].as_ref().map_or("", |r| &r.handle);
            handle_hash(hasher, handle)
        });
    }

    fn touch(&mut self, i: u32) {
        if !self.tracking {
            return;
        }
        let slot = i as usize;
        if self.is_dirty.len() <= slot {
            self.is_dirty.resize(slot + 1, false);
        }
        if !self.is_dirty[slot] {
            self.is_dirty[slot] = true;
            self.dirty.push(i);
        }
    }

    fn count(&mut self, id: UserId, change: impl Fn(&mut ProfileRow)) {
        let Some(i) = self.ids.get(id) else { return };
        if let Some(row) = self.rows[i as usize].as_mut() {
            change(row);
            self.touch(i);
        }
    }
}

impl Fold for ProfilesState {
    /// The rows to upsert, as they stand.
    type Changes = Vec<ProfileRow>;

    fn apply(&mut self, stored: &StoredEvent) {
        match &stored.event {
            MurmurEvent::User(UserEvent::UserRegistered {
                user_id,
                handle,
                display_name,
            }) => self.insert(ProfileRow {
                user_id: *user_id,
                handle: handle.as_str().into(),
                display_name: display_name.as_str().into(),
                created_at: stored.metadata.time,
                followers: 0,
                following: 0,
                posts: 0,
            }),
            MurmurEvent::Follow(FollowEvent::Followed {
                follower_id,
                followee_id,
            }) => {
                self.count(*follower_id, |r| r.following += 1);
                self.count(*followee_id, |r| r.followers += 1);
            }
            MurmurEvent::Follow(FollowEvent::Unfollowed {
                follower_id,
                followee_id,
            }) => {
                self.count(*follower_id, |r| r.following -= 1);
                self.count(*followee_id, |r| r.followers -= 1);
            }
            MurmurEvent::Post(PostEvent::PostCreated { author_id, .. }) => {
                self.count(*author_id, |r| r.posts += 1)
            }
            MurmurEvent::Post(PostEvent::PostDeleted { author_id, .. }) => {
                self.count(*author_id, |r| r.posts -= 1)
            }
            MurmurEvent::Handle(_) => {}
        }
    }

    fn take_changes(&mut self) -> Vec<ProfileRow> {
        let mut dirty = std::mem::take(&mut self.dirty);
        // In id order: the rows are then written page after page.
        dirty.sort_unstable_by_key(|&i| self.ids.id(i));
        dirty
            .into_iter()
            .filter_map(|i| {
                self.is_dirty[i as usize] = false;
                self.rows[i as usize].clone()
            })
            .collect()
    }

    fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
    }

    fn pending_rows(&self) -> usize {
        self.dirty.len()
    }
}
