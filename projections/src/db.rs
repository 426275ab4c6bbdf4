//! Connecting to PostgreSQL, for every binary: the default URL, the pool's set-up, and
//! URLs as logs and errors may show them.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Where murmur's binaries look when `DATABASE_URL` is not set. No TLS on loopback: it costs
/// CPU, and sqlx 0.8 over rustls can hang in a large COPY.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/murmur?sslmode=disable";

/// `url` with its credentials replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The connection options `url` names.
pub fn options(url: &str) -> anyhow::Result<PgConnectOptions> {
    url.parse()
        .with_context(|| format!("parsing the database URL {}", redact(url)))
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
}

/// A pool of at most `max_connections` over `options`; waits at most 10 s for a connection.
pub async fn pool(
    options: PgConnectOptions,
    max_connections: u32,
    url: &str,
) -> anyhow::Result<PgPool> {
    pool_options(max_connections)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact(url)))
}

/// [`pool`], connecting only when a connection is first wanted (a server that may be away
/// at start-up).
pub fn lazy_pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    pool_options(max_connections).connect_lazy_with(options)
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}
