//! The registry of live RESP connections, shared by every session of a listener:
//! what `CLIENT LIST` shows about each one (addresses, name, age, idle time, last
//! command, subscriptions, protocol) and the switch `CLIENT KILL` uses to close
//! another connection.
//!
//! A session registers itself when it is created and leaves the registry when it
//! is dropped, which the connection task does before closing the socket: once a
//! killed client sees its connection end, it is no longer listed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// Every live connection of one listener, by client id.
#[derive(Default)]
pub struct Clients {
    map: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

/// One connection as the registry knows it.
pub struct Entry {
    id: u64,
    created: Instant,
    kill: CancellationToken,
    state: Mutex<State>,
}

/// What a connection reports about itself, updated by its session after each
/// command.
#[derive(Debug, Clone)]
pub struct State {
    /// The peer's address (`None` for a session without a socket).
    pub addr: Option<SocketAddr>,
    /// The listener's address the peer connected to.
    pub laddr: Option<SocketAddr>,
    /// The socket's file descriptor; -1 when there is none.
    pub fd: i64,
    /// `CLIENT SETNAME`'s name, empty when none.
    pub name: String,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: String,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: String,
    /// When the last command arrived.
    pub last_active: Instant,
    /// The last command, as Redis names it (`client|list`); `None` before any.
    pub cmd: Option<Cow<'static, str>>,
    /// Channels subscribed to.
    pub sub: usize,
    /// Patterns subscribed to.
    pub psub: usize,
    /// Protocol version, 2 or 3.
    pub resp: i64,
}

/// The client types `CLIENT LIST TYPE` and `CLIENT KILL TYPE` name. Only
/// `normal` and `pubsub` connections exist here: there is no replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    /// Not subscribed to anything.
    Normal,
    /// Subscribed to a channel or pattern.
    Pubsub,
    /// A replication peer (`master`, `replica`, `slave`): never matches.
    Replication,
}

impl ClientType {
    /// Parses a type name as Redis does (any case).
    pub fn parse(name: &[u8]) -> Option<ClientType> {
        let is = |w: &str| name.eq_ignore_ascii_case(w.as_bytes());
        if is("normal") {
            Some(ClientType::Normal)
        } else if is("pubsub") {
            Some(ClientType::Pubsub)
        } else if is("master") || is("replica") || is("slave") {
            Some(ClientType::Replication)
        } else {
            None
        }
    }
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds client `id`; it stays listed until the returned [`Registration`] is
    /// dropped.
    pub fn register(self: &Arc<Self>, id: u64) -> Registration {
        let now = Instant::now();
        let entry = Arc::new(Entry {
            id,
            created: now,
            kill: CancellationToken::new(),
            state: Mutex::new(State {
                addr: None,
                laddr: None,
                fd: -1,
                name: String::new(),
                lib_name: String::new(),
                lib_ver: String::new(),
                last_active: now,
                cmd: None,
                sub: 0,
                psub: 0,
                resp: 2,
            }),
        });
        self.lock().insert(id, entry.clone());
        Registration {
            clients: self.clone(),
            entry,
        }
    }

    /// Every live connection, by increasing id (the order Redis lists them in).
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.lock().values().cloned().collect()
    }

    /// Client `id`, if it is connected.
    pub fn get(&self, id: u64) -> Option<Arc<Entry>> {
        self.lock().get(&id).cloned()
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entry {
    /// The client id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A copy of what the connection reported last.
    pub fn state(&self) -> State {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes what the connection reports.
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
    }

    /// Seconds since the connection was accepted.
    pub fn age_secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.created).as_secs()
    }

    /// Its type: `pubsub` while subscribed to anything.
    pub fn client_type(&self) -> ClientType {
        let s = self.lock();
        if s.sub + s.psub > 0 {
            ClientType::Pubsub
        } else {
            ClientType::Normal
        }
    }

    /// Asks the connection to close (`CLIENT KILL`).
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// Whether it was asked to close.
    pub fn is_killed(&self) -> bool {
        self.kill.is_cancelled()
    }

    /// Resolves once it was asked to close.
    pub async fn killed(&self) {
        self.kill.cancelled().await
    }

    /// Its `CLIENT LIST` line (without the newline), with Redis 7.2's fields in
    /// Redis's order. Buffer and memory figures are not tracked per connection
    /// here and read 0; there are no transactions (`multi=-1`), no sharded
    /// channels (`ssub=0`), one database and one user.
    pub fn line(&self, now: Instant) -> String {
        let s = self.state();
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let flags = if s.sub + s.psub > 0 { "P" } else { "N" };
        format!(
            "id={id} addr={addr} laddr={laddr} fd={fd} name={name} age={age} idle={idle} \
             flags={flags} db=0 sub={sub} psub={psub} ssub=0 multi=-1 qbuf=0 qbuf-free=0 \
             argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
             cmd={cmd} user=default redir=-1 resp={resp} lib-name={lib_name} lib-ver={lib_ver}",
            id = self.id,
            addr = addr(s.addr),
            laddr = addr(s.laddr),
            fd = s.fd,
            name = s.name,
            age = self.age_secs(now),
            idle = now.saturating_duration_since(s.last_active).as_secs(),
            sub = s.sub,
            psub = s.psub,
            cmd = s.cmd.as_deref().unwrap_or("NULL"),
            resp = s.resp,
            lib_name = s.lib_name,
            lib_ver = s.lib_ver,
        )
    }
}

/// A session's place in the registry; dropping it removes the entry.
pub struct Registration {
    clients: Arc<Clients>,
    entry: Arc<Entry>,
}

impl Registration {
    /// The registered entry.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_registration_and_list_in_id_order() {
        let clients = Arc::new(Clients::default());
        let b = clients.register(7);
        let a = clients.register(3);
        let ids: Vec<u64> = clients.all().iter().map(|e| e.id()).collect();
        assert_eq!(ids, [3, 7]);
        drop(b);
        assert_eq!(clients.len(), 1);
        assert!(clients.get(7).is_none());
        assert_eq!(clients.get(3).map(|e| e.id()), a.entry().id().into());
    }

    #[test]
    fn a_line_has_redis_fields_and_the_pubsub_flag() {
        let clients = Arc::new(Clients::default());
        let r = clients.register(5);
        let now = Instant::now();
        let line = r.entry().line(now);
        assert!(line.starts_with("id=5 addr= laddr= fd=-1 name= age=0 idle=0 flags=N db=0"));
        assert!(line.contains(" cmd=NULL user=default redir=-1 resp=2 "));
        r.entry().update(|s| {
            s.psub = 1;
            s.name = "w".into();
            s.cmd = Some(Cow::Borrowed("psubscribe"));
            s.addr = Some(([127, 0, 0, 1], 4000).into());
        });
        assert_eq!(r.entry().client_type(), ClientType::Pubsub);
        let line = r.entry().line(now);
        assert!(line.contains("addr=127.0.0.1:4000 "), "{line}");
        assert!(line.contains(" name=w "), "{line}");
        assert!(line.contains(" flags=P db=0 sub=0 psub=1 "), "{line}");
        assert!(line.contains(" cmd=psubscribe "), "{line}");
        assert!(!r.entry().is_killed());
        r.entry().kill();
        assert!(r.entry().is_killed());
    }
}
