//! One RESP client's protocol state: protocol version, authentication, name and
//! subscriptions, and the rules Redis applies to them (`NOAUTH` before
//! authentication, the RESP2 subscribed context, push frames in RESP3).
//!
//! A [`Session`] takes parsed frames and writes replies into a buffer; it never
//! sees a socket, so every rule here is unit-tested with plain bytes. It holds one
//! hub [`Subscription`] for the whole life of the connection, which is what counts
//! the connection in the hub's statistics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::cmd::Command;
#[cfg(test)]
use super::frame;
use super::frame::{Frame, FrameLimits, Proto, Reply};
use crate::hub::{Closed, Delivery, Hub, Subscription, Transport};

/// What every session of one listener shares.
pub struct Context {
    /// The realtime hub.
    pub hub: Hub,
    /// The `AUTH` password; `None` lets every client in.
    pub password: Option<String>,
    /// Bounds on what an authenticated client may send.
    pub limits: FrameLimits,
    /// When the listener started, for `INFO`.
    pub started: Instant,
    /// The port the listener is bound to, for `INFO`.
    pub port: u16,
}

impl Context {
    /// A context for `hub`, with an optional password and the frame limits.
    pub fn new(hub: Hub, password: Option<String>, limits: FrameLimits, port: u16) -> Self {
        Context {
            hub,
            password: password.filter(|p| !p.is_empty()),
            limits,
            started: Instant::now(),
            port,
        }
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

/// Before authentication a client may only send small frames, as Redis allows
/// (10 arguments of 16 KiB): a stranger cannot make the server buffer megabytes.
const UNAUTHENTICATED: FrameLimits = FrameLimits {
    max_bulk: 16 * 1024,
    max_array: 10,
    max_depth: 1,
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
}

impl Session {
    /// A new session, subscribed to the hub (in no room yet).
    pub fn new(ctx: Arc<Context>) -> Session {
        let sub = ctx.hub.subscribe(Transport::Resp);
        let authenticated = ctx.password.is_none();
        Session {
            ctx,
            sub,
            proto: Proto::Resp2,
            authenticated,
            name: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
        }
    }

    /// The client id (`CLIENT ID`, `HELLO`'s `id`).
    pub fn id(&self) -> u64 {
        self.sub.id()
    }

    /// The protocol version in use.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// What this client may send now: small frames until it authenticates.
    pub fn frame_limits(&self) -> FrameLimits {
        if self.authenticated {
            self.ctx.limits
        } else {
            UNAUTHENTICATED
        }
    }

    /// Channels plus patterns subscribed to, as Redis counts them.
    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Runs one request frame, writing its reply (if any) to `out`.
    pub fn handle(&mut self, frame: Frame, out: &mut BytesMut) -> Flow {
        let args = match request_args(frame) {
            Ok(args) => args,
            Err(got) => {
                self.protocol_error(&format!("expected '*', got '{got}'"), out);
                return Flow::Close;
            }
        };
        if args.is_empty() {
            // An empty line or `*0`: Redis ignores it without a reply.
            return Flow::Continue;
        }
        let command = match Command::parse(args) {
            Ok(c) => c,
            Err(e) => {
                Reply::new(out, self.proto).error(&e.to_string());
                return Flow::Continue;
            }
        };
        if !self.authenticated && !command.allowed_before_auth() {
            Reply::new(out, self.proto).error("NOAUTH Authentication required.");
            return Flow::Continue;
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
            return Flow::Continue;
        }
        command.apply(self, out)
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
    pub(super) fn subscribe(&mut self, names: Vec<String>, pattern: bool, out: &mut BytesMut) {
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
        self.authenticated = self.ctx.password.is_none();
    }
}

/// The arguments of a request: an array of bulk strings (simple strings and
/// integers are tolerated). Anything else names the offending type byte.
fn request_args(frame: Frame) -> Result<Vec<Bytes>, char> {
    let items = match frame {
        Frame::Array(items) => items,
        other => return Err(type_byte(&other)),
    };
    items
        .into_iter()
        .map(|item| match item {
            Frame::Bulk(b) | Frame::Simple(b) => Ok(b),
            Frame::Integer(n) => Ok(Bytes::from(n.to_string())),
            other => Err(type_byte(&other)),
        })
        .collect()
}

fn type_byte(frame: &Frame) -> char {
    match frame {
        Frame::Simple(_) => '+',
        Frame::Error(_) => '-',
        Frame::Integer(_) => ':',
        Frame::Bulk(_) => '$',
        Frame::Null => '_',
        Frame::Array(_) => '*',
        Frame::Double(_) => ',',
        Frame::Boolean(_) => '#',
        Frame::BigNumber(_) => '(',
        Frame::BulkError(_) => '!',
        Frame::Verbatim(..) => '=',
        Frame::Map(_) => '%',
        Frame::Set(_) => '~',
        Frame::Push(_) => '>',
    }
}

/// Frames a whole buffer of requests and runs them, as the connection loop does;
/// for tests of the state machine.
#[cfg(test)]
pub(crate) fn run_bytes(session: &mut Session, input: &[u8]) -> (Vec<u8>, Flow) {
    let mut buf = Bytes::copy_from_slice(input);
    let mut out = BytesMut::new();
    while !buf.is_empty() {
        match frame::check(&buf, &session.frame_limits()) {
            Ok(frame::Checked::Complete(n)) => {
                let f = frame::parse(&buf.split_to(n)).expect("checked frame parses");
                if session.handle(f, &mut out) == Flow::Close {
                    return (out.to_vec(), Flow::Close);
                }
            }
            Ok(frame::Checked::Incomplete) => break,
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
            FrameLimits::default(),
            6379,
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
    }

    #[test]
    fn a_password_requires_auth_first_and_small_frames_until_then() {
        let mut s = Session::new(ctx(Some("s3cret")));
        assert_eq!(
            run(&mut s, "PING\r\n"),
            "-NOAUTH Authentication required.\r\n"
        );
        assert_eq!(s.frame_limits().max_array, 10);
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
        assert_eq!(s.frame_limits(), FrameLimits::default());
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
        assert!(run(&mut s, "CLIENT KILL x\r\n").starts_with("-ERR unknown subcommand 'KILL'"));
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
}
