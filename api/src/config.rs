//! Server configuration: command-line flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use murmur_projections::args::SharedArgs;
use murmur_projections::state::feeds::Folding;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub shared: SharedArgs,

    /// A read node's hot standby of that database (with --no-projectors only): where the node
    /// loads its memory image, follows the log and reads follower lists and the audit log.
    /// Commands still go to --database-url, the primary.
    #[arg(long, env = "READ_DATABASE_URL", hide_env_values = true)]
    pub read_database_url: Option<String>,

    /// Address the HTTP server listens on.
    #[arg(long, env = "MURMUR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where murmur keeps what it generates once (the JWT secret when none is given).
    #[arg(long, env = "MURMUR_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Secret for signing bearer tokens (HS256). Generated into the data directory if unset.
    #[arg(long, env = "MURMUR_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of a bearer token, e.g. `7d`, `12h`, `30m`, `90s`.
    #[arg(long, env = "MURMUR_TOKEN_TTL", default_value = "7d", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Bearer token that unlocks the audit routes. Audit is refused when unset.
    #[arg(long, env = "MURMUR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "MURMUR_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,

    /// Do not run projectors in this process (run `murmur project` separately).
    #[arg(long, env = "MURMUR_NO_PROJECTORS")]
    pub no_projectors: bool,

    /// How often projectors look at the log when nothing woke them (commits by this process
    /// wake them at once, other processes' by a notification).
    #[arg(long, env = "MURMUR_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// How long the projections' durable copies may trail memory while events keep coming
    /// (commands' commits wait behind a flush's WAL; whether smaller, more frequent flushes
    /// shorten that wait is not measured yet).
    #[arg(long, env = "MURMUR_FLUSH_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Inbox journal entries that start a folding round (ARCHITECTURE, "Inboxes are
    /// journaled"): larger makes rounds rarer (commands fell by a third while one ran) and
    /// a restart slower (a load replays about 1.6 s per million entries).
    #[arg(long, env = "MURMUR_INBOX_FOLD_AFTER", default_value_t = Folding::default().after)]
    pub inbox_fold_after: usize,

    /// Most connections served at once (more wait in the listen backlog).
    #[arg(long, env = "MURMUR_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// A connection whose request head has not arrived after this long is closed.
    #[arg(long, env = "MURMUR_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// A request (body included) not answered after this long gets 408.
    #[arg(long, env = "MURMUR_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// On shutdown, how long open connections may take to finish their requests.
    #[arg(long, env = "MURMUR_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Parses `7d`, `12h`, `30m`, `90s`, `250ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 7d, 12h, 30m, 90s or 250ms"))?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("{text:?}: unit must be one of ms, s, m, h, d")),
    };
    match millis {
        Some(0) => Err("a duration must be positive".into()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("{text:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0ms").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("").is_err());
    }
}
