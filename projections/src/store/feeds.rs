//! The durable copy of `feeds`: `follows` (one row per edge, which the follower and
//! following lists also read), `feed_posts` (the projection's own index of live posts),
//! `feed_inbox` (one row per reader: the inbox's post ids), `feed_inbox_journal` (the inbox
//! changes made since those rows were written) and `feed_celebrities`.
//!
//! A flush under load appends one journal row (two parallel arrays, owners and entries:
//! 16 bytes a delivery, however many inboxes a post reaches); inboxes are written whole at
//! rest (emptying the journal) and by folding rounds under load (see `state::feeds`), each
//! row stamped with the newest journal row it includes (`as_of`). The inboxes of the copy
//! are its rows with the journal rows after their `as_of` replayed in order ([`inboxes`]).

use anyhow::Context;
use murmur_domain::{PostId, UserId};
use sqlx::PgConnection;

use super::copy::{copy_in, copy_out_all, Fields};
use super::Snapshot;
use crate::state::feeds::inbox::{self, JournalEntry};
use crate::state::feeds::{FeedsChanges, Folding};
use crate::state::{FeedsState, Fold};

fn pair(f: &mut Fields<'_>) -> anyhow::Result<(i64, i64)> {
    Ok((f.int8()?, f.int8()?))
}

fn triple(f: &mut Fields<'_>) -> anyhow::Result<(i64, i64, i64)> {
    Ok((f.int8()?, f.int8()?, f.int8()?))
}

fn single(f: &mut Fields<'_>) -> anyhow::Result<i64> {
    f.int8()
}

fn inbox(f: &mut Fields<'_>) -> anyhow::Result<(i64, Vec<i64>, i64)> {
    Ok((f.int8()?, f.int8_array()?, f.int8()?))
}

/// The journal rows each inbox row already includes: owner -> `as_of` (0s left out).
type AsOf = rustc_hash::FxHashMap<UserId, i64>;

pub async fn load(
    snapshot: &mut Snapshot,
    celebrity_threshold: i64,
    folding: Folding,
) -> anyhow::Result<FeedsState> {
    let mut state = FeedsState::new(celebrity_threshold);
    state.set_folding(folding);
    state.set_tracking(false);
    snapshot
        .scan("feed_posts", "post_id, author_id", pair, |rows| {
            for (post, author) in rows {
                state.load_post(post, author);
            }
        })
        .await?;
    snapshot
        .scan(
            "follows",
            "follower_id, followee_id, feed_from",
            triple,
            |rows| {
                for (a, b, from) in rows {
                    state.load_follow(a, b, from);
                }
            },
        )
        .await?;
    snapshot
        .scan("feed_celebrities", "author_id", single, |rows| {
            for author in rows {
                state.load_celebrity(author);
            }
        })
        .await?;
    let mut as_of = AsOf::default();
    snapshot
        .scan("feed_inbox", "owner_id, post_ids, as_of", inbox, |rows| {
            for (owner, posts, at) in rows {
                if at > 0 {
                    as_of.insert(owner, at);
                }
                state.load_inbox(owner, posts);
            }
        })
        .await?;
    // After the rows: the journal's entries change the inboxes the rows hold.
    for (owner, entry) in journal(snapshot.conn(), &as_of).await? {
        state.load_journal_entry(owner, entry);
    }
    state.finish_load();
    state.set_tracking(true);
    Ok(state)
}

/// The journal's entries in the order they were made, (owner, entry), leaving out those of
/// rows an inbox's own row already includes (`as_of`).
async fn journal(
    conn: &mut PgConnection,
    as_of: &AsOf,
) -> anyhow::Result<Vec<(UserId, JournalEntry)>> {
    let rows: Vec<(i64, Vec<UserId>, Vec<JournalEntry>)> =
        sqlx::query_as("SELECT seq, owner_ids, entries FROM feed_inbox_journal ORDER BY seq")
            .fetch_all(&mut *conn)
            .await
            .context("reading the inbox journal")?;
    let mut entries = Vec::with_capacity(rows.iter().map(|r| r.1.len()).sum());
    for (seq, owners, journaled) in rows {
        anyhow::ensure!(owners.len() == journaled.len(), "a torn inbox journal row");
        entries.extend(
            owners
                .into_iter()
                .zip(journaled)
                .filter(|(owner, _)| as_of.get(owner).is_none_or(|&at| seq > at)),
        );
    }
    Ok(entries)
}

/// The inboxes of the durable copy as `conn` sees it (the rows, with the journal replayed),
/// ascending by owner, empty ones left out: what a load would hold.
pub async fn inboxes(conn: &mut PgConnection) -> anyhow::Result<Vec<(UserId, Vec<PostId>)>> {
    let rows = copy_out_all(
        conn,
        "SELECT owner_id, post_ids, as_of FROM feed_inbox",
        inbox,
    )
    .await?;
    let mut as_of = AsOf::default();
    let mut inboxes = std::collections::BTreeMap::new();
    for (owner, posts, at) in rows {
        if at > 0 {
            as_of.insert(owner, at);
        }
        inboxes.insert(owner, posts);
    }
    for (owner, entry) in journal(conn, &as_of).await? {
        inbox::replay(inboxes.entry(owner).or_default(), entry);
    }
    Ok(inboxes.into_iter().filter(|(_, p)| !p.is_empty()).collect())
}

pub async fn write_changes(conn: &mut PgConnection, c: &FeedsChanges) -> anyhow::Result<()> {
    write_follows(conn, c).await?;
    write_inbox_changes(conn, c).await?;
    write_posts_and_celebrities(conn, c).await
}

async fn write_follows(conn: &mut PgConnection, c: &FeedsChanges) -> anyhow::Result<()> {
    if !c.follows_deleted.is_empty() {
        let (a, b): (Vec<UserId>, Vec<UserId>) = c.follows_deleted.iter().copied().unzip();
        sqlx::query(
            "DELETE FROM follows f USING UNNEST($1::bigint[], $2::bigint[]) AS e(a, b)
             WHERE f.follower_id = e.a AND f.followee_id = e.b",
        )
        .bind(&a)
        .bind(&b)
        .execute(&mut *conn)
        .await
        .context("deleting follows")?;
    }
    if !c.follows_inserted.is_empty() {
        let mut cols: (Vec<i64>, Vec<i64>, Vec<_>, Vec<i64>) = Default::default();
        for r in &c.follows_inserted {
            cols.0.push(r.follower_id);
            cols.1.push(r.followee_id);
            cols.2.push(r.since);
            cols.3.push(r.feed_from);
        }
        sqlx::query(
            "INSERT INTO follows (follower_id, followee_id, since, feed_from)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[], $4::bigint[])",
        )
        .bind(&cols.0)
        .bind(&cols.1)
        .bind(&cols.2)
        .bind(&cols.3)
        .execute(&mut *conn)
        .await
        .context("inserting follows")?;
    }
    Ok(())
}

/// Whole inboxes and an empty journal (complete), or a journal row and a folding round's
/// inboxes (stamped with it), and at the round's end the journal up to its start deleted.
async fn write_inbox_changes(conn: &mut PgConnection, c: &FeedsChanges) -> anyhow::Result<()> {
    if c.complete {
        write_inboxes(conn, &c.inboxes, false).await?;
        sqlx::query("DELETE FROM feed_inbox_journal")
            .execute(&mut *conn)
            .await
            .context("emptying the inbox journal")?;
        // Empty rows folding rounds kept for their `as_of`, meaningless without a journal.
        sqlx::query("DELETE FROM feed_inbox WHERE cardinality(post_ids) = 0")
            .execute(&mut *conn)
            .await
            .context("deleting empty inboxes")?;
        return Ok(());
    }
    if !c.journal.is_empty() || c.round_starts {
        let (owners, entries): (Vec<UserId>, Vec<JournalEntry>) = c.journal.iter().copied().unzip();
        sqlx::query(
            "INSERT INTO feed_inbox_journal (owner_ids, entries, round_start) VALUES ($1, $2, $3)",
        )
        .bind(&owners)
        .bind(&entries)
        .bind(c.round_starts)
        .execute(&mut *conn)
        .await
        .context("journaling inbox changes")?;
    }
    write_inboxes(conn, &c.inboxes, true).await?;
    if c.round_ends {
        sqlx::query(
            "DELETE FROM feed_inbox_journal
             WHERE seq <= (SELECT max(seq) FROM feed_inbox_journal WHERE round_start)",
        )
        .execute(&mut *conn)
        .await
        .context("folding the inbox journal")?;
    }
    Ok(())
}

async fn write_posts_and_celebrities(
    conn: &mut PgConnection,
    c: &FeedsChanges,
) -> anyhow::Result<()> {
    if !c.posts_deleted.is_empty() {
        let (posts, authors): (Vec<PostId>, Vec<UserId>) = c.posts_deleted.iter().copied().unzip();
        sqlx::query(
            "DELETE FROM feed_posts p USING UNNEST($1::bigint[], $2::bigint[]) AS d(post, author)
             WHERE p.author_id = d.author AND p.post_id = d.post",
        )
        .bind(&posts)
        .bind(&authors)
        .execute(&mut *conn)
        .await
        .context("unindexing posts")?;
    }
    if !c.posts_inserted.is_empty() {
        let (posts, authors): (Vec<PostId>, Vec<UserId>) = c.posts_inserted.iter().copied().unzip();
        sqlx::query(
            "INSERT INTO feed_posts (post_id, author_id)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[])",
        )
        .bind(&posts)
        .bind(&authors)
        .execute(&mut *conn)
        .await
        .context("indexing posts")?;
    }
    if !c.celebrities_deleted.is_empty() {
        sqlx::query("DELETE FROM feed_celebrities WHERE author_id = ANY($1)")
            .bind(&c.celebrities_deleted)
            .execute(&mut *conn)
            .await
            .context("deleting celebrities")?;
    }
    if !c.celebrities_inserted.is_empty() {
        sqlx::query("INSERT INTO feed_celebrities (author_id) SELECT * FROM UNNEST($1::bigint[])")
            .bind(&c.celebrities_inserted)
            .execute(&mut *conn)
            .await
            .context("inserting celebrities")?;
    }
    Ok(())
}

/// Rewrites whole inboxes, each stamped with the newest journal row (which it includes),
/// staged through a binary `COPY`. An empty one loses its row, unless `keep_empty` (while
/// the journal keeps entries its row must not replay).
async fn write_inboxes(
    conn: &mut PgConnection,
    inboxes: &[(UserId, Vec<PostId>)],
    keep_empty: bool,
) -> anyhow::Result<()> {
    if inboxes.is_empty() {
        return Ok(());
    }
    // A temporary table is found before any schema of the search path, shadows included.
    sqlx::query(
        "CREATE TEMPORARY TABLE IF NOT EXISTS feed_inbox_stage
             (owner_id bigint NOT NULL, post_ids bigint[] NOT NULL) ON COMMIT DELETE ROWS",
    )
    .execute(&mut *conn)
    .await
    .context("creating the inbox staging table")?;
    copy_in(
        conn,
        "feed_inbox_stage (owner_id, post_ids)",
        inboxes,
        |w, (owner, posts)| {
            w.row(2).int8(*owner).int8_array(posts);
        },
    )
    .await?;
    if !keep_empty {
        sqlx::query(
            "DELETE FROM feed_inbox i USING feed_inbox_stage s
             WHERE i.owner_id = s.owner_id AND cardinality(s.post_ids) = 0",
        )
        .execute(&mut *conn)
        .await
        .context("deleting emptied inboxes")?;
    }
    sqlx::query(
        "INSERT INTO feed_inbox (owner_id, post_ids, as_of)
         SELECT owner_id, post_ids, (SELECT coalesce(max(seq), 0) FROM feed_inbox_journal)
         FROM feed_inbox_stage WHERE $1 OR cardinality(post_ids) > 0
         ON CONFLICT (owner_id) DO UPDATE SET post_ids = EXCLUDED.post_ids, as_of = EXCLUDED.as_of",
    )
    .bind(keep_empty)
    .execute(&mut *conn)
    .await
    .context("writing inboxes")?;
    sqlx::query("TRUNCATE feed_inbox_stage")
        .execute(&mut *conn)
        .await
        .context("emptying the inbox staging table")?;
    Ok(())
}

pub async fn write_all(conn: &mut PgConnection, state: &FeedsState) -> anyhow::Result<()> {
    copy_in(
        conn,
        "follows (follower_id, followee_id, since, feed_from)",
        state.follows(),
        |w, r| {
            w.row(4)
                .int8(r.follower_id)
                .int8(r.followee_id)
                .timestamptz(r.since)
                .int8(r.feed_from);
        },
    )
    .await?;
    copy_in(
        conn,
        "feed_posts (post_id, author_id)",
        state.posts(),
        |w, (post, author)| {
            w.row(2).int8(post).int8(author);
        },
    )
    .await?;
    let mut inboxes: Vec<(UserId, &[PostId])> = state.inboxes().collect();
    inboxes.sort_unstable_by_key(|(owner, _)| *owner);
    copy_in(
        conn,
        "feed_inbox (owner_id, post_ids)",
        inboxes,
        |w, (owner, posts)| {
            w.row(2).int8(owner).int8_array(posts);
        },
    )
    .await?;
    copy_in(
        conn,
        "feed_celebrities (author_id)",
        state.celebrities(),
        |w, author| {
            w.row(1).int8(author);
        },
    )
    .await?;
    Ok(())
}
