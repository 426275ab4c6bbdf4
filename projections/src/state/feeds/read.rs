//! What the feeds state answers (reads), and how it is loaded from its durable copy.

use chrono::DateTime;
use murmur_domain::{PostId, UserId};

use super::{FeedsState, FollowRow};

/// Reads.
impl FeedsState {
    /// A user's inbox, ascending (empty for a user the state has never seen).
    pub fn inbox(&self, owner: UserId) -> &[PostId] {
        self.ids
            .get(owner)
            .map_or(&[], |i| self.users[i as usize].inbox.as_slice())
    }

    /// The celebrities `reader` follows. What each one's feed shows is looked up only when
    /// asked ([`FollowedCelebrity::feed_from`]): a reader's page is mostly full before most
    /// of their celebrities' posts could enter it.
    pub fn celebrities_followed(
        &self,
        reader: UserId,
    ) -> impl Iterator<Item = FollowedCelebrity<'_>> + '_ {
        let r = self.ids.get(reader);
        let celebrities = r.map_or(&[][..], |r| self.users[r as usize].celebrities.as_slice());
        celebrities.iter().map(move |&c| FollowedCelebrity {
            state: self,
            reader: r.unwrap_or_default(),
            celebrity: c,
        })
    }

    pub fn is_celebrity(&self, author: UserId) -> bool {
        self.ids
            .get(author)
            .is_some_and(|i| self.users[i as usize].celebrity)
    }

    pub fn followers_count(&self, author: UserId) -> usize {
        self.ids
            .get(author)
            .map_or(0, |i| self.users[i as usize].followers.len())
    }

    /// Every row of `follows`, grouped by followee; `since` needs [`FeedsState::keep_since`].
    pub fn follows(&self) -> impl Iterator<Item = FollowRow> + '_ {
        self.users.iter().enumerate().flat_map(move |(bi, user)| {
            let followee_id = self.ids.id(bi as u32);
            user.followers.iter().enumerate().map(move |(k, &ai)| {
                let since = user.since.get(k).copied().unwrap_or_default();
                FollowRow {
                    follower_id: self.ids.id(ai),
                    followee_id,
                    since: DateTime::from_timestamp_micros(since).unwrap_or_default(),
                    feed_from: self.feed_from_of(ai, bi as u32),
                }
            })
        })
    }

    /// How many follows there are.
    pub fn follows_count(&self) -> usize {
        self.users.iter().map(|u| u.followers.len()).sum()
    }

    /// Every non-empty inbox: (owner, ascending post ids).
    pub fn inboxes(&self) -> impl Iterator<Item = (UserId, &[PostId])> + '_ {
        self.users
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.inbox.is_empty())
            .map(|(i, u)| (self.ids.id(i as u32), u.inbox.as_slice()))
    }

    /// Every live post as (post, author), ascending by post.
    pub fn posts(&self) -> Vec<(PostId, UserId)> {
        let mut rows: Vec<(PostId, UserId)> = self
            .post_author
            .iter()
            .map(|(&p, &a)| (p, self.ids.id(a)))
            .collect();
        rows.sort_unstable();
        rows
    }

    /// Every celebrity, ascending.
    pub fn celebrities(&self) -> Vec<UserId> {
        let mut rows: Vec<UserId> = (0..self.users.len())
            .filter(|&i| self.users[i].celebrity)
            .map(|i| self.ids.id(i as u32))
            .collect();
        rows.sort_unstable();
        rows
    }
}

/// A celebrity a reader follows, as [`FeedsState::celebrities_followed`] lists them.
pub struct FollowedCelebrity<'a> {
    state: &'a FeedsState,
    reader: u32,
    celebrity: u32,
}

impl FollowedCelebrity<'_> {
    /// The celebrity's live posts, ascending.
    pub fn posts(&self) -> &[PostId] {
        self.state.users[self.celebrity as usize].posts.as_slice()
    }

    /// The oldest of their posts the reader's feed shows.
    pub fn feed_from(&self) -> PostId {
        self.state.feed_from_of(self.reader, self.celebrity)
    }
}

/// Loading from the durable copy: rows in any order, then [`FeedsState::finish_load`].
impl FeedsState {
    pub fn load_post(&mut self, post: PostId, author: UserId) {
        let ai = self.user(author);
        self.post_author.insert(post, ai);
        self.users[ai as usize].posts.push(post);
    }

    /// A follow without its time (a loaded state never lists whole `follows` rows).
    pub fn load_follow(&mut self, follower: UserId, followee: UserId, feed_from: PostId) {
        let (ai, bi) = (self.user(follower), self.user(followee));
        self.users[bi as usize].followers.push(ai);
        if feed_from != 0 {
            self.feed_from.insert((ai, bi), feed_from);
        }
    }

    pub fn load_celebrity(&mut self, author: UserId) {
        let ai = self.user(author);
        self.users[ai as usize].celebrity = true;
    }

    pub fn load_inbox(&mut self, owner: UserId, posts: Vec<PostId>) {
        let oi = self.user(owner);
        self.users[oi as usize].inbox = posts;
    }

    /// Sorts what loading pushed in any order and derives each reader's celebrities.
    pub fn finish_load(&mut self) {
        let (keep_since, ids) = (self.keep_since, &self.ids);
        for user in &mut self.users {
            if keep_since {
                let mut pairs: Vec<(u32, i64)> = user
                    .followers
                    .iter()
                    .copied()
                    .zip(user.since.iter().copied())
                    .collect();
                pairs.sort_unstable_by_key(|&(f, _)| ids.id(f));
                (user.followers, user.since) = pairs.into_iter().unzip();
            } else {
                user.followers.sort_unstable_by_key(|&f| ids.id(f));
            }
            user.followers.shrink_to_fit();
            user.posts.sort_unstable();
            user.posts.shrink_to_fit();
            user.inbox.sort_unstable();
            user.inbox.dedup();
            user.inbox.shrink_to_fit();
        }
        for author in 0..self.users.len() {
            if self.users[author].celebrity {
                for k in 0..self.users[author].followers.len() {
                    let follower = self.users[author].followers[k];
                    self.users[follower as usize]
                        .celebrities
                        .push(author as u32);
                }
            }
        }
    }

    pub fn reserve(&mut self, users: usize) {
        self.ids.reserve(users);
        self.users.reserve(users);
    }
}
