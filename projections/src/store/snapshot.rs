//! One consistent, read-only view of the read-model tables, shared by several connections
//! (`pg_export_snapshot`), so that a projection's tables and checkpoint are loaded as of one
//! instant while large tables stream out on two connections at once. Read-only
//! transactions take no transaction id, so a long load holds back no projector.

use anyhow::Context;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use super::copy::{drain, CopyOut, Fields};

/// Rows sent per chunk from a scanning connection to the loader.
const CHUNK_ROWS: usize = 65_536;
/// Tables smaller than this many pages are read on one connection.
const PARALLEL_PAGES: i64 = 8_192;

pub struct Snapshot {
    pool: PgPool,
    id: String,
    conn: PgConnection,
}

async fn begin_read_only(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(conn)
        .await
        .context("starting a snapshot")?;
    Ok(())
}

impl Snapshot {
    /// Takes a snapshot on a connection of its own.
    pub async fn begin(pool: &PgPool) -> anyhow::Result<Self> {
        let mut conn = pool
            .acquire()
            .await
            .context("connecting for a snapshot")?
            .detach();
        begin_read_only(&mut conn).await?;
        let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await
            .context("exporting the snapshot")?;
        Ok(Self {
            pool: pool.clone(),
            id,
            conn,
        })
    }

    /// The snapshot's own connection (for small reads, such as the checkpoint).
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Another connection seeing the same snapshot.
    async fn join(&self) -> anyhow::Result<PgConnection> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("connecting to share a snapshot")?
            .detach();
        begin_read_only(&mut conn).await?;
        sqlx::query(&format!("SET TRANSACTION SNAPSHOT '{}'", self.id))
            .execute(&mut conn)
            .await
            .context("importing the snapshot")?;
        Ok(conn)
    }

    /// Streams `SELECT <columns> FROM <table>` (large tables split by page range over two
    /// connections), decoding each row with `decode`; `sink` gets the rows in chunks, in no
    /// particular order. Returns the number of rows.
    pub async fn scan<T: Send + 'static>(
        &mut self,
        table: &str,
        columns: &str,
        decode: fn(&mut Fields<'_>) -> anyhow::Result<T>,
        mut sink: impl FnMut(Vec<T>) + Send,
    ) -> anyhow::Result<u64> {
        let pages: i64 = sqlx::query_scalar(
            "SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::int)::bigint",
        )
        .bind(table)
        .fetch_one(&mut self.conn)
        .await
        .with_context(|| format!("measuring {table}"))?;
        let all = format!("SELECT {columns} FROM {table}");
        let (tx, mut rx) = mpsc::channel::<Vec<T>>(4);
        let (mine, theirs) = if pages < PARALLEL_PAGES {
            (all, None)
        } else {
            let half = pages / 2;
            let mut other = self.join().await?;
            let second = format!("{all} WHERE ctid >= '({half},0)'::tid");
            let other_tx = tx.clone();
            let task = tokio::spawn(async move {
                let n = scan_part(&mut other, &second, decode, other_tx).await;
                let _ = sqlx::Connection::close(other).await;
                n
            });
            (format!("{all} WHERE ctid < '({half},0)'::tid"), Some(task))
        };
        let mine = scan_part(&mut self.conn, &mine, decode, tx);
        let receive = async {
            while let Some(chunk) = rx.recv().await {
                sink(chunk);
            }
        };
        let (mine, ()) = tokio::join!(mine, receive);
        let theirs = match theirs {
            Some(task) => task.await.context("a scanning task panicked")??,
            None => 0,
        };
        Ok(mine? + theirs)
    }

    /// Ends the snapshot.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        sqlx::query("COMMIT")
            .execute(&mut self.conn)
            .await
            .context("ending the snapshot")?;
        sqlx::Connection::close(self.conn)
            .await
            .context("closing the snapshot")
    }
}

async fn scan_part<T: Send + 'static>(
    conn: &mut PgConnection,
    query: &str,
    decode: fn(&mut Fields<'_>) -> anyhow::Result<T>,
    tx: mpsc::Sender<Vec<T>>,
) -> anyhow::Result<u64> {
    let mut copy = CopyOut::start(conn, query).await?;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        let more = copy.read_into(&mut chunk, CHUNK_ROWS, decode).await?;
        if tx.send(chunk).await.is_err() || !more {
            break;
        }
    }
    let rows = copy.rows();
    drain(copy).await?;
    Ok(rows)
}
