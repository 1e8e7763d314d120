//! Private messages between two users.

use std::ops::Bound;

use super::effects;
use super::{check_text, into_page, DomainError, DomainResult, Message, Page, Social};
use crate::store::now_ms;
use crate::store::records::MessageRecord;

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl Social {
    /// Sends a private message; the receiver is notified.
    pub async fn send_message(&self, from: u64, to: u64, body: String) -> DomainResult<Message> {
        check_text("body", &body, self.limits().max_body_chars)?;
        if from == to {
            return Err(DomainError::Invalid(
                "you cannot send a message to yourself".into(),
            ));
        }
        let parts = self.policy_parts();
        self.commit_with_events(move |tx| {
            let t = tx.t();
            if !tx.contains(&t.users, &to)? {
                return Ok(Err(DomainError::NotFound("user")));
            }
            let id = tx.next_id()?;
            let message = MessageRecord {
                from,
                to,
                body: body.clone(),
                created_at: now_ms(),
            };
            let (lo, hi) = pair(from, to);
            tx.insert(&t.messages, &id, &message)?;
            tx.insert(&t.conversations, &(lo, hi, id), &())?;
            let policy = parts.policy();
            let caused = effects::message_sent(tx, policy, id, &message)?;
            Ok(Ok((Message::from_record(id, &message), caused.events)))
        })
        .await
    }

    /// The conversation between `user` and `with`, newest first.
    pub fn conversation(
        &self,
        user: u64,
        with: u64,
        limit: usize,
        before: Option<u64>,
    ) -> DomainResult<Page<Message>> {
        let t = self.store().tables();
        if !t.users.contains(&with)? {
            return Err(DomainError::NotFound("user"));
        }
        let (lo, hi) = pair(user, with);
        let upper = (lo, hi, before.unwrap_or(u64::MAX));
        let upper = if before.is_some() {
            Bound::Excluded(&upper)
        } else {
            Bound::Included(&upper)
        };
        let keys = t
            .conversations
            .range_rev(Bound::Included(&(lo, hi, 0)), upper, limit + 1)?;
        let mut items = Vec::with_capacity(keys.len());
        for ((_, _, id), ()) in keys {
            if let Some(m) = t.messages.get(&id)? {
                items.push(Message::from_record(id, &m));
            }
        }
        Ok(into_page(items, limit, |m| m.id))
    }
}
