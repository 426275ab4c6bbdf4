//! Credentials: HS256 bearer tokens whose subject is the user id, and argon2id password
//! hashes (computed off the async runtime, at most a few at a time).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use murmur_domain::UserId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (JWT subjects are strings).
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks bearer tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn issue(&self, user: UserId) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing a token")
    }

    /// The user a token speaks for; `None` if it is forged, expired or malformed.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        data.claims.sub.parse().ok().filter(|id: &UserId| *id > 0)
    }
}

/// The signing secret: the configured one, else one generated once and kept in `data_dir`.
pub fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        check_secret_length("MURMUR_JWT_SECRET", secret)?;
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt-secret");
    if let Some(secret) = read_secret(&path)? {
        return Ok(secret);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let secret: String = {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    // Written whole and synced under a name of its own, readable by the owner only, then
    // linked into place: linking fails if another process got there first, and then both
    // use that one's secret. A crash never leaves a half-written secret behind.
    let tmp = data_dir.join(format!("jwt-secret.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = write_private(&tmp, secret.as_bytes());
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    let _ = std::fs::remove_file(&tmp);
    if !linked.with_context(|| format!("writing {}", path.display()))? {
        return read_secret(&path)?.with_context(|| format!("{} appeared empty", path.display()));
    }
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(secret.into_bytes())
}

/// The shortest secret accepted for signing tokens or guarding the audit.
pub const MIN_SECRET_BYTES: usize = 32;

/// Refuses a configured secret too short to resist guessing.
pub fn check_secret_length(setting: &str, secret: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        secret.len() >= MIN_SECRET_BYTES,
        "{setting} is {} bytes long; use at least {MIN_SECRET_BYTES} random bytes \
         (e.g. `openssl rand -hex 32`)",
        secret.len()
    );
    Ok(())
}

/// The secret stored at `path`, if there is one.
fn read_secret(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => Ok(Some(secret.trim().as_bytes().to_vec())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Creates `path` (which must not exist) with mode 0600 and `contents`, synced to disk.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Hashes and checks passwords with argon2id (the argon2 crate's defaults: 19 MiB, t=2, p=1).
///
/// Hashing is CPU- and memory-heavy, so it runs on the blocking pool, and a semaphore keeps
/// a burst of registrations or logins from running more hashes at once than there are cores.
pub struct Passwords {
    permits: tokio::sync::Semaphore,
    /// The hash checked when a login names an unknown handle, so that it takes as long as
    /// one with a wrong password.
    dummy: tokio::sync::OnceCell<String>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            permits: tokio::sync::Semaphore::new(cores),
            dummy: tokio::sync::OnceCell::new(),
        }
    }
}

impl Passwords {
    /// The PHC string (`$argon2id$v=19$...`) of `password` under a fresh random salt.
    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let password = password.to_owned();
        self.blocking(move || {
            use argon2::password_hash::{PasswordHasher, SaltString};
            use rand::Rng;
            let salt_bytes: [u8; 16] = rand::rng().random();
            let salt = SaltString::encode_b64(&salt_bytes)
                .map_err(|e| anyhow::anyhow!("encoding a salt: {e}"))?;
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
        .await
    }

    /// Whether `password` matches `hash`. A malformed stored hash never matches.
    pub async fn verify(&self, password: &str, hash: &str) -> anyhow::Result<bool> {
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.blocking(move || {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            let Ok(parsed) = PasswordHash::new(&hash) else {
                tracing::error!("a stored password hash is malformed");
                return Ok(false);
            };
            Ok(argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    /// Spends the time of a real check against a hash nobody's password matches; always false.
    pub async fn verify_dummy(&self, password: &str) -> anyhow::Result<bool> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                use rand::Rng;
                let random: [u8; 16] = rand::rng().random();
                let unguessable: String = random.iter().map(|b| format!("{b:02x}")).collect();
                self.hash(&unguessable).await
            })
            .await?;
        self.verify(password, dummy).await?;
        Ok(false)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("password hashing is shut down")?;
        tokio::task::spawn_blocking(work)
            .await
            .context("the password hashing task failed")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("murmur-secret-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn a_generated_secret_is_private_and_shared_by_processes_starting_together() {
        let dir = scratch_dir();
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_secret(None, &dir).unwrap()))
                .collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|s| *s == secrets[0]));
        assert_eq!(secrets[0].len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("jwt-secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Nothing else is left in the directory, and a restart reads the same secret.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(load_or_create_secret(None, &dir).unwrap(), secrets[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_configured_secrets_are_refused() {
        let dir = scratch_dir();
        let error = load_or_create_secret(Some("short"), &dir).unwrap_err();
        assert!(error.to_string().contains("MURMUR_JWT_SECRET"), "{error}");
        let long = "s".repeat(MIN_SECRET_BYTES);
        assert_eq!(
            load_or_create_secret(Some(&long), &dir).unwrap(),
            long.as_bytes()
        );
        assert!(check_secret_length("MURMUR_ADMIN_TOKEN", &"t".repeat(31)).is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let keys = TokenKeys::new(b"secret", Duration::from_secs(60));
        let token = keys.issue(42).unwrap();
        assert_eq!(keys.verify(&token), Some(42));
        let other = TokenKeys::new(b"other", Duration::from_secs(60));
        assert_eq!(other.verify(&token), None);
        assert_eq!(keys.verify("not.a.token"), None);
    }

    #[test]
    fn expired_tokens_fail() {
        let keys = TokenKeys::new(b"secret", Duration::from_secs(60));
        let claims = Claims {
            sub: "42".into(),
            iat: 0,
            exp: chrono::Utc::now().timestamp() - 5,
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(keys.verify(&token), None);
    }

    #[test]
    fn generated_secret_is_kept() {
        let dir = std::env::temp_dir().join(format!("murmur-secret-{}", std::process::id()));
        let first = load_or_create_secret(None, &dir).unwrap();
        let second = load_or_create_secret(None, &dir).unwrap();
        assert_eq!(first, second);
        let given = "g".repeat(MIN_SECRET_BYTES);
        assert_eq!(
            load_or_create_secret(Some(&given), &dir).unwrap(),
            given.as_bytes()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let passwords = Passwords::default();
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct horse"));
        assert!(passwords.verify("correct horse", &hash).await.unwrap());
        assert!(!passwords.verify("wrong horse", &hash).await.unwrap());
        assert!(!passwords
            .verify("correct horse", "not a hash")
            .await
            .unwrap());
        assert!(!passwords.verify_dummy("correct horse").await.unwrap());
        // Same password, fresh salt: a different hash.
        assert_ne!(passwords.hash("correct horse").await.unwrap(), hash);
    }
}
