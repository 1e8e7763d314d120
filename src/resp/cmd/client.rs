//! `CLIENT ID|GETNAME|SETNAME|SETINFO|INFO|LIST|KILL|REPLY|NO-EVICT|NO-TOUCH|HELP`:
//! what client libraries send while connecting (redis-py sends `SETINFO`, ioredis
//! `SETNAME`) and what tools and harnesses use to look at and close connections.
//! `LIST` and `KILL` see every connection of the listener through its registry
//! ([`crate::resp::clients`]). Other subcommands answer Redis's "unknown
//! subcommand" error.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{integer, is, Args, CmdError};
use crate::resp::clients::{ClientType, Entry};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `CLIENT subcommand ...`.
pub enum Client {
    /// `CLIENT ID`
    Id,
    /// `CLIENT GETNAME`
    GetName,
    /// `CLIENT SETNAME name` (empty clears it)
    SetName(String),
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`, shown by `CLIENT LIST`.
    SetInfo {
        /// `LIB-NAME` (true) or `LIB-VER`.
        lib_name: bool,
        /// The value.
        value: String,
    },
    /// `CLIENT INFO`: this client's line.
    Info,
    /// `CLIENT LIST [TYPE type | ID id...]`
    List(ListFilter),
    /// `CLIENT KILL addr` or `CLIENT KILL filter value ...`
    Kill(KillFilter),
    /// `CLIENT REPLY ON|OFF|SKIP`
    Reply(ReplyMode),
    /// `CLIENT NO-EVICT|NO-TOUCH ON|OFF`: nothing to evict or touch here.
    Flag,
    /// `CLIENT HELP`
    Help,
}

/// Which clients `CLIENT LIST` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFilter {
    /// Every client.
    All,
    /// Clients of one type.
    Type(ClientType),
    /// These ids, in this order (unknown ones skipped).
    Ids(Vec<i64>),
}

/// `CLIENT REPLY`'s argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Replies again (answers `+OK`).
    On,
    /// No replies from now on (answers nothing).
    Off,
    /// No reply to the next command (answers nothing).
    Skip,
}

/// Which clients `CLIENT KILL` closes: those matching every filter given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillFilter {
    /// The old form, `CLIENT KILL ip:port`: answers `+OK` or an error instead of
    /// a count, and may close the caller.
    old_form: bool,
    id: Option<u64>,
    client_type: Option<ClientType>,
    addr: Option<String>,
    laddr: Option<String>,
    /// Connections older than this many seconds; 0 for any.
    max_age: i64,
    /// Leave the caller alone (the default of the filter form).
    skip_me: bool,
}

impl KillFilter {
    fn matches(&self, e: &Entry, now: Instant) -> bool {
        let state = e.state();
        let addr_is = |want: &Option<String>, got: Option<std::net::SocketAddr>| {
            want.as_ref()
                .is_none_or(|w| got.is_some_and(|g| g.to_string() == *w))
        };
        self.id.is_none_or(|id| id == e.id())
            && self.client_type.is_none_or(|t| t == e.client_type())
            && addr_is(&self.addr, state.addr)
            && addr_is(&self.laddr, state.laddr)
            && (self.max_age == 0 || e.age_secs(now) > self.max_age.unsigned_abs())
    }
}

/// A client name: no spaces, newlines or other special characters, as Redis
/// requires.
pub fn check_name(name: &[u8]) -> Result<String, CmdError> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(CmdError::Reply(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    // Printable ASCII only, so this cannot fail.
    Ok(String::from_utf8_lossy(name).into_owned())
}

fn arity(sub: &str) -> CmdError {
    CmdError::Arity(format!("client|{sub}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn client_type(name: &[u8]) -> Result<ClientType, CmdError> {
    ClientType::parse(name)
        .ok_or_else(|| CmdError::Reply(format!("ERR Unknown client type '{}'", text(name))))
}

fn parse_list(rest: Vec<Bytes>) -> Result<ListFilter, CmdError> {
    match rest.as_slice() {
        [] => Ok(ListFilter::All),
        [key, t] if is(key, "type") => Ok(ListFilter::Type(client_type(t)?)),
        [key, ids @ ..] if is(key, "id") && !ids.is_empty() => ids
            .iter()
            .map(|id| integer(id).map_err(|_| CmdError::Reply("ERR Invalid client ID".into())))
            .collect::<Result<_, _>>()
            .map(ListFilter::Ids),
        _ => Err(CmdError::Syntax),
    }
}

fn parse_kill(rest: Vec<Bytes>) -> Result<KillFilter, CmdError> {
    let mut f = KillFilter {
        old_form: false,
        id: None,
        client_type: None,
        addr: None,
        laddr: None,
        max_age: 0,
        skip_me: true,
    };
    match rest.len() {
        0 => return Err(arity("kill")),
        1 => {
            // `CLIENT KILL ip:port`: with this form a client may close itself.
            f.old_form = true;
            f.skip_me = false;
            f.addr = Some(text(&rest[0]));
            return Ok(f);
        }
        n if n % 2 == 1 => return Err(CmdError::Syntax),
        _ => {}
    }
    for pair in rest.chunks_exact(2) {
        let (key, value) = (&pair[0], &pair[1]);
        if is(key, "id") {
            let id = integer(value)
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(|| CmdError::Reply("ERR client-id should be greater than 0".into()))?;
            f.id = Some(id.unsigned_abs());
        } else if is(key, "type") {
            f.client_type = Some(client_type(value)?);
        } else if is(key, "addr") {
            f.addr = Some(text(value));
        } else if is(key, "laddr") {
            f.laddr = Some(text(value));
        } else if is(key, "user") {
            // `default` is the only user, and every connection's.
            if !is(value, "default") {
                return Err(CmdError::Reply(format!(
                    "ERR No such user '{}'",
                    text(value)
                )));
            }
        } else if is(key, "skipme") {
            f.skip_me = if is(value, "yes") {
                true
            } else if is(value, "no") {
                false
            } else {
                return Err(CmdError::Syntax);
            };
        } else if is(key, "maxage") {
            f.max_age = integer(value)?;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(f)
}

impl Client {
    /// The subcommand and its arguments.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let sub = args.next_arg()?;
        let exact = |args: &mut Args, n: usize, name: &str| {
            if args.remaining() == n {
                Ok(())
            } else {
                Err(arity(name))
            }
        };
        if is(&sub, "id") {
            exact(args, 0, "id")?;
            Ok(Client::Id)
        } else if is(&sub, "getname") {
            exact(args, 0, "getname")?;
            Ok(Client::GetName)
        } else if is(&sub, "setname") {
            exact(args, 1, "setname")?;
            Ok(Client::SetName(check_name(&args.next_arg()?)?))
        } else if is(&sub, "setinfo") {
            exact(args, 2, "setinfo")?;
            let attr = args.next_arg()?;
            let value = args.next_arg()?;
            let lib_name = is(&attr, "lib-name");
            if !(lib_name || is(&attr, "lib-ver")) {
                return Err(CmdError::Reply(format!(
                    "ERR Unrecognized option '{}'",
                    text(&attr)
                )));
            }
            if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return Err(CmdError::Reply(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    text(&attr)
                )));
            }
            Ok(Client::SetInfo {
                lib_name,
                value: text(&value),
            })
        } else if is(&sub, "info") {
            exact(args, 0, "info")?;
            Ok(Client::Info)
        } else if is(&sub, "list") {
            Ok(Client::List(parse_list(args.rest())?))
        } else if is(&sub, "kill") {
            Ok(Client::Kill(parse_kill(args.rest())?))
        } else if is(&sub, "reply") {
            exact(args, 1, "reply")?;
            let v = args.next_arg()?;
            if is(&v, "on") {
                Ok(Client::Reply(ReplyMode::On))
            } else if is(&v, "off") {
                Ok(Client::Reply(ReplyMode::Off))
            } else if is(&v, "skip") {
                Ok(Client::Reply(ReplyMode::Skip))
            } else {
                Err(CmdError::Syntax)
            }
        } else if is(&sub, "no-evict") || is(&sub, "no-touch") {
            exact(args, 1, "no-evict")?;
            let v = args.next_arg()?;
            if is(&v, "on") || is(&v, "off") {
                Ok(Client::Flag)
            } else {
                Err(CmdError::Syntax)
            }
        } else if is(&sub, "help") {
            Ok(Client::Help)
        } else {
            Err(CmdError::UnknownSubcommand {
                command: "CLIENT",
                sub: text(&sub),
            })
        }
    }

    /// Answers.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let id = s.id();
        let mut reply = Reply::new(out, s.proto);
        match self {
            Client::Id => reply.integer(i64::try_from(id).unwrap_or(i64::MAX)),
            Client::GetName => match &s.name {
                Some(n) => reply.bulk(n.as_bytes()),
                None => reply.null(),
            },
            Client::SetName(name) => {
                s.name = Some(name).filter(|n| !n.is_empty());
                reply.simple("OK");
            }
            Client::SetInfo { lib_name, value } => {
                s.entry().update(|st| {
                    if lib_name {
                        st.lib_name = value;
                    } else {
                        st.lib_ver = value;
                    }
                });
                reply.simple("OK");
            }
            Client::Flag => reply.simple("OK"),
            Client::Info => {
                // Its own line shows this very command, as in Redis.
                s.sync_entry();
                let mut line = s.entry().line(Instant::now());
                line.push('\n');
                reply.verbatim(*b"txt", line.as_bytes());
            }
            Client::List(filter) => {
                s.sync_entry();
                let clients = &s.ctx.clients;
                let entries = match filter {
                    ListFilter::All => clients.all(),
                    ListFilter::Type(t) => clients
                        .all()
                        .into_iter()
                        .filter(|e| e.client_type() == t)
                        .collect(),
                    ListFilter::Ids(ids) => ids
                        .into_iter()
                        .filter_map(|id| u64::try_from(id).ok().and_then(|id| clients.get(id)))
                        .collect(),
                };
                let now = Instant::now();
                let mut text = String::new();
                for e in entries {
                    text.push_str(&e.line(now));
                    text.push('\n');
                }
                reply.verbatim(*b"txt", text.as_bytes());
            }
            Client::Kill(filter) => {
                let now = Instant::now();
                let mut killed = 0i64;
                let mut me = false;
                for e in s.ctx.clients.all() {
                    if e.is_killed() || (filter.skip_me && e.id() == id) || !filter.matches(&e, now)
                    {
                        continue;
                    }
                    if e.id() == id {
                        // Closed after this reply is written.
                        me = true;
                    } else {
                        e.kill();
                    }
                    killed += 1;
                }
                if filter.old_form {
                    if killed == 0 {
                        reply.error("ERR No such client");
                    } else {
                        reply.simple("OK");
                    }
                } else {
                    reply.integer(killed);
                }
                if me {
                    return Flow::Close;
                }
            }
            Client::Reply(mode) => match mode {
                ReplyMode::On => {
                    s.reply_off = false;
                    s.skip_this = false;
                    s.skip_next = false;
                    reply.simple("OK");
                }
                ReplyMode::Off => s.reply_off = true,
                ReplyMode::Skip => s.skip_next = !s.reply_off,
            },
            Client::Help => {
                let lines: [&str; 12] = [
                    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "ID -- Return the ID of the current connection.",
                    "GETNAME -- Return the name of the current connection.",
                    "SETNAME <name> -- Assign the name <name> to the current connection.",
                    "SETINFO <option> <value> -- Set client meta attr (LIB-NAME, LIB-VER).",
                    "INFO -- Return information about the current client connection.",
                    "LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> [<id> ...]] -- Return \
                     information about client connections.",
                    "KILL <ip:port> -- Kill connection made from <ip:port>.",
                    "KILL <option> <value> [<option> <value> [...]] -- Kill connections. \
                     Options are: ID <id>, TYPE (NORMAL|MASTER|REPLICA|PUBSUB), USER <username>, \
                     ADDR <ip:port>, LADDR <ip:port>, SKIPME (YES|NO), MAXAGE <maxage>.",
                    "REPLY (ON|OFF|SKIP) -- Control the replies sent to the current connection.",
                    "NO-EVICT|NO-TOUCH (ON|OFF) -- Accepted; nothing is evicted here.",
                    "HELP -- Print this help.",
                ];
                reply.array(lines.len());
                for l in lines {
                    reply.simple(l);
                }
            }
        }
        Flow::Continue
    }
}
