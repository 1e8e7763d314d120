//! Presence: which users have at least one realtime connection open, and the
//! `presence` events announcing when that changes.
//!
//! Each user online has an entry counting their open connections and whether they
//! let others see them online. A connection holds a [`PresenceGuard`] (owned by its
//! [`super::Subscription`]): creating the first guard of a user announces them
//! online, dropping the last announces them offline. Whatever the transport, a
//! connection is one subscription for its whole life, so a transport that changes
//! underneath (long-polling upgraded to a websocket) never flaps.
//!
//! Announcements are `presence` events `{"user_id", "online"}` published to the
//! room `presence:{user_id}`, made while the user's stripe of the registry is
//! locked so that a user's events reach subscribers in the order the changes
//! happened. The registry is split in stripes by user id so that a storm of
//! connections (every client reconnecting after a restart) or a user with many
//! watchers holds up only the users of one stripe. A hidden user is never
//! announced nor reported online.
//!
//! Whether a user is hidden is stored by the caller, not here (the hub knows no
//! storage): the caller passes a closure reading it when the first connection of a
//! user opens, and tells the hub when it changes. A read that raced with a change
//! is detected (a per-stripe change counter) and repeated, so a change made while
//! a connection opens is never lost.
//!
//! In a cluster, presence is global (a user is online while any node holds one of
//! their connections), which only the cluster knows. The cluster installs a
//! [`PresenceHook`] ([`Hub::set_presence_hook`]); from then on this registry no
//! longer announces anything itself: it hands the hook each of this node's
//! transitions ([`PresenceChange`]: a user's first connection here, their last one
//! leaving, a change of their stored choice), in order for each user (they are
//! handed over with the user's stripe locked), and the cluster announces the
//! global changes. The registry stays what [`Hub::is_connected`] and
//! [`Hub::users_connected`] read, which therefore stay about this node only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde_json::json;

use super::{Hub, Publication};

/// The prefix of the room where a user's presence changes are announced.
pub const PRESENCE_ROOM_PREFIX: &str = "presence:";

/// The room announcing user `id`'s presence changes.
pub fn presence_room(id: u64) -> String {
    format!("{PRESENCE_ROOM_PREFIX}{id}")
}

/// The event name of presence announcements.
pub const PRESENCE_EVENT: &str = "presence";

/// A change of presence on this node, handed to the [`PresenceHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// `user` opened their first connection on this node; `visible` is their
    /// choice to be shown online, as read when it opened.
    Arrived {
        /// The user.
        user: u64,
        /// Whether they may be shown online.
        visible: bool,
    },
    /// The last connection of `user` on this node closed.
    Left {
        /// The user.
        user: u64,
    },
    /// The stored choice of `user` changed (through this node), whether or not
    /// they are connected here: it concerns their connections on every node.
    Visibility {
        /// The user.
        user: u64,
        /// Whether they may be shown online from now on.
        visible: bool,
    },
}

/// Receives this node's presence changes instead of the hub announcing them (the
/// cluster, which knows the other nodes). `changed` is called with the user's
/// stripe of the registry locked, so one user's changes arrive in the order they
/// happened: it must not block, must not call back into the hub's presence, and
/// must not publish.
pub trait PresenceHook: Send + Sync + 'static {
    /// One change on this node.
    fn changed(&self, change: PresenceChange);
}

/// The `presence` event announcing that `user` is now online or offline.
pub fn presence_publication(user: u64, online: bool) -> Publication {
    Publication::event(
        &presence_room(user),
        PRESENCE_EVENT,
        json!({"user_id": user, "online": online}),
    )
}

/// Stripes of the registry, by user id. A visibility change of one user also makes
/// only the first connections of users on the same stripe read theirs again.
const STRIPES: usize = 64;

#[derive(Debug)]
struct Entry {
    connections: usize,
    visible: bool,
}

/// One stripe of the registry: its users online, and how many visibility changes
/// it has seen (see the module documentation).
#[derive(Debug, Default)]
struct Stripe {
    users: Mutex<HashMap<u64, Entry>>,
    changes: AtomicU64,
}

/// The registry of users online, part of the hub.
#[derive(Debug)]
pub(super) struct Registry {
    stripes: [Stripe; STRIPES],
    /// Set once, at start-up, by the cluster.
    hook: OnceLock<Arc<dyn PresenceHook>>,
}

impl std::fmt::Debug for dyn PresenceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresenceHook")
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            stripes: std::array::from_fn(|_| Stripe::default()),
            hook: OnceLock::new(),
        }
    }
}

impl Registry {
    fn stripe(&self, user: u64) -> &Stripe {
        &self.stripes[(user % STRIPES as u64) as usize]
    }

    /// The stripe of `user`, locked.
    fn lock(&self, user: u64) -> MutexGuard<'_, HashMap<u64, Entry>> {
        lock(self.stripe(user))
    }

    fn changes(&self, user: u64) -> &AtomicU64 {
        &self.stripe(user).changes
    }
}

fn lock(stripe: &Stripe) -> MutexGuard<'_, HashMap<u64, Entry>> {
    stripe.users.lock().unwrap_or_else(|p| p.into_inner())
}

/// One open connection of a user; dropping it closes that connection for presence
/// (the last one of a user announces them offline).
#[must_use = "the user is offline again as soon as the guard is dropped"]
pub struct PresenceGuard {
    hub: Hub,
    user: u64,
}

impl PresenceGuard {
    /// The user this connection belongs to.
    pub fn user(&self) -> u64 {
        self.user
    }
}

impl std::fmt::Debug for PresenceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceGuard")
            .field("user", &self.user)
            .finish()
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let registry = &self.hub.inner.presence;
        let mut users = registry.lock(self.user);
        let Some(entry) = users.get_mut(&self.user) else {
            return;
        };
        entry.connections -= 1;
        if entry.connections > 0 {
            return;
        }
        let visible = entry.visible;
        users.remove(&self.user);
        metrics::gauge!("likewise_users_online").decrement(1.0);
        match registry.hook.get() {
            Some(hook) => hook.changed(PresenceChange::Left { user: self.user }),
            None if visible => self.hub.announce(self.user, false),
            None => {}
        }
    }
}

impl Hub {
    /// Counts one more open connection of `user`. When it is their first,
    /// `visible` is asked whether they may be shown online (possibly more than once,
    /// if their visibility changes meanwhile), and if so they are announced online.
    pub fn connect_user(&self, user: u64, mut visible: impl FnMut() -> bool) -> PresenceGuard {
        let registry = &self.inner.presence;
        let guard = PresenceGuard {
            hub: self.clone(),
            user,
        };
        loop {
            let seen = registry.changes(user).load(Ordering::Acquire);
            {
                // The common case for a second tab: no read of the visibility.
                let mut users = registry.lock(user);
                if let Some(entry) = users.get_mut(&user) {
                    entry.connections += 1;
                    return guard;
                }
            }
            // Read outside the lock: it may touch the disk.
            let shown = visible();
            let mut users = registry.lock(user);
            if let Some(entry) = users.get_mut(&user) {
                entry.connections += 1;
                return guard;
            }
            if registry.changes(user).load(Ordering::Acquire) != seen {
                // The visibility changed while it was read: read it again.
                continue;
            }
            users.insert(
                user,
                Entry {
                    connections: 1,
                    visible: shown,
                },
            );
            metrics::gauge!("likewise_users_online").increment(1.0);
            match registry.hook.get() {
                Some(hook) => hook.changed(PresenceChange::Arrived {
                    user,
                    visible: shown,
                }),
                None if shown => self.announce(user, true),
                None => {}
            }
            return guard;
        }
    }

    /// Records that `user` now may (or may not) be shown online. Call it after the
    /// choice is stored, and for one user in the order the choices were stored. A
    /// connected user is announced online or offline accordingly (with a
    /// [`PresenceHook`], the hook is told and decides).
    pub fn set_presence_visible(&self, user: u64, visible: bool) {
        let registry = &self.inner.presence;
        let mut users = registry.lock(user);
        registry.changes(user).fetch_add(1, Ordering::AcqRel);
        let hook = registry.hook.get();
        if let Some(entry) = users.get_mut(&user) {
            if entry.visible != visible {
                entry.visible = visible;
                if hook.is_none() {
                    self.announce(user, visible);
                }
            }
        }
        if let Some(hook) = hook {
            hook.changed(PresenceChange::Visibility { user, visible });
        }
    }

    /// Hands every later presence change of this node to `hook`, which then
    /// decides what to announce (the hub announces nothing itself any more);
    /// `false` (and nothing changes) when a hook is already set. Install it before
    /// any connection opens, or resynchronise from [`Hub::presence_snapshot`].
    pub fn set_presence_hook(&self, hook: Arc<dyn PresenceHook>) -> bool {
        self.inner.presence.hook.set(hook).is_ok()
    }

    /// Every user with a connection open on this node and whether they may be
    /// shown online, read one stripe at a time (for a hook that lost track).
    pub fn presence_snapshot(&self) -> Vec<(u64, bool)> {
        self.inner
            .presence
            .stripes
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .map(|(user, e)| (*user, e.visible))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Which of `users` are online and visible on this node, in the order asked,
    /// each once.
    pub fn online(&self, users: &[u64]) -> Vec<u64> {
        let registry = &self.inner.presence;
        let mut seen = std::collections::HashSet::new();
        users
            .iter()
            .copied()
            .filter(|id| registry.lock(*id).get(id).is_some_and(|e| e.visible) && seen.insert(*id))
            .collect()
    }

    /// Whether `user` has at least one open connection on this node, whether or
    /// not they are shown online (for deciding whether a push can reach them at
    /// all). Local even in a cluster: connections on other nodes do not count.
    pub fn is_connected(&self, user: u64) -> bool {
        self.inner.presence.lock(user).contains_key(&user)
    }

    /// Number of users with at least one open connection, hidden ones included.
    pub fn users_connected(&self) -> usize {
        self.inner
            .presence
            .stripes
            .iter()
            .map(|s| lock(s).len())
            .sum()
    }

    /// Publishes `user`'s presence change; called with the user's stripe locked, so
    /// that one user's announcements keep their order.
    fn announce(&self, user: u64, online: bool) {
        self.publish(presence_publication(user, online));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::hub::{Subscription, Transport};

    fn watcher(hub: &Hub, user: u64) -> Subscription {
        let s = hub.subscribe(Transport::Ws);
        s.join(&presence_room(user));
        s
    }

    fn next(s: &mut Subscription) -> Option<Value> {
        s.try_recv().map(|d| {
            let e = d.publication.as_event();
            assert_eq!(e.name, PRESENCE_EVENT);
            e.data()
        })
    }

    #[test]
    fn two_connections_announce_online_once_and_offline_after_both() {
        let hub = Hub::new(16);
        let mut w = watcher(&hub, 7);
        let first = hub.connect_user(7, || true);
        let second = hub.connect_user(7, || panic!("not read for a second connection"));
        assert_eq!(next(&mut w), Some(json!({"user_id": 7, "online": true})));
        assert_eq!(next(&mut w), None);
        assert_eq!(hub.online(&[7, 8, 7]), vec![7]);
        drop(first);
        assert_eq!(next(&mut w), None, "one connection is still open");
        assert_eq!(hub.online(&[7]), vec![7]);
        drop(second);
        assert_eq!(next(&mut w), Some(json!({"user_id": 7, "online": false})));
        assert!(hub.online(&[7]).is_empty());
        assert_eq!(hub.users_connected(), 0);
    }

    #[test]
    fn a_hidden_user_is_never_announced_and_changes_announce_while_connected() {
        let hub = Hub::new(16);
        let mut w = watcher(&hub, 3);
        let g = hub.connect_user(3, || false);
        assert_eq!(next(&mut w), None);
        assert!(hub.online(&[3]).is_empty());
        assert!(hub.is_connected(3), "connected, though not shown");
        assert_eq!(hub.users_connected(), 1);
        hub.set_presence_visible(3, true);
        assert_eq!(next(&mut w), Some(json!({"user_id": 3, "online": true})));
        hub.set_presence_visible(3, true);
        assert_eq!(next(&mut w), None, "no change, no event");
        hub.set_presence_visible(3, false);
        assert_eq!(next(&mut w), Some(json!({"user_id": 3, "online": false})));
        drop(g);
        assert_eq!(next(&mut w), None, "a hidden user's last close is silent");
        assert!(!hub.is_connected(3));
        hub.set_presence_visible(3, true);
        assert_eq!(next(&mut w), None, "not connected: nothing to announce");
    }

    #[test]
    fn a_visibility_change_during_the_first_read_is_not_lost() {
        let hub = Hub::new(16);
        let mut reads = 0;
        let racing = hub.clone();
        let g = hub.connect_user(5, || {
            reads += 1;
            if reads == 1 {
                // The stored choice changes after this read saw "visible".
                racing.set_presence_visible(5, false);
                true
            } else {
                false
            }
        });
        assert_eq!(reads, 2);
        assert!(hub.online(&[5]).is_empty());
        drop(g);
    }

    #[test]
    fn users_on_one_stripe_and_on_others_are_counted_apart() {
        let hub = Hub::new(16);
        let same_stripe = 1 + STRIPES as u64;
        let guards: Vec<_> = [1, same_stripe, 2]
            .into_iter()
            .map(|u| hub.connect_user(u, || true))
            .collect();
        assert_eq!(hub.users_connected(), 3);
        assert_eq!(hub.online(&[2, same_stripe, 1, 3]), vec![2, same_stripe, 1]);
        hub.set_presence_visible(same_stripe, false);
        assert_eq!(hub.online(&[1, same_stripe]), vec![1]);
        drop(guards);
        assert_eq!(hub.users_connected(), 0);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<PresenceChange>>);

    impl PresenceHook for Recorder {
        fn changed(&self, change: PresenceChange) {
            self.0.lock().unwrap().push(change);
        }
    }

    #[test]
    fn with_a_hook_the_hub_hands_over_its_transitions_in_order_and_announces_nothing() {
        let hub = Hub::new(16);
        let hook = Arc::new(Recorder::default());
        assert!(hub.set_presence_hook(hook.clone()));
        assert!(!hub.set_presence_hook(Arc::new(Recorder::default())));
        let mut w = watcher(&hub, 7);
        let first = hub.connect_user(7, || true);
        let second = hub.connect_user(7, || true);
        hub.set_presence_visible(7, false);
        hub.set_presence_visible(8, true);
        assert_eq!(hub.presence_snapshot(), vec![(7, false)]);
        drop(first);
        drop(second);
        let hidden = hub.connect_user(9, || false);
        assert_eq!(next(&mut w), None, "the hook announces, not the hub");
        use PresenceChange::*;
        assert_eq!(
            *hook.0.lock().unwrap(),
            vec![
                Arrived {
                    user: 7,
                    visible: true
                },
                Visibility {
                    user: 7,
                    visible: false
                },
                Visibility {
                    user: 8,
                    visible: true
                },
                Left { user: 7 },
                Arrived {
                    user: 9,
                    visible: false
                },
            ]
        );
        assert!(hub.is_connected(9) && !hub.is_connected(7));
        drop(hidden);
    }

    #[test]
    fn a_subscription_owns_its_presence() {
        let hub = Hub::new(16);
        let mut w = watcher(&hub, 9);
        let mut s = hub.subscribe(Transport::SocketIo);
        s.track_presence(9, || true);
        assert_eq!(next(&mut w).unwrap()["online"], true);
        drop(s);
        assert_eq!(next(&mut w).unwrap()["online"], false);
    }
}
