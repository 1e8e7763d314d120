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
mod flush;
mod function;
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

pub use auth::{credentials_match, Auth};
pub use client::Client;
pub use command::CommandInfo;
pub use config::Config;
pub use echo::Echo;
pub use flush::Flush;
pub use function::Function;
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

/// One command's description, as `COMMAND INFO` and `COMMAND DOCS` answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis's arity: the argument count with the name, negative for "at least".
    pub arity: i64,
    /// Redis's flags; `no_auth` marks the commands allowed before `AUTH`.
    pub flags: &'static [&'static str],
    /// The command group (`connection`, `pubsub`, `server`).
    pub group: &'static str,
    /// One line of documentation.
    pub summary: &'static str,
}

impl Spec {
    /// Whether it runs before authentication.
    pub fn no_auth(&self) -> bool {
        self.flags.contains(&"no_auth")
    }
}

impl Command {
    /// Whether it runs before authentication (flag `no_auth`).
    pub fn allowed_before_auth(&self) -> bool {
        self.spec().is_some_and(Spec::no_auth)
    }

    /// Whether its replies are push messages (subscription confirmations),
    /// which `CLIENT REPLY OFF` does not silence.
    pub fn replies_with_pushes(&self) -> bool {
        matches!(
            self,
            Command::Subscribe(_)
                | Command::Psubscribe(_)
                | Command::Unsubscribe(_)
                | Command::Punsubscribe(_)
        )
    }
}

/// Declares every command once: the [`Command`] enum, the [`TABLE`] that
/// `COMMAND` describes, and the dispatch from a name to its parser, its rules
/// (before authentication, in the RESP2 subscribed context) and its `apply`.
/// `subcommands: true` marks a container (`CLIENT LIST`), which `CLIENT LIST`'s
/// `cmd` field names with its subcommand (`client|list`).
macro_rules! commands {
    ($(
        $(#[$doc:meta])*
        $variant:ident($ty:ty) {
            name: $name:literal,
            arity: $arity:literal,
            flags: [$($flag:literal),*],
            group: $group:literal,
            $(subcommands: $subcommands:literal,)?
            subscribed: $subscribed:literal,
            summary: $summary:literal $(,)?
        }
    )*) => {
        /// A parsed request.
        pub enum Command {
            $( $(#[$doc])* $variant($ty), )*
            /// Anything else.
            Unknown(Unknown),
        }

        /// Every command this listener implements, as `COMMAND` lists them.
        pub const TABLE: &[Spec] = &[$(
            Spec {
                name: $name,
                arity: $arity,
                flags: &[$($flag),*],
                group: $group,
                summary: $summary,
            },
        )*];

        impl Command {
            /// Parses a request: `args[0]` is the command name (any case).
            pub fn parse(mut args: Vec<Bytes>) -> Result<Command, CmdError> {
                if args.is_empty() {
                    return Err(CmdError::Syntax);
                }
                let name = args.remove(0);
                $(
                    if is(&name, $name) {
                        let mut a = Args::new($name, args);
                        return Ok(Command::$variant(<$ty>::parse(&mut a)?));
                    }
                )*
                Ok(Command::Unknown(Unknown::new(name, args)))
            }

            /// The lower-case name error messages show (as sent, when unknown).
            pub fn name(&self) -> &str {
                match self {
                    $( Command::$variant(_) => $name, )*
                    Command::Unknown(u) => u.name(),
                }
            }

            /// Its description; `None` when unknown.
            pub fn spec(&self) -> Option<&'static Spec> {
                match self {
                    Command::Unknown(_) => None,
                    known => TABLE.iter().find(|s| s.name == known.name()),
                }
            }

            /// Whether its first argument is a subcommand.
            pub fn has_subcommands(&self) -> bool {
                match self {
                    $( Command::$variant(_) => false $(|| $subcommands)?, )*
                    Command::Unknown(_) => false,
                }
            }

            /// Whether it runs in the RESP2 subscribed context.
            pub fn allowed_when_subscribed(&self) -> bool {
                match self {
                    $( Command::$variant(_) => $subscribed, )*
                    Command::Unknown(_) => false,
                }
            }

            /// Runs the command, writing its reply to `out`.
            pub fn apply(self, session: &mut Session, out: &mut BytesMut) -> Flow {
                match self {
                    $( Command::$variant(c) => c.apply(session, out), )*
                    Command::Unknown(c) => c.apply(session, out),
                }
            }
        }
    };
}

commands! {
    /// `AUTH [user] pass`
    Auth(Auth) {
        name: "auth",
        arity: -2,
        flags: ["noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        subscribed: false,
        summary: "Authenticates the connection.",
    }
    /// `CLIENT subcommand ...`
    Client(Client) {
        name: "client",
        arity: -2,
        flags: ["noscript", "loading", "stale"],
        group: "connection",
        subcommands: true,
        subscribed: false,
        summary: "A container for client connection commands.",
    }
    /// `COMMAND [COUNT|LIST|INFO|DOCS]`
    Command(CommandInfo) {
        name: "command",
        arity: -1,
        flags: ["loading", "stale"],
        group: "server",
        subcommands: true,
        subscribed: false,
        summary: "Returns detailed information about all commands.",
    }
    /// `CONFIG GET parameter...`
    Config(Config) {
        name: "config",
        arity: -2,
        flags: ["admin", "noscript", "loading", "stale"],
        group: "server",
        subcommands: true,
        subscribed: false,
        summary: "A container for server configuration commands.",
    }
    /// `ECHO message`
    Echo(Echo) {
        name: "echo",
        arity: 2,
        flags: ["fast"],
        group: "connection",
        subscribed: false,
        summary: "Returns the given string.",
    }
    /// `FLUSHALL [ASYNC|SYNC]`
    Flushall(Flush) {
        name: "flushall",
        arity: -1,
        flags: ["write"],
        group: "server",
        subscribed: false,
        summary: "Removes all keys from all databases (there are none: accepted).",
    }
    /// `FLUSHDB [ASYNC|SYNC]`
    Flushdb(Flush) {
        name: "flushdb",
        arity: -1,
        flags: ["write"],
        group: "server",
        subscribed: false,
        summary: "Removes all keys from the current database (there are none: accepted).",
    }
    /// `FUNCTION FLUSH [ASYNC|SYNC]`
    Function(Function) {
        name: "function",
        arity: -2,
        flags: [],
        group: "scripting",
        subcommands: true,
        subscribed: false,
        summary: "A container for function commands (FLUSH: there are none).",
    }
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    Hello(Hello) {
        name: "hello",
        arity: -1,
        flags: ["noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        subscribed: false,
        summary: "Handshakes with the server.",
    }
    /// `INFO [section...]`
    Info(Info) {
        name: "info",
        arity: -1,
        flags: ["loading", "stale"],
        group: "server",
        subscribed: false,
        summary: "Returns information and statistics about the server.",
    }
    /// `PING [message]`
    Ping(Ping) {
        name: "ping",
        arity: -1,
        flags: ["fast"],
        group: "connection",
        subscribed: true,
        summary: "Returns the server's liveliness response.",
    }
    /// `PSUBSCRIBE pattern...`
    Psubscribe(Psubscribe) {
        name: "psubscribe",
        arity: -2,
        flags: ["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        subscribed: true,
        summary: "Listens for messages published to channels that match one or more patterns.",
    }
    /// `PUBLISH channel message`
    Publish(Publish) {
        name: "publish",
        arity: 3,
        flags: ["pubsub", "loading", "stale", "fast"],
        group: "pubsub",
        subscribed: false,
        summary: "Posts a message to a channel.",
    }
    /// `PUBSUB CHANNELS|NUMSUB|NUMPAT`
    Pubsub(Pubsub) {
        name: "pubsub",
        arity: -2,
        flags: ["pubsub", "loading", "stale"],
        group: "pubsub",
        subcommands: true,
        subscribed: false,
        summary: "A container for Pub/Sub commands.",
    }
    /// `PUNSUBSCRIBE [pattern...]`
    Punsubscribe(Punsubscribe) {
        name: "punsubscribe",
        arity: -1,
        flags: ["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        subscribed: true,
        summary: "Stops listening to messages published to channels that match one or more patterns.",
    }
    /// `QUIT`
    Quit(Quit) {
        name: "quit",
        arity: -1,
        flags: ["allow_busy", "noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        subscribed: true,
        summary: "Closes the connection.",
    }
    /// `RESET`
    Reset(Reset) {
        name: "reset",
        arity: 1,
        flags: ["noscript", "loading", "stale", "fast", "no_auth"],
        group: "connection",
        subscribed: true,
        summary: "Resets the connection.",
    }
    /// `SELECT db`
    Select(Select) {
        name: "select",
        arity: 2,
        flags: ["loading", "stale", "fast"],
        group: "connection",
        subscribed: false,
        summary: "Changes the selected database.",
    }
    /// `SUBSCRIBE channel...`
    Subscribe(Subscribe) {
        name: "subscribe",
        arity: -2,
        flags: ["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        subscribed: true,
        summary: "Listens for messages published to channels.",
    }
    /// `UNSUBSCRIBE [channel...]`
    Unsubscribe(Unsubscribe) {
        name: "unsubscribe",
        arity: -1,
        flags: ["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        subscribed: true,
        summary: "Stops listening to messages posted to channels.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_command_parses_to_itself_and_nothing_else_does() {
        let example = |name: &str| -> &[&str] {
            match name {
                "client" => &["ID"],
                "config" => &["GET", "x"],
                "function" => &["FLUSH"],
                "pubsub" => &["NUMPAT"],
                "select" => &["0"],
                "publish" => &["a", "b"],
                "auth" | "echo" | "psubscribe" | "subscribe" => &["a"],
                _ => &[],
            }
        };
        for spec in TABLE {
            let mut args = vec![Bytes::from(spec.name.to_ascii_uppercase())];
            args.extend(
                example(spec.name)
                    .iter()
                    .map(|a| Bytes::from(a.to_string())),
            );
            match Command::parse(args) {
                Ok(c) => assert_eq!(c.name(), spec.name),
                Err(e) => panic!("{}: {e}", spec.name),
            }
        }
        let unknown = Command::parse(vec![Bytes::from_static(b"unsubscribex")]);
        assert!(matches!(unknown, Ok(Command::Unknown(_))));
    }

    #[test]
    fn only_no_auth_commands_run_before_authentication() {
        let before: Vec<&str> = TABLE
            .iter()
            .filter(|s| s.no_auth())
            .map(|s| s.name)
            .collect();
        assert_eq!(before, ["auth", "hello", "quit", "reset"]);
    }
}
