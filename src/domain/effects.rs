//! The one place that decides which tasks an action causes. Every function here runs
//! inside the transaction of the action itself (the transactional outbox): the
//! record and its tasks are committed together or not at all.
//!
//! Notifications are idempotent twice over: the action writes an effect key the
//! first time it schedules a notification for an event (a second like by the same
//! user after an unlike schedules none), and the `notify` task stores the
//! notification under its own key, so a re-run after a crash creates nothing twice.

use serde::{Deserialize, Serialize};

use super::{Comment, Message, Notification, NotificationKind, Post};
use crate::config::WebhookSettings;
use crate::queue::{self, TaskSpec};
use crate::store::{Tx, TxResult};

/// Task name: store and push one notification.
pub const NOTIFY: &str = "notify";
/// Task name: recount a post's likes, collects, comments and shares.
pub const RECOUNT_POST: &str = "recount_post";
/// Task name: recount a comment's likes.
pub const RECOUNT_COMMENT: &str = "recount_comment";
/// Task name: POST an event to one configured webhook.
pub const DELIVER_WEBHOOK: &str = "deliver_webhook";
/// Webhook event sent for every new notification.
pub const NOTIFICATION_CREATED: &str = "notification.created";

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

fn recount_post(tx: &Tx<'_>, post_id: u64, max_attempts: u32) -> TxResult<u64> {
    let spec = TaskSpec::new(RECOUNT_POST, &RecountArgs { id: post_id }, max_attempts)
        .unique(format!("{RECOUNT_POST}:{post_id}"));
    queue::enqueue(tx, &spec)
}

fn recount_comment(tx: &Tx<'_>, comment_id: u64, max_attempts: u32) -> TxResult<u64> {
    let spec = TaskSpec::new(
        RECOUNT_COMMENT,
        &RecountArgs { id: comment_id },
        max_attempts,
    )
    .unique(format!("{RECOUNT_COMMENT}:{comment_id}"));
    queue::enqueue(tx, &spec)
}

/// Schedules the notification for `args` once per event key; returns the task id,
/// or `None` if this event was already notified (or is being notified).
fn notify_once(
    tx: &Tx<'_>,
    actor: u64,
    args: NotifyArgs,
    max_attempts: u32,
) -> TxResult<Option<u64>> {
    if args.actor == Some(args.receiver) {
        return Ok(None);
    }
    let t = tx.t();
    let mark = format!("scheduled:{}", args.key);
    if tx.contains(&t.effects, &mark)? {
        return Ok(None);
    }
    let spec = TaskSpec::new(NOTIFY, &args, max_attempts).owned_by(actor);
    let id = queue::enqueue(tx, &spec)?;
    tx.insert(&t.effects, &mark, &id)?;
    Ok(Some(id))
}

fn args(kind: NotificationKind, key: String, receiver: u64, actor: u64) -> NotifyArgs {
    NotifyArgs {
        key,
        kind,
        receiver,
        actor: Some(actor),
        post: None,
        comment: None,
        message: None,
        text: None,
    }
}

/// A new like on a post: recount it, and notify its author once per liker.
pub fn post_liked(
    tx: &Tx<'_>,
    post: &Post,
    liker: u64,
    max_attempts: u32,
) -> TxResult<Option<u64>> {
    recount_post(tx, post.id, max_attempts)?;
    let mut a = args(
        NotificationKind::LikePost,
        format!("like_post:{liker}:{}", post.id),
        post.author_id,
        liker,
    );
    a.post = Some(post.id);
    notify_once(tx, liker, a, max_attempts)
}

/// A like removed from a post: recount it.
pub fn post_unliked(tx: &Tx<'_>, post_id: u64, max_attempts: u32) -> TxResult<()> {
    recount_post(tx, post_id, max_attempts).map(drop)
}

/// A new like on a comment: recount it, and notify its author once per liker.
pub fn comment_liked(
    tx: &Tx<'_>,
    comment: &Comment,
    liker: u64,
    max_attempts: u32,
) -> TxResult<Option<u64>> {
    recount_comment(tx, comment.id, max_attempts)?;
    let mut a = args(
        NotificationKind::LikeComment,
        format!("like_comment:{liker}:{}", comment.id),
        comment.author_id,
        liker,
    );
    a.post = Some(comment.post_id);
    a.comment = Some(comment.id);
    notify_once(tx, liker, a, max_attempts)
}

/// A like removed from a comment: recount it.
pub fn comment_unliked(tx: &Tx<'_>, comment_id: u64, max_attempts: u32) -> TxResult<()> {
    recount_comment(tx, comment_id, max_attempts).map(drop)
}

/// A post collected: recount it, and notify its author once per collector.
pub fn post_collected(
    tx: &Tx<'_>,
    post: &Post,
    user: u64,
    max_attempts: u32,
) -> TxResult<Option<u64>> {
    recount_post(tx, post.id, max_attempts)?;
    let mut a = args(
        NotificationKind::Collect,
        format!("collect:{user}:{}", post.id),
        post.author_id,
        user,
    );
    a.post = Some(post.id);
    notify_once(tx, user, a, max_attempts)
}

/// A collect removed: recount.
pub fn post_uncollected(tx: &Tx<'_>, post_id: u64, max_attempts: u32) -> TxResult<()> {
    recount_post(tx, post_id, max_attempts).map(drop)
}

/// A share: recount; returns the recount task's id.
pub fn post_shared(tx: &Tx<'_>, post_id: u64, max_attempts: u32) -> TxResult<u64> {
    recount_post(tx, post_id, max_attempts)
}

/// A comment: recount the post, and notify the post's author — or, for a reply, the
/// parent comment's author.
pub fn commented(
    tx: &Tx<'_>,
    post: &Post,
    comment: &Comment,
    parent: Option<&Comment>,
    max_attempts: u32,
) -> TxResult<Option<u64>> {
    recount_post(tx, post.id, max_attempts)?;
    let (kind, receiver) = match parent {
        Some(p) => (NotificationKind::Reply, p.author_id),
        None => (NotificationKind::Comment, post.author_id),
    };
    let mut a = args(
        kind,
        format!("comment:{}", comment.id),
        receiver,
        comment.author_id,
    );
    a.post = Some(post.id);
    a.comment = Some(comment.id);
    notify_once(tx, comment.author_id, a, max_attempts)
}

/// A private message: notify the receiver.
pub fn message_sent(tx: &Tx<'_>, message: &Message, max_attempts: u32) -> TxResult<Option<u64>> {
    let mut a = args(
        NotificationKind::Message,
        format!("message:{}", message.id),
        message.to_user_id,
        message.from_user_id,
    );
    a.message = Some(message.id);
    notify_once(tx, message.from_user_id, a, max_attempts)
}

/// A notification was stored: schedule its delivery to every webhook that wants
/// `notification.created`, in the same transaction.
pub fn notification_created(
    tx: &Tx<'_>,
    n: &Notification,
    hooks: &[WebhookSettings],
    max_attempts: u32,
) -> TxResult<()> {
    let mut data = None;
    for hook in hooks
        .iter()
        .filter(|h| h.events.iter().any(|e| e == NOTIFICATION_CREATED))
    {
        let data = data.get_or_insert_with(|| serde_json::to_string(n).unwrap_or_default());
        let args = WebhookArgs {
            url: hook.url.clone(),
            event: NOTIFICATION_CREATED.to_owned(),
            data: data.clone(),
        };
        let attempts = hook.max_attempts.unwrap_or(max_attempts);
        queue::enqueue(tx, &TaskSpec::new(DELIVER_WEBHOOK, &args, attempts))?;
    }
    Ok(())
}
