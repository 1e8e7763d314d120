//! Storing, listing and reading notifications.

use std::ops::Bound;

use super::effects::NotifyArgs;
use super::{
    commit, into_page, DomainError, DomainResult, Notification, NotificationKind, Page, Social,
    Timestamp,
};

/// A page of notifications with the receiver's unread count.
#[derive(Debug, Clone)]
pub struct NotificationPage {
    /// The notifications, newest first, and the cursor.
    pub page: Page<Notification>,
    /// Unread notifications in all.
    pub unread_count: u64,
}

/// Most ids one mark-read call accepts.
pub const MAX_MARK_IDS: usize = 1000;

impl Social {
    fn compose_text(&self, a: &NotifyArgs) -> DomainResult<String> {
        if let Some(text) = &a.text {
            return Ok(text.clone());
        }
        let t = self.store().tables();
        let actor = match a.actor {
            Some(id) => t
                .users
                .get(&id)?
                .map_or_else(|| "someone".to_owned(), |u| u.name),
            None => "someone".to_owned(),
        };
        let title = match a.post {
            Some(id) => t.posts.get(&id)?.map(|p| p.title),
            None => None,
        };
        let title = title.map_or_else(String::new, |t| format!(" \u{201c}{t}\u{201d}"));
        Ok(match a.kind {
            NotificationKind::LikePost => format!("{actor} liked your post{title}"),
            NotificationKind::LikeComment => format!("{actor} liked your comment on{title}"),
            NotificationKind::Comment => format!("{actor} commented on your post{title}"),
            NotificationKind::Reply => format!("{actor} replied to your comment on{title}"),
            NotificationKind::Message => format!("{actor} sent you a message"),
            NotificationKind::Collect => format!("{actor} collected your post{title}"),
            NotificationKind::Custom => "notification".to_owned(),
        })
    }

    /// Stores the notification for `args` unless one with its key exists. Returns
    /// the notification and whether it was created by this call. Idempotent: a
    /// re-run after a crash returns the first one.
    ///
    /// `on_created` runs once the new notification is durable, in commit order
    /// (so in id order), before this returns; it is not run when the notification
    /// already existed.
    pub async fn deliver_notification(
        &self,
        args: NotifyArgs,
        on_created: impl FnOnce(&Notification) + Send + 'static,
    ) -> DomainResult<(Notification, bool)> {
        if self.store().tables().users.get(&args.receiver)?.is_none() {
            return Err(DomainError::NotFound("user"));
        }
        let text = self.compose_text(&args)?;
        let hooks = self.inner.webhooks.clone();
        let max_attempts = self.max_attempts();
        let after = move |r: &DomainResult<(Notification, bool)>| {
            if let Ok((n, true)) = r {
                on_created(n);
            }
        };
        let change = move |tx: &crate::store::Tx<'_>| {
            let t = tx.t();
            let key = format!("notified:{}", args.key);
            if let Some(id) = tx.get(&t.effects, &key)? {
                return Ok(match tx.get(&t.notifications, &id)? {
                    Some(n) => Ok((n, false)),
                    None => Err(DomainError::NotFound("notification")),
                });
            }
            let n = Notification {
                id: tx.next_id()?,
                kind: args.kind,
                receiver_id: args.receiver,
                actor_id: args.actor,
                post_id: args.post,
                comment_id: args.comment,
                message_id: args.message,
                text: text.clone(),
                created_at: Timestamp::now(),
                read: false,
            };
            tx.insert(&t.notifications, &n.id, &n)?;
            tx.insert(&t.user_notifications, &(n.receiver_id, n.id), &())?;
            tx.insert(&t.user_unread, &(n.receiver_id, n.id), &())?;
            let unread = tx.get(&t.unread_counts, &n.receiver_id)?.unwrap_or(0);
            tx.insert(&t.unread_counts, &n.receiver_id, &(unread + 1))?;
            tx.insert(&t.effects, &key, &n.id)?;
            super::effects::notification_created(tx, &n, &hooks, max_attempts)?;
            Ok(Ok((n, true)))
        };
        self.store().write_then(change, after).await?
    }

    /// The user's unread count.
    pub fn unread_count(&self, user: u64) -> DomainResult<u64> {
        Ok(self.store().tables().unread_counts.get(&user)?.unwrap_or(0))
    }

    /// The user's notifications, newest first.
    pub fn notifications(
        &self,
        user: u64,
        limit: usize,
        before: Option<u64>,
        unread_only: bool,
    ) -> DomainResult<NotificationPage> {
        let t = self.store().tables();
        let index = if unread_only {
            &t.user_unread
        } else {
            &t.user_notifications
        };
        let upper = (user, before.unwrap_or(u64::MAX));
        let upper = if before.is_some() {
            Bound::Excluded(&upper)
        } else {
            Bound::Included(&upper)
        };
        let keys = index.range_rev(Bound::Included(&(user, 0)), upper, limit + 1)?;
        let mut items = Vec::with_capacity(keys.len());
        for ((_, id), ()) in keys {
            if let Some(n) = t.notifications.get(&id)? {
                items.push(n);
            }
        }
        Ok(NotificationPage {
            page: into_page(items, limit, |n| n.id),
            unread_count: self.unread_count(user)?,
        })
    }

    /// The user's notifications with ids above `since`, oldest first, at most `limit`.
    pub fn notifications_since(
        &self,
        user: u64,
        since: u64,
        limit: usize,
    ) -> DomainResult<Vec<Notification>> {
        let t = self.store().tables();
        let keys = t.user_notifications.range(
            &(user, since.saturating_add(1)),
            Bound::Included(&(user, u64::MAX)),
            limit,
        )?;
        let mut items = Vec::with_capacity(keys.len());
        for ((_, id), ()) in keys {
            if let Some(n) = t.notifications.get(&id)? {
                items.push(n);
            }
        }
        Ok(items)
    }

    /// Marks the given notifications read. All must be the user's, or nothing changes
    /// (`NotFound`). Returns the new unread count.
    pub async fn mark_read(&self, user: u64, ids: Vec<u64>) -> DomainResult<u64> {
        if ids.len() > MAX_MARK_IDS {
            return Err(DomainError::Invalid(format!(
                "at most {MAX_MARK_IDS} ids per call"
            )));
        }
        commit(self.store(), move |tx| {
            let t = tx.t();
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                match tx.get(&t.notifications, id)? {
                    Some(n) if n.receiver_id == user => found.push(n),
                    _ => return Ok(Err(DomainError::NotFound("notification"))),
                }
            }
            let mut unread = tx.get(&t.unread_counts, &user)?.unwrap_or(0);
            for mut n in found {
                if !n.read {
                    n.read = true;
                    tx.insert(&t.notifications, &n.id, &n)?;
                    tx.remove(&t.user_unread, &(user, n.id))?;
                    unread = unread.saturating_sub(1);
                }
            }
            tx.insert(&t.unread_counts, &user, &unread)?;
            Ok(Ok(unread))
        })
        .await
    }

    /// Marks every unread notification of the user read; returns the new count.
    pub async fn mark_all_read(&self, user: u64) -> DomainResult<u64> {
        loop {
            let t = self.store().tables();
            let keys = t.user_unread.range(
                &(user, 0),
                Bound::Included(&(user, u64::MAX)),
                MAX_MARK_IDS,
            )?;
            if keys.is_empty() {
                return self.unread_count(user);
            }
            let ids = keys.into_iter().map(|((_, id), ())| id).collect();
            self.mark_read(user, ids).await?;
        }
    }
}
