//! Comparing a state with the tables of a durable copy, row by row: what `replay verify`
//! reports, naming the first rows found on one side only.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::copy::{copy_out_all, Fields};
use crate::projection::AnyState;
use crate::state::feeds::FollowRow;
use crate::state::posts::PostRow;
use crate::state::profiles::ProfileRow;

/// How one table compared.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableCheck {
    pub projection: &'static str,
    pub table: &'static str,
    pub live_rows: usize,
    pub rebuilt_rows: usize,
    pub matches: bool,
    /// The first rows (in key order) found on one side only, as `only live: ...` or
    /// `only rebuilt: ...`.
    pub differences: Vec<String>,
    /// How the table was compared, where that is not row by row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// Rows shown per table when it differs.
const SHOWN_DIFFERENCES: usize = 5;

/// A row as PostgreSQL prints a record (`(1,"two words",...)`), so that differences read
/// like the table does in psql.
pub trait RowText {
    fn row_text(&self) -> String;
}

fn field(text: &str) -> String {
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| matches!(c, ',' | '(' | ')' | '"' | '\\') || c.is_whitespace());
    if plain {
        text.to_string()
    } else {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\"\""))
    }
}

fn time(t: &DateTime<Utc>) -> String {
    field(&t.format("%Y-%m-%d %H:%M:%S%.f+00").to_string())
}

fn record(fields: &[String]) -> String {
    format!("({})", fields.join(","))
}

impl RowText for ProfileRow {
    fn row_text(&self) -> String {
        record(&[
            self.user_id.to_string(),
            field(&self.handle),
            field(&self.display_name),
            time(&self.created_at),
            self.followers.to_string(),
            self.following.to_string(),
            self.posts.to_string(),
        ])
    }
}

impl RowText for PostRow {
    fn row_text(&self) -> String {
        record(&[
            self.post_id.to_string(),
            self.author_id.to_string(),
            field(&self.body),
            time(&self.created_at),
        ])
    }
}

impl RowText for FollowRow {
    fn row_text(&self) -> String {
        record(&[
            self.follower_id.to_string(),
            self.followee_id.to_string(),
            time(&self.since),
            self.feed_from.to_string(),
        ])
    }
}

impl RowText for (i64, i64) {
    fn row_text(&self) -> String {
        record(&[self.0.to_string(), self.1.to_string()])
    }
}

impl RowText for (i64, Vec<i64>) {
    fn row_text(&self) -> String {
        let ids: Vec<String> = self.1.iter().map(i64::to_string).collect();
        record(&[self.0.to_string(), field(&format!("{{{}}}", ids.join(",")))])
    }
}

impl RowText for i64 {
    fn row_text(&self) -> String {
        record(&[self.to_string()])
    }
}

fn check<T: Ord + RowText>(
    projection: &'static str,
    table: &'static str,
    mut live: Vec<T>,
    mut rebuilt: Vec<T>,
) -> TableCheck {
    live.sort_unstable();
    rebuilt.sort_unstable();
    let (live_rows, rebuilt_rows) = (live.len(), rebuilt.len());
    let mut differences = Vec::new();
    let (mut i, mut j) = (0, 0);
    while (i < live.len() || j < rebuilt.len()) && differences.len() < SHOWN_DIFFERENCES {
        match (live.get(i), rebuilt.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                differences.push(format!("only live: {}", a.row_text()));
                i += 1;
            }
            (Some(a), None) => {
                differences.push(format!("only live: {}", a.row_text()));
                i += 1;
            }
            (_, Some(b)) => {
                differences.push(format!("only rebuilt: {}", b.row_text()));
                j += 1;
            }
            (None, None) => break,
        }
    }
    TableCheck {
        projection,
        table,
        live_rows,
        rebuilt_rows,
        matches: differences.is_empty(),
        differences,
        note: None,
    }
}

fn follow_row(f: &mut Fields<'_>) -> anyhow::Result<FollowRow> {
    Ok(FollowRow {
        follower_id: f.int8()?,
        followee_id: f.int8()?,
        since: f.timestamptz()?,
        feed_from: f.int8()?,
    })
}

/// Compares `state` (built with `FeedsState::keep_since` for feeds) with the tables `conn`
/// sees.
pub async fn compare(conn: &mut PgConnection, state: &AnyState) -> anyhow::Result<Vec<TableCheck>> {
    let name = state.kind().name();
    Ok(match state {
        AnyState::Profiles(s) => {
            let query = format!("SELECT {} FROM profiles", super::profiles::COLUMNS);
            let live = copy_out_all(conn, &query, super::profiles::decode).await?;
            vec![check(name, "profiles", live, s.rows().cloned().collect())]
        }
        AnyState::Posts(s) => {
            let query = format!("SELECT {} FROM posts", super::posts::COLUMNS);
            let live = copy_out_all(conn, &query, super::posts::decode).await?;
            vec![check(name, "posts", live, s.rows().cloned().collect())]
        }
        AnyState::Feeds(s) => {
            let follows = copy_out_all(
                conn,
                "SELECT follower_id, followee_id, since, feed_from FROM follows",
                follow_row,
            )
            .await?;
            let follows = check(name, "follows", follows, s.follows().collect());
            let posts = copy_out_all(conn, "SELECT post_id, author_id FROM feed_posts", |f| {
                Ok((f.int8()?, f.int8()?))
            })
            .await?;
            let posts = check(name, "feed_posts", posts, s.posts());
            // As a load would see them: the rows with the journal replayed (a rebuild
            // writes no journal).
            let journal_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM feed_inbox_journal")
                .fetch_one(&mut *conn)
                .await?;
            let inboxes = super::feeds::inboxes(conn).await?;
            let rebuilt = s.inboxes().map(|(o, p)| (o, p.to_vec())).collect();
            let inboxes = check(name, "feed_inbox", inboxes, rebuilt);
            let journal = TableCheck {
                projection: name,
                table: "feed_inbox_journal",
                live_rows: journal_rows as usize,
                rebuilt_rows: 0,
                matches: true,
                differences: vec![],
                note: Some("replayed onto feed_inbox's rows, compared there"),
            };
            let celebrities =
                copy_out_all(conn, "SELECT author_id FROM feed_celebrities", |f| f.int8()).await?;
            let celebrities = check(name, "feed_celebrities", celebrities, s.celebrities());
            vec![follows, posts, inboxes, journal, celebrities]
        }
    })
}
