//! Accounts: registration, sign-in, password changes, the admin token, and the
//! settings of all of them ([`AccountSettings`]).
//!
//! Passwords are hashed with argon2id off the async threads, at most
//! `hashing_threads` at a time (each hash takes about 19 MiB, so this bound is what
//! keeps a burst of registrations from inflating memory; see [`hash_memory_returns`]
//! for how that memory goes back to the system afterwards). Sign-ins and
//! registrations pass the throttles of [`super::throttle`] first. Session tokens are
//! 256 random bits shown to the client once and stored only as their SHA-256, so a
//! copy of the data directory holds no usable token; their lifetime and revocation
//! are [`super::sessions`]' business.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::records::{SessionRecord, UserRecord};
use super::throttle::Throttled;
use super::{commit, DomainError, DomainResult, Social, Timestamp};
use crate::store::Store;

/// Sessions, tickets, throttles and password hashing (`[accounts]` in the config
/// file). The per-name sign-in limit is `[limits] login_failures` per
/// `login_window_s`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AccountSettings {
    /// A session token stops working this long after it was issued, in seconds.
    pub session_ttl_s: u64,
    /// A realtime ticket must be used within this, in milliseconds.
    pub ticket_ttl_ms: u64,
    /// Unused tickets held in memory at most, all callers together.
    pub max_tickets: usize,
    /// Unused tickets one user (or the admin) may hold at once.
    pub max_tickets_per_holder: usize,
    /// Failed (or still pending) sign-ins from one address within
    /// `login_ip_window_s` after which that address gets 429.
    pub login_failures_per_ip: u32,
    /// Window of `login_failures_per_ip`, in seconds.
    pub login_ip_window_s: u64,
    /// Registrations from one address within `registration_window_s` after which
    /// it gets 429.
    pub registrations_per_ip: u32,
    /// Window of `registrations_per_ip`, in seconds.
    pub registration_window_s: u64,
    /// Password hashes computed at once; `0` means the number of cores.
    pub hashing_threads: usize,
}

impl Default for AccountSettings {
    fn default() -> Self {
        AccountSettings {
            session_ttl_s: 30 * 24 * 3600,
            ticket_ttl_ms: 30_000,
            max_tickets: 10_000,
            max_tickets_per_holder: 16,
            login_failures_per_ip: 10,
            login_ip_window_s: 60,
            registrations_per_ip: 100,
            registration_window_s: 3600,
            hashing_threads: 0,
        }
    }
}

impl AccountSettings {
    /// Checks the values; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_ttl_s < 60 || self.session_ttl_s > 100 * 365 * 24 * 3600 {
            return Err("accounts.session_ttl_s must be between 60 and 3153600000".into());
        }
        if !(1_000..=600_000).contains(&self.ticket_ttl_ms) {
            return Err("accounts.ticket_ttl_ms must be between 1000 and 600000".into());
        }
        if self.max_tickets == 0 || self.max_tickets_per_holder == 0 {
            return Err("accounts.max_tickets and max_tickets_per_holder must be positive".into());
        }
        if self.login_failures_per_ip == 0
            || self.login_ip_window_s == 0
            || self.registrations_per_ip == 0
            || self.registration_window_s == 0
        {
            return Err("accounts: login_failures_per_ip, login_ip_window_s, \
                 registrations_per_ip and registration_window_s must be positive"
                .into());
        }
        if self.hashing_threads > 1024 {
            return Err("accounts.hashing_threads must be at most 1024".into());
        }
        Ok(())
    }

    /// Password hashes computed at once, `0` resolved to the number of cores.
    pub fn hashing_concurrency(&self) -> usize {
        match self.hashing_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// Makes the allocator give each password hash's memory back to the system when
/// the hash is done, process-wide, once.
///
/// argon2 allocates one ~19 MiB block per hash. glibc serves a block that large
/// with `mmap` at first, but raises its mmap threshold every time such a block is
/// freed, after which the blocks come from per-thread heaps that are never given
/// back: with blocking threads taking turns, 200 registrations left over 600 MiB
/// resident. A fixed threshold (which also turns the raising off) keeps every
/// block of 4 MiB or more a mapping of its own, returned on free; smaller ones come
/// from the heaps, as they would once glibc had raised its threshold anyway.
pub fn hash_memory_returns() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tunables; it is thread-safe and
        // takes no pointers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        }
    });
}

/// A user as rendered (API.md `User`).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

fn throttled(what: &str) -> impl Fn(Throttled) -> DomainError + '_ {
    move |t| DomainError::Throttled {
        message: format!(
            "too many {what} from this address; try again in {} s",
            t.retry_after_s
        ),
        retry_after_s: t.retry_after_s,
    }
}

impl Social {
    /// Whether `name` could be a name at all by its length; checked before a name
    /// is used as a key anywhere (a throttle's map included).
    fn name_length_ok(&self, name: &str) -> bool {
        let max = self.limits().max_name_chars;
        // Bytes first: counting the characters of a huge string is work too.
        !name.is_empty() && name.len() <= max.saturating_mul(4) && name.chars().count() <= max
    }

    fn check_name(&self, name: &str) -> DomainResult<()> {
        let max = self.limits().max_name_chars;
        if !self.name_length_ok(name) {
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

    pub(super) fn check_password(&self, password: &str) -> DomainResult<()> {
        let max = self.limits().max_password_bytes;
        if password.len() > max {
            return Err(DomainError::Invalid(format!(
                "password must be at most {max} bytes long"
            )));
        }
        if password.chars().count() < 8 {
            return Err(DomainError::Invalid(
                "password must be at least 8 characters long".into(),
            ));
        }
        Ok(())
    }

    /// Runs `job` on a blocking thread while holding one of the hashing permits. The
    /// permit moves into the job, so a caller that goes away (a client that
    /// disconnects) cannot free its place while the hash is still running.
    async fn hashing<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> DomainResult<T> {
        let permit = Arc::clone(&self.inner.hashing)
            .acquire_owned()
            .await
            .map_err(|_| DomainError::Store(crate::store::Error::Closed))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| DomainError::Store(crate::store::Error::Sled(e.to_string())))
    }

    pub(super) async fn hash_password(&self, password: String) -> DomainResult<String> {
        self.hashing(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|e| DomainError::Invalid(format!("password cannot be hashed: {e}")))
    }

    pub(super) async fn verify_password(&self, password: String, hash: String) -> bool {
        self.hashing(move || {
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

    /// Creates an account and its first session for a client at `from`, under the
    /// per-address registration limit.
    pub async fn register_from(
        &self,
        name: String,
        password: String,
        from: IpAddr,
    ) -> DomainResult<Session> {
        self.check_name(&name)?;
        self.check_password(&password)?;
        // Only attempts that will cost a hash are counted; the place is not given
        // back, since the hashing is the cost being limited.
        self.inner
            .registrations
            .reserve(from, Instant::now())
            .map_err(throttled("registrations"))?;
        self.register(name, password).await
    }

    /// Creates an account and its first session, without the registration limit
    /// (for the server's own callers: demo data, tools). `Conflict` if the name is
    /// taken (names are unique regardless of case).
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
        self.sweep_sessions_now_and_then();
        Ok(Session { user, token })
    }

    /// Checks `password` against the account `name` for a client at `from`, under
    /// both sign-in throttles: the address's place is reserved before the password
    /// is verified and given back only if it was right.
    pub(super) async fn check_credentials(
        &self,
        name: &str,
        password: String,
        from: IpAddr,
    ) -> DomainResult<UserRecord> {
        let bad = || DomainError::Unauthorized("wrong name or password".into());
        let now = Instant::now();
        let place = self
            .inner
            .logins
            .reserve(from, now)
            .map_err(throttled("failed sign-ins"))?;
        // Checked before the name becomes a key; such a name cannot exist, and the
        // attempt stays counted against the address.
        if !self.name_length_ok(name) || password.len() > self.limits().max_password_bytes {
            return Err(bad());
        }
        let key = name_key(name);
        let attempt = match self.inner.names.begin(&key, from, now) {
            Ok(a) => a,
            Err(t) => {
                // Refused unchecked: no guess was made, so the address keeps its place.
                self.inner.logins.release(place);
                return Err(DomainError::Throttled {
                    message: format!(
                        "too many failed sign-ins for this name from this address; try again in {} s",
                        t.retry_after_s
                    ),
                    retry_after_s: t.retry_after_s,
                });
            }
        };
        let tables = self.store().tables();
        let record = match tables.user_names.get(&key)? {
            Some(id) => tables.users.get(&id)?,
            None => None,
        };
        let hash = record
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |r| r.password_hash.clone());
        let verified = self.verify_password(password, hash).await;
        match record.filter(|_| verified) {
            Some(record) => {
                self.inner.logins.release(place);
                self.inner.names.succeeded(attempt);
                Ok(record)
            }
            None => {
                self.inner.names.failed(attempt);
                Err(bad())
            }
        }
    }

    /// Checks a name and password from a client at `from` and opens a new session.
    /// Too many failures answer `Throttled` (see [`super::throttle`]).
    pub async fn login(
        &self,
        name: String,
        password: String,
        from: IpAddr,
    ) -> DomainResult<Session> {
        let record = self.check_credentials(&name, password, from).await?;
        let token = new_token();
        let hash = token_hash(&token);
        let session = SessionRecord {
            user_id: record.id,
            created_at: Timestamp::now(),
        };
        self.store()
            .write(move |tx| tx.insert(&tx.t().tokens, &hash, &session))
            .await?;
        self.sweep_sessions_now_and_then();
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
///
/// The token itself is never stored: the data directory keeps its SHA-256 in
/// `meta["admin_token_sha256"]`, so a lost token cannot be shown again, only replaced
/// ([`AdminToken::rotate`], `likewise admin-token --rotate`). A token given by the
/// operator (`LIKEWISE_ADMIN_TOKEN`, the config file) is used as it is and never
/// stored or rotated.
#[derive(Clone)]
pub struct AdminToken {
    hash: std::sync::Arc<std::sync::RwLock<[u8; 32]>>,
    configured: bool,
}

/// Why the admin token could not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The operator chose the token; it is changed where it was chosen.
    #[error(
        "the admin token is set by LIKEWISE_ADMIN_TOKEN or the config file's admin_token: change it there"
    )]
    Configured,
    /// The new hash could not be stored; the old token still works.
    #[error("the new admin token could not be stored (the old one still works): {0}")]
    Store(#[from] crate::store::Error),
}

impl AdminToken {
    const META_KEY: &'static str = "admin_token_sha256";

    fn with_hash(hash: [u8; 32], configured: bool) -> Self {
        Self {
            hash: std::sync::Arc::new(std::sync::RwLock::new(hash)),
            configured,
        }
    }

    /// Uses the operator's token if given; otherwise the one stored in the data
    /// directory; otherwise generates one, stores its hash, and returns the token in
    /// clear so that the caller can print it exactly once.
    pub fn load_or_create(
        store: &Store,
        given: Option<&str>,
    ) -> Result<(Self, Option<String>), crate::store::Error> {
        if let Some(token) = given {
            return Ok((Self::with_hash(token_hash(token), true), None));
        }
        if let Some(hash) = Self::stored(store)? {
            return Ok((Self::with_hash(hash, false), None));
        }
        let token = new_token();
        let hash = token_hash(&token);
        store
            .tables()
            .meta
            .insert_at_startup(&Self::META_KEY.to_owned(), &hash.to_vec())?;
        Ok((Self::with_hash(hash, false), Some(token)))
    }

    /// The stored hash, if the data directory has one.
    pub fn stored(store: &Store) -> Result<Option<[u8; 32]>, crate::store::Error> {
        Ok(store
            .tables()
            .meta
            .get(&Self::META_KEY.to_owned())?
            .and_then(|stored| <[u8; 32]>::try_from(stored.as_slice()).ok()))
    }

    /// Replaces the token: stores the new one's hash (flushed) and only then makes it
    /// the one that matches, so a failure leaves the old token working. Returns the
    /// new token in clear, to be shown once.
    pub async fn rotate(&self, store: &Store) -> Result<String, RotateError> {
        if self.configured {
            return Err(RotateError::Configured);
        }
        let token = new_token();
        let hash = token_hash(&token);
        let key = Self::META_KEY.to_owned();
        store
            .write(move |tx| tx.insert(&tx.t().meta, &key, &hash.to_vec()))
            .await?;
        store.flush().await?;
        *self.hash.write().unwrap_or_else(|e| e.into_inner()) = hash;
        Ok(token)
    }

    /// Whether `token` is the admin token (constant time).
    pub fn matches(&self, token: &str) -> bool {
        let candidate = token_hash(token);
        let hash = *self.hash.read().unwrap_or_else(|e| e.into_inner());
        candidate
            .iter()
            .zip(hash.iter())
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
}
