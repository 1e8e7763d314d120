//! One RESP client's protocol state: protocol version, authentication, name,
//! subscriptions and reply mode (`CLIENT REPLY`), and the rules Redis applies to
//! them (`NOAUTH` before authentication, the RESP2 subscribed context, push frames
//! in RESP3, replies silenced but pushes delivered), plus the
//! guards a hostile client meets: the cross-protocol guard (an HTTP request sent
//! to this port closes the connection, as Redis does), the `AUTH` throttle per
//! address, and bounds on patterns and channel names.
//!
//! A [`Session`] takes decoded requests and writes replies into a buffer; it
//! never sees a socket, so every rule here is unit-tested with plain bytes. It
//! holds one hub [`Subscription`] for the whole life of the connection, which is
//! what counts the connection in the hub's statistics, and one entry in the
//! listener's registry of clients, which it refreshes after each request.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::clients::{Clients, Entry, Registration};
use super::cmd::Command;
#[cfg(test)]
use super::frame::Decoder;
use super::frame::{Proto, Reply, RequestLimits};
use crate::hub::{Closed, Delivery, Hub, Subscription, Transport};

/// The listener's bounds on what a client may do, from the `[limits]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespLimits {
    /// Bounds on one request of an authenticated client.
    pub request: RequestLimits,
    /// Longest `PSUBSCRIBE` pattern, in bytes.
    pub max_pattern_bytes: usize,
    /// Most patterns one connection may subscribe to.
    pub max_patterns: usize,
    /// Longest channel name to publish or subscribe to, in bytes.
    pub max_channel_bytes: usize,
    /// Most rooms one bridged Socket.IO message may name.
    pub bridge_max_rooms: usize,
    /// How long a connection may stay unauthenticated (when a password is set).
    pub auth_timeout: Duration,
    /// Failed `AUTH`s per address within `auth_window` before its `AUTH`s are
    /// refused.
    pub auth_failures: u32,
    /// Window for `auth_failures`.
    pub auth_window: Duration,
    /// Most connections at once (`maxclients`).
    pub max_clients: usize,
}

/// Addresses tracked by the `AUTH` throttle before expired entries are pruned.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// What every session of one listener shares.
pub struct Context {
    /// The realtime hub.
    pub hub: Hub,
    /// The `AUTH` password; `None` lets every client in.
    pub password: Option<String>,
    /// Bounds on what a client may do.
    pub limits: RespLimits,
    /// When the listener started, for `INFO`.
    pub started: Instant,
    /// The port the listener is bound to, for `INFO`.
    pub port: u16,
    /// The address the listener is bound to, for `CONFIG GET bind`.
    pub addr: SocketAddr,
    /// Every live connection, for `CLIENT LIST` and `CLIENT KILL`.
    pub clients: Arc<Clients>,
    /// Failed `AUTH`s per address: how many, since when.
    auth_failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// What an authentication attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are right.
    Accepted,
    /// They are wrong (and the failure is counted).
    Refused,
    /// This address failed too often lately; nothing was checked.
    Throttled,
}

/// The error a throttled `AUTH` gets before the connection closes.
pub const THROTTLED: &str = "ERR too many failed AUTH attempts from this address; try again later";

impl Context {
    /// A context for `hub`, with an optional password and the limits, for a
    /// listener bound to `addr`.
    pub fn new(hub: Hub, password: Option<String>, limits: RespLimits, addr: SocketAddr) -> Self {
        Context {
            hub,
            password: password.filter(|p| !p.is_empty()),
            limits,
            started: Instant::now(),
            port: addr.port(),
            addr,
            clients: Arc::new(Clients::default()),
            auth_failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks credentials from `peer`, counting failures per address; once an
    /// address failed `auth_failures` times within `auth_window`, its attempts
    /// are refused unchecked until the window ends.
    pub fn authenticate(
        &self,
        peer: Option<IpAddr>,
        credentials_ok: impl FnOnce() -> bool,
    ) -> AuthOutcome {
        let now = Instant::now();
        let window = self.limits.auth_window;
        let mut failures = self.auth_failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = peer {
            if let Some(&(count, since)) = failures.get(&ip) {
                if now.duration_since(since) <= window && count >= self.limits.auth_failures {
                    return AuthOutcome::Throttled;
                }
            }
        }
        if credentials_ok() {
            return AuthOutcome::Accepted;
        }
        if let Some(ip) = peer {
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                failures.retain(|_, (_, since)| now.duration_since(*since) <= window);
            }
            let entry = failures.entry(ip).or_insert((0, now));
            if now.duration_since(entry.1) > window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
        AuthOutcome::Refused
    }

    /// Whether `given` is the password (constant time in the password's bytes).
    pub fn password_matches(&self, given: &[u8]) -> bool {
        match &self.password {
            None => true,
            Some(p) => {
                let p = p.as_bytes();
                let mut diff = p.len() ^ given.len();
                for (i, &b) in p.iter().enumerate() {
                    diff |= usize::from(b ^ given.get(i).copied().unwrap_or(0));
                }
                diff == 0
            }
        }
    }
}

/// Whether the connection goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading commands.
    Continue,
    /// Send what is written, then close (`QUIT`, protocol errors).
    Close,
}

/// Before authentication a client may only send small requests, as Redis allows
/// (10 arguments of 16 KiB): a stranger cannot make the server buffer megabytes.
const UNAUTHENTICATED: RequestLimits = RequestLimits {
    max_args: 10,
    max_bulk: 16 * 1024,
    max_request: 10 * (16 * 1024 + 32) + 32,
    max_inline: 16 * 1024,
};

/// One client's state machine.
pub struct Session {
    pub(super) ctx: Arc<Context>,
    pub(super) sub: Subscription,
    pub(super) proto: Proto,
    pub(super) authenticated: bool,
    pub(super) name: Option<String>,
    pub(super) channels: BTreeSet<String>,
    pub(super) patterns: BTreeSet<String>,
    pub(super) peer: Option<IpAddr>,
    /// This connection in the listener's registry.
    pub(super) registration: Registration,
    /// `CLIENT REPLY OFF` is in force.
    pub(super) reply_off: bool,
    /// `CLIENT REPLY SKIP` was the previous command: this one gets no reply.
    pub(super) skip_this: bool,
    /// `CLIENT REPLY SKIP` is running: the next command gets no reply.
    pub(super) skip_next: bool,
    /// The last known command, as `CLIENT LIST` names it.
    last_cmd: Option<Cow<'static, str>>,
    /// When the last request arrived.
    last_active: Instant,
}

impl Session {
    /// A new session, subscribed to the hub (in no room yet).
    pub fn new(ctx: Arc<Context>) -> Session {
        let sub = ctx.hub.subscribe(Transport::Resp);
        let authenticated = ctx.password.is_none();
        let registration = ctx.clients.register(sub.id());
        Session {
            ctx,
            sub,
            proto: Proto::Resp2,
            authenticated,
            name: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            peer: None,
            registration,
            reply_off: false,
            skip_this: false,
            skip_next: false,
            last_cmd: None,
            last_active: Instant::now(),
        }
    }

    /// The peer's and the listener's addresses and the socket's descriptor, for
    /// the `AUTH` throttle, the logs and `CLIENT LIST`.
    pub fn with_addrs(mut self, peer: SocketAddr, local: SocketAddr, fd: i64) -> Session {
        self.peer = Some(peer.ip());
        self.registration.entry().update(|s| {
            s.addr = Some(peer);
            s.laddr = Some(local);
            s.fd = fd;
        });
        self
    }

    /// This connection's registry entry.
    pub fn entry(&self) -> &Arc<Entry> {
        self.registration.entry()
    }

    /// The client's address, for the `AUTH` throttle and the logs.
    pub fn with_peer(mut self, peer: IpAddr) -> Session {
        self.peer = Some(peer);
        self
    }

    /// Whether the client may send commands (authenticated, or no password).
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// Checks `user` (absent: `default`) and `password`, through the throttle;
    /// authenticates the session when they are right.
    pub(super) fn try_auth(&mut self, user: Option<&[u8]>, password: &[u8]) -> AuthOutcome {
        let ctx = self.ctx.clone();
        let outcome = ctx.authenticate(self.peer, || {
            super::cmd::credentials_match(&ctx, user, password)
        });
        match outcome {
            AuthOutcome::Accepted => self.authenticated = true,
            AuthOutcome::Refused => {}
            AuthOutcome::Throttled => {
                tracing::warn!(peer = ?self.peer, "RESP AUTH throttled: too many failures from this address");
            }
        }
        outcome
    }

    /// The client id (`CLIENT ID`, `HELLO`'s `id`).
    pub fn id(&self) -> u64 {
        self.sub.id()
    }

    /// The protocol version in use.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// What this client may send now: small requests until it authenticates.
    pub fn request_limits(&self) -> RequestLimits {
        if self.authenticated {
            self.ctx.limits.request
        } else {
            UNAUTHENTICATED
        }
    }

    /// Channels plus patterns subscribed to, as Redis counts them.
    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Runs one request, writing its reply (if any) to `out`, unless
    /// `CLIENT REPLY OFF|SKIP` silences it.
    pub fn handle(&mut self, args: Vec<Bytes>, out: &mut BytesMut) -> Flow {
        let start = out.len();
        let request = !args.is_empty();
        if request {
            self.last_active = Instant::now();
        }
        let (flow, pushes) = self.run(args, out);
        if (self.reply_off || self.skip_this) && out.len() > start {
            // Subscription confirmations are push messages, which Redis delivers
            // whatever the reply mode; everything else written is dropped.
            if !pushes || out[start] == b'-' {
                out.truncate(start);
            }
        }
        // `CLIENT REPLY SKIP` silences the command after it, and only that one.
        self.skip_this = std::mem::take(&mut self.skip_next);
        if request {
            self.sync_entry();
        }
        flow
    }

    /// Copies what `CLIENT LIST` shows about this connection to its registry
    /// entry: once per request, under one short lock, allocating only when the
    /// name changed or the command has a subcommand.
    pub(super) fn sync_entry(&self) {
        let name = self.name.as_deref().unwrap_or("");
        self.entry().update(|s| {
            if s.name != name {
                name.clone_into(&mut s.name);
            }
            s.cmd.clone_from(&self.last_cmd);
            s.last_active = self.last_active;
            s.sub = self.channels.len();
            s.psub = self.patterns.len();
            s.resp = self.proto.number();
        });
    }

    /// Runs one request; also says whether its replies are push messages.
    fn run(&mut self, args: Vec<Bytes>, out: &mut BytesMut) -> (Flow, bool) {
        let Some(name) = args.first() else {
            // An empty line or `*0`: Redis ignores it without a reply.
            return (Flow::Continue, false);
        };
        if is_http(name) {
            // A web page made a browser send an HTTP request here (cross-protocol
            // scripting): its body would otherwise run as commands. Redis closes
            // such connections without a word, and so do we.
            tracing::warn!(
                peer = ?self.peer,
                "Possible SECURITY ATTACK detected. It looks like somebody is sending POST or \
                 Host: commands to the RESP port. This is likely due to an attacker attempting \
                 to use Cross Protocol Scripting to compromise it. Connection aborted."
            );
            return (Flow::Close, false);
        }
        let sub = args.get(1).cloned();
        let command = match Command::parse(args) {
            Ok(c) => c,
            Err(e) => {
                Reply::new(out, self.proto).error(&e.to_string());
                return (Flow::Continue, false);
            }
        };
        // As in Redis, an unknown command leaves the last one shown.
        if let Some(spec) = command.spec() {
            self.last_cmd = Some(match (&sub, command.has_subcommands()) {
                (Some(sub), true) => Cow::Owned(format!(
                    "{}|{}",
                    spec.name,
                    String::from_utf8_lossy(sub).to_ascii_lowercase()
                )),
                _ => Cow::Borrowed(spec.name),
            });
        }
        if !self.authenticated && !command.allowed_before_auth() {
            Reply::new(out, self.proto).error("NOAUTH Authentication required.");
            return (Flow::Continue, false);
        }
        if self.proto == Proto::Resp2
            && self.subscription_count() > 0
            && !command.allowed_when_subscribed()
        {
            Reply::new(out, self.proto).error(&format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                 QUIT / RESET are allowed in this context",
                command.name()
            ));
            return (Flow::Continue, false);
        }
        let pushes = command.replies_with_pushes();
        let flow = command.apply(self, out);
        (flow, pushes)
    }

    /// Answers a framing error; the caller then closes the connection.
    pub fn protocol_error(&self, what: &str, out: &mut BytesMut) {
        Reply::new(out, self.proto).error(&format!("ERR Protocol error: {what}"));
    }

    /// Writes a delivery as a `message` or `pmessage` (a push frame in RESP3),
    /// unless the subscription it came through was dropped meanwhile.
    pub fn deliver(&self, delivery: &Delivery, out: &mut BytesMut) {
        let publication = &delivery.publication;
        let mut reply = Reply::new(out, self.proto);
        match &delivery.pattern {
            None => {
                if !self.channels.contains(publication.room()) {
                    return;
                }
                reply.push(3);
                reply.bulk(b"message");
            }
            Some(pattern) => {
                if !self.patterns.contains(&**pattern) {
                    return;
                }
                reply.push(4);
                reply.bulk(b"pmessage");
                reply.bulk(pattern.as_bytes());
            }
        }
        reply.bulk(publication.room().as_bytes());
        reply.bulk(publication.payload());
    }

    /// The next delivery for this client; `None` once the hub ended the
    /// subscription (see [`Session::closed`]).
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.sub.recv().await
    }

    /// A delivery already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.sub.try_recv()
    }

    /// Resolves once the hub ended the subscription (too slow, or shutting down).
    pub async fn ended(&self) {
        self.sub.ended().await
    }

    /// Why the hub ended the subscription.
    pub fn closed(&self) -> Option<Closed> {
        self.sub.closed()
    }

    /// Subscribes to channels (`pattern == false`) or patterns, one confirmation
    /// each: `subscribe`/`psubscribe`, the name, the new count.
    /// Nothing is subscribed when a name is too long or the patterns would pass
    /// their limit: matching patterns costs every publication time in proportion
    /// to their lengths and number.
    pub(super) fn subscribe(&mut self, names: Vec<String>, pattern: bool, out: &mut BytesMut) {
        let limits = &self.ctx.limits;
        let refusal = if pattern {
            let new: BTreeSet<&String> = names
                .iter()
                .filter(|n| !self.patterns.contains(*n))
                .collect();
            if names.iter().any(|n| n.len() > limits.max_pattern_bytes) {
                Some(format!(
                    "ERR pattern too long (over {} bytes)",
                    limits.max_pattern_bytes
                ))
            } else if self.patterns.len() + new.len() > limits.max_patterns {
                Some(format!(
                    "ERR too many pattern subscriptions (limit {} per connection)",
                    limits.max_patterns
                ))
            } else {
                None
            }
        } else if names.iter().any(|n| n.len() > limits.max_channel_bytes) {
            Some(channel_too_long(limits.max_channel_bytes))
        } else {
            None
        };
        if let Some(why) = refusal {
            Reply::new(out, self.proto).error(&why);
            return;
        }
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        for name in names {
            if pattern {
                self.sub.join_pattern(&name);
                self.patterns.insert(name.clone());
            } else {
                self.sub.join(&name);
                self.channels.insert(name.clone());
            }
            let count = self.subscription_count();
            let mut reply = Reply::new(out, self.proto);
            reply.push(3);
            reply.bulk(kind);
            reply.bulk(name.as_bytes());
            reply.integer(count as i64);
        }
    }

    /// Unsubscribes from the named channels or patterns, or from all of them when
    /// `names` is empty; one confirmation each, or one with a null name when there
    /// was nothing to leave.
    pub(super) fn unsubscribe(&mut self, names: Vec<String>, pattern: bool, out: &mut BytesMut) {
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let names: Vec<String> = if names.is_empty() {
            let set = if pattern {
                &self.patterns
            } else {
                &self.channels
            };
            set.iter().cloned().collect()
        } else {
            names
        };
        if names.is_empty() {
            let count = self.subscription_count();
            let mut reply = Reply::new(out, self.proto);
            reply.push(3);
            reply.bulk(kind);
            reply.null();
            reply.integer(count as i64);
            return;
        }
        for name in names {
            if pattern {
                self.sub.leave_pattern(&name);
                self.patterns.remove(&name);
            } else {
                self.sub.leave(&name);
                self.channels.remove(&name);
            }
            let count = self.subscription_count();
            let mut reply = Reply::new(out, self.proto);
            reply.push(3);
            reply.bulk(kind);
            reply.bulk(name.as_bytes());
            reply.integer(count as i64);
        }
    }

    /// Back to a fresh connection's state (`RESET`): no subscriptions, RESP2, no
    /// name, and unauthenticated again when a password is set.
    pub(super) fn reset(&mut self) {
        for c in std::mem::take(&mut self.channels) {
            self.sub.leave(&c);
        }
        for p in std::mem::take(&mut self.patterns) {
            self.sub.leave_pattern(&p);
        }
        self.proto = Proto::Resp2;
        self.name = None;
        self.reply_off = false;
        self.skip_next = false;
        self.authenticated = self.ctx.password.is_none();
    }
}

/// The error for a channel name over the limit.
pub(super) fn channel_too_long(max: usize) -> String {
    format!("ERR channel name too long (over {max} bytes)")
}

/// Whether a command name is the start of an HTTP request: `POST /...` or a
/// `Host:` header line, the two Redis watches for.
fn is_http(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

/// Decodes a whole buffer of requests and runs them, as the connection loop
/// does; for tests of the state machine.
#[cfg(test)]
pub(crate) fn run_bytes(session: &mut Session, input: &[u8]) -> (Vec<u8>, Flow) {
    let mut buf = BytesMut::from(input);
    let mut decoder = Decoder::new();
    let mut out = BytesMut::new();
    loop {
        match decoder.decode(&mut buf, &session.request_limits()) {
            Ok(Some(args)) => {
                if session.handle(args, &mut out) == Flow::Close {
                    return (out.to_vec(), Flow::Close);
                }
            }
            Ok(None) => break,
            Err(e) => {
                session.protocol_error(&e.to_string(), &mut out);
                return (out.to_vec(), Flow::Close);
            }
        }
    }
    (out.to_vec(), Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Publication;

    fn ctx(password: Option<&str>) -> Arc<Context> {
        Arc::new(Context::new(
            Hub::new(16),
            password.map(str::to_owned),
            RespLimits::default(),
            ([127, 0, 0, 1], 6379).into(),
        ))
    }

    fn run(s: &mut Session, input: &str) -> String {
        String::from_utf8(run_bytes(s, input.as_bytes()).0).expect("utf-8 replies")
    }

    #[test]
    fn ping_echo_and_inline_commands() {
        let mut s = Session::new(ctx(None));
        assert_eq!(run(&mut s, "PING\r\n"), "+PONG\r\n");
        assert_eq!(
            run(&mut s, "*2\r\n$4\r\nping\r\n$2\r\nhi\r\n"),
            "$2\r\nhi\r\n"
        );
        assert_eq!(run(&mut s, "echo \"a b\"\r\n"), "$3\r\na b\r\n");
        assert_eq!(run(&mut s, "\r\n"), "");
    }

    #[test]
    fn wrong_arity_and_unknown_commands_answer_and_keep_going() {
        let mut s = Session::new(ctx(None));
        let (out, flow) = run_bytes(&mut s, b"ECHO\r\nGET k v\r\nPING\r\n");
        assert_eq!(flow, Flow::Continue);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-ERR wrong number of arguments for 'echo' command\r\n\
             -ERR unknown command 'GET', with args beginning with: 'k' 'v' \r\n\
             +PONG\r\n"
        );
    }

    #[test]
    fn a_framing_error_closes_with_a_protocol_error() {
        let mut s = Session::new(ctx(None));
        let (out, flow) = run_bytes(&mut s, b"*1\r\n$3\r\nabcd\r\n");
        assert_eq!(flow, Flow::Close);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("-ERR Protocol error: expected CRLF"));
        let (out, flow) = run_bytes(&mut s, b":1\r\n");
        assert_eq!(flow, Flow::Close);
        assert_eq!(out, b"-ERR Protocol error: expected '*', got ':'\r\n");
        let (out, flow) = run_bytes(&mut s, b"*2\r\n$4\r\nECHO\r\n*1\r\n");
        assert_eq!(flow, Flow::Close);
        assert_eq!(out, b"-ERR Protocol error: expected '$', got '*'\r\n");
    }

    #[test]
    fn an_http_request_closes_the_connection_before_its_body_runs() {
        let c = ctx(None);
        let mut s = Session::new(c.clone());
        let sub = c.hub.subscribe(Transport::Ws);
        sub.join("user:1");
        let (out, flow) = run_bytes(
            &mut s,
            b"POST / HTTP/1.1\r\nHost: x\r\n\r\nPUBLISH user:1 fake\r\n",
        );
        assert_eq!((out.as_slice(), flow), (&b""[..], Flow::Close));
        let (out, flow) = run_bytes(&mut s, b"GET / HTTP/1.1\r\nhost: x\r\nPUBLISH user:1 y\r\n");
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("-ERR unknown command 'GET'"));
        assert_eq!(flow, Flow::Close);
        assert_eq!(
            c.hub
                .stats()
                .published
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn auth_failures_from_one_address_are_throttled() {
        let limits = RespLimits {
            auth_failures: 2,
            ..RespLimits::default()
        };
        let c = Arc::new(Context::new(
            Hub::new(4),
            Some("pw".into()),
            limits,
            ([127, 0, 0, 1], 6379).into(),
        ));
        let here: IpAddr = [10, 0, 0, 1].into();
        let mut s = Session::new(c.clone()).with_peer(here);
        let (out, _) = run_bytes(&mut s, b"AUTH x\r\nAUTH y\r\n");
        assert_eq!(
            String::from_utf8(out).unwrap().matches("WRONGPASS").count(),
            2
        );
        // Another connection from the same address, even with the password.
        let mut again = Session::new(c.clone()).with_peer(here);
        let (out, flow) = run_bytes(&mut again, b"AUTH pw\r\nPING\r\n");
        assert_eq!(String::from_utf8(out).unwrap(), format!("-{THROTTLED}\r\n"));
        assert_eq!(flow, Flow::Close);
        let (out, flow) = run_bytes(&mut again, b"HELLO 3 AUTH default pw\r\n");
        assert_eq!(String::from_utf8(out).unwrap(), format!("-{THROTTLED}\r\n"));
        assert_eq!(flow, Flow::Close);
        // Another address is not affected.
        let mut elsewhere = Session::new(c).with_peer([10, 0, 0, 2].into());
        assert_eq!(run(&mut elsewhere, "AUTH pw\r\n"), "+OK\r\n");
    }

    #[test]
    fn patterns_and_channel_names_are_bounded() {
        let limits = RespLimits {
            max_pattern_bytes: 8,
            max_patterns: 2,
            max_channel_bytes: 10,
            ..RespLimits::default()
        };
        let c = Arc::new(Context::new(
            Hub::new(4),
            None,
            limits,
            ([127, 0, 0, 1], 6379).into(),
        ));
        let mut s = Session::new(c.clone());
        assert_eq!(
            run(&mut s, "PSUBSCRIBE a* bbbbbbbbb*\r\n"),
            "-ERR pattern too long (over 8 bytes)\r\n"
        );
        assert_eq!(
            run(&mut s, "PSUBSCRIBE a* b* c*\r\n"),
            "-ERR too many pattern subscriptions (limit 2 per connection)\r\n"
        );
        assert_eq!(c.hub.pattern_count(), 0);
        assert!(run(&mut s, "PSUBSCRIBE a* b* a*\r\n").ends_with(":2\r\n"));
        assert_eq!(
            run(&mut s, "SUBSCRIBE 01234567890\r\n"),
            "-ERR channel name too long (over 10 bytes)\r\n"
        );
        let mut p = Session::new(c);
        assert_eq!(
            run(&mut p, "PUBLISH 01234567890 x\r\n"),
            "-ERR channel name too long (over 10 bytes)\r\n"
        );
        assert_eq!(
            run(&mut p, "PUBSUB CHANNELS aaaaaaaa*\r\n"),
            "-ERR pattern too long (over 8 bytes)\r\n"
        );
        assert_eq!(run(&mut p, "PUBSUB CHANNELS *\r\n"), "*0\r\n");
    }

    #[test]
    fn a_password_requires_auth_first_and_small_frames_until_then() {
        let mut s = Session::new(ctx(Some("s3cret")));
        assert_eq!(
            run(&mut s, "PING\r\n"),
            "-NOAUTH Authentication required.\r\n"
        );
        assert_eq!(s.request_limits().max_args, 10);
        assert_eq!(
            run(&mut s, "AUTH nope\r\n"),
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
        assert_eq!(
            run(&mut s, "AUTH someone s3cret\r\n"),
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
        assert_eq!(run(&mut s, "AUTH default s3cret\r\n"), "+OK\r\n");
        assert_eq!(run(&mut s, "PING\r\n"), "+PONG\r\n");
        assert_eq!(s.request_limits(), RequestLimits::default());
        assert_eq!(run(&mut s, "RESET\r\n"), "+RESET\r\n");
        assert_eq!(
            run(&mut s, "PING\r\n"),
            "-NOAUTH Authentication required.\r\n"
        );
        assert!(run(&mut s, "HELLO 3\r\n").starts_with("-NOAUTH HELLO must be called"));
        let hello = run(&mut s, "HELLO 3 AUTH default s3cret SETNAME worker\r\n");
        assert!(hello.starts_with("%7\r\n"), "{hello}");
        assert_eq!(run(&mut s, "CLIENT GETNAME\r\n"), "$6\r\nworker\r\n");
    }

    #[test]
    fn auth_without_a_password_configured_is_an_error() {
        let mut s = Session::new(ctx(None));
        assert!(run(&mut s, "AUTH x\r\n").starts_with("-ERR AUTH <password> called without"));
        assert_eq!(run(&mut s, "AUTH default x\r\n"), "+OK\r\n");
    }

    #[test]
    fn hello_negotiates_the_protocol_and_describes_the_server() {
        let mut s = Session::new(ctx(None));
        let id = s.id();
        let hello = run(&mut s, "HELLO 3\r\n");
        assert_eq!(
            hello,
            format!(
                "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
                 $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
                 $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
            )
        );
        assert_eq!(s.proto(), Proto::Resp3);
        assert!(run(&mut s, "HELLO 2\r\n").starts_with("*14\r\n"));
        assert_eq!(
            run(&mut s, "HELLO 4\r\n"),
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert_eq!(
            run(&mut s, "HELLO 3 FOO\r\n"),
            "-ERR Syntax error in HELLO option 'FOO'\r\n"
        );
        assert_eq!(s.proto(), Proto::Resp2);
    }

    #[tokio::test]
    async fn resp2_subscribed_context_allows_only_pubsub_commands() {
        let c = ctx(None);
        let mut s = Session::new(c.clone());
        assert_eq!(
            run(&mut s, "SUBSCRIBE a b\r\n"),
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
        );
        assert_eq!(
            run(&mut s, "PUBLISH a x\r\n"),
            "-ERR Can't execute 'publish': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
             QUIT / RESET are allowed in this context\r\n"
        );
        assert_eq!(run(&mut s, "PING\r\n"), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        assert_eq!(
            run(&mut s, "PSUBSCRIBE user:*\r\n"),
            "*3\r\n$10\r\npsubscribe\r\n$6\r\nuser:*\r\n:3\r\n"
        );
        assert_eq!(c.hub.publish(Publication::raw("a", Bytes::from("hi"))), 1);
        assert_eq!(
            c.hub.publish(Publication::raw("user:1", Bytes::from("n"))),
            1
        );
        let mut out = BytesMut::new();
        let d = s.recv().await.unwrap();
        s.deliver(&d, &mut out);
        let d = s.recv().await.unwrap();
        s.deliver(&d, &mut out);
        assert_eq!(
            &out[..],
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n\
              *4\r\n$8\r\npmessage\r\n$6\r\nuser:*\r\n$6\r\nuser:1\r\n$1\r\nn\r\n"
        );
        assert_eq!(
            run(&mut s, "UNSUBSCRIBE\r\n"),
            "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n"
        );
        assert_eq!(
            run(&mut s, "UNSUBSCRIBE\r\n"),
            "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n"
        );
        assert_eq!(
            run(&mut s, "PUNSUBSCRIBE user:*\r\n"),
            "*3\r\n$12\r\npunsubscribe\r\n$6\r\nuser:*\r\n:0\r\n"
        );
        assert_eq!(run(&mut s, "PUBLISH a x\r\n"), ":0\r\n");
        assert_eq!(c.hub.room_size("a"), 0);
    }

    #[tokio::test]
    async fn resp3_pushes_and_allows_every_command_while_subscribed() {
        let c = ctx(None);
        let mut s = Session::new(c.clone());
        run(&mut s, "HELLO 3\r\n");
        assert_eq!(
            run(&mut s, "SUBSCRIBE news\r\n"),
            ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
        );
        assert_eq!(run(&mut s, "PING\r\n"), "+PONG\r\n");
        assert_eq!(run(&mut s, "PUBLISH news x\r\n"), ":1\r\n");
        let d = s.recv().await.unwrap();
        let mut out = BytesMut::new();
        s.deliver(&d, &mut out);
        assert_eq!(
            &out[..],
            b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nx\r\n"
        );
        assert_eq!(
            run(&mut s, "UNSUBSCRIBE\r\n"),
            ">3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"
        );
        assert_eq!(
            run(&mut s, "UNSUBSCRIBE\r\n"),
            ">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"
        );
    }

    #[tokio::test]
    async fn a_message_queued_before_unsubscribe_is_not_delivered_after_it() {
        let c = ctx(None);
        let mut s = Session::new(c.clone());
        run(&mut s, "SUBSCRIBE a\r\n");
        c.hub.publish(Publication::raw("a", Bytes::from("late")));
        run(&mut s, "UNSUBSCRIBE a\r\n");
        let d = s.recv().await.unwrap();
        let mut out = BytesMut::new();
        s.deliver(&d, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn pubsub_introspection_counts_every_transport() {
        let c = ctx(None);
        let mut s = Session::new(c.clone());
        let ws = c.hub.subscribe(Transport::Ws);
        ws.join("user:7");
        ws.join_pattern("post:*");
        assert_eq!(
            run(&mut s, "PUBSUB NUMSUB user:7 nobody\r\n"),
            "*4\r\n$6\r\nuser:7\r\n:1\r\n$6\r\nnobody\r\n:0\r\n"
        );
        assert_eq!(run(&mut s, "PUBSUB NUMPAT\r\n"), ":1\r\n");
        assert_eq!(
            run(&mut s, "PUBSUB CHANNELS user:*\r\n"),
            "*1\r\n$6\r\nuser:7\r\n"
        );
        assert_eq!(run(&mut s, "PUBLISH user:7 hi\r\n"), ":1\r\n");
        assert_eq!(run(&mut s, "PUBLISH post:1 hi\r\n"), ":1\r\n");
        assert!(run(&mut s, "PUBSUB NOPE\r\n").starts_with("-ERR unknown subcommand 'NOPE'"));
    }

    #[test]
    fn client_select_info_and_command_answer_like_redis() {
        let mut s = Session::new(ctx(None));
        assert_eq!(run(&mut s, "CLIENT SETNAME app\r\n"), "+OK\r\n");
        assert_eq!(run(&mut s, "CLIENT GETNAME\r\n"), "$3\r\napp\r\n");
        assert!(run(&mut s, "CLIENT SETNAME \"a b\"\r\n").starts_with("-ERR Client names"));
        assert_eq!(
            run(&mut s, "CLIENT SETINFO LIB-NAME redis-py\r\n"),
            "+OK\r\n"
        );
        assert_eq!(run(&mut s, "CLIENT ID\r\n"), format!(":{}\r\n", s.id()));
        assert_eq!(
            run(&mut s, "CLIENT KILL 10.9.9.9:1\r\n"),
            "-ERR No such client\r\n"
        );
        assert_eq!(run(&mut s, "SELECT 0\r\n"), "+OK\r\n");
        assert_eq!(
            run(&mut s, "SELECT 1\r\n"),
            "-ERR DB index is out of range\r\n"
        );
        assert_eq!(
            run(&mut s, "SELECT x\r\n"),
            "-ERR value is not an integer or out of range\r\n"
        );
        let info = run(&mut s, "INFO\r\n");
        assert!(info.contains("redis_version:7.2.0\r\n"), "{info}");
        assert!(info.contains("loading:0\r\n"), "{info}");
        let server_only = run(&mut s, "INFO server\r\n");
        assert!(!server_only.contains("loading:0"));
        assert!(run(&mut s, "COMMAND COUNT\r\n").starts_with(':'));
        assert!(run(&mut s, "COMMAND DOCS\r\n").starts_with('*'));
        assert_eq!(
            run(&mut s, "CONFIG GET appendonly\r\n"),
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert_eq!(run(&mut s, "QUIT\r\n"), "+OK\r\n");
    }

    /// The lines of a `CLIENT LIST` / `CLIENT INFO` bulk reply (RESP2).
    fn client_lines(reply: &str) -> Vec<String> {
        let (header, body) = reply.split_once("\r\n").expect("a bulk string");
        assert!(header.starts_with('$'), "{reply}");
        body.trim_end_matches("\r\n")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn client_list_shows_every_connection_and_filters_by_type_and_id() {
        let c = ctx(None);
        let mut a = Session::new(c.clone()).with_addrs(
            ([127, 0, 0, 1], 5001).into(),
            ([127, 0, 0, 1], 6379).into(),
            7,
        );
        let mut b = Session::new(c.clone());
        assert_eq!(run(&mut b, "CLIENT SETNAME worker\r\n"), "+OK\r\n");
        assert_eq!(
            run(&mut b, "CLIENT SETINFO LIB-NAME redis-py\r\n"),
            "+OK\r\n"
        );
        let lines = client_lines(&run(&mut a, "CLIENT LIST\r\n"));
        assert_eq!(lines.len(), 2, "{lines:?}");
        let mine = format!(
            "id={} addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=7 name= age=0 idle=0 flags=N \
             db=0 sub=0 psub=0 ssub=0 multi=-1 ",
            a.id()
        );
        assert!(lines[0].starts_with(&mine), "{}", lines[0]);
        assert!(lines[0].contains(" cmd=client|list user=default "));
        assert!(lines[1].starts_with(&format!("id={} ", b.id())));
        assert!(lines[1].contains(" name=worker "), "{}", lines[1]);
        assert!(lines[1].ends_with(" resp=2 lib-name=redis-py lib-ver="));
        assert!(lines[1].contains(" cmd=client|setinfo "));

        assert!(run(&mut b, "SUBSCRIBE news\r\n").ends_with(":1\r\n"));
        let pubsub = client_lines(&run(&mut a, "CLIENT LIST TYPE pubsub\r\n"));
        assert_eq!(pubsub.len(), 1);
        assert!(
            pubsub[0].contains(" flags=P db=0 sub=1 psub=0 "),
            "{}",
            pubsub[0]
        );
        let normal = client_lines(&run(&mut a, "client list type NORMAL\r\n"));
        assert!(normal[0].starts_with(&format!("id={} ", a.id())));
        assert_eq!(run(&mut a, "CLIENT LIST TYPE master\r\n"), "$0\r\n\r\n");
        let request = format!("CLIENT LIST ID {} 999 {}\r\n", b.id(), a.id());
        let by_id = client_lines(&run(&mut a, &request));
        assert_eq!(by_id.len(), 2);
        assert!(by_id[0].starts_with(&format!("id={} ", b.id())));
        assert_eq!(
            run(&mut a, "CLIENT LIST ID x\r\n"),
            "-ERR Invalid client ID\r\n"
        );
        assert_eq!(
            run(&mut a, "CLIENT LIST TYPE x\r\n"),
            "-ERR Unknown client type 'x'\r\n"
        );
        assert_eq!(run(&mut a, "CLIENT LIST x\r\n"), "-ERR syntax error\r\n");
        let info = client_lines(&run(&mut a, "CLIENT INFO\r\n"));
        assert_eq!(info.len(), 1);
        assert!(info[0].contains(" cmd=client|info "));
        drop(b);
        assert_eq!(client_lines(&run(&mut a, "CLIENT LIST\r\n")).len(), 1);
    }

    #[test]
    fn client_kill_closes_other_connections_by_filter_and_itself_only_when_asked() {
        let c = ctx(None);
        let mut a = Session::new(c.clone()).with_addrs(
            ([127, 0, 0, 1], 5001).into(),
            ([127, 0, 0, 1], 6379).into(),
            -1,
        );
        let b = Session::new(c.clone()).with_addrs(
            ([127, 0, 0, 1], 5002).into(),
            ([127, 0, 0, 1], 6379).into(),
            -1,
        );
        let d = Session::new(c.clone());
        // Errors change nothing.
        for (input, error) in [
            (
                "CLIENT KILL\r\n",
                "-ERR wrong number of arguments for 'client|kill' command",
            ),
            ("CLIENT KILL ID 1 TYPE\r\n", "-ERR syntax error"),
            ("CLIENT KILL NOPE 1\r\n", "-ERR syntax error"),
            (
                "CLIENT KILL ID 0\r\n",
                "-ERR client-id should be greater than 0",
            ),
            (
                "CLIENT KILL ID x\r\n",
                "-ERR client-id should be greater than 0",
            ),
            ("CLIENT KILL TYPE x\r\n", "-ERR Unknown client type 'x'"),
            ("CLIENT KILL USER bob\r\n", "-ERR No such user 'bob'"),
            ("CLIENT KILL SKIPME maybe\r\n", "-ERR syntax error"),
            (
                "CLIENT KILL MAXAGE x\r\n",
                "-ERR value is not an integer or out of range",
            ),
        ] {
            assert_eq!(run(&mut a, input), format!("{error}\r\n"), "{input}");
        }
        assert!(!b.entry().is_killed() && !d.entry().is_killed());
        // Not old enough; a type nobody has; the caller is skipped by default.
        assert_eq!(run(&mut a, "CLIENT KILL MAXAGE 3600\r\n"), ":0\r\n");
        assert_eq!(run(&mut a, "CLIENT KILL TYPE pubsub\r\n"), ":0\r\n");
        let request = format!("CLIENT KILL ID {}\r\n", a.id());
        assert_eq!(run(&mut a, &request), ":0\r\n");
        assert_eq!(
            run(&mut a, "CLIENT KILL ADDR 127.0.0.1:5002 USER default\r\n"),
            ":1\r\n"
        );
        assert!(b.entry().is_killed() && !d.entry().is_killed());
        // The old form answers OK or an error, and an already closing client is
        // no longer found.
        assert_eq!(
            run(&mut a, "CLIENT KILL 127.0.0.1:5002\r\n"),
            "-ERR No such client\r\n"
        );
        assert_eq!(
            run(
                &mut a,
                &format!("CLIENT KILL ID {} LADDR 127.0.0.1:6379\r\n", d.id())
            ),
            ":0\r\n"
        );
        assert_eq!(
            run(&mut a, &format!("CLIENT KILL ID {}\r\n", d.id())),
            ":1\r\n"
        );
        assert!(d.entry().is_killed());
        // Itself: answered, then closed.
        let (out, flow) = run_bytes(&mut a, b"CLIENT KILL 127.0.0.1:5001\r\nPING\r\n");
        assert_eq!((out.as_slice(), flow), (&b"+OK\r\n"[..], Flow::Close));
        let mut e = Session::new(c);
        let (out, flow) = run_bytes(&mut e, b"CLIENT KILL SKIPME no\r\n");
        // b and d are closing already: only e itself.
        assert_eq!((out.as_slice(), flow), (&b":2\r\n"[..], Flow::Close));
    }

    #[test]
    fn client_reply_off_and_skip_silence_replies_but_not_subscriptions() {
        let mut s = Session::new(ctx(None));
        assert_eq!(
            run(&mut s, "CLIENT REPLY SKIP\r\nPING\r\nPING x\r\n"),
            "$1\r\nx\r\n"
        );
        assert_eq!(run(&mut s, "CLIENT REPLY OFF\r\n"), "");
        assert_eq!(
            run(&mut s, "PING\r\nNOPE\r\nCLIENT REPLY SKIP\r\nECHO a\r\n"),
            ""
        );
        // Subscription confirmations are pushes and still arrive; errors do not.
        assert_eq!(
            run(&mut s, "SUBSCRIBE a\r\nPUBLISH a b\r\n"),
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            run(&mut s, "UNSUBSCRIBE\r\n")
                .matches("unsubscribe")
                .count(),
            1
        );
        assert_eq!(
            run(&mut s, "CLIENT REPLY ON\r\nPING\r\n"),
            "+OK\r\n+PONG\r\n"
        );
        assert_eq!(
            run(&mut s, "CLIENT REPLY maybe\r\nCLIENT REPLY\r\n"),
            "-ERR syntax error\r\n\
             -ERR wrong number of arguments for 'client|reply' command\r\n"
        );
        // ON right after SKIP cancels the skip, as in Redis: its reply goes out.
        assert_eq!(
            run(&mut s, "CLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nPING\r\n"),
            "+OK\r\n+PONG\r\n"
        );
        assert_eq!(
            run(&mut s, "CLIENT REPLY OFF\r\nRESET\r\nPING\r\n"),
            "+RESET\r\n+PONG\r\n"
        );
    }

    #[test]
    fn flushes_are_accepted_and_config_get_answers_real_values() {
        let mut s = Session::new(ctx(None));
        for ok in [
            "FLUSHALL",
            "flushall async",
            "FLUSHALL SYNC",
            "FLUSHDB",
            "FLUSHDB ASYNC",
            "FUNCTION FLUSH",
            "function flush async",
            "FUNCTION FLUSH SYNC",
        ] {
            assert_eq!(run(&mut s, &format!("{ok}\r\n")), "+OK\r\n", "{ok}");
        }
        for (input, error) in [
            ("FLUSHALL NOW", "-ERR syntax error"),
            ("FLUSHDB ASYNC SYNC", "-ERR syntax error"),
            (
                "FUNCTION",
                "-ERR wrong number of arguments for 'function' command",
            ),
            (
                "FUNCTION FLUSH x",
                "-ERR FUNCTION FLUSH only supports SYNC|ASYNC option",
            ),
            (
                "FUNCTION FLUSH ASYNC x",
                "-ERR unknown subcommand or wrong number of arguments for 'FLUSH'. Try \
                 FUNCTION HELP.",
            ),
            (
                "FUNCTION LOAD x",
                "-ERR unknown subcommand 'LOAD'. Try FUNCTION HELP.",
            ),
        ] {
            assert_eq!(run(&mut s, &format!("{input}\r\n")), format!("{error}\r\n"));
        }
        assert!(run(&mut s, "FUNCTION HELP\r\n").starts_with("*5\r\n"));
        assert_eq!(
            run(&mut s, "CONFIG GET MaxClients\r\n"),
            "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"
        );
        assert_eq!(
            run(&mut s, "CONFIG GET port bind\r\n"),
            "*4\r\n$4\r\nbind\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$4\r\n6379\r\n"
        );
        assert_eq!(run(&mut s, "CONFIG GET nothing*\r\n"), "*0\r\n");
        assert!(run(&mut s, "CONFIG SET a b\r\n").starts_with("-ERR unknown subcommand 'SET'"));
        assert!(run(&mut s, "HELLO 3\r\n").starts_with('%'));
        let all = run(&mut s, "CONFIG GET *\r\n");
        assert!(all.starts_with("%9\r\n"), "{all}");
        assert!(all.contains("$18\r\nproto-max-bulk-len\r\n"), "{all}");
        // The RESP2 subscribed context allows none of them.
        let mut sub = Session::new(ctx(None));
        run(&mut sub, "SUBSCRIBE a\r\n");
        for cmd in ["FLUSHALL", "FUNCTION FLUSH", "CONFIG GET *", "CLIENT LIST"] {
            assert!(
                run(&mut sub, &format!("{cmd}\r\n")).starts_with("-ERR Can't execute"),
                "{cmd}"
            );
        }
    }

    #[test]
    fn quit_closes_after_answering() {
        let mut s = Session::new(ctx(None));
        let (out, flow) = run_bytes(&mut s, b"QUIT\r\nPING\r\n");
        assert_eq!(out, b"+OK\r\n");
        assert_eq!(flow, Flow::Close);
    }

    #[test]
    fn the_session_counts_as_a_resp_connection_while_it_lives() {
        let c = ctx(None);
        let s = Session::new(c.clone());
        assert_eq!(c.hub.connections(Transport::Resp), 1);
        drop(s);
        assert_eq!(c.hub.connections(Transport::Resp), 0);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic_the_session(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    3 => proptest::sample::select(
                        b"*$\r\n0123 PSUBSCRIBE PUBLISH HELLO AUTH CLIENT RESET ab*?[]".to_vec()
                    ),
                    1 => proptest::arbitrary::any::<u8>(),
                ],
                0..200,
            ),
        ) {
            let mut s = Session::new(ctx(Some("pw")));
            let _ = run_bytes(&mut s, &input);
            let mut s = Session::new(ctx(None));
            let _ = run_bytes(&mut s, &input);
        }
    }
}
