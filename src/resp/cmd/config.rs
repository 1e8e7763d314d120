//! `CONFIG GET parameter [parameter ...]`: the Redis parameters this listener has
//! an answer for, with their real values (tools read `maxclients`, redis-benchmark
//! reads `save` and `appendonly`; harnesses send `CONFIG GET *`): nothing is
//! saved, there is one database, no idle timeout, and the limits are the `[limits]`
//! settings. Each argument is a glob matched against the names without regard to
//! case; other parameters match nothing; other subcommands are unknown.

use bytes::BytesMut;

use super::{is, Args, CmdError};
use crate::hub::glob_matches;
use crate::resp::frame::Reply;
use crate::resp::session::{Context, Flow, Session};

/// Every parameter and its value, in name order.
fn parameters(ctx: &Context) -> Vec<(&'static str, String)> {
    let l = &ctx.limits;
    vec![
        ("appendonly", "no".into()),
        ("bind", ctx.addr.ip().to_string()),
        (
            "client-query-buffer-limit",
            l.request.max_request.to_string(),
        ),
        ("databases", "1".into()),
        ("maxclients", l.max_clients.to_string()),
        ("port", ctx.port.to_string()),
        ("proto-max-bulk-len", l.request.max_bulk.to_string()),
        ("save", String::new()),
        ("timeout", "0".into()),
    ]
}

/// `CONFIG GET parameter...`.
pub struct Config {
    patterns: Vec<String>,
}

impl Config {
    /// `GET` and at least one parameter (a glob, as in Redis).
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let sub = args.next_arg()?;
        if !is(&sub, "get") {
            return Err(CmdError::UnknownSubcommand {
                command: "CONFIG",
                sub: String::from_utf8_lossy(&sub).into_owned(),
            });
        }
        if args.remaining() == 0 {
            return Err(CmdError::Arity("config|get".into()));
        }
        Ok(Config {
            patterns: args
                .rest()
                .iter()
                .map(|p| String::from_utf8_lossy(p).to_ascii_lowercase())
                .collect(),
        })
    }

    /// Answers the matching parameters as a map (a flat array in RESP2).
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let matching: Vec<_> = parameters(&s.ctx)
            .into_iter()
            .filter(|(name, _)| {
                self.patterns
                    .iter()
                    .any(|p| glob_matches(p.as_bytes(), name.as_bytes()))
            })
            .collect();
        let mut reply = Reply::new(out, s.proto);
        reply.map(matching.len());
        for (name, value) in matching {
            reply.bulk(name.as_bytes());
            reply.bulk(value.as_bytes());
        }
        Flow::Continue
    }
}
