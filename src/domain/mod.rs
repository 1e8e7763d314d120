//! The social operations: register, sign in, post, comment, like, collect, share,
//! message, read notifications; and the read-only views clients render them with.
//!
//! Each operation validates its input, then submits ONE change to the store's writer
//! that writes its records together with the tasks it causes ([`effects`] is the only
//! place deciding which tasks an action enqueues). A rejected operation changes
//! nothing. This module knows no HTTP and no fan-out: transports call it and render
//! what it returns.

mod directory;
pub mod effects;
mod messages;
mod notifications;
mod posts;
pub mod records;
mod users;
mod views;

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{Limits, QueueSettings, WebhookSettings};
use crate::store::{self, Store};

pub use directory::PostMarks;
pub use effects::NotifyArgs;
pub use notifications::NotificationPage;
pub use posts::{CollectOutcome, LikeOutcome, ShareOutcome};
pub use users::{new_token, AdminToken, Session, User};
pub use views::ViewCounter;

/// Why an operation was refused. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// Missing or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist (or is not the caller's to see).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with existing data (a taken name).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but invalid values.
    #[error("{0}")]
    Invalid(String),
    /// Too many attempts.
    #[error("{0}")]
    RateLimited(String),
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Result of a domain operation.
pub type DomainResult<T> = Result<T, DomainError>;

/// A point in time, stored as milliseconds since the epoch and rendered as RFC 3339
/// (UTC, millisecond precision) in human-readable formats such as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Timestamp(store::now_ms())
    }

    /// RFC 3339 text, e.g. `2026-11-22T18:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            chrono::DateTime::parse_from_rfc3339(&text)
                .map(|t| Timestamp(t.timestamp_millis()))
                .map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

/// A post, as stored and as rendered (API.md `Post`). Counts are kept by tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Post {
    /// Id.
    pub id: u64,
    /// Author's user id.
    pub author_id: u64,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Likes, as last counted.
    pub likes_count: u64,
    /// Collects, as last counted.
    pub collects_count: u64,
    /// Comments, as last counted.
    pub comments_count: u64,
    /// Shares, as last counted.
    pub shares_count: u64,
    /// Views (batched).
    pub view_count: u64,
}

/// A comment or reply (API.md `Comment`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comment {
    /// Id.
    pub id: u64,
    /// The post it belongs to.
    pub post_id: u64,
    /// Author's user id.
    pub author_id: u64,
    /// The comment it replies to.
    pub parent_id: Option<u64>,
    /// Text.
    pub body: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Likes, as last counted.
    pub likes_count: u64,
}

/// A private message (API.md `Message`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// Id.
    pub id: u64,
    /// Sender.
    pub from_user_id: u64,
    /// Receiver.
    pub to_user_id: u64,
    /// Text.
    pub body: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// Someone liked your post.
    LikePost,
    /// Someone liked your comment.
    LikeComment,
    /// Someone commented on your post.
    Comment,
    /// Someone replied to your comment.
    Reply,
    /// Someone sent you a message.
    Message,
    /// Someone collected your post.
    Collect,
    /// Sent by an outside app through the admin API.
    Custom,
}

/// A notification (API.md `Notification`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    /// Id; increasing, so `?since=N` resumes after N.
    pub id: u64,
    /// What it is about.
    pub kind: NotificationKind,
    /// Who receives it.
    pub receiver_id: u64,
    /// Who caused it.
    pub actor_id: Option<u64>,
    /// The post concerned.
    pub post_id: Option<u64>,
    /// The comment concerned.
    pub comment_id: Option<u64>,
    /// The message concerned.
    pub message_id: Option<u64>,
    /// Human text.
    pub text: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Whether the receiver has read it.
    pub read: bool,
}

/// A page of a newest-first listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next_before: Option<u64>,
}

/// The social operations over one store. Cheap to clone.
#[derive(Clone)]
pub struct Social {
    inner: Arc<SocialInner>,
}

struct SocialInner {
    store: Store,
    limits: Limits,
    queue: QueueSettings,
    views: ViewCounter,
    logins: users::LoginLimiter,
    hashing: tokio::sync::Semaphore,
    webhooks: Arc<Vec<WebhookSettings>>,
}

impl Social {
    /// Social operations over `store` with the given limits, queue defaults and
    /// webhooks.
    pub fn new(
        store: Store,
        limits: Limits,
        queue: QueueSettings,
        webhooks: Vec<WebhookSettings>,
    ) -> Self {
        let hashing = std::thread::available_parallelism().map_or(2, |n| n.get());
        Social {
            inner: Arc::new(SocialInner {
                logins: users::LoginLimiter::new(limits.login_failures, limits.login_window_s),
                store,
                limits,
                queue,
                views: ViewCounter::default(),
                hashing: tokio::sync::Semaphore::new(hashing),
                webhooks: Arc::new(webhooks),
            }),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Views counted in memory and not yet written.
    pub fn views(&self) -> &ViewCounter {
        &self.inner.views
    }

    fn max_attempts(&self) -> u32 {
        self.inner.queue.max_attempts
    }

    /// Checks a paging `limit`: absent means 20, otherwise 1..=max_page.
    pub fn page_limit(&self, limit: Option<usize>) -> DomainResult<usize> {
        let max = self.inner.limits.max_page;
        match limit {
            None => Ok(20.min(max)),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(DomainError::Invalid(format!(
                "limit must be between 1 and {max}, not {n}"
            ))),
        }
    }
}

/// Checks a required text field: trimmed non-empty and at most `max` characters.
pub fn check_text(field: &str, value: &str, max: usize) -> DomainResult<()> {
    if value.trim().is_empty() {
        return Err(DomainError::Invalid(format!("{field} must not be empty")));
    }
    let n = value.chars().count();
    if n > max {
        return Err(DomainError::Invalid(format!(
            "{field} is {n} characters long; the limit is {max}"
        )));
    }
    Ok(())
}

/// Runs a store change whose closure returns a domain result, flattening the two
/// layers of errors.
pub(crate) async fn commit<T, F>(store: &Store, change: F) -> DomainResult<T>
where
    T: Send + 'static,
    F: Fn(&store::Tx<'_>) -> store::TxResult<DomainResult<T>> + Send + 'static,
{
    store.write(change).await?
}

/// [`commit`] through [`Store::write_lazy`]: answered once committed, without
/// waiting for a flush. Only for changes a re-run of their task can redo.
pub(crate) async fn commit_lazy<T, F>(store: &Store, change: F) -> DomainResult<T>
where
    T: Send + 'static,
    F: Fn(&store::Tx<'_>) -> store::TxResult<DomainResult<T>> + Send + 'static,
{
    store.write_lazy(change).await?
}

/// Slices one more than a page into a page and its cursor.
pub(crate) fn into_page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> u64) -> Page<T> {
    let next_before = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&id)
    } else {
        None
    };
    Page { items, next_before }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_json_and_integers_in_postcard() {
        let t = Timestamp(1_700_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        let bin = postcard::to_stdvec(&t).unwrap();
        assert_eq!(postcard::from_bytes::<Timestamp>(&bin).unwrap(), t);
    }

    #[test]
    fn text_checks_count_characters_not_bytes() {
        assert!(check_text("title", "  ", 10).is_err());
        assert!(check_text("title", "éééééééééé", 10).is_ok());
        assert!(check_text("title", "ééééééééééé", 10).is_err());
    }

    #[test]
    fn pages_carry_a_cursor_only_when_more_remain() {
        let p = into_page(vec![9u64, 8, 7], 2, |x| *x);
        assert_eq!(p.items, vec![9, 8]);
        assert_eq!(p.next_before, Some(8));
        let p = into_page(vec![9u64, 8], 2, |x| *x);
        assert_eq!(p.next_before, None);
    }
}
