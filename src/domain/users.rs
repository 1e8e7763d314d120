//! Accounts, sessions and the admin token.
//!
//! Passwords are hashed with argon2id (off the async threads, a few at a time);
//! session tokens are 256 random bits shown to the client once and stored only as
//! their SHA-256, so a copy of the data directory holds no usable token.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::records::{SessionRecord, UserRecord};
use super::{commit, DomainError, DomainResult, Social, Timestamp};
use crate::store::Store;

/// A user as rendered (API.md `User`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    /// Id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Registration time.
    pub created_at: Timestamp,
}

impl From<&UserRecord> for User {
    fn from(r: &UserRecord) -> Self {
        User {
            id: r.id,
            name: r.name.clone(),
            created_at: r.created_at,
        }
    }
}

/// A signed-in user and the token that proves it.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The user.
    pub user: User,
    /// Bearer token; shown once, stored hashed.
    pub token: String,
}

/// A new random token: 32 bytes from the OS generator, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// SHA-256 of a token, the form in which tokens are stored and compared.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// Counts failed sign-ins per name and refuses further tries for a while after too
/// many, so passwords cannot be guessed at argon2's full speed.
pub(super) struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub(super) fn new(max_failures: u32, window_s: u64) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window: Duration::from_secs(window_s.max(1)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &str) -> DomainResult<()> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, since)) = map.get(key) {
            if *n >= self.max_failures && since.elapsed() < self.window {
                let wait = self.window.saturating_sub(since.elapsed()).as_secs() + 1;
                return Err(DomainError::RateLimited(format!(
                    "too many failed sign-ins for this name; try again in {wait} s"
                )));
            }
        }
        Ok(())
    }

    fn failed(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = map.entry(key.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// A hash to verify against when the name is unknown, so that a wrong name and a
/// wrong password take the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(b"likewise-dummy-password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl Social {
    fn check_name(&self, name: &str) -> DomainResult<()> {
        let max = self.limits().max_name_chars;
        let n = name.chars().count();
        if n == 0 || n > max {
            return Err(DomainError::Invalid(format!(
                "name must be 1 to {max} characters long"
            )));
        }
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(char::is_alphanumeric);
        if !first_ok
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.".contains(c))
        {
            return Err(DomainError::Invalid(
                "name may contain letters, digits, '_', '-' and '.', and must start with a letter or digit".into(),
            ));
        }
        Ok(())
    }

    fn check_password(&self, password: &str) -> DomainResult<()> {
        let max = self.limits().max_password_bytes;
        if password.chars().count() < 8 {
            return Err(DomainError::Invalid(
                "password must be at least 8 characters long".into(),
            ));
        }
        if password.len() > max {
            return Err(DomainError::Invalid(format!(
                "password must be at most {max} bytes long"
            )));
        }
        Ok(())
    }

    async fn hash_password(&self, password: String) -> DomainResult<String> {
        let _permit = self.inner.hashing.acquire().await;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(|e| DomainError::Store(crate::store::Error::Sled(e.to_string())))?
        .map_err(|e| DomainError::Invalid(format!("password cannot be hashed: {e}")))
    }

    async fn verify_password(&self, password: String, hash: String) -> bool {
        let _permit = self.inner.hashing.acquire().await;
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// Creates an account and its first session. `Conflict` if the name is taken
    /// (names are unique regardless of case).
    pub async fn register(&self, name: String, password: String) -> DomainResult<Session> {
        self.check_name(&name)?;
        self.check_password(&password)?;
        let key = name_key(&name);
        if self.store().tables().user_names.contains(&key)? {
            return Err(DomainError::Conflict(format!("the name {name:?} is taken")));
        }
        let password_hash = self.hash_password(password).await?;
        let token = new_token();
        let hash = token_hash(&token);
        let user = commit(self.store(), move |tx| {
            let t = tx.t();
            if tx.contains(&t.user_names, &key)? {
                return Ok(Err(DomainError::Conflict(format!(
                    "the name {name:?} is taken"
                ))));
            }
            let record = UserRecord {
                id: tx.next_id()?,
                name: name.clone(),
                password_hash: password_hash.clone(),
                created_at: Timestamp::now(),
            };
            tx.insert(&t.users, &record.id, &record)?;
            tx.insert(&t.user_names, &key, &record.id)?;
            let session = SessionRecord {
                user_id: record.id,
                created_at: record.created_at,
            };
            tx.insert(&t.tokens, &hash, &session)?;
            Ok(Ok(User::from(&record)))
        })
        .await?;
        Ok(Session { user, token })
    }

    /// Checks a name and password and opens a new session. Too many failures for one
    /// name within the configured window answer `RateLimited`.
    pub async fn login(&self, name: String, password: String) -> DomainResult<Session> {
        let key = name_key(&name);
        self.inner.logins.check(&key)?;
        let bad = || DomainError::Unauthorized("wrong name or password".into());
        if password.len() > self.limits().max_password_bytes {
            return Err(bad());
        }
        let tables = self.store().tables();
        let record = match tables.user_names.get(&key)? {
            Some(id) => tables.users.get(&id)?,
            None => None,
        };
        let hash = record
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |r| r.password_hash.clone());
        let verified = self.verify_password(password, hash).await;
        let Some(record) = record.filter(|_| verified) else {
            self.inner.logins.failed(&key);
            return Err(bad());
        };
        self.inner.logins.succeeded(&key);
        let token = new_token();
        let hash = token_hash(&token);
        let session = SessionRecord {
            user_id: record.id,
            created_at: Timestamp::now(),
        };
        self.store()
            .write(move |tx| tx.insert(&tx.t().tokens, &hash, &session))
            .await?;
        Ok(Session {
            user: User::from(&record),
            token,
        })
    }

    /// Whether `password` is the password of the account named `name` (false when
    /// there is no such account). Opens no session and counts no failure: for the
    /// server's own checks, never for a caller's guesses.
    pub async fn password_matches(&self, name: &str, password: &str) -> DomainResult<bool> {
        let tables = self.store().tables();
        let record = match tables.user_names.get(&name_key(name))? {
            Some(id) => tables.users.get(&id)?,
            None => None,
        };
        Ok(match record {
            Some(r) => {
                self.verify_password(password.to_owned(), r.password_hash)
                    .await
            }
            None => false,
        })
    }

    /// The user a bearer token belongs to, if any.
    pub fn authenticate(&self, token: &str) -> DomainResult<Option<User>> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let tables = self.store().tables();
        let Some(session) = tables.tokens.get(&token_hash(token))? else {
            return Ok(None);
        };
        Ok(tables.users.get(&session.user_id)?.as_ref().map(User::from))
    }

    /// A user by id.
    pub fn user(&self, id: u64) -> DomainResult<User> {
        self.store()
            .tables()
            .users
            .get(&id)?
            .as_ref()
            .map(User::from)
            .ok_or(DomainError::NotFound("user"))
    }
}

/// The admin token's hash, kept in memory for constant-time comparison.
#[derive(Clone)]
pub struct AdminToken {
    hash: [u8; 32],
}

impl AdminToken {
    const META_KEY: &'static str = "admin_token_sha256";

    /// Uses the operator's token if given; otherwise the one stored in the data
    /// directory; otherwise generates one, stores its hash, and returns the token in
    /// clear so that the caller can print it exactly once.
    pub fn load_or_create(
        store: &Store,
        given: Option<&str>,
    ) -> Result<(Self, Option<String>), crate::store::Error> {
        if let Some(token) = given {
            return Ok((
                Self {
                    hash: token_hash(token),
                },
                None,
            ));
        }
        let meta = &store.tables().meta;
        let key = Self::META_KEY.to_owned();
        if let Some(stored) = meta.get(&key)? {
            if let Ok(hash) = <[u8; 32]>::try_from(stored.as_slice()) {
                return Ok((Self { hash }, None));
            }
        }
        let token = new_token();
        let hash = token_hash(&token);
        meta.insert_at_startup(&key, &hash.to_vec())?;
        Ok((Self { hash }, Some(token)))
    }

    /// Whether `token` is the admin token (constant time).
    pub fn matches(&self, token: &str) -> bool {
        let candidate = token_hash(token);
        candidate
            .iter()
            .zip(self.hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn limiter_blocks_after_failures_and_clears_on_success() {
        let l = LoginLimiter::new(2, 60);
        l.failed("bob");
        assert!(l.check("bob").is_ok());
        l.failed("bob");
        assert!(matches!(l.check("bob"), Err(DomainError::RateLimited(_))));
        assert!(l.check("alice").is_ok());
        l.succeeded("bob");
        assert!(l.check("bob").is_ok());
    }
}
