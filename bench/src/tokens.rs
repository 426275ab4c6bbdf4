//! Bearer tokens for benchmark users, minted with the server's secret the way murmur's API
//! does (JWT HS256, claims `sub`/`iat`/`exp`), written to the file the wrk scripts read:
//! one `<user id> <token>` line per user.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use jsonwebtoken::{encode, EncodingKey, Header};
use murmur_domain::UserId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Tokens last a week, like the API's default `MURMUR_TOKEN_TTL`.
pub const TTL_SECONDS: i64 = 7 * 24 * 3600;

#[derive(Serialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
}

/// A token for `user` signed with `secret`.
pub fn mint(secret: &str, user: UserId) -> Result<String> {
    let iat = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: user.to_string(),
        iat,
        exp: iat + TTL_SECONDS,
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing a token")
}

/// `k` distinct users of `1..=users`, user 1 first, the rest uniformly at random.
pub fn sample_users(users: u64, k: u64, seed: u64) -> Vec<UserId> {
    let k = k.min(users);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x746f_6b65_6e73);
    let mut chosen = std::collections::BTreeSet::new();
    let mut sample = vec![1];
    chosen.insert(1);
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
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for &user in users {
        writeln!(out, "{user} {}", mint(secret, user)?)?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}
