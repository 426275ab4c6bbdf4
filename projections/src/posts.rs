//! The `posts` projection: every live post with its body; deleted posts are removed.

use anyhow::Context;
use cqrs_es::Aggregate;
use murmur_domain::{MurmurEvent, Post, PostEvent};
use sqlx::PgConnection;

use crate::read_model::names;
use crate::{Projection, StoredEvent};

pub struct PostsProjection;

#[async_trait::async_trait]
impl Projection for PostsProjection {
    fn name(&self) -> &'static str {
        names::POSTS
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[Post::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["posts"]
    }

    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["posts_by_author"]
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let (mut ids, mut authors, mut bodies, mut times, mut deleted) =
            (vec![], vec![], vec![], vec![], vec![]);
        for stored in events {
            match &stored.event {
                MurmurEvent::Post(PostEvent::PostCreated {
                    post_id,
                    author_id,
                    body,
                }) => {
                    ids.push(*post_id);
                    authors.push(*author_id);
                    bodies.push(body.clone());
                    times.push(stored.metadata.time);
                }
                MurmurEvent::Post(PostEvent::PostDeleted { post_id, .. }) => deleted.push(*post_id),
                _ => {}
            }
        }
        // Creations before deletions: a post is never created after it is deleted.
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO posts (post_id, author_id, body, created_at)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[])
                 ON CONFLICT (post_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&authors)
            .bind(&bodies)
            .bind(&times)
            .execute(&mut *conn)
            .await
            .context("inserting posts")?;
        }
        if !deleted.is_empty() {
            sqlx::query("DELETE FROM posts WHERE post_id = ANY($1)")
                .bind(&deleted)
                .execute(&mut *conn)
                .await
                .context("deleting posts")?;
        }
        Ok(())
    }
}
