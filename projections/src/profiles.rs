//! The `profiles` projection: one row per registered user with counter caches for
//! followers, following and posts, all derived from the events alone.

use std::collections::HashMap;

use anyhow::Context;
use cqrs_es::Aggregate;
use murmur_domain::{Follow, FollowEvent, MurmurEvent, Post, PostEvent, User, UserEvent, UserId};
use sqlx::PgConnection;

use crate::read_model::names;
use crate::{Projection, StoredEvent};

pub struct ProfilesProjection;

#[derive(Default)]
struct Deltas {
    followers: i64,
    following: i64,
    posts: i64,
}

fn delta(deltas: &mut HashMap<UserId, Deltas>, id: UserId) -> &mut Deltas {
    deltas.entry(id).or_default()
}

#[async_trait::async_trait]
impl Projection for ProfilesProjection {
    fn name(&self) -> &'static str {
        names::PROFILES
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[User::TYPE, Follow::TYPE, Post::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["profiles"]
    }

    fn deferred_indexes(&self) -> &'static [&'static str] {
        // Unique, but the Handle aggregate already guarantees it; a duplicate would still
        // fail the rebuild when the index is built, before any swap.
        &["profiles_handle"]
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let (mut ids, mut handles, mut display_names, mut times) = (vec![], vec![], vec![], vec![]);
        let mut deltas: HashMap<UserId, Deltas> = HashMap::new();
        for stored in events {
            match &stored.event {
                MurmurEvent::User(UserEvent::UserRegistered {
                    user_id,
                    handle,
                    display_name,
                }) => {
                    ids.push(*user_id);
                    handles.push(handle.clone());
                    display_names.push(display_name.clone());
                    times.push(stored.metadata.time);
                }
                MurmurEvent::Follow(FollowEvent::Followed {
                    follower_id,
                    followee_id,
                }) => {
                    delta(&mut deltas, *follower_id).following += 1;
                    delta(&mut deltas, *followee_id).followers += 1;
                }
                MurmurEvent::Follow(FollowEvent::Unfollowed {
                    follower_id,
                    followee_id,
                }) => {
                    delta(&mut deltas, *follower_id).following -= 1;
                    delta(&mut deltas, *followee_id).followers -= 1;
                }
                MurmurEvent::Post(PostEvent::PostCreated { author_id, .. }) => {
                    delta(&mut deltas, *author_id).posts += 1
                }
                MurmurEvent::Post(PostEvent::PostDeleted { author_id, .. }) => {
                    delta(&mut deltas, *author_id).posts -= 1
                }
                MurmurEvent::Handle(_) => {}
            }
        }
        // Registrations first: a user registered in this batch may be followed in it too.
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO profiles (user_id, handle, display_name, created_at)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&handles)
            .bind(&display_names)
            .bind(&times)
            .execute(&mut *conn)
            .await
            .context("inserting profiles")?;
        }
        if !deltas.is_empty() {
            let mut ids = Vec::with_capacity(deltas.len());
            let (mut followers, mut following, mut posts) = (vec![], vec![], vec![]);
            // In id order: the rows are then updated page after page.
            let mut deltas: Vec<(UserId, Deltas)> = deltas.into_iter().collect();
            deltas.sort_unstable_by_key(|(id, _)| *id);
            for (id, d) in deltas {
                ids.push(id);
                followers.push(d.followers);
                following.push(d.following);
                posts.push(d.posts);
            }
            sqlx::query(
                "UPDATE profiles p
                 SET followers_count = p.followers_count + d.followers,
                     following_count = p.following_count + d.following,
                     posts_count = p.posts_count + d.posts
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                      AS d(user_id, followers, following, posts)
                 WHERE p.user_id = d.user_id",
            )
            .bind(&ids)
            .bind(&followers)
            .bind(&following)
            .bind(&posts)
            .execute(&mut *conn)
            .await
            .context("updating profile counters")?;
        }
        Ok(())
    }
}
