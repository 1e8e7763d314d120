//! `CONFIG GET parameter [parameter ...]`: a few read-only answers tools ask for
//! (redis-benchmark reads `save` and `appendonly`): nothing is saved, there is one
//! database. Other parameters match nothing; other subcommands are unknown.

use bytes::BytesMut;

use super::{is, Args, CmdError};
use crate::hub::glob_matches;
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// Parameters and their fixed values.
const PARAMETERS: &[(&str, &str)] = &[("appendonly", "no"), ("databases", "1"), ("save", "")];

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
        let matching: Vec<_> = PARAMETERS
            .iter()
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
