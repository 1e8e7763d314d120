//! Throttles on password guessing and account creation, in memory.
//!
//! A sign-in attempt **reserves** its place before the password is verified, so
//! guesses sent at the same time count as much as guesses sent one after the other
//! (checking a counter before argon2 and bumping it after let 60 simultaneous
//! guesses all through). A correct password gives its reservation back; a wrong
//! one keeps it as a failure. Two rules, in this order:
//!
//! 1. **Per client address** ([`AddressLimit`]): at most `login_failures_per_ip`
//!    failed or pending sign-ins per address within `login_window_s`; further
//!    attempts from it get 429 with `Retry-After` without being checked. IPv6
//!    addresses count per /64 (one host usually holds a whole /64).
//! 2. **Per name, only for addresses that failed on it** ([`NameGuard`]): once a
//!    name has seen `name_failures` failures within `name_window_s` (from any
//!    number of addresses), the addresses that contributed a failure are refused
//!    for that name until its window ends; an address with no failure on the name
//!    is still let through. So someone guessing cannot lock the owner out (the
//!    owner signs in from another address, or from the same one before having
//!    mistyped), while guesses spread over many addresses still run out: each
//!    address gets at most a few tries per name and window.
//!
//! Registration is counted per address ([`AddressLimit`] again): every attempt that
//! reaches password hashing costs a reservation that is not given back, because the
//! hashing is the cost being bounded.
//!
//! Memory is bounded: entries whose window has ended are dropped once a map holds
//! [`MAX_ENTRIES`]. If it is still full (an attack from that many addresses, or on
//! that many names, within one window), a new address is refused with 429 until
//! entries expire (closed rather than unlimited), while a new name is simply not
//! tracked (rule 1 still holds for it). A name tracks at most
//! [`MAX_ADDRESSES_PER_NAME`] addresses (past that, further addresses are limited by
//! rule 1 only). Names are length-checked by the caller before they become keys here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries a map may hold before those whose window has ended are dropped.
pub const MAX_ENTRIES: usize = 100_000;

/// Addresses one name remembers as having failed on it.
pub const MAX_ADDRESSES_PER_NAME: usize = 1024;

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 (IPv4-mapped
/// IPv6 addresses as the IPv4 address they carry).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the window that refused ends (at least 1).
    pub retry_after_s: u64,
}

fn retry_after(start: Instant, window: Duration, now: Instant) -> Throttled {
    let left = window.saturating_sub(now.duration_since(start));
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Throttled {
        retry_after_s: secs.max(1),
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    count: u32,
    start: Instant,
}

/// A place taken in an [`AddressLimit`]'s window; give it back with
/// [`AddressLimit::release`] when the attempt turns out not to count.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    key: IpAddr,
    start: Instant,
}

/// At most `max` reservations per address within a fixed window that starts at the
/// address's first reservation.
pub struct AddressLimit {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, Window>>,
}

impl AddressLimit {
    /// A limit of `max` per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        AddressLimit {
            max: max.max(1),
            window: window.max(Duration::from_secs(1)),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for `ip`, or says how long to wait.
    pub fn reserve(&self, ip: IpAddr, now: Instant) -> Result<Reservation, Throttled> {
        let key = address_key(ip);
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            let window = self.window;
            map.retain(|_, w| now.duration_since(w.start) < window);
            if map.len() >= MAX_ENTRIES {
                return Err(Throttled { retry_after_s: 1 });
            }
        }
        let entry = map.entry(key).or_insert(Window {
            count: 0,
            start: now,
        });
        if now.duration_since(entry.start) >= self.window {
            *entry = Window {
                count: 0,
                start: now,
            };
        }
        if entry.count >= self.max {
            return Err(retry_after(entry.start, self.window, now));
        }
        entry.count += 1;
        Ok(Reservation {
            key,
            start: entry.start,
        })
    }

    /// Gives a place back (a correct password), unless its window is already over.
    pub fn release(&self, r: Reservation) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&r.key) {
            if entry.start == r.start {
                entry.count = entry.count.saturating_sub(1);
            }
        }
    }
}

struct NameEntry {
    failures: u32,
    start: Instant,
    addresses: HashMap<IpAddr, u32>,
}

/// A pending attempt on a name; settle it with [`NameGuard::succeeded`] or
/// [`NameGuard::failed`].
#[derive(Debug, Clone)]
pub struct NameAttempt {
    name: String,
    key: IpAddr,
    start: Instant,
}

/// The per-name rule (rule 2 of the module documentation).
pub struct NameGuard {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, NameEntry>>,
}

impl NameGuard {
    /// At most `max` failures per name within `window` before the addresses that
    /// failed on it are refused.
    pub fn new(max: u32, window: Duration) -> Self {
        NameGuard {
            max: max.max(1),
            window: window.max(Duration::from_secs(1)),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Starts an attempt on `name` (already length-checked and normalised) from
    /// `ip`: refused if the name is over its limit and this address failed on it.
    /// The attempt counts as a failure until it is settled.
    pub fn begin(&self, name: &str, ip: IpAddr, now: Instant) -> Result<NameAttempt, Throttled> {
        let key = address_key(ip);
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(name) {
            let window = self.window;
            map.retain(|_, e| now.duration_since(e.start) < window);
            if map.len() >= MAX_ENTRIES {
                // Untracked: settling it finds no entry and does nothing.
                return Ok(NameAttempt {
                    name: name.to_owned(),
                    key,
                    start: now,
                });
            }
        }
        let entry = map.entry(name.to_owned()).or_insert_with(|| NameEntry {
            failures: 0,
            start: now,
            addresses: HashMap::new(),
        });
        if now.duration_since(entry.start) >= self.window {
            entry.failures = 0;
            entry.start = now;
            entry.addresses.clear();
        }
        let failed_here = entry.addresses.get(&key).copied().unwrap_or(0) > 0;
        if entry.failures >= self.max && failed_here {
            return Err(retry_after(entry.start, self.window, now));
        }
        entry.failures += 1;
        if entry.addresses.len() < MAX_ADDRESSES_PER_NAME || entry.addresses.contains_key(&key) {
            *entry.addresses.entry(key).or_insert(0) += 1;
        }
        Ok(NameAttempt {
            name: name.to_owned(),
            key,
            start: entry.start,
        })
    }

    /// The password was right: the attempt does not count, and the address's
    /// earlier failures on this name are forgiven.
    pub fn succeeded(&self, a: NameAttempt) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&a.name) {
            if entry.start == a.start {
                let mine = entry.addresses.remove(&a.key).unwrap_or(1);
                entry.failures = entry.failures.saturating_sub(mine);
            }
        }
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(&self, a: NameAttempt) {
        drop(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reservations_count_before_the_outcome_is_known() {
        let l = AddressLimit::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let a = ip("10.0.0.1");
        let held: Vec<_> = (0..3).map(|_| l.reserve(a, t).unwrap()).collect();
        let refused = l.reserve(a, t).unwrap_err();
        assert_eq!(refused.retry_after_s, 60);
        assert!(
            l.reserve(ip("10.0.0.2"), t).is_ok(),
            "other addresses are apart"
        );
        l.release(held[0]);
        assert!(
            l.reserve(a, t).is_ok(),
            "a released place can be taken again"
        );
        assert!(
            l.reserve(a, t + Duration::from_secs(60)).is_ok(),
            "windows end"
        );
    }

    #[test]
    fn retry_after_counts_down_and_is_never_zero() {
        let l = AddressLimit::new(1, Duration::from_secs(60));
        let t = Instant::now();
        let a = ip("10.0.0.1");
        l.reserve(a, t).unwrap();
        let r = l.reserve(a, t + Duration::from_millis(59_500)).unwrap_err();
        assert_eq!(r.retry_after_s, 1);
        let r = l.reserve(a, t + Duration::from_secs(30)).unwrap_err();
        assert_eq!(r.retry_after_s, 30);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        let l = AddressLimit::new(1, Duration::from_secs(60));
        let t = Instant::now();
        l.reserve(ip("2001:db8::1"), t).unwrap();
        assert!(l.reserve(ip("2001:db8::2"), t).is_err());
        assert!(l.reserve(ip("2001:db8:0:1::1"), t).is_ok());
    }

    #[test]
    fn a_name_under_attack_refuses_only_the_addresses_that_failed_on_it() {
        let g = NameGuard::new(3, Duration::from_secs(300));
        let t = Instant::now();
        let attacker = ip("10.0.0.66");
        for _ in 0..3 {
            let a = g.begin("alice", attacker, t).unwrap();
            g.failed(a);
        }
        assert!(g.begin("alice", attacker, t).is_err());
        assert!(g.begin("bob", attacker, t).is_ok(), "other names are apart");
        let owner = g.begin("alice", ip("10.0.0.7"), t).unwrap();
        g.succeeded(owner);
        assert!(g.begin("alice", ip("10.0.0.7"), t).is_ok());
        assert!(g
            .begin("alice", attacker, t + Duration::from_secs(300))
            .is_ok());
    }

    #[test]
    fn full_maps_stay_bounded() {
        let t = Instant::now();
        let window = Duration::from_secs(60);
        let l = AddressLimit::new(5, window);
        let g = NameGuard::new(1, window);
        for i in 0..MAX_ENTRIES as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            l.reserve(ip, t).unwrap();
            g.failed(g.begin(&format!("n{i}"), ip, t).unwrap());
        }
        let newcomer = ip("203.0.113.9");
        assert!(
            l.reserve(newcomer, t).is_err(),
            "full of live entries: closed"
        );
        assert!(
            l.reserve(IpAddr::V4(0.into()), t).is_ok(),
            "known ones go on"
        );
        assert!(
            l.reserve(newcomer, t + window).is_ok(),
            "expired entries make room"
        );
        // A new name is let through untracked; known names keep their limit.
        g.failed(g.begin("fresh", newcomer, t).unwrap());
        assert!(g.begin("fresh", newcomer, t).is_ok());
        assert!(g.begin("n0", IpAddr::V4(0.into()), t).is_err());
        assert_eq!(g.entries.lock().unwrap().len(), MAX_ENTRIES);
    }

    #[test]
    fn a_success_forgives_its_address_failures() {
        let g = NameGuard::new(2, Duration::from_secs(300));
        let t = Instant::now();
        let home = ip("10.0.0.7");
        g.failed(g.begin("alice", home, t).unwrap());
        g.succeeded(g.begin("alice", home, t).unwrap());
        g.failed(g.begin("alice", home, t).unwrap());
        assert!(
            g.begin("alice", home, t).is_ok(),
            "one failure left after the success"
        );
    }
}
