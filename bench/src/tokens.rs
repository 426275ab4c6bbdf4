//! Bearer tokens for benchmark users, minted with the server's secret by the API's own
//! `TokenKeys`, written to the file the wrk scripts read: one `<user id> <token>` line per user.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use murmur_api::auth::TokenKeys;
use murmur_domain::UserId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tokens last a week, like the API's default `MURMUR_TOKEN_TTL`.
pub const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `k` distinct users of `1..=users`, user 1 first, the rest uniformly at random.
pub fn sample_users(users: u64, k: u64, seed: u64) -> Vec<UserId> {
    let k = k.min(users);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x746f_6b65_6e73);
    let mut chosen = std::collections::HashSet::from([1]);
    let mut sample = vec![1];
    while (sample.len() as u64) < k {
        let u = rng.random_range(1..=users as UserId);
        if chosen.insert(u) {
            sample.push(u);
        }
    }
    sample
}

/// Writes `<user id> <token>` lines for `users` to `path`.
pub fn write_file(path: &Path, secret: &str, users: &[UserId]) -> Result<()> {
    let keys = TokenKeys::new(secret.as_bytes(), TTL);
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for &user in users {
        writeln!(out, "{user} {}", keys.issue(user)?)?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a token file back: `(user id, token)` pairs.
pub fn read_file(path: &Path) -> Result<Vec<(UserId, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (id, token) = line
                .split_once(' ')
                .with_context(|| format!("bad token line {line:?}"))?;
            Ok((id.parse().context("bad user id")?, token.trim().to_string()))
        })
        .collect()
}
