//! Storing, listing and reading notifications.

use std::ops::Bound;

use super::effects::NotifyArgs;
use super::{commit, into_page, DomainError, DomainResult, Event, Notification, Page, Social};
use crate::store::records::NotificationRecord;
use crate::store::{now_ms, Tx, TxResult};

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
    /// The view of a stored notification, its text composed if it has none.
    pub(crate) fn render_notification(&self, id: u64, r: &NotificationRecord) -> Notification {
        let t = self.store().tables();
        Notification::from_record(id, r, |actor, post| {
            let actor = actor.and_then(|a| t.users.get(&a).ok().flatten().map(|u| u.name));
            let title = post.and_then(|p| t.posts.get(&p).ok().flatten().map(|p| p.title));
            (actor, title)
        })
    }

    /// Stores the notification for `args` unless one with its key exists. Returns
    /// the notification and whether it was created by this call. Idempotent: a
    /// re-run after a crash returns the first one. A new notification is pushed
    /// after its commit, in commit order (so in id order).
    pub async fn deliver_notification(
        &self,
        args: NotifyArgs,
    ) -> DomainResult<(Notification, bool)> {
        if self.store().tables().users.get(&args.receiver)?.is_none() {
            return Err(DomainError::NotFound("user"));
        }
        let parts = self.policy_parts();
        let (id, created) = self
            .commit_with_events(move |tx| {
                let t = tx.t();
                let key = format!("notified:{}", args.key);
                if let Some(id) = tx.get(&t.effects, &key)? {
                    return Ok(match tx.contains(&t.notifications, &id)? {
                        true => Ok(((id, false), Vec::new())),
                        false => Err(DomainError::NotFound("notification")),
                    });
                }
                let id = tx.next_id()?;
                let r = NotificationRecord {
                    kind: args.kind,
                    receiver: args.receiver,
                    actor: args.actor,
                    post: args.post,
                    comment: args.comment,
                    message: args.message,
                    text: args.text.clone(),
                    created_at: now_ms(),
                    read: false,
                };
                tx.insert(&t.notifications, &id, &r)?;
                tx.insert(&t.user_notifications, &(r.receiver, id), &())?;
                tx.insert(&t.user_unread, &(r.receiver, id), &())?;
                let unread = tx.get(&t.unread_counts, &r.receiver)?.unwrap_or(0);
                tx.insert(&t.unread_counts, &r.receiver, &(unread + 1))?;
                tx.insert(&t.effects, &key, &id)?;
                let n = view_in(tx, id, &r)?;
                super::effects::notification_stored(tx, &n, parts.policy())?;
                Ok(Ok(((id, true), vec![Event::Notification(n)])))
            })
            .await?;
        let r = self
            .store()
            .tables()
            .notifications
            .get(&id)?
            .ok_or(DomainError::NotFound("notification"))?;
        Ok((self.render_notification(id, &r), created))
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
            if let Some(r) = t.notifications.get(&id)? {
                items.push(self.render_notification(id, &r));
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
            if let Some(r) = t.notifications.get(&id)? {
                items.push(self.render_notification(id, &r));
            }
        }
        Ok(items)
    }

    /// Marks the given notifications read. All must be the user's, or nothing changes
    /// (`NotFound`). An id listed twice is read once. Returns the new unread count.
    pub async fn mark_read(&self, user: u64, mut ids: Vec<u64>) -> DomainResult<u64> {
        if ids.len() > MAX_MARK_IDS {
            return Err(DomainError::Invalid(format!(
                "at most {MAX_MARK_IDS} ids per call"
            )));
        }
        // Each notification is read from the transaction before any is marked, so a
        // repeated id would otherwise be counted down once per repeat.
        ids.sort_unstable();
        ids.dedup();
        commit(self.store(), move |tx| {
            let t = tx.t();
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                match tx.get(&t.notifications, id)? {
                    Some(n) if n.receiver == user => found.push((*id, n)),
                    _ => return Ok(Err(DomainError::NotFound("notification"))),
                }
            }
            let mut unread = tx.get(&t.unread_counts, &user)?.unwrap_or(0);
            for (id, mut n) in found {
                if !n.read {
                    n.read = true;
                    tx.insert(&t.notifications, &id, &n)?;
                    tx.remove(&t.user_unread, &(user, id))?;
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

/// The view of notification `id` read inside a transaction: its actor's name and its
/// post's title as they are in that transaction.
pub(crate) fn view_in(tx: &Tx<'_>, id: u64, r: &NotificationRecord) -> TxResult<Notification> {
    let t = tx.t();
    let actor = match r.actor {
        Some(a) => tx.get(&t.users, &a)?.map(|u| u.name),
        None => None,
    };
    let title = match r.post {
        Some(p) => tx.get(&t.posts, &p)?.map(|p| p.title),
        None => None,
    };
    Ok(Notification::from_record(id, r, |_, _| (actor, title)))
}
