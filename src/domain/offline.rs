//! The offline fallback: the `notification.undelivered` webhook event, sent once for
//! each notification its receiver did not get in real time, so that an outside
//! service can email or push it. This module owns what "delivered" means, the sweep
//! that finds notifications left undelivered, and the durable cursor that makes the
//! event go out exactly once per notification. It never pushes anything itself and
//! knows the hub only through the [`Connected`] question and the receiver counts
//! the publisher reports.
//!
//! **Delivered** means: when the notification was pushed (after its commit, in
//! commit order), the hub queued it for at least one subscriber of its receiver's
//! room `user:{id}` — one of their websocket or Socket.IO connections (a RESP
//! subscriber of that channel, or of a pattern matching it, counts too: it is a
//! bridge that carries the push on). Queued is as far as the server can know: a
//! connection that drops with the push in its buffer still counts as delivered.
//!
//! A notification becomes undelivered in one of two ways:
//! - its receiver had no open connection when it was stored: its commit schedules
//!   the event at once ([`super::effects`]), durable with the notification;
//! - its receiver looked connected, but the push reached nobody (the connection
//!   closed in between, or was dropped as too slow): the publisher notes it here,
//!   and the sweep — the periodic task `sweep_undelivered` — schedules the event
//!   once it has stayed unread for `offline_after_s`. Read before then: no event.
//!
//! Either way the event's mark (`undelivered:sent:{id}`) is written with its
//! deliveries, so it is scheduled at most once; the deliveries are tasks, retried
//! like any webhook and delivered at least once.
//!
//! **Durability.** The sweep's cursor (`undelivered:cursor`) says every notification
//! up to it has been decided; it advances in the commit that schedules the events,
//! so a crash neither loses nor repeats one. Which notifications were pushed to
//! nobody is known in memory only. A graceful stop stores it
//! (`undelivered:known`, `undelivered:missed:{id}`); after a crash, notifications
//! stored since the last stop and not yet decided are of unknown delivery and are
//! treated as undelivered if still unread after `offline_after_s`: the fallback
//! errs toward telling the user twice rather than never.
//!
//! **Cost.** Nothing is written per notification whose receiver is connected and
//! gets the push; one mark and the webhook tasks per event sent; one cursor write
//! per sweep that moved. A sweep decides at most [`SWEEP_BATCH`] notifications.
//! Memory: one map entry per notification pushed to nobody while its receiver
//! looked connected (a race with a closing connection, or a dropped slow one),
//! until the sweep decides it `offline_after_s` later.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::effects::{self, Connected, PolicyParts, NOTIFICATION_UNDELIVERED};
use super::{commit, DomainResult, Notification, Social};
use crate::store::{now_ms, Store};

/// Most notifications one sweep decides; the next sweep goes on from there.
pub const SWEEP_BATCH: usize = 1000;

/// Every notification up to this id has been decided.
const CURSOR: &str = "undelivered:cursor";
/// Written by a graceful stop: every notification up to this id was pushed, and
/// the ones pushed to nobody are listed under [`MISSED_PREFIX`].
const KNOWN: &str = "undelivered:known";
/// `undelivered:missed:{id:020}` → created_at (ms): pushed to nobody, undecided at
/// the last graceful stop.
const MISSED_PREFIX: &str = "undelivered:missed:";

fn missed_key(id: u64) -> String {
    format!("{MISSED_PREFIX}{id:020}")
}

/// The running offline fallback (present only when some webhook wants
/// `notification.undelivered`).
pub struct Offline {
    connected: Connected,
    after_ms: i64,
    state: Mutex<Tracker>,
}

/// What the process knows about the delivery of notifications not yet decided.
#[derive(Debug)]
struct Tracker {
    /// The highest notification id stored before this start: the publisher reports
    /// every later one.
    boot_max: u64,
    /// Notifications in `(scan_from, boot_max]` are of unknown delivery (stored
    /// after the last graceful stop, before a crash).
    scan_from: u64,
    /// The highest notification id the publisher has pushed.
    published_upto: u64,
    /// Notifications pushed to nobody and not yet decided: id → created_at (ms).
    missed: BTreeMap<u64, i64>,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Notifications for which `notification.undelivered` was scheduled.
    pub scheduled: u64,
    /// The cursor after the sweep.
    pub cursor: u64,
}

impl Offline {
    /// The sweep's period: a tenth of `offline_after_s`, between 1 and 10 seconds,
    /// so that an event goes out at most that much after its deadline.
    pub fn sweep_every_s(offline_after_s: u64) -> u64 {
        (offline_after_s / 10).clamp(1, 10)
    }

    /// Notes that notification `n` was pushed to `delivered` subscribers. Called by
    /// the publisher for every notification, in commit order.
    pub fn pushed(&self, store: &Store, n: &Notification, delivered: usize) {
        // A receiver who was offline when it was stored got the event with it; the
        // mark says so (committed before the push).
        let decided = delivered > 0
            || store
                .tables()
                .effects
                .contains(&effects::undelivered_mark(n.id))
                .unwrap_or(false);
        let mut st = self.lock();
        st.published_upto = st.published_upto.max(n.id);
        if !decided && n.id > st.boot_max {
            st.missed.insert(n.id, n.created_at.0);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Adds the due entries of `missed` in `(*upto, hi]` to `due`, moving `*upto` as
/// far as everything is decided. Returns false when it stopped early (an entry not
/// yet due, or a full batch).
fn walk_missed(
    missed: &BTreeMap<u64, i64>,
    upto: &mut u64,
    hi: u64,
    deadline: i64,
    due: &mut Vec<u64>,
) -> bool {
    if hi <= *upto {
        return true;
    }
    for (&id, &created) in missed.range(*upto + 1..=hi) {
        if created > deadline || due.len() >= SWEEP_BATCH {
            *upto = id - 1;
            return false;
        }
        due.push(id);
        *upto = id;
    }
    *upto = hi;
    true
}

impl Social {
    /// What the effects of an action need: hooks, attempts, and whether receivers
    /// are connected when the offline fallback runs.
    pub(crate) fn policy_parts(&self) -> PolicyParts {
        PolicyParts {
            hooks: self.inner.webhooks.clone(),
            max_attempts: self.max_attempts(),
            connected: self.inner.offline.get().map(|o| o.connected.clone()),
        }
    }

    /// The offline fallback, when it runs.
    pub fn offline(&self) -> Option<Arc<Offline>> {
        self.inner.offline.get().cloned()
    }

    /// Starts the offline fallback if some webhook wants `notification.undelivered`
    /// (returns whether it did): from now on, a notification stored for a receiver
    /// that `connected` says is offline schedules the event in its own commit. Call
    /// once at start-up, before anything is published. A first start sets the
    /// cursor at the newest notification: earlier ones are never swept.
    pub async fn start_offline_fallback(
        &self,
        connected: Connected,
        offline_after_s: u64,
    ) -> DomainResult<bool> {
        if !effects::wanted(&self.inner.webhooks, NOTIFICATION_UNDELIVERED) {
            return Ok(false);
        }
        let t = self.store().tables();
        let boot_max = t
            .notifications
            .range_rev(Bound::Unbounded, Bound::Unbounded, 1)?
            .first()
            .map_or(0, |(id, _)| *id);
        let cursor = match t.effects.get(&CURSOR.to_owned())? {
            Some(c) => c,
            None => {
                commit(self.store(), move |tx| {
                    tx.insert(&tx.t().effects, &CURSOR.to_owned(), &boot_max)?;
                    Ok(Ok(()))
                })
                .await?;
                boot_max
            }
        };
        let known = t.effects.get(&KNOWN.to_owned())?.unwrap_or(0);
        let saved = t.effects.range(
            &MISSED_PREFIX.to_owned(),
            Bound::Excluded(&format!("{MISSED_PREFIX}~")),
            usize::MAX,
        )?;
        let missed = saved
            .into_iter()
            .filter_map(|(k, created)| {
                let id: u64 = k.strip_prefix(MISSED_PREFIX)?.parse().ok()?;
                (id > cursor && id <= known).then_some((id, created as i64))
            })
            .collect();
        let tracker = Tracker {
            boot_max,
            scan_from: known.max(cursor).min(boot_max),
            published_upto: boot_max,
            missed,
        };
        let offline = Offline {
            connected,
            after_ms: (offline_after_s as i64).saturating_mul(1000),
            state: Mutex::new(tracker),
        };
        let _ = self.inner.offline.set(Arc::new(offline));
        Ok(true)
    }

    /// One sweep: schedules `notification.undelivered` for every notification past
    /// its `offline_after_s` that was not delivered and is unread, at most
    /// [`SWEEP_BATCH`] of them, and moves the cursor past what it decided — in one
    /// commit. Does nothing when the fallback does not run.
    pub async fn sweep_undelivered(&self) -> DomainResult<Swept> {
        let Some(offline) = self.offline() else {
            return Ok(Swept {
                scheduled: 0,
                cursor: 0,
            });
        };
        let t = self.store().tables();
        let cursor = t.effects.get(&CURSOR.to_owned())?.unwrap_or(0);
        let deadline = now_ms() - offline.after_ms;
        let mut due = Vec::new();
        let mut upto = cursor;
        let (scan_from, boot_max) = {
            let st = offline.lock();
            (st.scan_from, st.boot_max)
        };
        // In id order: what the last graceful stop knew, then what a crash left
        // unknown, then what this process pushed.
        let mut open = walk_missed(
            &offline.lock().missed,
            &mut upto,
            scan_from,
            deadline,
            &mut due,
        );
        if open && upto < boot_max {
            let rows = t.notifications.range(
                &(upto + 1),
                Bound::Included(&boot_max),
                SWEEP_BATCH.saturating_sub(due.len()),
            )?;
            let full = rows.len() >= SWEEP_BATCH.saturating_sub(due.len());
            for (id, r) in rows {
                if r.created_at > deadline {
                    open = false;
                    break;
                }
                if !r.read {
                    due.push(id);
                }
                upto = id;
            }
            if open && !full {
                upto = boot_max;
            } else {
                open = false;
            }
        }
        if open {
            let st = offline.lock();
            let hi = st.published_upto;
            walk_missed(&st.missed, &mut upto, hi, deadline, &mut due);
        }
        if upto == cursor && due.is_empty() {
            return Ok(Swept {
                scheduled: 0,
                cursor,
            });
        }
        let parts = self.policy_parts();
        let scheduled = commit(self.store(), move |tx| {
            let t = tx.t();
            let mut scheduled = 0;
            for id in &due {
                let saved = missed_key(*id);
                if tx.contains(&t.effects, &saved)? {
                    tx.remove(&t.effects, &saved)?;
                }
                let Some(r) = tx.get(&t.notifications, id)? else {
                    continue;
                };
                if r.read {
                    continue;
                }
                let n = super::notifications::view_in(tx, *id, &r)?;
                if effects::notification_undelivered(tx, &n, &parts.hooks, parts.max_attempts)? {
                    scheduled += 1;
                }
            }
            // Never backwards: a sweep started before another committed.
            let stored = tx.get(&t.effects, &CURSOR.to_owned())?.unwrap_or(0);
            if upto > stored {
                tx.insert(&t.effects, &CURSOR.to_owned(), &upto)?;
            }
            Ok(Ok(scheduled))
        })
        .await?;
        let mut st = offline.lock();
        st.missed = st.missed.split_off(&(upto + 1));
        drop(st);
        if scheduled > 0 {
            tracing::info!(
                scheduled,
                cursor = upto,
                "notification.undelivered scheduled for notifications nobody received"
            );
        }
        Ok(Swept {
            scheduled,
            cursor: upto,
        })
    }

    /// Stores what this process knows about undelivered notifications, so that a
    /// restart sends nothing for the ones that were delivered. Called by a graceful
    /// stop after the last push.
    pub async fn persist_undelivered(&self) -> DomainResult<()> {
        let Some(offline) = self.offline() else {
            return Ok(());
        };
        let (known, missed) = {
            let st = offline.lock();
            (st.published_upto, st.missed.clone())
        };
        commit(self.store(), move |tx| {
            let t = tx.t();
            for (id, created) in &missed {
                tx.insert(&t.effects, &missed_key(*id), &((*created).max(0) as u64))?;
            }
            tx.insert(&t.effects, &KNOWN.to_owned(), &known)?;
            Ok(Ok(()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_period_is_a_tenth_of_the_deadline_within_bounds() {
        assert_eq!(Offline::sweep_every_s(1), 1);
        assert_eq!(Offline::sweep_every_s(60), 6);
        assert_eq!(Offline::sweep_every_s(86_400), 10);
    }

    #[test]
    fn missed_keys_sort_by_id() {
        assert!(missed_key(9) < missed_key(10));
        assert!(missed_key(u64::MAX) < format!("{MISSED_PREFIX}~"));
    }

    #[test]
    fn walking_stops_before_the_first_entry_not_yet_due() {
        let missed: BTreeMap<u64, i64> = [(5, 100), (7, 100), (9, 500)].into();
        let mut upto = 3;
        let mut due = Vec::new();
        assert!(!walk_missed(&missed, &mut upto, 20, 200, &mut due));
        assert_eq!(due, vec![5, 7]);
        assert_eq!(
            upto, 8,
            "everything before the entry not yet due is decided"
        );
        let mut due = Vec::new();
        assert!(walk_missed(&missed, &mut upto, 20, 1000, &mut due));
        assert_eq!(due, vec![9]);
        assert_eq!(upto, 20);
    }
}
