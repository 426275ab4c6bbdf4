//! PostgreSQL's binary `COPY` format, for the few column types the read models use
//! (bigint, text, timestamptz, bigint[]): loading a projection's tables and writing them
//! whole are one streaming `COPY` each instead of millions of statements.

use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::TryStreamExt;
use sqlx::PgConnection;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const INT8_OID: i32 = 20;
/// Bytes buffered before a chunk is sent.
const CHUNK: usize = 1 << 20;

/// Encodes rows in binary `COPY` format.
pub struct CopyWriter {
    buf: Vec<u8>,
}

impl Default for CopyWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyWriter {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension
        Self { buf }
    }

    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn text(&mut self, s: &str) -> &mut Self {
        self.buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    pub fn timestamptz(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.int8(t.timestamp_micros() - PG_EPOCH_MICROS)
    }

    pub fn int8_array(&mut self, values: &[i64]) -> &mut Self {
        let dims = if values.is_empty() { 0 } else { 1 };
        let len = 12 + dims * 8 + values.len() * 12;
        self.buf.extend_from_slice(&(len as i32).to_be_bytes());
        for word in [dims as i32, 0, INT8_OID] {
            self.buf.extend_from_slice(&word.to_be_bytes());
        }
        if dims == 1 {
            self.buf
                .extend_from_slice(&(values.len() as i32).to_be_bytes());
            self.buf.extend_from_slice(&1i32.to_be_bytes());
        }
        for v in values {
            self.buf.extend_from_slice(&8i32.to_be_bytes());
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
        self
    }

    fn full(&self) -> bool {
        self.buf.len() >= CHUNK
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096))
    }
}

/// Streams `rows` into `COPY <target> FROM STDIN (FORMAT binary)`, each encoded by
/// `encode`. Returns the number of rows written.
pub async fn copy_in<T>(
    conn: &mut PgConnection,
    target: &str,
    rows: impl IntoIterator<Item = T>,
    mut encode: impl FnMut(&mut CopyWriter, T),
) -> anyhow::Result<u64> {
    let statement = format!("COPY {target} FROM STDIN (FORMAT binary)");
    let mut copy = conn
        .copy_in_raw(&statement)
        .await
        .with_context(|| format!("starting {statement}"))?;
    let mut writer = CopyWriter::new();
    for row in rows {
        encode(&mut writer, row);
        if writer.full() {
            copy.send(writer.take())
                .await
                .context("sending COPY data")?;
        }
    }
    writer.buf.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(writer.take())
        .await
        .context("sending COPY data")?;
    copy.finish()
        .await
        .with_context(|| format!("finishing {statement}"))
}

/// One row of a binary `COPY ... TO STDOUT`, read field by field in order.
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> anyhow::Result<Option<&'a [u8]>> {
        let (len, rest) = split(self.data, 4)?;
        let len = i32::from_be_bytes(len.try_into()?);
        if len < 0 {
            self.data = rest;
            return Ok(None);
        }
        let (value, rest) = split(rest, len as usize)?;
        self.data = rest;
        Ok(Some(value))
    }

    fn required(&mut self) -> anyhow::Result<&'a [u8]> {
        self.field()?.context("unexpected NULL")
    }

    pub fn int8(&mut self) -> anyhow::Result<i64> {
        Ok(i64::from_be_bytes(self.required()?.try_into()?))
    }

    pub fn optional_text(&mut self) -> anyhow::Result<Option<&'a str>> {
        self.field()?
            .map(|v| std::str::from_utf8(v).context("text is not UTF-8"))
            .transpose()
    }

    pub fn text(&mut self) -> anyhow::Result<&'a str> {
        std::str::from_utf8(self.required()?).context("text is not UTF-8")
    }

    pub fn timestamptz(&mut self) -> anyhow::Result<DateTime<Utc>> {
        let micros = self.int8()? + PG_EPOCH_MICROS;
        DateTime::from_timestamp_micros(micros).context("timestamp out of range")
    }

    pub fn int8_array(&mut self) -> anyhow::Result<Vec<i64>> {
        let data = self.required()?;
        let (head, mut rest) = split(data, 12)?;
        let dims = i32::from_be_bytes(head[..4].try_into()?);
        if dims == 0 {
            return Ok(vec![]);
        }
        if dims != 1 {
            bail!("expected a one-dimensional array, got {dims} dimensions");
        }
        let (dim, after) = split(rest, 8)?;
        rest = after;
        let n = i32::from_be_bytes(dim[..4].try_into()?).max(0) as usize;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            let (len, after) = split(rest, 4)?;
            if i32::from_be_bytes(len.try_into()?) != 8 {
                bail!("array element is not a bigint");
            }
            let (value, after) = split(after, 8)?;
            values.push(i64::from_be_bytes(value.try_into()?));
            rest = after;
        }
        Ok(values)
    }
}

fn split(data: &[u8], n: usize) -> anyhow::Result<(&[u8], &[u8])> {
    if data.len() < n {
        bail!("truncated COPY data");
    }
    Ok(data.split_at(n))
}

/// A running `COPY (<query>) TO STDOUT (FORMAT binary)`, read a few rows at a time.
pub struct CopyOut<'c> {
    stream: BoxStream<'c, sqlx::Result<Bytes>>,
    query: String,
    pending: Vec<u8>,
    /// Bytes of `pending` already decoded.
    at: usize,
    header_read: bool,
    rows: u64,
}

impl<'c> CopyOut<'c> {
    pub async fn start(conn: &'c mut PgConnection, query: &str) -> anyhow::Result<Self> {
        let statement = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        let stream = conn
            .copy_out_raw(&statement)
            .await
            .with_context(|| format!("starting {statement}"))?;
        Ok(Self {
            stream,
            query: query.to_string(),
            pending: Vec::new(),
            at: 0,
            header_read: false,
            rows: 0,
        })
    }

    /// Decodes rows into `out` until it holds `max` or the data ends; false at the end.
    pub async fn read_into<T>(
        &mut self,
        out: &mut Vec<T>,
        max: usize,
        mut decode: impl FnMut(&mut Fields<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<bool> {
        loop {
            while out.len() < max {
                let Some(len) = row_len(&self.pending[self.at..])? else {
                    break;
                };
                if len == 0 {
                    return Ok(false);
                }
                let mut fields = Fields {
                    data: &self.pending[self.at + 2..self.at + len],
                };
                let row = decode(&mut fields)
                    .with_context(|| format!("decoding row {} of {}", self.rows + 1, self.query))?;
                out.push(row);
                self.rows += 1;
                self.at += len;
            }
            if out.len() >= max {
                return Ok(true);
            }
            let Some(chunk) = self.stream.try_next().await.context("reading COPY data")? else {
                return Ok(false);
            };
            self.pending.drain(..self.at);
            self.at = 0;
            self.pending.extend_from_slice(&chunk);
            if !self.header_read {
                if self.pending.len() < SIGNATURE.len() + 8 {
                    continue;
                }
                if &self.pending[..SIGNATURE.len()] != SIGNATURE {
                    bail!("not binary COPY data");
                }
                let extension = i32::from_be_bytes(self.pending[15..19].try_into()?) as usize;
                self.at = 19 + extension;
                self.header_read = true;
            }
        }
    }

    /// Rows decoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// Runs `COPY (<query>) TO STDOUT (FORMAT binary)` and decodes every row with `decode`.
pub async fn copy_out_all<T>(
    conn: &mut PgConnection,
    query: &str,
    mut decode: impl FnMut(&mut Fields<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut copy = CopyOut::start(conn, query).await?;
    let mut rows = Vec::new();
    while copy.read_into(&mut rows, usize::MAX, &mut decode).await? {}
    drain(copy).await?;
    Ok(rows)
}

/// Reads a finished copy's stream to its end, so its connection can be used again.
pub async fn drain(mut copy: CopyOut<'_>) -> anyhow::Result<()> {
    while copy
        .stream
        .try_next()
        .await
        .context("reading COPY data")?
        .is_some()
    {}
    Ok(())
}

/// The byte length of the row at the start of `data` (0 for the trailer), or `None` if
/// `data` does not hold it whole.
fn row_len(data: &[u8]) -> anyhow::Result<Option<usize>> {
    if data.len() < 2 {
        return Ok(None);
    }
    let fields = i16::from_be_bytes([data[0], data[1]]);
    if fields == -1 {
        return Ok(Some(0));
    }
    let mut at = 2;
    for _ in 0..fields {
        if data.len() < at + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes(data[at..at + 4].try_into()?);
        at += 4 + len.max(0) as usize;
        if data.len() < at {
            return Ok(None);
        }
    }
    Ok(Some(at))
}
