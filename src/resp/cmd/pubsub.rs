//! `PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT | HELP`: introspection
//! over the hub, so the counts include websocket and Socket.IO clients. A
//! `CHANNELS` pattern is bounded like a `PSUBSCRIBE` one: it is matched against
//! every room.

use bytes::BytesMut;

use super::{is, Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `PUBSUB subcommand ...`.
pub enum Pubsub {
    /// Active channels, optionally matching a glob.
    Channels(Option<String>),
    /// Subscriber count per channel.
    NumSub(Vec<String>),
    /// Number of distinct patterns.
    NumPat,
    /// Usage.
    Help,
}

impl Pubsub {
    /// The subcommand and its arguments.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let sub = args.next_arg()?;
        if is(&sub, "channels") {
            if args.remaining() > 1 {
                return Err(CmdError::Arity("pubsub|channels".into()));
            }
            Ok(Pubsub::Channels(args.rest_strings()?.pop()))
        } else if is(&sub, "numsub") {
            Ok(Pubsub::NumSub(args.rest_strings()?))
        } else if is(&sub, "numpat") {
            if args.remaining() > 0 {
                return Err(CmdError::Arity("pubsub|numpat".into()));
            }
            Ok(Pubsub::NumPat)
        } else if is(&sub, "help") {
            Ok(Pubsub::Help)
        } else {
            Err(CmdError::UnknownSubcommand {
                command: "PUBSUB",
                sub: String::from_utf8_lossy(&sub).into_owned(),
            })
        }
    }

    /// Answers.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let hub = &s.ctx.hub;
        let mut reply = Reply::new(out, s.proto);
        match self {
            Pubsub::Channels(pattern) => {
                let max = s.ctx.limits.max_pattern_bytes;
                if pattern.as_ref().is_some_and(|p| p.len() > max) {
                    reply.error(&format!("ERR pattern too long (over {max} bytes)"));
                    return Flow::Continue;
                }
                let rooms = hub.rooms(pattern.as_deref().map(str::as_bytes));
                reply.array(rooms.len());
                for r in rooms {
                    reply.bulk(r.as_bytes());
                }
            }
            Pubsub::NumSub(channels) => {
                reply.array(channels.len() * 2);
                for c in channels {
                    reply.bulk(c.as_bytes());
                    reply.integer(i64::try_from(hub.room_size(&c)).unwrap_or(i64::MAX));
                }
            }
            Pubsub::NumPat => reply.integer(i64::try_from(hub.pattern_count()).unwrap_or(i64::MAX)),
            Pubsub::Help => {
                let lines = [
                    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "CHANNELS [<pattern>] -- Return the currently active channels.",
                    "NUMPAT -- Return number of subscriptions to patterns.",
                    "NUMSUB [<channel> ...] -- Return the number of subscribers for the channels.",
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
