//! Private messages between two users.

use std::ops::Bound;

use super::{
    check_text, commit, effects, into_page, DomainError, DomainResult, Message, Page, Social,
    Timestamp,
};

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
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            if !tx.contains(&t.users, &to)? {
                return Ok(Err(DomainError::NotFound("user")));
            }
            let message = Message {
                id: tx.next_id()?,
                from_user_id: from,
                to_user_id: to,
                body: body.clone(),
                created_at: Timestamp::now(),
            };
            let (lo, hi) = pair(from, to);
            tx.insert(&t.messages, &message.id, &message)?;
            tx.insert(&t.conversations, &(lo, hi, message.id), &())?;
            effects::message_sent(tx, &message, max_attempts)?;
            Ok(Ok(message))
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
                items.push(m);
            }
        }
        Ok(into_page(items, limit, |m| m.id))
    }
}
