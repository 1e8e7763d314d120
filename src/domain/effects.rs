//! The one place that decides what an action causes. Every function here runs
//! inside the transaction of the action itself (the transactional outbox): the
//! record and everything it causes are committed together or not at all.
//!
//! What a like (or collect, comment, message) causes is written in its own commit:
//! the exact counters and the notification, stored with its indexes and unread
//! count. Only work that leaves the process — webhooks — becomes a task, enqueued in
//! the same commit. A notification is created once per event: the action writes the
//! event's key (`scheduled:{event}`) with it, so a second like by the same user after
//! an unlike, or a retried request, creates nothing. The pushes to clients follow the
//! commit as [`Event`]s.
//!
//! A notification stored for a receiver with no open realtime connection also sends
//! `notification.undelivered` to the hooks that want it, from the same commit; one
//! whose receiver looked connected but whose push reached nobody is left to the
//! offline sweep ([`super::offline`]). Either way a notification gets that event at
//! most once: its mark (`undelivered:sent:{id}`) is written with the deliveries.
//!
//! Tasks named `notify`, `recount_post` and `recount_comment` are no longer enqueued;
//! their handlers stay, so tasks that release 0.1.0 left waiting still run.

use serde::{Deserialize, Serialize};

use super::{Event, Notification, NotificationKind};
use crate::queue::{self, TaskSpec};
use crate::store::records::{
    CommentRecord, MessageRecord, NotificationRecord, PostCounts, PostRecord,
};
use crate::store::{now_ms, Tx, TxResult};

/// Task name: store and push one notification (enqueued by 0.1.0 only).
pub const NOTIFY: &str = "notify";
/// Task name: recount a post's likes, collects, comments and shares (0.1.0 only).
pub const RECOUNT_POST: &str = "recount_post";
/// Task name: recount a comment's likes (0.1.0 only).
pub const RECOUNT_COMMENT: &str = "recount_comment";
/// Task name: POST an event to one configured webhook.
pub const DELIVER_WEBHOOK: &str = "deliver_webhook";
/// Webhook event sent for every new notification.
pub const NOTIFICATION_CREATED: &str = "notification.created";
/// Webhook event sent once for a notification its receiver did not get in real
/// time: stored while they had no open connection, or pushed to none of their
/// connections and left unread for `offline_after_s`.
pub const NOTIFICATION_UNDELIVERED: &str = "notification.undelivered";

/// Whether a user has at least one open realtime connection; wired to the hub at
/// start-up (the domain knows no fan-out, only this question).
pub type Connected = std::sync::Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// An outside URL that receives events (`[[webhooks]]` in the config file). Owned
/// here because this module decides which events become deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where events are POSTed.
    pub url: String,
    /// Event names this hook receives, e.g. `notification.created`.
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
    /// Key of the `X-Likewise-Signature` HMAC-SHA256.
    #[serde(default)]
    pub secret: Option<String>,
    /// Attempts per delivery; the queue default when absent.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn default_webhook_events() -> Vec<String> {
    vec![NOTIFICATION_CREATED.to_owned()]
}

/// Arguments of a `deliver_webhook` task. The secret is not stored with the task:
/// the handler looks the hook up by URL in the running configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookArgs {
    /// Where to POST.
    pub url: String,
    /// Event name.
    pub event: String,
    /// JSON text of the event's data.
    pub data: String,
}

/// Arguments of a `notify` task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotifyArgs {
    /// Idempotency key of the event: at most one notification per key, ever.
    pub key: String,
    /// What it is about.
    pub kind: NotificationKind,
    /// Who receives it.
    pub receiver: u64,
    /// Who caused it.
    pub actor: Option<u64>,
    /// The post concerned.
    pub post: Option<u64>,
    /// The comment concerned.
    pub comment: Option<u64>,
    /// The message concerned.
    pub message: Option<u64>,
    /// Text given by the caller (custom notifications); otherwise composed.
    pub text: Option<String>,
}

/// Arguments of `recount_post` / `recount_comment`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecountArgs {
    /// The post or comment id.
    pub id: u64,
}

/// What the effects of an action need to know beyond the action.
#[derive(Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// Configured webhooks (their deliveries are tasks).
    pub hooks: &'a [WebhookSettings],
    /// Attempts allowed to the tasks enqueued.
    pub max_attempts: u32,
    /// Whether a receiver is connected, when some hook wants
    /// `notification.undelivered`; `None` otherwise (nothing to decide).
    pub connected: Option<&'a (dyn Fn(u64) -> bool + Send + Sync)>,
}

/// What a [`Policy`] borrows, owned, so that a change closure can hold it.
pub(crate) struct PolicyParts {
    pub hooks: std::sync::Arc<Vec<WebhookSettings>>,
    pub max_attempts: u32,
    pub connected: Option<Connected>,
}

impl PolicyParts {
    /// The policy for one run of a change.
    pub fn policy(&self) -> Policy<'_> {
        Policy {
            hooks: &self.hooks,
            max_attempts: self.max_attempts,
            connected: self.connected.as_deref(),
        }
    }
}

/// What an action caused: the notification it created, if any, and the events to
/// push once it is committed.
#[derive(Debug, Default)]
pub(crate) struct Caused {
    /// The notification created.
    pub notification: Option<u64>,
    /// Events for the publisher.
    pub events: Vec<Event>,
}

/// Adds `delta` to one of a post's counters (saturating at zero).
fn count_post(
    tx: &Tx<'_>,
    post_id: u64,
    delta: i64,
    field: fn(&mut PostCounts) -> &mut u64,
) -> TxResult<()> {
    let t = tx.t();
    let mut counts = tx.get(&t.post_counts, &post_id)?.unwrap_or_default();
    let n = field(&mut counts);
    *n = n.saturating_add_signed(delta);
    tx.insert(&t.post_counts, &post_id, &counts)
}

fn count_comment(tx: &Tx<'_>, comment_id: u64, delta: i64) -> TxResult<()> {
    let t = tx.t();
    let n = tx.get(&t.comment_counts, &comment_id)?.unwrap_or(0);
    tx.insert(
        &t.comment_counts,
        &comment_id,
        &n.saturating_add_signed(delta),
    )
}

/// Stores the notification `r` for event `event` unless the event was notified
/// before (or the actor is the receiver). `title` is the post's title, when known.
fn notify_once(
    tx: &Tx<'_>,
    policy: Policy<'_>,
    event: &str,
    r: NotificationRecord,
    title: Option<&str>,
) -> TxResult<Option<Notification>> {
    if r.actor == Some(r.receiver) {
        return Ok(None);
    }
    let t = tx.t();
    let mark = format!("scheduled:{event}");
    if tx.contains(&t.effects, &mark)? {
        return Ok(None);
    }
    let id = tx.next_id()?;
    tx.insert(&t.notifications, &id, &r)?;
    tx.insert(&t.user_notifications, &(r.receiver, id), &())?;
    tx.insert(&t.user_unread, &(r.receiver, id), &())?;
    let unread = tx.get(&t.unread_counts, &r.receiver)?.unwrap_or(0);
    tx.insert(&t.unread_counts, &r.receiver, &(unread + 1))?;
    tx.insert(&t.effects, &mark, &id)?;
    let actor = match r.actor {
        Some(a) => tx.get(&t.users, &a)?.map(|u| u.name),
        None => None,
    };
    let n = Notification::from_record(id, &r, |_, _| (actor, title.map(str::to_owned)));
    notification_stored(tx, &n, policy)?;
    Ok(Some(n))
}

fn record(kind: NotificationKind, receiver: u64, actor: u64) -> NotificationRecord {
    NotificationRecord {
        kind,
        receiver,
        actor: Some(actor),
        post: None,
        comment: None,
        message: None,
        text: None,
        created_at: now_ms(),
        read: false,
    }
}

fn caused(n: Option<Notification>, mut events: Vec<Event>) -> Caused {
    let notification = n.as_ref().map(|n| n.id);
    if let Some(n) = n {
        events.insert(0, Event::Notification(n));
    }
    Caused {
        notification,
        events,
    }
}

/// A new like on a post: count it, and notify its author once per liker.
pub(crate) fn post_liked(
    tx: &Tx<'_>,
    policy: Policy<'_>,
    post_id: u64,
    post: &PostRecord,
    liker: u64,
) -> TxResult<Caused> {
    count_post(tx, post_id, 1, |c| &mut c.likes)?;
    let mut r = record(NotificationKind::LikePost, post.author_id, liker);
    r.post = Some(post_id);
    let event = format!("like_post:{liker}:{post_id}");
    let n = notify_once(tx, policy, &event, r, Some(&post.title))?;
    Ok(caused(n, vec![Event::PostCounted(post_id)]))
}

/// A like removed from a post: count it.
pub(crate) fn post_unliked(tx: &Tx<'_>, post_id: u64) -> TxResult<Caused> {
    count_post(tx, post_id, -1, |c| &mut c.likes)?;
    Ok(caused(None, vec![Event::PostCounted(post_id)]))
}

/// A new like on a comment: count it, and notify its author once per liker.
pub(crate) fn comment_liked(
    tx: &Tx<'_>,
    policy: Policy<'_>,
    comment_id: u64,
    comment: &CommentRecord,
    liker: u64,
) -> TxResult<Caused> {
    count_comment(tx, comment_id, 1)?;
    let title = tx.get(&tx.t().posts, &comment.post_id)?.map(|p| p.title);
    let mut r = record(NotificationKind::LikeComment, comment.author_id, liker);
    r.post = Some(comment.post_id);
    r.comment = Some(comment_id);
    let event = format!("like_comment:{liker}:{comment_id}");
    let n = notify_once(tx, policy, &event, r, title.as_deref())?;
    let counted = Event::CommentCounted {
        comment: comment_id,
        post: comment.post_id,
    };
    Ok(caused(n, vec![counted]))
}

/// A like removed from a comment: count it.
pub(crate) fn comment_unliked(tx: &Tx<'_>, comment_id: u64, post_id: u64) -> TxResult<Caused> {
    count_comment(tx, comment_id, -1)?;
    let counted = Event::CommentCounted {
        comment: comment_id,
        post: post_id,
    };
    Ok(caused(None, vec![counted]))
}

/// A post collected: count it, and notify its author once per collector.
pub(crate) fn post_collected(
    tx: &Tx<'_>,
    policy: Policy<'_>,
    post_id: u64,
    post: &PostRecord,
    user: u64,
) -> TxResult<Caused> {
    count_post(tx, post_id, 1, |c| &mut c.collects)?;
    let mut r = record(NotificationKind::Collect, post.author_id, user);
    r.post = Some(post_id);
    let event = format!("collect:{user}:{post_id}");
    let n = notify_once(tx, policy, &event, r, Some(&post.title))?;
    Ok(caused(n, vec![Event::PostCounted(post_id)]))
}

/// A collect removed: count it.
pub(crate) fn post_uncollected(tx: &Tx<'_>, post_id: u64) -> TxResult<Caused> {
    count_post(tx, post_id, -1, |c| &mut c.collects)?;
    Ok(caused(None, vec![Event::PostCounted(post_id)]))
}

/// A share: count it.
pub(crate) fn post_shared(tx: &Tx<'_>, post_id: u64) -> TxResult<Caused> {
    count_post(tx, post_id, 1, |c| &mut c.shares)?;
    Ok(caused(None, vec![Event::PostCounted(post_id)]))
}

/// A comment: count it on the post, and notify the post's author — or, for a
/// reply, the parent comment's author.
pub(crate) fn commented(
    tx: &Tx<'_>,
    policy: Policy<'_>,
    post: &PostRecord,
    comment_id: u64,
    comment: &CommentRecord,
    parent: Option<&CommentRecord>,
) -> TxResult<Caused> {
    count_post(tx, comment.post_id, 1, |c| &mut c.comments)?;
    let (kind, receiver) = match parent {
        Some(p) => (NotificationKind::Reply, p.author_id),
        None => (NotificationKind::Comment, post.author_id),
    };
    let mut r = record(kind, receiver, comment.author_id);
    r.post = Some(comment.post_id);
    r.comment = Some(comment_id);
    let event = format!("comment:{comment_id}");
    let n = notify_once(tx, policy, &event, r, Some(&post.title))?;
    Ok(caused(n, vec![Event::PostCounted(comment.post_id)]))
}

/// A private message: notify the receiver.
pub(crate) fn message_sent(
    tx: &Tx<'_>,
    policy: Policy<'_>,
    message_id: u64,
    message: &MessageRecord,
) -> TxResult<Caused> {
    let mut r = record(NotificationKind::Message, message.to, message.from);
    r.message = Some(message_id);
    let event = format!("message:{message_id}");
    let n = notify_once(tx, policy, &event, r, None)?;
    Ok(caused(n, Vec::new()))
}

/// A notification was stored: schedule its delivery to every webhook that wants
/// `notification.created` and, when its receiver has no open connection now, to
/// every webhook that wants `notification.undelivered` — all in the same
/// transaction.
pub(crate) fn notification_stored(
    tx: &Tx<'_>,
    n: &Notification,
    policy: Policy<'_>,
) -> TxResult<()> {
    notification_created(tx, n, policy.hooks, policy.max_attempts)?;
    if let Some(connected) = policy.connected {
        // Read inside the change: sled may run it again, and the answer may differ
        // then; whichever run commits decides, and the sweep covers the other case.
        // The question is one lookup under the hub's read lock, which joins and
        // leaves hold only for a map update, never across I/O.
        if !connected(n.receiver_id) {
            notification_undelivered(tx, n, policy.hooks, policy.max_attempts)?;
        }
    }
    Ok(())
}

/// A notification was stored: schedule its delivery to every webhook that wants
/// `notification.created`, in the same transaction.
pub fn notification_created(
    tx: &Tx<'_>,
    n: &Notification,
    hooks: &[WebhookSettings],
    max_attempts: u32,
) -> TxResult<()> {
    enqueue_event(tx, n, hooks, NOTIFICATION_CREATED, max_attempts)
}

/// The key whose presence says `notification.undelivered` was scheduled for
/// notification `id`.
pub(crate) fn undelivered_mark(id: u64) -> String {
    format!("undelivered:sent:{id}")
}

/// Schedules `notification.undelivered` for `n` to every webhook that wants it,
/// unless it was scheduled before; returns whether it was scheduled now. The mark
/// is written even when no hook wants the event, so that it is decided once.
pub(crate) fn notification_undelivered(
    tx: &Tx<'_>,
    n: &Notification,
    hooks: &[WebhookSettings],
    max_attempts: u32,
) -> TxResult<bool> {
    let t = tx.t();
    let mark = undelivered_mark(n.id);
    if tx.contains(&t.effects, &mark)? {
        return Ok(false);
    }
    enqueue_event(tx, n, hooks, NOTIFICATION_UNDELIVERED, max_attempts)?;
    tx.insert(&t.effects, &mark, &n.id)?;
    Ok(true)
}

/// Whether any hook wants `event`.
pub fn wanted(hooks: &[WebhookSettings], event: &str) -> bool {
    hooks.iter().any(|h| h.events.iter().any(|e| e == event))
}

/// Enqueues one `deliver_webhook` task of `event` with `n` as its data per hook
/// that wants `event`.
fn enqueue_event(
    tx: &Tx<'_>,
    n: &Notification,
    hooks: &[WebhookSettings],
    event: &str,
    max_attempts: u32,
) -> TxResult<()> {
    let mut data = None;
    for hook in hooks.iter().filter(|h| h.events.iter().any(|e| e == event)) {
        let data = data.get_or_insert_with(|| serde_json::to_string(n).unwrap_or_default());
        let args = WebhookArgs {
            url: hook.url.clone(),
            event: event.to_owned(),
            data: data.clone(),
        };
        let attempts = hook.max_attempts.unwrap_or(max_attempts);
        let mut spec = TaskSpec::new(DELIVER_WEBHOOK, &args, attempts)?;
        // The user whose action caused it may follow the delivery of what it
        // caused, but not learn whether its receiver was connected.
        if event == NOTIFICATION_CREATED {
            spec.owner = n.actor_id;
        }
        queue::enqueue(tx, &spec)?;
    }
    Ok(())
}
