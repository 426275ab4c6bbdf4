//! A sustained, mixed stream of events for an existing murmur log (the `stream` bench):
//! registrations, follows, unfollows, posts and deletions in the proportions of [`Mix`],
//! each the valid next event of its stream, so that a running server's projectors can be
//! measured applying it. New streams only: follows are made by the stream's own new users
//! (no edge of theirs exists yet), unfollows and deletions undo what the stream made.

use murmur_domain::{FollowEvent, HandleEvent, MurmurEvent, PostEvent, PostId, UserEvent, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Shares of commands (a registration is two events, every other command one).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub register: f64,
    pub follow: f64,
    pub unfollow: f64,
    pub post: f64,
    pub delete: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            register: 0.05,
            follow: 0.45,
            unfollow: 0.10,
            post: 0.35,
            delete: 0.05,
        }
    }
}

/// An event with the sequence it takes in its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    pub event: MurmurEvent,
    pub sequence: i64,
}

/// A user the stream registered, with the accounts it follows and has unfollowed (an edge
/// is followed at most once, so its events are always sequences 1 and 2).
struct Made {
    id: UserId,
    following: Vec<UserId>,
    unfollowed: Vec<UserId>,
}

/// Makes the stream. `users`: the existing users are `1..=users`; new users take ids from
/// `first_user`, new posts from `first_post` (ranges the caller has reserved).
pub struct Stream {
    mix: Mix,
    rng: StdRng,
    users: UserId,
    next_user: UserId,
    next_post: PostId,
    /// The stream's own users.
    made_users: Vec<Made>,
    /// The stream's live posts, with their authors.
    made_posts: Vec<(PostId, UserId)>,
}

impl Stream {
    pub fn new(mix: Mix, seed: u64, users: UserId, first_user: UserId, first_post: PostId) -> Self {
        Self {
            mix,
            rng: StdRng::seed_from_u64(seed),
            users,
            next_user: first_user,
            next_post: first_post,
            made_users: Vec::new(),
            made_posts: Vec::new(),
        }
    }

    /// Ids taken so far: users, posts (the next ones the stream would use).
    pub fn next_ids(&self) -> (UserId, PostId) {
        (self.next_user, self.next_post)
    }

    /// The next command's events, appended to `out`.
    pub fn next_into(&mut self, out: &mut Vec<Next>) {
        let mut roll: f64 = self.rng.random();
        let Mix {
            register,
            follow,
            unfollow,
            post,
            ..
        } = self.mix;
        // A roll that finds nothing to undo (no edge to unfollow, no post to delete) posts.
        let new = |event| Next { event, sequence: 1 };
        if roll < register || self.made_users.is_empty() {
            let user_id = self.next_user;
            self.next_user += 1;
            let handle = format!("stream{user_id}");
            out.push(new(MurmurEvent::Handle(HandleEvent::HandleClaimed {
                user_id,
                handle: handle.clone(),
                display_name: handle.clone(),
            })));
            out.push(new(MurmurEvent::User(UserEvent::UserRegistered {
                user_id,
                handle: handle.clone(),
                display_name: handle,
            })));
            self.made_users.push(Made {
                id: user_id,
                following: Vec::new(),
                unfollowed: Vec::new(),
            });
            return;
        }
        roll -= register;
        let k = self.rng.random_range(0..self.made_users.len());
        if roll < follow {
            let followee_id = self.rng.random_range(1..=self.users);
            let made = &mut self.made_users[k];
            if !made.following.contains(&followee_id) && !made.unfollowed.contains(&followee_id) {
                made.following.push(followee_id);
                out.push(new(MurmurEvent::Follow(FollowEvent::Followed {
                    follower_id: made.id,
                    followee_id,
                })));
                return;
            }
        }
        roll -= follow;
        if roll < unfollow {
            let made = &mut self.made_users[k];
            if !made.following.is_empty() {
                let j = self.rng.random_range(0..made.following.len());
                let followee_id = made.following.swap_remove(j);
                made.unfollowed.push(followee_id);
                out.push(Next {
                    event: MurmurEvent::Follow(FollowEvent::Unfollowed {
                        follower_id: made.id,
                        followee_id,
                    }),
                    sequence: 2,
                });
                return;
            }
        }
        roll -= unfollow;
        if roll >= post && !self.made_posts.is_empty() {
            let j = self.rng.random_range(0..self.made_posts.len());
            let (post_id, author_id) = self.made_posts.swap_remove(j);
            out.push(Next {
                event: MurmurEvent::Post(PostEvent::PostDeleted { post_id, author_id }),
                sequence: 2,
            });
            return;
        }
        let post_id = self.next_post;
        self.next_post += 1;
        let author_id = self.rng.random_range(1..=self.users);
        self.made_posts.push((post_id, author_id));
        out.push(new(MurmurEvent::Post(PostEvent::PostCreated {
            post_id,
            author_id,
            body: format!("stream post {post_id}: the projector benchmark's sustained load"),
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_event_is_the_next_of_its_stream_and_the_mix_holds() {
        let mut stream = Stream::new(Mix::default(), 1, 1_000, 5_000, 9_000);
        let mut events = Vec::new();
        for _ in 0..20_000 {
            stream.next_into(&mut events);
        }
        let mut streams: HashMap<String, i64> = HashMap::new();
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for next in &events {
            let (aggregate_type, id, kind, _, _) = next.event.encode();
            let last = streams.entry(format!("{aggregate_type}/{id}")).or_insert(0);
            assert_eq!(next.sequence, *last + 1, "{aggregate_type}/{id} {kind}");
            *last = next.sequence;
            *kinds.entry(kind).or_default() += 1;
        }
        let share = |k: &str| kinds.get(k).copied().unwrap_or(0) as f64 / 20_000.0;
        assert!((share("UserRegistered") - 0.05).abs() < 0.02, "{kinds:?}");
        assert!((share("PostCreated") - 0.35).abs() < 0.1, "{kinds:?}");
        assert!(
            share("Followed") > 0.3 && share("Unfollowed") > 0.05,
            "{kinds:?}"
        );
        assert!(share("PostDeleted") > 0.03, "{kinds:?}");
    }
}
