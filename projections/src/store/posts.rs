//! The durable copy of `posts`: every live post with its body (the state holds the newest
//! of each author's bodies; reads find the others here).

use anyhow::Context;
use sqlx::PgConnection;

use super::copy::{copy_in, Fields};
use super::Snapshot;
use crate::state::posts::{PostRow, PostsChanges};
use crate::state::{Fold, PostsState};

pub(crate) const COLUMNS: &str = "post_id, author_id, body, created_at";

pub(crate) fn decode(f: &mut Fields<'_>) -> anyhow::Result<PostRow> {
    Ok(PostRow {
        post_id: f.int8()?,
        author_id: f.int8()?,
        body: f.text()?.into(),
        created_at: f.timestamptz()?,
    })
}

fn decode_key(f: &mut Fields<'_>) -> anyhow::Result<(i64, i64)> {
    Ok((f.int8()?, f.int8()?))
}

/// Two passes over one snapshot: every (post, author) key, then the rows of each author's
/// newest posts (the bodies the state holds; the others are decoded and dropped as they
/// stream by, so the load never holds more than a chunk of them).
pub async fn load(snapshot: &mut Snapshot, resident: usize) -> anyhow::Result<PostsState> {
    let mut state = PostsState::new(resident);
    state.set_tracking(false);
    snapshot
        .scan("posts", "post_id, author_id", decode_key, |keys| {
            for (post, author) in keys {
                state.load_key(post, author);
            }
        })
        .await?;
    state.finish_keys();
    snapshot
        .scan("posts", COLUMNS, decode, |rows| {
            for row in rows {
                state.load_body(row);
            }
        })
        .await?;
    state.set_tracking(true);
    Ok(state)
}

pub async fn write_changes(conn: &mut PgConnection, changes: &PostsChanges) -> anyhow::Result<()> {
    if !changes.deletes.is_empty() {
        sqlx::query("DELETE FROM posts WHERE post_id = ANY($1)")
            .bind(&changes.deletes)
            .execute(&mut *conn)
            .await
            .context("deleting posts")?;
    }
    if !changes.inserts.is_empty() {
        let mut cols: (Vec<i64>, Vec<i64>, Vec<&str>, Vec<_>) = Default::default();
        for r in &changes.inserts {
            cols.0.push(r.post_id);
            cols.1.push(r.author_id);
            cols.2.push(&r.body);
            cols.3.push(r.created_at);
        }
        sqlx::query(
            "INSERT INTO posts (post_id, author_id, body, created_at)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[])",
        )
        .bind(&cols.0)
        .bind(&cols.1)
        .bind(&cols.2)
        .bind(&cols.3)
        .execute(&mut *conn)
        .await
        .context("inserting posts")?;
    }
    Ok(())
}

pub async fn write_all(conn: &mut PgConnection, state: &PostsState) -> anyhow::Result<()> {
    let mut rows: Vec<&PostRow> = state.rows().collect();
    rows.sort_unstable_by_key(|r| r.post_id);
    copy_in(conn, &format!("posts ({COLUMNS})"), rows, |w, r| {
        w.row(4)
            .int8(r.post_id)
            .int8(r.author_id)
            .text(&r.body)
            .timestamptz(r.created_at);
    })
    .await?;
    Ok(())
}
