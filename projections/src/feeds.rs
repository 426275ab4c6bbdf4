//! The `feeds` projection: the follow graph (both directions) and home feeds.
//!
//! Posts are fanned out on write into `feed_inbox` (the author's own inbox and every
//! follower's), capped at the newest [`INBOX_CAP`] per reader. Posts by authors with more
//! than `celebrity_threshold` followers are not fanned out to followers: each reader keeps a
//! list of the celebrities they follow (`feed_celebrity_follows`) and the feed read merges
//! those authors' newest posts. Which posts of a followee belong in a feed is fixed by the
//! follow (`follows.feed_from`), so the feed is the same on either path and crossing the
//! threshold moves entries between the paths without losing or duplicating any.
//!
//! A batch is applied as runs of graph events and runs of post events, in order: within a
//! run the events commute once netted per edge, so each run is a handful of set-based
//! statements.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use murmur_domain::{Follow, FollowEvent, MurmurEvent, Post, PostEvent, PostId, UserId};
use sqlx::{PgConnection, Row};

use crate::read_model::names;
use crate::{Projection, StoredEvent};

/// Entries kept per inbox; a reader never sees more feed entries than this.
pub const INBOX_CAP: i64 = 800;
/// How many of a followee's newest posts a new follow brings into the follower's feed.
pub const FOLLOW_BACKFILL: i64 = 20;
/// The default for `celebrity_threshold`.
pub const DEFAULT_CELEBRITY_THRESHOLD: i64 = 10_000;

pub struct FeedsProjection {
    /// Authors with more followers than this are merged at read time, not fanned out.
    /// They go back to fan-out only at 10% below it, so that one user following and
    /// unfollowing an author at the threshold cannot make every follower's inbox churn.
    pub celebrity_threshold: i64,
}

impl Default for FeedsProjection {
    fn default() -> Self {
        Self {
            celebrity_threshold: DEFAULT_CELEBRITY_THRESHOLD,
        }
    }
}

enum Run {
    Graph(Vec<(UserId, UserId, bool, DateTime<Utc>)>),
    Posts(Vec<PostChange>),
}

enum PostChange {
    Created(PostId, UserId),
    Deleted(PostId),
}

/// Splits a batch into runs of graph events and runs of post events that, applied one
/// after the other, give what applying the events one by one gives.
///
/// Within a run, `apply_graph` removes inbox entries (unfollows) before it adds and trims,
/// and `apply_posts` adds and trims before it removes (deletions): a removal and a trim do
/// not commute once an inbox is full, so a graph run is unfollows then follows, and a posts
/// run is creations then deletions.
///
/// Posts are moved after later follows when they commute, so that a batch is a few long runs
/// rather than one short run per interleaved post (each run costs a handful of statements
/// whatever its length). `PostCreated` by A commutes with `Followed(a, b)` for b != A: the
/// follow reads and writes only b's posts, counters and edges, and both only add to inboxes,
/// whose trim to the newest [`INBOX_CAP`] keeps the same set in either order.
fn runs(events: &[StoredEvent]) -> Vec<Run> {
    #[derive(Default)]
    struct Pending {
        runs: Vec<Run>,
        graph: Vec<(UserId, UserId, bool, DateTime<Utc>)>,
        graph_follows: bool,
        /// Scheduled after `graph`, though some came before parts of it.
        posts: Vec<PostChange>,
        authors: HashSet<UserId>,
        posts_deletions: bool,
    }
    impl Pending {
        fn end_graph(&mut self) {
            if !self.graph.is_empty() {
                self.runs.push(Run::Graph(std::mem::take(&mut self.graph)));
            }
            self.graph_follows = false;
        }
        fn end_both(&mut self) {
            self.end_graph();
            if !self.posts.is_empty() {
                self.runs.push(Run::Posts(std::mem::take(&mut self.posts)));
            }
            self.authors.clear();
            self.posts_deletions = false;
        }
    }
    let mut p = Pending::default();
    for stored in events {
        match &stored.event {
            MurmurEvent::Follow(FollowEvent::Followed {
                follower_id,
                followee_id,
            }) => {
                if p.posts_deletions || p.authors.contains(followee_id) {
                    p.end_both();
                }
                p.graph
                    .push((*follower_id, *followee_id, true, stored.metadata.time));
                p.graph_follows = true;
            }
            MurmurEvent::Follow(FollowEvent::Unfollowed {
                follower_id,
                followee_id,
            }) => {
                if !p.posts.is_empty() {
                    p.end_both();
                } else if p.graph_follows {
                    p.end_graph();
                }
                p.graph
                    .push((*follower_id, *followee_id, false, stored.metadata.time));
            }
            MurmurEvent::Post(PostEvent::PostCreated {
                post_id, author_id, ..
            }) => {
                if p.posts_deletions {
                    p.end_both();
                }
                p.posts.push(PostChange::Created(*post_id, *author_id));
                p.authors.insert(*author_id);
            }
            MurmurEvent::Post(PostEvent::PostDeleted { post_id, .. }) => {
                p.posts.push(PostChange::Deleted(*post_id));
                p.posts_deletions = true;
            }
            MurmurEvent::Handle(_) | MurmurEvent::User(_) => {}
        }
    }
    p.end_both();
    p.runs
}

/// `rows` selects (owner_id, post_id, author_id) to add to inboxes. The statement keeps
/// `feed_inbox_sizes` in step and returns the owners whose inbox is now over the cap.
fn inbox_insert_sql(rows: &str) -> String {
    format!(
        "WITH ins AS (
             INSERT INTO feed_inbox (owner_id, post_id, author_id) {rows}
             ON CONFLICT DO NOTHING RETURNING owner_id),
         sized AS (
             INSERT INTO feed_inbox_sizes (owner_id, entries)
             SELECT owner_id, count(*) FROM ins GROUP BY owner_id
             ON CONFLICT (owner_id) DO UPDATE SET entries = feed_inbox_sizes.entries + EXCLUDED.entries
             RETURNING owner_id, entries)
         SELECT owner_id FROM sized WHERE entries > {INBOX_CAP}"
    )
}

/// `delete` is a `DELETE FROM feed_inbox i ... RETURNING i.owner_id`; the statement keeps
/// `feed_inbox_sizes` in step.
fn inbox_delete_sql(delete: &str) -> String {
    format!(
        "WITH gone AS ({delete})
         UPDATE feed_inbox_sizes s SET entries = s.entries - g.n
         FROM (SELECT owner_id, count(*) AS n FROM gone GROUP BY owner_id) g
         WHERE s.owner_id = g.owner_id"
    )
}

/// Inbox rows for the followee's newest posts, one set per (follower, followee) in $1, $2.
const BACKFILL_ROWS: &str = "SELECT e.a, p.post_id, e.b
     FROM UNNEST($1::bigint[], $2::bigint[]) AS e(a, b)
     CROSS JOIN LATERAL (SELECT post_id FROM feed_posts
                         WHERE author_id = e.b ORDER BY post_id DESC LIMIT $3) p";

/// Inbox rows for everything of the authors in $1 that their followers' feeds should hold.
const UNCELEBRITY_ROWS: &str = "SELECT f.follower_id, p.post_id, f.followee_id
     FROM follows f
     CROSS JOIN LATERAL (SELECT post_id FROM feed_posts
                         WHERE author_id = f.followee_id AND post_id >= f.feed_from
                         ORDER BY post_id DESC LIMIT $2) p
     WHERE f.followee_id = ANY($1)";

/// Inbox rows for new posts ($1 ids, $2 authors) in their authors' own inboxes, and for
/// those by authors who are no celebrity ($3 ids, $4 authors) in every follower's.
const FAN_OUT_ROWS: &str = "SELECT p.author_id, p.post_id, p.author_id
     FROM UNNEST($1::bigint[], $2::bigint[]) AS p(post_id, author_id)
     UNION ALL
     SELECT f.follower_id, p.post_id, p.author_id
     FROM UNNEST($3::bigint[], $4::bigint[]) AS p(post_id, author_id)
     -- Per post through the followers index: with one author followed by millions, a plain
     -- join is estimated so large that the planner scans all of `follows` instead.
     CROSS JOIN LATERAL (SELECT follower_id FROM follows
                         WHERE followee_id = p.author_id OFFSET 0) f";

struct NetEdge {
    followed: bool,
    since: DateTime<Utc>,
    /// An `Unfollowed` occurred in the run: the follower's inbox may hold the followee's posts.
    had_unfollow: bool,
}

impl FeedsProjection {
    async fn apply_graph(
        &self,
        conn: &mut PgConnection,
        events: &[(UserId, UserId, bool, DateTime<Utc>)],
    ) -> anyhow::Result<()> {
        let mut full = Vec::new();
        let mut net: HashMap<(UserId, UserId), NetEdge> = HashMap::new();
        let mut follower_deltas: HashMap<UserId, i64> = HashMap::new();
        for &(a, b, followed, since) in events {
            let edge = net.entry((a, b)).or_insert(NetEdge {
                followed,
                since,
                had_unfollow: false,
            });
            edge.followed = followed;
            edge.since = since;
            edge.had_unfollow |= !followed;
            *follower_deltas.entry(b).or_default() += if followed { 1 } else { -1 };
        }
        let pairs = |keep: &dyn Fn(&NetEdge) -> bool| -> (Vec<UserId>, Vec<UserId>) {
            net.iter().filter(|(_, e)| keep(e)).map(|(k, _)| *k).unzip()
        };

        // The edges themselves, in key order (index pages are then visited in order).
        let mut edges: Vec<(&(UserId, UserId), &NetEdge)> = net.iter().collect();
        edges.sort_unstable_by_key(|(k, _)| **k);
        let (mut fa, mut fb, mut since) = (vec![], vec![], vec![]);
        for (&(a, b), e) in edges.into_iter().filter(|(_, e)| e.followed) {
            fa.push(a);
            fb.push(b);
            since.push(e.since);
        }
        if !fa.is_empty() {
            sqlx::query(
                "INSERT INTO follows (follower_id, followee_id, since, feed_from)
                 SELECT e.a, e.b, e.t,
                        coalesce((SELECT post_id FROM feed_posts WHERE author_id = e.b
                                  ORDER BY post_id DESC OFFSET $4 LIMIT 1), 0)
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[]) AS e(a, b, t)
                 ON CONFLICT (follower_id, followee_id)
                 DO UPDATE SET since = EXCLUDED.since, feed_from = EXCLUDED.feed_from",
            )
            .bind(&fa)
            .bind(&fb)
            .bind(&since)
            .bind(FOLLOW_BACKFILL - 1)
            .execute(&mut *conn)
            .await
            .context("inserting follows")?;
        }
        let (ua, ub) = pairs(&|e| !e.followed);
        if !ua.is_empty() {
            sqlx::query(
                "DELETE FROM follows f USING UNNEST($1::bigint[], $2::bigint[]) AS e(a, b)
                 WHERE f.follower_id = e.a AND f.followee_id = e.b",
            )
            .bind(&ua)
            .bind(&ub)
            .execute(&mut *conn)
            .await
            .context("deleting follows")?;
        }

        // An unfollow takes the followee's posts out of the follower's feed.
        let (ca, cb) = pairs(&|e| e.had_unfollow);
        if !ca.is_empty() {
            sqlx::query(&inbox_delete_sql(
                "DELETE FROM feed_inbox i USING UNNEST($1::bigint[], $2::bigint[]) AS e(a, b)
                 WHERE i.owner_id = e.a AND i.author_id = e.b RETURNING i.owner_id",
            ))
            .bind(&ca)
            .bind(&cb)
            .execute(&mut *conn)
            .await
            .context("removing unfollowed posts from inboxes")?;
            sqlx::query(
                "DELETE FROM feed_celebrity_follows c
                 USING UNNEST($1::bigint[], $2::bigint[]) AS e(a, b)
                 WHERE c.reader_id = e.a AND c.author_id = e.b",
            )
            .bind(&ca)
            .bind(&cb)
            .execute(&mut *conn)
            .await
            .context("removing unfollowed celebrities")?;
        }

        // Follower counts, and who crossed the celebrity threshold.
        let mut follower_deltas: Vec<(UserId, i64)> = follower_deltas.into_iter().collect();
        follower_deltas.sort_unstable();
        let (authors, deltas): (Vec<UserId>, Vec<i64>) = follower_deltas.into_iter().unzip();
        let was_celebrity = celebrities(conn, &authors).await?;
        let is_celebrity: HashSet<UserId> = sqlx::query(
            "INSERT INTO feed_authors (author_id, followers, celebrity)
             SELECT d.author_id, d.delta, d.delta > $3
             FROM UNNEST($1::bigint[], $2::bigint[]) AS d(author_id, delta)
             ON CONFLICT (author_id) DO UPDATE
             SET followers = feed_authors.followers + EXCLUDED.followers,
                 celebrity = CASE
                     WHEN feed_authors.followers + EXCLUDED.followers > $3 THEN true
                     WHEN feed_authors.followers + EXCLUDED.followers <= $4 THEN false
                     ELSE feed_authors.celebrity END
             RETURNING author_id, celebrity",
        )
        .bind(&authors)
        .bind(&deltas)
        .bind(self.celebrity_threshold)
        .bind(self.celebrity_threshold - self.celebrity_threshold / 10)
        .fetch_all(&mut *conn)
        .await
        .context("updating follower counts")?
        .into_iter()
        .filter_map(|row| match row.try_get::<bool, _>("celebrity") {
            Ok(true) => row.try_get::<UserId, _>("author_id").ok(),
            _ => None,
        })
        .collect();

        // New follows: a celebrity joins the follower's merge list; anyone else's newest
        // posts are copied into the follower's inbox.
        let (na, nb) = pairs(&|e| e.followed);
        let (mut celeb_a, mut celeb_b, mut plain_a, mut plain_b) = (vec![], vec![], vec![], vec![]);
        for (a, b) in na.into_iter().zip(nb) {
            if is_celebrity.contains(&b) {
                celeb_a.push(a);
                celeb_b.push(b);
            } else {
                plain_a.push(a);
                plain_b.push(b);
            }
        }
        if !celeb_a.is_empty() {
            sqlx::query(
                "INSERT INTO feed_celebrity_follows (reader_id, author_id, feed_from)
                 SELECT f.follower_id, f.followee_id, f.feed_from
                 FROM UNNEST($1::bigint[], $2::bigint[]) AS e(a, b)
                 JOIN follows f ON f.follower_id = e.a AND f.followee_id = e.b
                 ON CONFLICT (reader_id, author_id) DO UPDATE SET feed_from = EXCLUDED.feed_from",
            )
            .bind(&celeb_a)
            .bind(&celeb_b)
            .execute(&mut *conn)
            .await
            .context("adding followed celebrities")?;
        }
        if !plain_a.is_empty() {
            let over: Vec<UserId> = sqlx::query_scalar(&inbox_insert_sql(BACKFILL_ROWS))
                .bind(&plain_a)
                .bind(&plain_b)
                .bind(FOLLOW_BACKFILL)
                .fetch_all(&mut *conn)
                .await
                .context("copying a followee's posts into the follower's inbox")?;
            full.extend(over);
        }

        // Threshold crossings move every follower's entries between the two paths.
        let up: Vec<UserId> = is_celebrity.difference(&was_celebrity).copied().collect();
        let down: Vec<UserId> = was_celebrity.difference(&is_celebrity).copied().collect();
        if !up.is_empty() {
            // A celebrity's posts are merged at read time, never kept in followers' inboxes:
            // otherwise crossing down and back up within one run (netted away) or across two
            // (not) would leave different inboxes.
            sqlx::query(&inbox_delete_sql(
                "DELETE FROM feed_inbox i USING follows f
                 WHERE f.followee_id = ANY($1)
                   AND i.owner_id = f.follower_id AND i.author_id = f.followee_id
                 RETURNING i.owner_id",
            ))
            .bind(&up)
            .execute(&mut *conn)
            .await
            .context("taking a new celebrity's posts out of inboxes")?;
            sqlx::query(
                "INSERT INTO feed_celebrity_follows (reader_id, author_id, feed_from)
                 SELECT follower_id, followee_id, feed_from FROM follows
                 WHERE followee_id = ANY($1)
                 ON CONFLICT (reader_id, author_id) DO UPDATE SET feed_from = EXCLUDED.feed_from",
            )
            .bind(&up)
            .execute(&mut *conn)
            .await
            .context("an author became a celebrity")?;
        }
        if !down.is_empty() {
            sqlx::query("DELETE FROM feed_celebrity_follows WHERE author_id = ANY($1)")
                .bind(&down)
                .execute(&mut *conn)
                .await
                .context("an author stopped being a celebrity")?;
            let over: Vec<UserId> = sqlx::query_scalar(&inbox_insert_sql(UNCELEBRITY_ROWS))
                .bind(&down)
                .bind(INBOX_CAP)
                .fetch_all(&mut *conn)
                .await
                .context("fanning out a former celebrity's posts")?;
            full.extend(over);
        }
        trim(conn, &full).await
    }

    async fn apply_posts(
        &self,
        conn: &mut PgConnection,
        changes: &[PostChange],
    ) -> anyhow::Result<()> {
        let (mut ids, mut authors, mut deleted) = (vec![], vec![], vec![]);
        for change in changes {
            match *change {
                PostChange::Created(id, author) => {
                    ids.push(id);
                    authors.push(author);
                }
                PostChange::Deleted(id) => deleted.push(id),
            }
        }
        // Creations before deletions, as `runs` ordered them.
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO feed_posts (post_id, author_id)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING",
            )
            .bind(&ids)
            .bind(&authors)
            .execute(&mut *conn)
            .await
            .context("indexing posts")?;
            // Celebrities are picked out first, so their followers are never even joined.
            let celebrities = celebrities(conn, &authors).await?;
            let (fanned_ids, fanned_authors): (Vec<PostId>, Vec<UserId>) = ids
                .iter()
                .zip(&authors)
                .filter(|(_, author)| !celebrities.contains(author))
                .unzip();
            let over: Vec<UserId> = sqlx::query_scalar(&inbox_insert_sql(FAN_OUT_ROWS))
                .bind(&ids)
                .bind(&authors)
                .bind(&fanned_ids)
                .bind(&fanned_authors)
                .fetch_all(&mut *conn)
                .await
                .context("fanning out posts")?;
            trim(conn, &over).await?;
        }
        if !deleted.is_empty() {
            sqlx::query("DELETE FROM feed_posts WHERE post_id = ANY($1)")
                .bind(&deleted)
                .execute(&mut *conn)
                .await
                .context("unindexing deleted posts")?;
            sqlx::query(&inbox_delete_sql(
                "DELETE FROM feed_inbox i WHERE i.post_id = ANY($1) RETURNING i.owner_id",
            ))
            .bind(&deleted)
            .execute(&mut *conn)
            .await
            .context("removing deleted posts from inboxes")?;
        }
        Ok(())
    }
}

/// Which of `authors` are celebrities now. Reads all of them (few, through a partial
/// index): cheaper than probing thousands of authors.
async fn celebrities(
    conn: &mut PgConnection,
    authors: &[UserId],
) -> anyhow::Result<HashSet<UserId>> {
    let all: Vec<UserId> = sqlx::query_scalar("SELECT author_id FROM feed_authors WHERE celebrity")
        .fetch_all(conn)
        .await
        .context("reading celebrity status")?;
    let authors: HashSet<UserId> = authors.iter().copied().collect();
    Ok(all.into_iter().filter(|a| authors.contains(a)).collect())
}

/// Drops the oldest entries of the given inboxes beyond [`INBOX_CAP`].
async fn trim(conn: &mut PgConnection, owners: &[UserId]) -> anyhow::Result<()> {
    if owners.is_empty() {
        return Ok(());
    }
    sqlx::query(&inbox_delete_sql(&format!(
        "DELETE FROM feed_inbox i
         USING (SELECT owner_id, entries - {INBOX_CAP} AS excess FROM feed_inbox_sizes
                WHERE owner_id = ANY($1) AND entries > {INBOX_CAP}) o,
               LATERAL (SELECT post_id FROM feed_inbox x WHERE x.owner_id = o.owner_id
                        ORDER BY x.post_id LIMIT o.excess) old
         WHERE i.owner_id = o.owner_id AND i.post_id = old.post_id
         RETURNING i.owner_id"
    )))
    .bind(owners)
    .execute(conn)
    .await
    .context("trimming inboxes")?;
    Ok(())
}

#[async_trait::async_trait]
impl Projection for FeedsProjection {
    fn name(&self) -> &'static str {
        names::FEEDS
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[Follow::TYPE, Post::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "follows",
            "feed_authors",
            "feed_posts",
            "feed_inbox",
            "feed_inbox_sizes",
            "feed_celebrity_follows",
        ]
    }

    fn deferred_indexes(&self) -> &'static [&'static str] {
        // Fan-out reads follows by followee (follows_followers); only the following list
        // reads this one.
        &["follows_following"]
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for run in runs(events) {
            match run {
                Run::Graph(edges) => self.apply_graph(conn, &edges).await?,
                Run::Posts(changes) => self.apply_posts(conn, &changes).await?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Position;
    use murmur_domain::EventMetadata;

    fn at(i: usize, event: MurmurEvent) -> StoredEvent {
        StoredEvent {
            position: Position::new(1, i as i64 + 1),
            aggregate_type: String::new(),
            aggregate_id: String::new(),
            sequence: 1,
            event,
            metadata: EventMetadata {
                actor_id: None,
                request_id: String::new(),
                time: DateTime::<Utc>::UNIX_EPOCH,
            },
        }
    }

    fn follow(a: UserId, b: UserId) -> MurmurEvent {
        MurmurEvent::Follow(FollowEvent::Followed {
            follower_id: a,
            followee_id: b,
        })
    }

    fn unfollow(a: UserId, b: UserId) -> MurmurEvent {
        MurmurEvent::Follow(FollowEvent::Unfollowed {
            follower_id: a,
            followee_id: b,
        })
    }

    fn post(id: PostId, author: UserId) -> MurmurEvent {
        MurmurEvent::Post(PostEvent::PostCreated {
            post_id: id,
            author_id: author,
            body: String::new(),
        })
    }

    fn delete(id: PostId, author: UserId) -> MurmurEvent {
        MurmurEvent::Post(PostEvent::PostDeleted {
            post_id: id,
            author_id: author,
        })
    }

    /// Each run as `G` + the follower ids with `-` for unfollows, or `P` + post ids with
    /// `-` for deletions.
    fn shape(history: Vec<MurmurEvent>) -> Vec<String> {
        let events: Vec<StoredEvent> = history
            .into_iter()
            .enumerate()
            .map(|(i, e)| at(i, e))
            .collect();
        runs(&events)
            .iter()
            .map(|run| match run {
                Run::Graph(edges) => edges.iter().fold("G".to_string(), |s, (a, _, f, _)| {
                    format!("{s} {}{a}", if *f { "" } else { "-" })
                }),
                Run::Posts(changes) => changes.iter().fold("P".to_string(), |s, c| match c {
                    PostChange::Created(id, _) => format!("{s} {id}"),
                    PostChange::Deleted(id) => format!("{s} -{id}"),
                }),
            })
            .collect()
    }

    #[test]
    fn posts_move_after_follows_of_other_authors() {
        let history = vec![
            follow(1, 9),
            post(100, 7),
            follow(2, 9),
            post(101, 8),
            follow(3, 9),
        ];
        assert_eq!(shape(history), ["G 1 2 3", "P 100 101"]);
    }

    #[test]
    fn a_follow_of_a_pending_author_keeps_its_place() {
        let history = vec![follow(1, 9), post(100, 7), follow(2, 7), follow(3, 9)];
        assert_eq!(shape(history), ["G 1", "P 100", "G 2 3"]);
    }

    #[test]
    fn removals_never_move_across_additions() {
        // An unfollow after a post, or after a follow in the same run, starts a new run.
        let history = vec![follow(1, 9), post(100, 7), unfollow(2, 9), follow(3, 9)];
        assert_eq!(shape(history), ["G 1", "P 100", "G -2 3"]);
        let history = vec![follow(1, 9), unfollow(2, 9)];
        assert_eq!(shape(history), ["G 1", "G -2"]);
        // No follow moves before a deletion, and no creation joins a run after a deletion.
        let history = vec![post(100, 7), delete(100, 7), follow(1, 9), post(101, 7)];
        assert_eq!(shape(history), ["P 100 -100", "G 1", "P 101"]);
        let history = vec![delete(100, 7), post(101, 7)];
        assert_eq!(shape(history), ["P -100", "P 101"]);
    }
}
