//! What each named task does. The queue runs these by name; each is idempotent, so
//! running one again after a crash changes nothing twice.
//!
//! - `notify`: store one notification (keyed by its event) and push it.
//! - `recount_post` / `recount_comment`: recompute counters from their indexes.

use std::sync::Arc;

use serde_json::json;

use crate::domain::effects::{NotifyArgs, RecountArgs, NOTIFY, RECOUNT_COMMENT, RECOUNT_POST};
use crate::domain::{DomainError, Social};
use crate::queue::{Registry, TaskContext, TaskError};

/// Recounts of one post must not interleave: an older recount finishing after a
/// newer one would write stale counts. Striped locks serialise them per id.
struct Stripes([tokio::sync::Mutex<()>; 64]);

impl Stripes {
    fn new() -> Self {
        Stripes(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }

    fn lock(&self, id: u64) -> &tokio::sync::Mutex<()> {
        &self.0[(id % 64) as usize]
    }
}

fn task_error(e: DomainError) -> TaskError {
    match e {
        DomainError::Store(e) => TaskError::retryable(e.to_string()),
        other => TaskError::permanent(other.to_string()),
    }
}

/// The registry of built-in tasks.
pub fn registry(social: &Social) -> Registry {
    let mut registry = Registry::default();
    let s = social.clone();
    registry.register(NOTIFY, move |ctx: TaskContext| {
        let social = s.clone();
        async move {
            let args: NotifyArgs = ctx.args()?;
            let (notification, created) = social
                .deliver_notification(args)
                .await
                .map_err(task_error)?;
            Ok(Some(
                json!({"notification_id": notification.id, "created": created}),
            ))
        }
    });
    let post_locks = Arc::new(Stripes::new());
    let s = social.clone();
    registry.register(RECOUNT_POST, move |ctx: TaskContext| {
        let social = s.clone();
        let locks = post_locks.clone();
        async move {
            let RecountArgs { id } = ctx.args()?;
            let _serial = locks.lock(id).lock().await;
            let post = social.recount_post(id).await.map_err(task_error)?;
            Ok(Some(json!({"changed": post.is_some()})))
        }
    });
    let comment_locks = Arc::new(Stripes::new());
    let s = social.clone();
    registry.register(RECOUNT_COMMENT, move |ctx: TaskContext| {
        let social = s.clone();
        let locks = comment_locks.clone();
        async move {
            let RecountArgs { id } = ctx.args()?;
            let _serial = locks.lock(id).lock().await;
            let comment = social.recount_comment(id).await.map_err(task_error)?;
            Ok(Some(json!({"changed": comment.is_some()})))
        }
    });
    registry
}
