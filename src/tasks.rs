//! What each named task does. The queue runs these by name; each is idempotent, so
//! running one again after a crash changes nothing twice.
//!
//! - `notify`: store one notification (keyed by its event); enqueued by 0.1.0 only.
//! - `recount_post` / `recount_comment`: enqueued by 0.1.0 only; nothing left to do.
//! - [`event_sink`]: committed events pushed to the hub (notifications to
//!   `user:{id}`, counter changes as `post_updated` / `comment_updated` to `post:{id}`).
//! - `deliver_webhook`: POST an event to a configured URL, signed.
//! - `sweep_undelivered`: schedule `notification.undelivered` for notifications
//!   pushed to nobody and left unread (see [`crate::domain::offline`]).
//! - `purge_expired_results`: forget finished tasks older than `result_ttl_s`.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::Settings;
use crate::domain::effects::{
    NotifyArgs, RecountArgs, WebhookArgs, WebhookSettings, DELIVER_WEBHOOK, NOTIFY,
    RECOUNT_COMMENT, RECOUNT_POST,
};
use crate::domain::{DomainError, Event, EventSink, Notification, Social, Timestamp};
use crate::hub::{Hub, Publication};
use crate::queue::{Registry, TaskContext, TaskError};

/// Task name: forget expired results.
pub const PURGE_EXPIRED_RESULTS: &str = "purge_expired_results";

/// Task name: one sweep of the offline fallback.
pub const SWEEP_UNDELIVERED: &str = "sweep_undelivered";

/// Tasks that take no arguments and so may be named in `[[schedules]]`.
pub const PERIODIC: &[&str] = &[PURGE_EXPIRED_RESULTS, SWEEP_UNDELIVERED];

fn task_error(e: DomainError) -> TaskError {
    match e {
        DomainError::Store(e) => TaskError::retryable(e.to_string()),
        other => TaskError::permanent(other.to_string()),
    }
}

/// Stores a notification (idempotently, by its key); if this call created it, it is
/// pushed to `user:{receiver}` as `new_notification` by the store's publisher, in
/// commit order. Used by the `notify` tasks 0.1.0 left waiting and the admin API.
pub async fn deliver(
    social: &Social,
    args: NotifyArgs,
) -> Result<(Notification, bool), DomainError> {
    social.deliver_notification(args).await
}

/// Pushes committed events to the hub: the event sink wired at start-up. Runs on the
/// store's publisher thread, in commit order, so every receiver gets its
/// notifications in id order and a client that resumes with `since` = the highest
/// id it saw misses nothing. Counter updates are pushed only to rooms somebody is
/// in, read fresh (a later state than the event's is fine: it is the newest).
pub fn event_sink(social: &Social, hub: &Hub) -> EventSink {
    // The store, not the `Social`: the sink lives inside the `Social`, and holding it
    // would keep it (and the database) alive forever.
    let store = social.store().clone();
    let hub = hub.clone();
    let offline = social.offline();
    Arc::new(move |event| match event {
        Event::Notification(n) => {
            let delivered = publish_notification(&hub, &n);
            if let Some(offline) = &offline {
                offline.pushed(&store, &n, delivered);
            }
        }
        Event::PostCounted(id) => {
            let room = crate::rooms::post(id);
            if hub.room_size(&room) == 0 {
                return;
            }
            if let Ok(Some(post)) = crate::domain::read_post(store.tables(), id) {
                let data = serde_json::to_value(&post).unwrap_or_default();
                hub.publish(Publication::event(&room, "post_updated", data));
            }
        }
        Event::CommentCounted { comment, post } => {
            let room = crate::rooms::post(post);
            if hub.room_size(&room) == 0 {
                return;
            }
            if let Ok(Some(c)) = crate::domain::read_comment(store.tables(), comment) {
                let data = serde_json::to_value(&c).unwrap_or_default();
                hub.publish(Publication::event(&room, "comment_updated", data));
            }
        }
        Event::PostCreated(post) => {
            // Rendering costs more than asking whether anyone listens.
            if !hub.has_audience(crate::rooms::FEED) {
                return;
            }
            let data = serde_json::to_value(&post).unwrap_or_default();
            hub.publish(Publication::event(crate::rooms::FEED, "new_post", data));
        }
    })
}

/// Pushes a stored notification to its receiver's room; returns how many
/// subscribers it was queued for (0: delivered to nobody).
pub fn publish_notification(hub: &Hub, n: &Notification) -> usize {
    let data = serde_json::to_value(n).unwrap_or(serde_json::Value::Null);
    let room = crate::rooms::user(n.receiver_id);
    hub.publish(Publication::event(&room, "new_notification", data).with_notification_id(n.id))
}

/// Hex HMAC-SHA256 of `body` keyed with `secret`: the `X-Likewise-Signature` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn deliver_webhook(
    client: &reqwest::Client,
    hooks: &[WebhookSettings],
    ctx: &TaskContext,
) -> Result<Option<serde_json::Value>, TaskError> {
    let args: WebhookArgs = ctx.args()?;
    let Some(hook) = hooks.iter().find(|h| h.url == args.url) else {
        return Err(TaskError::permanent(format!(
            "webhook {} is no longer configured",
            args.url
        )));
    };
    let data: serde_json::Value = serde_json::from_str(&args.data)
        .map_err(|e| TaskError::permanent(format!("stored event data is not JSON: {e}")))?;
    let body = serde_json::to_vec(&json!({
        "event": args.event,
        "data": data,
        "delivered_at": Timestamp::now(),
    }))
    .map_err(|e| TaskError::permanent(e.to_string()))?;
    let mut request = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Likewise-Event", &args.event)
        .header("X-Likewise-Delivery", ctx.id.to_string());
    if let Some(secret) = &hook.secret {
        request = request.header("X-Likewise-Signature", signature(secret, &body));
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| TaskError::retryable(format!("POST {} failed: {e}", hook.url)))?;
    let status = response.status();
    if status.is_success() {
        Ok(Some(json!({"status": status.as_u16()})))
    } else if status.is_redirection() {
        // Redirects are never followed (a hostile endpoint could point the server at
        // loopback or a cloud metadata address), and retrying cannot change the answer.
        Err(TaskError::permanent(format!(
            "POST {} answered {status}: webhook redirects are not followed; configure the final URL",
            hook.url
        )))
    } else {
        Err(TaskError::retryable(format!(
            "POST {} answered {status}",
            hook.url
        )))
    }
}

/// The HTTP client of webhook deliveries: the task's time limit, our user agent, and
/// no redirects.
fn webhook_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    // reqwest panics instead of failing when no TLS provider is installed; installing
    // ours is a no-op if one already is (start-up installs it too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("likewise/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client for webhook deliveries")
}

/// The registry of built-in tasks. Fails only if the webhook HTTP client cannot be
/// built (no TLS backend available): a start-up error.
pub fn registry(social: &Social, settings: &Settings) -> anyhow::Result<Registry> {
    let mut registry = Registry::default();
    let s = social.clone();
    registry.register(NOTIFY, move |ctx: TaskContext| {
        let social = s.clone();
        async move {
            let args: NotifyArgs = ctx.args()?;
            let (notification, created) = deliver(&social, args).await.map_err(task_error)?;
            Ok(Some(
                json!({"notification_id": notification.id, "created": created}),
            ))
        }
    });
    // Counters are exact since schema 2 (updated in the commit of what they count,
    // and recounted by the migration from 0.1.0), so the recounts 0.1.0 left waiting
    // have nothing left to do.
    for name in [RECOUNT_POST, RECOUNT_COMMENT] {
        registry.register(name, |ctx: TaskContext| async move {
            let RecountArgs { id: _ } = ctx.args()?;
            Ok(Some(json!({"changed": false})))
        });
    }
    let hooks = Arc::new(settings.webhooks.clone());
    let timeout = Duration::from_millis(settings.queue.task_timeout_ms.clamp(1, 30_000));
    let client = webhook_client(timeout)?;
    registry.register(DELIVER_WEBHOOK, move |ctx: TaskContext| {
        let hooks = hooks.clone();
        let client = client.clone();
        async move { deliver_webhook(&client, &hooks, &ctx).await }
    });
    let s = social.clone();
    registry.register(SWEEP_UNDELIVERED, move |_ctx: TaskContext| {
        let social = s.clone();
        async move {
            let swept = social.sweep_undelivered().await.map_err(task_error)?;
            Ok(Some(
                json!({"scheduled": swept.scheduled, "cursor": swept.cursor}),
            ))
        }
    });
    let store = social.store().clone();
    let ttl_ms = (settings.queue.result_ttl_s as i64).saturating_mul(1000);
    registry.register(PURGE_EXPIRED_RESULTS, move |_ctx: TaskContext| {
        let store = store.clone();
        async move {
            let purged = crate::queue::purge_expired(&store, ttl_ms).await?;
            Ok(Some(json!({"purged": purged})))
        }
    });
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_client_builds_without_a_tls_provider_installed_first() {
        // Nothing in this test process installs one before: building must not panic.
        assert!(webhook_client(Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
