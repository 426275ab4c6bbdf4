//! The durable copy of `profiles`: one row per registered user.

use anyhow::Context;
use sqlx::PgConnection;

use super::copy::{copy_in, Fields};
use super::Snapshot;
use crate::state::profiles::ProfileRow;
use crate::state::{Fold, ProfilesState};

pub(crate) const COLUMNS: &str =
    "user_id, handle, display_name, created_at, followers_count, following_count, posts_count";

pub(crate) fn decode(f: &mut Fields<'_>) -> anyhow::Result<ProfileRow> {
    Ok(ProfileRow {
        user_id: f.int8()?,
        handle: f.text()?.into(),
        display_name: f.text()?.into(),
        created_at: f.timestamptz()?,
        followers: f.int8()?,
        following: f.int8()?,
        posts: f.int8()?,
    })
}

pub async fn load(snapshot: &mut Snapshot) -> anyhow::Result<ProfilesState> {
    let mut state = ProfilesState::new();
    state.set_tracking(false);
    snapshot
        .scan("profiles", COLUMNS, decode, |rows| {
            state.reserve(rows.len());
            for row in rows {
                state.insert(row);
            }
        })
        .await?;
    state.set_tracking(true);
    Ok(state)
}

pub async fn write_changes(conn: &mut PgConnection, rows: &[ProfileRow]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.user_id).collect();
    let handles: Vec<&str> = rows.iter().map(|r| &*r.handle).collect();
    let names: Vec<&str> = rows.iter().map(|r| &*r.display_name).collect();
    let created: Vec<_> = rows.iter().map(|r| r.created_at).collect();
    let followers: Vec<i64> = rows.iter().map(|r| r.followers).collect();
    let following: Vec<i64> = rows.iter().map(|r| r.following).collect();
    let posts: Vec<i64> = rows.iter().map(|r| r.posts).collect();
    sqlx::query(
        "INSERT INTO profiles (user_id, handle, display_name, created_at, followers_count,
                               following_count, posts_count)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::timestamptz[],
                              $5::bigint[], $6::bigint[], $7::bigint[])
         ON CONFLICT (user_id) DO UPDATE
         SET followers_count = EXCLUDED.followers_count,
             following_count = EXCLUDED.following_count,
             posts_count = EXCLUDED.posts_count",
    )
    .bind(&ids)
    .bind(&handles)
    .bind(&names)
    .bind(&created)
    .bind(&followers)
    .bind(&following)
    .bind(&posts)
    .execute(conn)
    .await
    .context("writing profiles")?;
    Ok(())
}

pub async fn write_all(conn: &mut PgConnection, state: &ProfilesState) -> anyhow::Result<()> {
    let mut rows: Vec<&ProfileRow> = state.rows().collect();
    rows.sort_unstable_by_key(|r| r.user_id);
    copy_in(conn, &format!("profiles ({COLUMNS})"), rows, |w, r| {
        w.row(7)
            .int8(r.user_id)
            .text(&r.handle)
            .text(&r.display_name)
            .timestamptz(r.created_at)
            .int8(r.followers)
            .int8(r.following)
            .int8(r.posts);
    })
    .await?;
    Ok(())
}
