//! `COMMAND [COUNT | LIST | INFO name... | DOCS [name...]]`: describes the commands
//! this listener implements, enough for redis-cli's hints and for client libraries
//! that look commands up.

use bytes::{Bytes, BytesMut};

use super::{is, Args, CmdError, Spec, TABLE};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `COMMAND` and its subcommands.
pub enum CommandInfo {
    /// Every command's description.
    All,
    /// How many commands there are.
    Count,
    /// Their names.
    List,
    /// The descriptions of the named commands (null for unknown ones).
    Info(Vec<Bytes>),
    /// Documentation of the named commands, or of all.
    Docs(Vec<Bytes>),
}

impl CommandInfo {
    /// The subcommand.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let Some(sub) = args.next_opt() else {
            return Ok(CommandInfo::All);
        };
        if is(&sub, "count") {
            Ok(CommandInfo::Count)
        } else if is(&sub, "list") {
            args.rest();
            Ok(CommandInfo::List)
        } else if is(&sub, "info") {
            Ok(CommandInfo::Info(args.rest()))
        } else if is(&sub, "docs") {
            Ok(CommandInfo::Docs(args.rest()))
        } else {
            Err(CmdError::UnknownSubcommand {
                command: "COMMAND",
                sub: String::from_utf8_lossy(&sub).into_owned(),
            })
        }
    }

    /// Answers.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let mut reply = Reply::new(out, s.proto);
        let find = |name: &[u8]| TABLE.iter().find(|s| is(name, s.name));
        match self {
            CommandInfo::All => {
                reply.array(TABLE.len());
                TABLE.iter().for_each(|e| describe(&mut reply, e));
            }
            CommandInfo::Count => reply.integer(TABLE.len() as i64),
            CommandInfo::List => {
                reply.array(TABLE.len());
                TABLE.iter().for_each(|s| reply.bulk(s.name.as_bytes()));
            }
            CommandInfo::Info(names) => {
                reply.array(names.len());
                for n in names {
                    match find(&n) {
                        Some(e) => describe(&mut reply, e),
                        None => reply.null(),
                    }
                }
            }
            CommandInfo::Docs(names) => {
                let entries: Vec<_> = if names.is_empty() {
                    TABLE.iter().collect()
                } else {
                    names.iter().filter_map(|n| find(n)).collect()
                };
                reply.map(entries.len());
                for Spec {
                    name,
                    group,
                    summary,
                    ..
                } in entries
                {
                    reply.bulk(name.as_bytes());
                    reply.map(3);
                    reply.bulk(b"summary");
                    reply.bulk(summary.as_bytes());
                    reply.bulk(b"since");
                    reply.bulk(b"1.0.0");
                    reply.bulk(b"group");
                    reply.bulk(group.as_bytes());
                }
            }
        }
        Flow::Continue
    }
}

/// One `COMMAND INFO` entry: name, arity, flags, first/last key and step (no
/// command here takes keys), ACL categories, tips, key specs, subcommands.
fn describe(reply: &mut Reply<'_>, entry: &Spec) {
    let Spec {
        name,
        arity,
        flags,
        group,
        ..
    } = entry;
    reply.array(10);
    reply.bulk(name.as_bytes());
    reply.integer(*arity);
    reply.set(flags.len());
    for f in *flags {
        reply.simple(f);
    }
    reply.integer(0);
    reply.integer(0);
    reply.integer(0);
    reply.set(1);
    reply.simple(&format!("@{group}"));
    reply.set(0);
    reply.array(0);
    reply.array(0);
}
