//! The edge's realtime [`Backend`]: every question a connection asks is
//! answered by the primary, through its `/api/cluster/…` routes
//! ([`crate::http::cluster`]) with the admin token.
//!
//! - **Tokens** are cached for `[edge] auth_cache_ms` once the primary accepted
//!   them (keyed by the token's SHA-256, never the token): a client reconnecting
//!   costs the primary nothing, and a revoked token stops opening connections
//!   on this edge within that window. Refusals are not cached, so a token that
//!   starts working (a new sign-in) works at once.
//! - **Tickets** are one-use: each is spent on the primary, never cached.
//! - **Post rooms** and **presence choices** are cached for the same window.
//! - **Replays** are read page by page from the primary, never cached, at most
//!   [`CONCURRENT_REPLAYS`] pages at once (after the bus lost publications,
//!   every session of the edge replays at the same moment).
//!
//! Every question has a deadline (`[edge] lookup_timeout_ms`); past it, or with
//! the primary down, the answer is `unavailable`: an upgrade gets 503, a
//! Socket.IO CONNECT a `connect_error`, a replay closes with 1013 so that the
//! client resumes with `since` later. Caches hold at most
//! [`CACHE_ENTRIES`] entries each.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::domain::{token_hash, Notification};
use crate::http::cluster::{Authenticated, PostExists, ReplayPage, Visible};
use crate::http::error::ApiError;
use crate::http::realtime::Backend;
use crate::rooms::PostLookup;

/// Most entries of each cache; a full cache first forgets what has expired,
/// then everything (the primary then answers again).
pub const CACHE_ENTRIES: usize = 100_000;

/// A map whose entries expire.
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    ttl: Duration,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    fn new(ttl: Duration) -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &K) -> Option<V> {
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get(key) {
            Some((until, v)) if *until > now => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, value));
    }
}

/// Asks the primary.
pub struct Primary {
    client: reqwest::Client,
    base: String,
    admin_token: String,
    tokens: Cache<[u8; 32], u64>,
    posts: Cache<u64, bool>,
    visible: Cache<u64, bool>,
    /// Replay pages asked at once: after the bus lost publications every
    /// session of the edge replays, and the primary answers them a few at a time.
    replays: tokio::sync::Semaphore,
}

/// Replay pages an edge asks the primary for at once.
pub const CONCURRENT_REPLAYS: usize = 16;

impl Primary {
    /// A client of the primary at `base` (`http://host:port`), asking with
    /// `admin_token`, caching for `cache_ttl`, each question within `timeout`.
    pub fn new(
        base: String,
        admin_token: String,
        cache_ttl: Duration,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Primary> {
        use anyhow::Context;
        // reqwest needs a TLS provider installed even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("likewise-edge/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the edge's HTTP client")?;
        Ok(Primary {
            client,
            base,
            admin_token,
            tokens: Cache::new(cache_ttl),
            posts: Cache::new(cache_ttl),
            visible: Cache::new(cache_ttl),
            replays: tokio::sync::Semaphore::new(CONCURRENT_REPLAYS),
        })
    }

    /// Sends a request and reads its JSON answer, or turns the primary's error
    /// (in the API's shape) back into the same [`ApiError`].
    async fn ask<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let unreachable = |e: reqwest::Error| {
            ApiError::Unavailable(format!("the primary cannot answer now ({e}); try again"))
        };
        let response = request
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status.is_success() {
            return response.json::<T>().await.map_err(unreachable);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("the primary refused")
            .to_owned();
        Err(match status {
            StatusCode::BAD_REQUEST => ApiError::BadRequest(message),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(message),
            StatusCode::FORBIDDEN => ApiError::Forbidden(message),
            StatusCode::NOT_FOUND => ApiError::NotFound(message),
            _ => ApiError::Unavailable(format!("the primary answered {status}: {message}")),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn authenticate(&self, body: impl Serialize) -> Result<u64, ApiError> {
        let request = self.client.post(self.url("/api/cluster/auth")).json(&body);
        let answer: Authenticated = self.ask(request).await?;
        Ok(answer.user_id)
    }
}

impl Backend for Primary {
    fn user_for_token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<u64, ApiError>> {
        Box::pin(async move {
            let key = token_hash(token);
            if let Some(user) = self.tokens.get(&key) {
                return Ok(user);
            }
            let user = self
                .authenticate(serde_json::json!({"token": token}))
                .await?;
            self.tokens.put(key, user);
            Ok(user)
        })
    }

    fn user_for_ticket<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<u64, ApiError>> {
        Box::pin(self.authenticate(serde_json::json!({"ticket": ticket})))
    }

    fn notifications_after(
        &self,
        user: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Notification>, ApiError>> {
        Box::pin(async move {
            let _turn = self
                .replays
                .acquire()
                .await
                .map_err(|_| ApiError::Unavailable("the edge is shutting down".into()))?;
            let path =
                format!("/api/cluster/notifications?user_id={user}&after={after}&limit={limit}");
            let request = self.client.get(self.url(&path));
            let page: ReplayPage = self.ask(request).await?;
            Ok(page.notifications)
        })
    }

    fn post_lookup(&self, id: u64) -> BoxFuture<'_, PostLookup> {
        Box::pin(async move {
            if let Some(exists) = self.posts.get(&id) {
                return if exists {
                    PostLookup::Exists
                } else {
                    PostLookup::Missing
                };
            }
            let request = self
                .client
                .get(self.url(&format!("/api/cluster/posts/{id}")));
            match self.ask::<PostExists>(request).await {
                Ok(_) => {
                    self.posts.put(id, true);
                    PostLookup::Exists
                }
                Err(ApiError::NotFound(_)) => {
                    self.posts.put(id, false);
                    PostLookup::Missing
                }
                Err(e) => {
                    tracing::warn!(error = %e, post = id, "asking the primary about a post failed");
                    PostLookup::Failed(e.to_string())
                }
            }
        })
    }

    fn presence_visible(&self, user: u64) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if let Some(v) = self.visible.get(&user) {
                return v;
            }
            let request = self
                .client
                .get(self.url(&format!("/api/cluster/users/{user}/presence")));
            match self.ask::<Visible>(request).await {
                Ok(answer) => {
                    self.visible.put(user, answer.visible);
                    answer.visible
                }
                Err(e) => {
                    // Not shown rather than shown against the user's choice.
                    tracing::warn!(error = %e, user, "asking the primary about presence failed");
                    false
                }
            }
        })
    }

    fn holds_store(&self) -> bool {
        false
    }

    fn visible_now(&self, _user: u64) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_entries_expire_and_a_full_cache_makes_room() {
        let cache = Cache::new(Duration::from_millis(30));
        cache.put(1u64, true);
        assert_eq!(cache.get(&1), Some(true));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&1), None, "expired");
        for k in 0..CACHE_ENTRIES as u64 + 10 {
            cache.put(k, true);
        }
        assert!(cache.lock().len() <= CACHE_ENTRIES);
        let off = Cache::new(Duration::ZERO);
        off.put(1u64, true);
        assert_eq!(off.get(&1), None, "a zero window caches nothing");
    }
}
