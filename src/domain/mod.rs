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
pub mod offline;
mod posts;
mod presence;
pub mod records;
mod sessions;
mod throttle;
mod users;
mod views;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::queue::QueueSettings;
use crate::store::records::{
    CommentRecord, MessageRecord, NotificationRecord, PostCounts, PostRecord,
};
use crate::store::{self, Store};
use effects::WebhookSettings;

pub use directory::PostMarks;
pub use effects::NotifyArgs;
pub use notifications::NotificationPage;
pub use posts::{read_comment, read_post, CollectOutcome, LikeOutcome, ShareOutcome};
pub use sessions::{Redeemed, SignedIn, Ticket, NO_TOKEN};
pub use users::{
    hash_memory_returns, new_token, token_hash, AccountSettings, AdminToken, RotateError, Session,
    User,
};
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
    /// Too many attempts; the caller may try again after `retry_after_s`.
    #[error("{message}")]
    Throttled {
        /// A sentence for the client.
        message: String,
        /// Seconds to wait (`Retry-After`).
        retry_after_s: u64,
    },
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Result of a domain operation.
pub type DomainResult<T> = Result<T, DomainError>;

pub use crate::store::Timestamp;

/// A post as rendered (API.md `Post`): its record and its exact counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
    /// Likes.
    pub likes_count: u64,
    /// Collects.
    pub collects_count: u64,
    /// Comments and replies.
    pub comments_count: u64,
    /// Shares.
    pub shares_count: u64,
    /// Views (batched).
    pub view_count: u64,
}

/// A comment or reply (API.md `Comment`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
    /// Likes.
    pub likes_count: u64,
}

/// A private message (API.md `Message`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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

pub use crate::store::records::NotificationKind;

/// A notification (API.md `Notification`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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

impl Post {
    /// The view of post `id` from its record and counters.
    pub fn from_record(id: u64, r: &PostRecord, c: &PostCounts) -> Post {
        Post {
            id,
            author_id: r.author_id,
            title: r.title.clone(),
            body: r.body.clone(),
            created_at: Timestamp(r.created_at),
            likes_count: c.likes,
            collects_count: c.collects,
            comments_count: c.comments,
            shares_count: c.shares,
            view_count: c.views,
        }
    }
}

impl Comment {
    /// The view of comment `id` from its record and like count.
    pub fn from_record(id: u64, r: &CommentRecord, likes: u64) -> Comment {
        Comment {
            id,
            post_id: r.post_id,
            author_id: r.author_id,
            parent_id: r.parent_id,
            body: r.body.clone(),
            created_at: Timestamp(r.created_at),
            likes_count: likes,
        }
    }
}

impl Message {
    /// The view of message `id` from its record.
    pub fn from_record(id: u64, r: &MessageRecord) -> Message {
        Message {
            id,
            from_user_id: r.from,
            to_user_id: r.to,
            body: r.body.clone(),
            created_at: Timestamp(r.created_at),
        }
    }
}

/// The text of a notification without a caller-given one, from the names it
/// mentions (`None`: the actor or post is gone).
pub fn compose_text(kind: NotificationKind, actor: Option<&str>, title: Option<&str>) -> String {
    let actor = actor.unwrap_or("someone");
    let title = title.map_or_else(String::new, |t| format!(" \u{201c}{t}\u{201d}"));
    match kind {
        NotificationKind::LikePost => format!("{actor} liked your post{title}"),
        NotificationKind::LikeComment => format!("{actor} liked your comment on{title}"),
        NotificationKind::Comment => format!("{actor} commented on your post{title}"),
        NotificationKind::Reply => format!("{actor} replied to your comment on{title}"),
        NotificationKind::Message => format!("{actor} sent you a message"),
        NotificationKind::Collect => format!("{actor} collected your post{title}"),
        NotificationKind::Custom => "notification".to_owned(),
    }
}

impl Notification {
    /// The view of notification `id`; `names` looks up the actor's name and the
    /// post's title when the text must be composed.
    pub fn from_record(
        id: u64,
        r: &NotificationRecord,
        names: impl FnOnce(Option<u64>, Option<u64>) -> (Option<String>, Option<String>),
    ) -> Notification {
        let text = match &r.text {
            Some(text) => text.clone(),
            None => {
                let (actor, title) = names(r.actor, r.post);
                compose_text(r.kind, actor.as_deref(), title.as_deref())
            }
        };
        Notification {
            id,
            kind: r.kind,
            receiver_id: r.receiver,
            actor_id: r.actor,
            post_id: r.post,
            comment_id: r.comment,
            message_id: r.message,
            text,
            created_at: Timestamp(r.created_at),
            read: r.read,
        }
    }
}

/// Something committed that clients may want pushed to them. The store's publisher
/// hands these to the [`EventSink`], in commit order.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new notification, for `user:{receiver}`.
    Notification(Notification),
    /// A post's counters changed (`post:{id}` subscribers get `post_updated`).
    PostCounted(u64),
    /// A comment's like count changed (`comment_updated` to `post:{post}`).
    CommentCounted {
        /// The comment.
        comment: u64,
        /// Its post.
        post: u64,
    },
    /// A new post (`new_post` to the `feed` room).
    PostCreated(Post),
}

/// Where committed events go (the realtime hub, wired at start-up). Runs on the
/// store's publisher thread, never on the writer.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// The domain's own limits: sizes of what users write, paging, and the per-name
/// sign-in throttle. Composed from the file's `[limits]` by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainLimits {
    /// Longest user name, in characters.
    pub max_name_chars: usize,
    /// Longest password, in bytes (argon2 input).
    pub max_password_bytes: usize,
    /// Longest post title, in characters.
    pub max_title_chars: usize,
    /// Longest post, comment or message body, in characters.
    pub max_body_chars: usize,
    /// Largest page a listing returns.
    pub max_page: usize,
    /// Failed sign-ins for one name within `login_window_s` after which the
    /// addresses that failed on it are refused for that name.
    pub login_failures: u32,
    /// Window for `login_failures`, in seconds.
    pub login_window_s: u64,
}

/// The social operations over one store. Cheap to clone.
#[derive(Clone)]
pub struct Social {
    inner: Arc<SocialInner>,
}

struct SocialInner {
    store: Store,
    limits: DomainLimits,
    queue: QueueSettings,
    views: ViewCounter,
    accounts: AccountSettings,
    /// Failed sign-ins per client address.
    logins: throttle::AddressLimit,
    /// Failed sign-ins per name, for the addresses that failed on it.
    names: throttle::NameGuard,
    /// Registrations per client address.
    registrations: throttle::AddressLimit,
    /// Permits to hash a password (argon2 takes ~19 MiB each).
    hashing: Arc<tokio::sync::Semaphore>,
    tickets: sessions::Tickets,
    /// When expired sessions were last swept (ms).
    last_sweep: std::sync::atomic::AtomicI64,
    webhooks: Arc<Vec<WebhookSettings>>,
    sink: std::sync::OnceLock<EventSink>,
    /// The offline fallback, when some hook wants `notification.undelivered`.
    offline: std::sync::OnceLock<Arc<offline::Offline>>,
}

impl Social {
    /// Social operations over `store` with the given limits, queue defaults,
    /// webhooks and account settings.
    pub fn new(
        store: Store,
        limits: DomainLimits,
        queue: QueueSettings,
        webhooks: Vec<WebhookSettings>,
        accounts: AccountSettings,
    ) -> Self {
        use std::time::Duration;
        hash_memory_returns();
        let secs = Duration::from_secs;
        Social {
            inner: Arc::new(SocialInner {
                logins: throttle::AddressLimit::new(
                    accounts.login_failures_per_ip,
                    secs(accounts.login_ip_window_s),
                ),
                names: throttle::NameGuard::new(limits.login_failures, secs(limits.login_window_s)),
                registrations: throttle::AddressLimit::new(
                    accounts.registrations_per_ip,
                    secs(accounts.registration_window_s),
                ),
                hashing: Arc::new(tokio::sync::Semaphore::new(accounts.hashing_concurrency())),
                tickets: sessions::Tickets::new(&accounts),
                last_sweep: std::sync::atomic::AtomicI64::new(0),
                accounts,
                store,
                limits,
                queue,
                views: ViewCounter::default(),
                webhooks: Arc::new(webhooks),
                sink: std::sync::OnceLock::new(),
                offline: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Sends every committed event to `sink` from now on (set once, at start-up;
    /// before that, events are dropped: nobody can be connected yet).
    pub fn set_event_sink(&self, sink: EventSink) {
        let _ = self.inner.sink.set(sink);
    }

    /// Commits `change`, whose result carries the events it caused, and hands those
    /// events to the sink once the change is durable, in commit order.
    pub(crate) async fn commit_with_events<T, F>(&self, change: F) -> DomainResult<T>
    where
        T: Send + 'static,
        F: Fn(&store::Tx<'_>) -> store::TxResult<DomainResult<(T, Vec<Event>)>> + Send + 'static,
    {
        let sink = self.inner.sink.get().cloned();
        let after = move |r: &mut DomainResult<(T, Vec<Event>)>| -> Option<store::Deferred> {
            let sink = sink?;
            let events = match r {
                Ok((_, events)) if !events.is_empty() => std::mem::take(events),
                _ => return None,
            };
            Some(Box::new(move || {
                for e in events {
                    sink(e);
                }
            }))
        };
        self.store()
            .write_then(change, after)
            .await?
            .map(|(t, _)| t)
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The limits in force.
    pub fn limits(&self) -> &DomainLimits {
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
