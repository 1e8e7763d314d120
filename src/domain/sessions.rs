//! Sessions with an end, and one-use realtime tickets.
//!
//! A session token works for `session_ttl_s` after it was issued
//! ([`SessionRecord::created_at`], so sessions made by earlier releases expire the
//! same way), until it is signed out, or until its user signs out everywhere or
//! changes the password. Each of these answers 401 with a message saying which:
//! - signing one token out removes its session and leaves a tombstone
//!   (`revoked_sessions`: token hash → when the session would have expired);
//! - signing out everywhere, and changing the password, record a cutoff per user
//!   (`session_cutoffs`): every session of that user issued at or before it is
//!   revoked, except the one the password was changed with. One write, however
//!   many sessions the user has, and no index of sessions by user is needed.
//!
//! Expired sessions, tombstones and cutoffs are swept away [`SWEEP_GRACE_MS`] after
//! the sessions they concern have expired (until then a client is told why its
//! token stopped working), at most once an hour, lazily, after a sign-in or a
//! registration.
//!
//! Tickets: `/ws`, Socket.IO and the admin stream are opened from browsers, which
//! cannot set headers on a websocket or an `EventSource`, and a token in a URL ends
//! up in histories and proxy logs. A ticket is a random string worth one
//! connection within `ticket_ttl_ms`, kept only in memory and only as its SHA-256,
//! bounded in number in all and per holder.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::users::{new_token, token_hash, AccountSettings, User};
use super::{commit, DomainError, DomainResult, Social};
use crate::store::now_ms;

/// How long expired sessions and their tombstones are kept after they expired.
pub const SWEEP_GRACE_MS: i64 = 7 * 24 * 3600 * 1000;

/// Time between two sweeps of expired sessions. A sweep reads every session, and
/// nothing depends on its promptness (expiry is checked on every use), so it is rare.
const SWEEP_EVERY_MS: i64 = 3_600_000;

/// Records read per step of a sweep.
const SWEEP_PAGE: usize = 1000;

/// What 401 answers for a token that is unknown (never issued, or swept away).
pub const NO_TOKEN: &str = "a valid token is required: send Authorization: Bearer <token>";

fn unauthorized(message: &str) -> DomainError {
    DomainError::Unauthorized(message.to_owned())
}

/// The signed-in user of a token, and the token's hash (which names the session).
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// SHA-256 of the token.
    pub session: [u8; 32],
}

/// Who a ticket was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketHolder {
    /// A user's session (the token's hash): the ticket dies with the session.
    User(u64, [u8; 32]),
    /// The admin token.
    Admin,
}

impl TicketHolder {
    fn key(&self) -> Option<u64> {
        match self {
            TicketHolder::User(id, _) => Some(*id),
            TicketHolder::Admin => None,
        }
    }
}

/// A redeemed ticket: who may connect.
#[derive(Debug, Clone)]
pub enum Redeemed {
    /// A signed-in user.
    User(User),
    /// The admin.
    Admin,
}

/// A new ticket as rendered (`POST /api/realtime/tickets`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` or Socket.IO `auth: {ticket}`; works once.
    pub ticket: String,
    /// It must be used within this.
    pub expires_in_ms: u64,
}

#[derive(Default)]
struct TicketMap {
    live: HashMap<[u8; 32], (TicketHolder, Instant)>,
    per_holder: HashMap<Option<u64>, usize>,
}

impl TicketMap {
    fn forget(&mut self, holder: &TicketHolder) {
        let key = holder.key();
        if let Some(n) = self.per_holder.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_holder.remove(&key);
            }
        }
    }

    fn purge(&mut self, now: Instant) {
        let expired: Vec<_> = self
            .live
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(k, (h, _))| (*k, *h))
            .collect();
        for (k, h) in expired {
            self.live.remove(&k);
            self.forget(&h);
        }
    }
}

/// Unused tickets, in memory only.
pub(super) struct Tickets {
    ttl: Duration,
    max: usize,
    per_holder: usize,
    map: Mutex<TicketMap>,
}

impl Tickets {
    pub(super) fn new(s: &AccountSettings) -> Tickets {
        Tickets {
            ttl: Duration::from_millis(s.ticket_ttl_ms),
            max: s.max_tickets,
            per_holder: s.max_tickets_per_holder,
            map: Mutex::default(),
        }
    }

    fn issue(&self, holder: TicketHolder, now: Instant) -> DomainResult<Ticket> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let held = |m: &TicketMap| m.per_holder.get(&holder.key()).copied().unwrap_or(0);
        if map.live.len() >= self.max || held(&map) >= self.per_holder {
            map.purge(now);
        }
        if held(&map) >= self.per_holder {
            return Err(DomainError::Throttled {
                message: format!(
                    "at most {} unused tickets at once; use one or wait for them to expire",
                    self.per_holder
                ),
                retry_after_s: self.ttl.as_secs().max(1),
            });
        }
        if map.live.len() >= self.max {
            return Err(DomainError::Throttled {
                message: "too many unused tickets on this server; try again shortly".into(),
                retry_after_s: self.ttl.as_secs().max(1),
            });
        }
        let ticket = new_token();
        map.live
            .insert(token_hash(&ticket), (holder, now + self.ttl));
        *map.per_holder.entry(holder.key()).or_insert(0) += 1;
        Ok(Ticket {
            ticket,
            expires_in_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Takes the ticket out (it works once) and says whose it was, if still valid.
    fn take(&self, ticket: &str, now: Instant) -> Option<TicketHolder> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (holder, until) = map.live.remove(&token_hash(ticket))?;
        map.forget(&holder);
        (until > now).then_some(holder)
    }
}

impl Social {
    fn session_ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.accounts.session_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// The user a bearer token belongs to; 401 `Unauthorized` saying whether the
    /// token is unknown, expired or revoked.
    pub fn authenticate(&self, token: &str) -> DomainResult<User> {
        self.signed_in(token).map(|s| s.user)
    }

    /// As [`Social::authenticate`], with the session's name.
    pub fn signed_in(&self, token: &str) -> DomainResult<SignedIn> {
        if token.is_empty() || token.len() > 256 {
            return Err(unauthorized(NO_TOKEN));
        }
        self.session_by_hash(token_hash(token))
    }

    fn session_by_hash(&self, hash: [u8; 32]) -> DomainResult<SignedIn> {
        let tables = self.store().tables();
        let now = now_ms();
        let Some(session) = tables.tokens.get(&hash)? else {
            return match tables.revoked_sessions.get(&hash)? {
                Some(until) if until > now => Err(unauthorized("session revoked: sign in again")),
                Some(_) => Err(unauthorized("session expired: sign in again")),
                None => Err(unauthorized(NO_TOKEN)),
            };
        };
        if let Some((cutoff, kept)) = tables.session_cutoffs.get(&session.user_id)? {
            if session.created_at.0 <= cutoff && kept != Some(hash) {
                return Err(unauthorized("session revoked: sign in again"));
            }
        }
        if session.created_at.0.saturating_add(self.session_ttl_ms()) <= now {
            return Err(unauthorized("session expired: sign in again"));
        }
        match tables.users.get(&session.user_id)? {
            Some(record) => Ok(SignedIn {
                user: User::from(&record),
                session: hash,
            }),
            None => Err(unauthorized(NO_TOKEN)),
        }
    }

    /// Signs out the session `s`; with `everywhere`, every session of its user.
    pub async fn sign_out(&self, s: &SignedIn, everywhere: bool) -> DomainResult<()> {
        let hash = s.session;
        let user = s.user.id;
        let ttl = self.session_ttl_ms();
        commit(self.store(), move |tx| {
            let t = tx.t();
            if everywhere {
                tx.insert(&t.session_cutoffs, &user, &(now_ms(), None))?;
            }
            if let Some(session) = tx.get(&t.tokens, &hash)? {
                tx.remove(&t.tokens, &hash)?;
                let until = session.created_at.0.saturating_add(ttl);
                tx.insert(&t.revoked_sessions, &hash, &until)?;
            }
            Ok(Ok(()))
        })
        .await
    }

    /// Changes the password of the signed-in user after checking the old one
    /// (under the sign-in throttles, since it is a password check too) and revokes
    /// every other session of the user; the session `s` stays.
    pub async fn change_password(
        &self,
        s: &SignedIn,
        old_password: String,
        new_password: String,
        from: std::net::IpAddr,
    ) -> DomainResult<()> {
        self.check_password(&new_password)?;
        let record = self
            .check_credentials(&s.user.name, old_password, from)
            .await
            .map_err(|e| match e {
                DomainError::Unauthorized(_) => {
                    DomainError::Forbidden("the old password is wrong".into())
                }
                other => other,
            })?;
        if record.id != s.user.id {
            return Err(DomainError::Forbidden("the old password is wrong".into()));
        }
        let password_hash = self.hash_password(new_password).await?;
        let (user, kept) = (s.user.id, s.session);
        commit(self.store(), move |tx| {
            let t = tx.t();
            let Some(mut record) = tx.get(&t.users, &user)? else {
                return Ok(Err(DomainError::NotFound("user")));
            };
            record.password_hash = password_hash.clone();
            tx.insert(&t.users, &user, &record)?;
            tx.insert(&t.session_cutoffs, &user, &(now_ms(), Some(kept)))?;
            Ok(Ok(()))
        })
        .await
    }

    /// A ticket for the signed-in session `s` (for `/ws` and Socket.IO).
    pub fn issue_user_ticket(&self, s: &SignedIn) -> DomainResult<Ticket> {
        self.inner
            .tickets
            .issue(TicketHolder::User(s.user.id, s.session), Instant::now())
    }

    /// A ticket for the admin (for the admin stream).
    pub fn issue_admin_ticket(&self) -> DomainResult<Ticket> {
        self.inner
            .tickets
            .issue(TicketHolder::Admin, Instant::now())
    }

    /// Spends a ticket: who it was issued to, if it is unused, unexpired, and (for a
    /// user's) its session still valid. 401 otherwise.
    pub fn redeem_ticket(&self, ticket: &str) -> DomainResult<Redeemed> {
        let refused = || unauthorized("unknown, used or expired ticket: get a new one");
        if ticket.is_empty() || ticket.len() > 256 {
            return Err(refused());
        }
        match self.inner.tickets.take(ticket, Instant::now()) {
            None => Err(refused()),
            Some(TicketHolder::Admin) => Ok(Redeemed::Admin),
            Some(TicketHolder::User(_, session)) => self
                .session_by_hash(session)
                .map(|s| Redeemed::User(s.user)),
        }
    }

    /// Starts a sweep of expired sessions in the background if the last one is more
    /// than [`SWEEP_EVERY_MS`] old.
    pub(super) fn sweep_sessions_now_and_then(&self) {
        let now = now_ms();
        let last = self.inner.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY_MS
            || self
                .inner
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let social = self.clone();
        tokio::spawn(async move {
            match social.sweep_sessions(now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "swept expired sessions"),
                Err(e) => tracing::warn!(error = %e, "sweeping expired sessions failed"),
            }
        });
    }

    /// Removes sessions, tombstones and cutoffs that concern only sessions expired
    /// more than [`SWEEP_GRACE_MS`] before `now`; returns how many.
    pub async fn sweep_sessions(&self, now: i64) -> DomainResult<usize> {
        let ttl = self.session_ttl_ms();
        let stale =
            move |issued: i64| issued.saturating_add(ttl).saturating_add(SWEEP_GRACE_MS) <= now;
        let tables = self.store().tables();
        let mut tokens = Vec::new();
        let mut from = [0u8; 32];
        loop {
            let page = tables
                .tokens
                .range(&from, std::ops::Bound::Unbounded, SWEEP_PAGE)?;
            let last = page.last().map(|(k, _)| *k);
            tokens.extend(
                page.iter()
                    .filter(|(_, s)| stale(s.created_at.0))
                    .map(|(k, _)| *k),
            );
            match (last, page.len() == SWEEP_PAGE) {
                (Some(k), true) => from = next_key(k),
                _ => break,
            }
        }
        let tombstones: Vec<[u8; 32]> = tables
            .revoked_sessions
            .range(&[0u8; 32], std::ops::Bound::Unbounded, usize::MAX)?
            .into_iter()
            .filter(|(_, until)| until.saturating_add(SWEEP_GRACE_MS) <= now)
            .map(|(k, _)| k)
            .collect();
        let cutoffs: Vec<u64> = tables
            .session_cutoffs
            .range(&0, std::ops::Bound::Unbounded, usize::MAX)?
            .into_iter()
            .filter(|(_, (at, _))| stale(*at))
            .map(|(k, _)| k)
            .collect();
        let removed = tokens.len() + tombstones.len() + cutoffs.len();
        for chunk in tokens.chunks(SWEEP_PAGE) {
            let chunk = chunk.to_vec();
            self.store()
                .write_lazy(move |tx| {
                    for k in &chunk {
                        // Re-checked inside: a token is never re-issued, but be exact.
                        if let Some(s) = tx.get(&tx.t().tokens, k)? {
                            if stale(s.created_at.0) {
                                tx.remove(&tx.t().tokens, k)?;
                            }
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        if !tombstones.is_empty() || !cutoffs.is_empty() {
            self.store()
                .write_lazy(move |tx| {
                    for k in &tombstones {
                        tx.remove(&tx.t().revoked_sessions, k)?;
                    }
                    for u in &cutoffs {
                        if let Some((at, _)) = tx.get(&tx.t().session_cutoffs, u)? {
                            if stale(at) {
                                tx.remove(&tx.t().session_cutoffs, u)?;
                            }
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(removed)
    }
}

/// The smallest key after `k`.
fn next_key(mut k: [u8; 32]) -> [u8; 32] {
    for b in k.iter_mut().rev() {
        if *b == u8::MAX {
            *b = 0;
        } else {
            *b += 1;
            return k;
        }
    }
    [u8::MAX; 32]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tickets(per_holder: usize, max: usize) -> Tickets {
        Tickets::new(&AccountSettings {
            max_tickets: max,
            max_tickets_per_holder: per_holder,
            ..AccountSettings::default()
        })
    }

    #[test]
    fn a_ticket_works_once_and_only_before_it_expires() {
        let t = tickets(4, 100);
        let now = Instant::now();
        let a = t.issue(TicketHolder::Admin, now).unwrap();
        assert_eq!(a.expires_in_ms, 30_000);
        assert_eq!(t.take(&a.ticket, now), Some(TicketHolder::Admin));
        assert_eq!(t.take(&a.ticket, now), None, "a second use");
        let b = t.issue(TicketHolder::Admin, now).unwrap();
        assert_eq!(t.take(&b.ticket, now + Duration::from_secs(30)), None);
        assert_eq!(t.take("made-up", now), None);
    }

    #[test]
    fn tickets_are_bounded_per_holder_and_in_all() {
        let t = tickets(2, 3);
        let now = Instant::now();
        let alice = TicketHolder::User(1, [1; 32]);
        t.issue(alice, now).unwrap();
        let kept = t.issue(alice, now).unwrap();
        assert!(matches!(
            t.issue(alice, now),
            Err(DomainError::Throttled { .. })
        ));
        t.issue(TicketHolder::Admin, now).unwrap();
        assert!(
            t.issue(TicketHolder::User(2, [2; 32]), now).is_err(),
            "the total is full"
        );
        assert!(t.take(&kept.ticket, now).is_some());
        assert!(t.issue(alice, now).is_ok(), "a used ticket frees its place");
        let later = now + Duration::from_secs(31);
        assert!(
            t.issue(TicketHolder::User(2, [2; 32]), later).is_ok(),
            "expired tickets are purged when full"
        );
    }

    #[test]
    fn next_key_carries() {
        let mut k = [0u8; 32];
        k[31] = 0xff;
        let n = next_key(k);
        assert_eq!((n[30], n[31]), (1, 0));
    }
}
