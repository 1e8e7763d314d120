//! The commands the listener understands, one file each: `parse` turns the
//! arguments into a typed command (or the error Redis would answer: unknown
//! command, wrong number of arguments, syntax), `apply` runs it against a
//! [`Session`] and writes the reply.
//!
//! Errors here are replies, never reasons to close the connection: only framing
//! errors close a RESP connection.

mod auth;
mod client;
mod command;
mod config;
mod echo;
mod hello;
mod info;
mod ping;
mod psubscribe;
mod publish;
mod pubsub;
mod punsubscribe;
mod quit;
mod reset;
mod select;
mod subscribe;
mod unknown;
mod unsubscribe;

use bytes::{Bytes, BytesMut};

use super::session::{Flow, Session};

pub use auth::Auth;
pub use client::Client;
pub use command::CommandInfo;
pub use config::Config;
pub use echo::Echo;
pub use hello::Hello;
pub use info::Info;
pub use ping::Ping;
pub use psubscribe::Psubscribe;
pub use publish::Publish;
pub use pubsub::Pubsub;
pub use punsubscribe::Punsubscribe;
pub use quit::Quit;
pub use reset::Reset;
pub use select::Select;
pub use subscribe::Subscribe;
pub use unknown::Unknown;
pub use unsubscribe::Unsubscribe;

/// The server version clients see in `HELLO` and `INFO`: the Redis feature level
/// the listener follows.
pub const REDIS_VERSION: &str = "7.2.0";

/// A request that cannot run; its text is the whole error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    /// `ERR wrong number of arguments for 'name' command`.
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    /// `ERR syntax error`.
    #[error("ERR syntax error")]
    Syntax,
    /// `ERR value is not an integer or out of range`.
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    /// `ERR unknown subcommand 'X'. Try NAME HELP.`
    #[error("ERR unknown subcommand '{sub}'. Try {command} HELP.")]
    UnknownSubcommand {
        /// The command, upper case.
        command: &'static str,
        /// What the client sent.
        sub: String,
    },
    /// Any other error reply, e.g. `NOPROTO unsupported protocol version`.
    #[error("{0}")]
    Reply(String),
}

/// The arguments after the command name.
pub struct Args {
    name: &'static str,
    items: std::vec::IntoIter<Bytes>,
}

impl Args {
    /// The arguments of command `name` (lower case, as error messages show it).
    pub fn new(name: &'static str, items: Vec<Bytes>) -> Self {
        Args {
            name,
            items: items.into_iter(),
        }
    }

    /// Arguments left.
    pub fn remaining(&self) -> usize {
        self.items.len()
    }

    /// The next argument; a missing one is a wrong argument count.
    pub fn next_arg(&mut self) -> Result<Bytes, CmdError> {
        self.items
            .next()
            .ok_or_else(|| CmdError::Arity(self.name.to_owned()))
    }

    /// The next argument, if any.
    pub fn next_opt(&mut self) -> Option<Bytes> {
        self.items.next()
    }

    /// The next argument as text (channel and pattern names are hub rooms, which
    /// are UTF-8).
    pub fn next_string(&mut self) -> Result<String, CmdError> {
        utf8(self.next_arg()?)
    }

    /// Every argument left, as text.
    pub fn rest_strings(&mut self) -> Result<Vec<String>, CmdError> {
        self.items.by_ref().map(utf8).collect()
    }

    /// Every argument left.
    pub fn rest(&mut self) -> Vec<Bytes> {
        self.items.by_ref().collect()
    }

    /// Fails with a wrong argument count if arguments are left.
    pub fn finish(&mut self) -> Result<(), CmdError> {
        if self.items.len() == 0 {
            Ok(())
        } else {
            Err(CmdError::Arity(self.name.to_owned()))
        }
    }

    /// The name errors show.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

fn utf8(b: Bytes) -> Result<String, CmdError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| CmdError::Reply("ERR channel and pattern names must be UTF-8".into()))
}

/// Parses a decimal integer argument.
pub fn integer(arg: &[u8]) -> Result<i64, CmdError> {
    super::frame::parse_i64(arg).ok_or(CmdError::NotAnInteger)
}

/// Whether `arg` equals `word`, ignoring ASCII case.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// A parsed request.
pub enum Command {
    /// `PING [message]`
    Ping(Ping),
    /// `ECHO message`
    Echo(Echo),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    Hello(Hello),
    /// `AUTH [user] pass`
    Auth(Auth),
    /// `CLIENT subcommand ...`
    Client(Client),
    /// `SELECT db`
    Select(Select),
    /// `QUIT`
    Quit(Quit),
    /// `RESET`
    Reset(Reset),
    /// `SUBSCRIBE channel...`
    Subscribe(Subscribe),
    /// `UNSUBSCRIBE [channel...]`
    Unsubscribe(Unsubscribe),
    /// `PSUBSCRIBE pattern...`
    Psubscribe(Psubscribe),
    /// `PUNSUBSCRIBE [pattern...]`
    Punsubscribe(Punsubscribe),
    /// `PUBLISH channel message`
    Publish(Publish),
    /// `PUBSUB CHANNELS|NUMSUB|NUMPAT`
    Pubsub(Pubsub),
    /// `COMMAND [COUNT|LIST|INFO|DOCS]`
    Command(CommandInfo),
    /// `INFO [section...]`
    Info(Info),
    /// `CONFIG GET parameter...`
    Config(Config),
    /// Anything else.
    Unknown(Unknown),
}

/// Every command name, as `COMMAND` lists them, with Redis's arity (negative: at
/// least that many, counting the name) and flags.
pub const TABLE: &[(&str, i64, &[&str], &str, &str)] = &[
    (
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        "connection",
        "Authenticates the connection.",
    ),
    (
        "client",
        -2,
        &["noscript", "loading", "stale"],
        "connection",
        "A container for client connection commands.",
    ),
    (
        "command",
        -1,
        &["loading", "stale"],
        "server",
        "Returns detailed information about all commands.",
    ),
    (
        "config",
        -2,
        &["admin", "noscript", "loading", "stale"],
        "server",
        "A container for server configuration commands.",
    ),
    (
        "echo",
        2,
        &["fast"],
        "connection",
        "Returns the given string.",
    ),
    (
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        "connection",
        "Handshakes with the server.",
    ),
    (
        "info",
        -1,
        &["loading", "stale"],
        "server",
        "Returns information and statistics about the server.",
    ),
    (
        "ping",
        -1,
        &["fast"],
        "connection",
        "Returns the server's liveliness response.",
    ),
    (
        "psubscribe",
        -2,
        &["pubsub", "noscript", "loading", "stale"],
        "pubsub",
        "Listens for messages published to channels that match one or more patterns.",
    ),
    (
        "publish",
        3,
        &["pubsub", "loading", "stale", "fast"],
        "pubsub",
        "Posts a message to a channel.",
    ),
    (
        "pubsub",
        -2,
        &["pubsub", "loading", "stale"],
        "pubsub",
        "A container for Pub/Sub commands.",
    ),
    (
        "punsubscribe",
        -1,
        &["pubsub", "noscript", "loading", "stale"],
        "pubsub",
        "Stops listening to messages published to channels that match one or more patterns.",
    ),
    (
        "quit",
        -1,
        &[
            "allow_busy",
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
        ],
        "connection",
        "Closes the connection.",
    ),
    (
        "reset",
        1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        "connection",
        "Resets the connection.",
    ),
    (
        "select",
        2,
        &["loading", "stale", "fast"],
        "connection",
        "Changes the selected database.",
    ),
    (
        "subscribe",
        -2,
        &["pubsub", "noscript", "loading", "stale"],
        "pubsub",
        "Listens for messages published to channels.",
    ),
    (
        "unsubscribe",
        -1,
        &["pubsub", "noscript", "loading", "stale"],
        "pubsub",
        "Stops listening to messages posted to channels.",
    ),
];

impl Command {
    /// Parses a request: `args[0]` is the command name (any case).
    pub fn parse(mut args: Vec<Bytes>) -> Result<Command, CmdError> {
        if args.is_empty() {
            return Err(CmdError::Syntax);
        }
        let name = args.remove(0);
        let Some(&(lower, ..)) = TABLE.iter().find(|(n, ..)| is(&name, n)) else {
            return Ok(Command::Unknown(Unknown::new(name, args)));
        };
        let mut a = Args::new(lower, args);
        Ok(match lower {
            "auth" => Command::Auth(Auth::parse(&mut a)?),
            "client" => Command::Client(Client::parse(&mut a)?),
            "command" => Command::Command(CommandInfo::parse(&mut a)?),
            "config" => Command::Config(Config::parse(&mut a)?),
            "echo" => Command::Echo(Echo::parse(&mut a)?),
            "hello" => Command::Hello(Hello::parse(&mut a)?),
            "info" => Command::Info(Info::parse(&mut a)?),
            "ping" => Command::Ping(Ping::parse(&mut a)?),
            "psubscribe" => Command::Psubscribe(Psubscribe::parse(&mut a)?),
            "publish" => Command::Publish(Publish::parse(&mut a)?),
            "pubsub" => Command::Pubsub(Pubsub::parse(&mut a)?),
            "punsubscribe" => Command::Punsubscribe(Punsubscribe::parse(&mut a)?),
            "quit" => Command::Quit(Quit::parse(&mut a)?),
            "reset" => Command::Reset(Reset::parse(&mut a)?),
            "select" => Command::Select(Select::parse(&mut a)?),
            "subscribe" => Command::Subscribe(Subscribe::parse(&mut a)?),
            _ => Command::Unsubscribe(Unsubscribe::parse(&mut a)?),
        })
    }

    /// The lower-case name error messages show.
    pub fn name(&self) -> &str {
        match self {
            Command::Ping(_) => "ping",
            Command::Echo(_) => "echo",
            Command::Hello(_) => "hello",
            Command::Auth(_) => "auth",
            Command::Client(_) => "client",
            Command::Select(_) => "select",
            Command::Quit(_) => "quit",
            Command::Reset(_) => "reset",
            Command::Subscribe(_) => "subscribe",
            Command::Unsubscribe(_) => "unsubscribe",
            Command::Psubscribe(_) => "psubscribe",
            Command::Punsubscribe(_) => "punsubscribe",
            Command::Publish(_) => "publish",
            Command::Pubsub(_) => "pubsub",
            Command::Command(_) => "command",
            Command::Info(_) => "info",
            Command::Config(_) => "config",
            Command::Unknown(u) => u.name(),
        }
    }

    /// Whether it runs before authentication (`AUTH`, `HELLO`, `QUIT`, `RESET`).
    pub fn allowed_before_auth(&self) -> bool {
        matches!(
            self,
            Command::Auth(_) | Command::Hello(_) | Command::Quit(_) | Command::Reset(_)
        )
    }

    /// Whether it runs in the RESP2 subscribed context.
    pub fn allowed_when_subscribed(&self) -> bool {
        matches!(
            self,
            Command::Subscribe(_)
                | Command::Unsubscribe(_)
                | Command::Psubscribe(_)
                | Command::Punsubscribe(_)
                | Command::Ping(_)
                | Command::Quit(_)
                | Command::Reset(_)
        )
    }

    /// Runs the command, writing its reply to `out`.
    pub fn apply(self, session: &mut Session, out: &mut BytesMut) -> Flow {
        match self {
            Command::Ping(c) => c.apply(session, out),
            Command::Echo(c) => c.apply(session, out),
            Command::Hello(c) => c.apply(session, out),
            Command::Auth(c) => c.apply(session, out),
            Command::Client(c) => c.apply(session, out),
            Command::Select(c) => c.apply(session, out),
            Command::Quit(c) => c.apply(session, out),
            Command::Reset(c) => c.apply(session, out),
            Command::Subscribe(c) => c.apply(session, out),
            Command::Unsubscribe(c) => c.apply(session, out),
            Command::Psubscribe(c) => c.apply(session, out),
            Command::Punsubscribe(c) => c.apply(session, out),
            Command::Publish(c) => c.apply(session, out),
            Command::Pubsub(c) => c.apply(session, out),
            Command::Command(c) => c.apply(session, out),
            Command::Info(c) => c.apply(session, out),
            Command::Config(c) => c.apply(session, out),
            Command::Unknown(c) => c.apply(session, out),
        }
    }
}
