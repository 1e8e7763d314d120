//! Session policy shared by `/ws` and Socket.IO: the rooms a connection is always
//! in, joining and leaving rooms under [`crate::rooms`]' policy, and the `since`
//! replay in pages.
//!
//! Resuming without a gap or a duplicate: the subscription to `user:{id}` is made
//! BEFORE the store is read for the replay, so a notification committed during the
//! replay is either read by it or delivered live afterwards (its push follows its
//! commit). The replay is read and sent one page at a time (the socket loop writes
//! a page before the next is read, so a long replay never sits in memory) and live
//! deliveries wait in the subscription's queue until the last page is out. Live
//! notifications whose id the replay already covered are then skipped: ids are
//! assigned in commit order by the single writer, so every notification with an id
//! up to the highest replayed one was in the store when its page was read.

use bytes::Bytes;

use super::{close, Backend, Ctx, Out};
use crate::domain::Notification;
use crate::hub::{Delivery, Transport};
use crate::rooms::{self, PostLookup, Refusal, Room};

/// Notifications read and sent per replay page.
pub(crate) const REPLAY_PAGE: usize = 200;

/// Subscribes a newly authenticated connection to the rooms it is always in: its
/// user's own room and the broadcast room; and counts it for the user's presence
/// for as long as the subscription lives, whatever carries it.
///
/// The user's choice to be shown online is read by the hub when this is their
/// first connection here, from the store where there is one (so a choice stored
/// meanwhile is never missed); a node without a store asks the backend first.
pub(crate) async fn subscribe_user(ctx: &mut Ctx<'_>, transport: Transport, user: u64) {
    let backend = ctx.backend;
    let asked = match backend.holds_store() {
        true => None,
        false => Some(backend.presence_visible(user).await),
    };
    let mut sub = ctx.hub.subscribe(transport);
    sub.join(&rooms::user(user));
    sub.join(rooms::BROADCAST);
    sub.track_presence(user, || asked.unwrap_or_else(|| backend.visible_now(user)));
    *ctx.sub = Some(sub);
}

/// Joins `room` for `user` if the policy allows it.
pub(crate) async fn join(ctx: &mut Ctx<'_>, user: u64, room: &str) -> Result<(), Refusal> {
    // Only a post's room needs the store; ask before applying the policy.
    let lookup = match rooms::parse(room) {
        Ok(Room::Post(id)) => Some(ctx.backend.post_lookup(id).await),
        _ => None,
    };
    rooms::may_join(room, user, |_| lookup.unwrap_or(PostLookup::Missing))?;
    let Some(sub) = ctx.sub.as_ref() else {
        return Err(Refusal {
            code: "unavailable",
            message: "not subscribed yet".into(),
        });
    };
    let already_in = sub.rooms().iter().any(|r| r == room);
    rooms::may_join_another(sub.count(), already_in)?;
    sub.join(room);
    Ok(())
}

/// Leaves `room` for `user` (any room but their own).
pub(crate) fn leave(ctx: &mut Ctx<'_>, user: u64, room: &str) -> Result<(), Refusal> {
    rooms::may_leave(room, user)?;
    if let Some(sub) = ctx.sub.as_ref() {
        sub.leave(room);
    }
    Ok(())
}

/// Whether a live delivery still has to be sent: a notification the replay already
/// sent (id up to `replayed_up_to`) is skipped.
pub(crate) fn not_replayed(d: &Delivery, replayed_up_to: u64) -> bool {
    d.publication
        .notification_id()
        .is_none_or(|id| id > replayed_up_to)
}

/// The highest notification id a connection has sent, after `d` (sent or not).
pub(crate) fn sent_up_to(before: u64, d: &Delivery, sent: bool) -> u64 {
    match d.publication.notification_id() {
        Some(id) if sent => before.max(id),
        _ => before,
    }
}

/// A `since` replay in progress: the user's notifications newer than `after`,
/// oldest first, one page at a time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replay {
    user: u64,
    after: u64,
    done: bool,
}

impl Replay {
    /// A replay of `user`'s notifications newer than `since`.
    pub(crate) fn new(user: u64, since: u64) -> Replay {
        Replay {
            user,
            after: since,
            done: false,
        }
    }

    /// Whether the last page has been read.
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// The highest notification id replayed so far (`since` before any).
    pub(crate) fn replayed_up_to(&self) -> u64 {
        self.after
    }

    /// Reads the next page and renders it; a short page is the last. A store
    /// failure ends the replay and asks the client to reconnect.
    pub(crate) async fn next_page(
        &mut self,
        backend: &dyn Backend,
        render: impl Fn(&Notification) -> Bytes,
    ) -> Vec<Out> {
        if self.done {
            return Vec::new();
        }
        let page = match backend
            .notifications_after(self.user, self.after, REPLAY_PAGE)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "replaying notifications failed");
                self.done = true;
                return vec![Out::Close(
                    close::TRY_AGAIN_LATER,
                    "could not read stored notifications; reconnect".into(),
                )];
            }
        };
        self.done = page.len() < REPLAY_PAGE;
        page.iter()
            .map(|n| {
                self.after = self.after.max(n.id);
                Out::Text(render(n))
            })
            .collect()
    }
}
