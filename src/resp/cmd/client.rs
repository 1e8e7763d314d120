//! `CLIENT ID|GETNAME|SETNAME|SETINFO|INFO|LIST|NO-EVICT|NO-TOUCH|HELP`: what client
//! libraries send while connecting (redis-py sends `SETINFO`, ioredis `SETNAME`).
//! Other subcommands answer Redis's "unknown subcommand" error.

use bytes::BytesMut;

use super::{is, Args, CmdError};
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
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`, accepted and not kept.
    SetInfo,
    /// `CLIENT INFO` / `CLIENT LIST`: one line about this client (the only one a
    /// connection may see).
    Info,
    /// `CLIENT NO-EVICT|NO-TOUCH ON|OFF`: nothing to evict or touch here.
    Flag,
    /// `CLIENT HELP`
    Help,
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
            if !(is(&attr, "lib-name") || is(&attr, "lib-ver")) {
                return Err(CmdError::Reply(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(&attr)
                )));
            }
            if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return Err(CmdError::Reply(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(&attr)
                )));
            }
            Ok(Client::SetInfo)
        } else if is(&sub, "info") {
            exact(args, 0, "info")?;
            Ok(Client::Info)
        } else if is(&sub, "list") {
            args.rest();
            Ok(Client::Info)
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
                sub: String::from_utf8_lossy(&sub).into_owned(),
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
            Client::SetInfo | Client::Flag => reply.simple("OK"),
            Client::Info => {
                let mut line = format!(
                    "id={id} name={} db=0 sub={} psub={} resp={}",
                    s.name.as_deref().unwrap_or(""),
                    s.channels.len(),
                    s.patterns.len(),
                    s.proto.number()
                );
                line.push('\n');
                reply.verbatim(*b"txt", line.as_bytes());
            }
            Client::Help => {
                let lines: [&[u8]; 8] = [
                    b"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    b"ID -- Return the ID of the current connection.",
                    b"GETNAME -- Return the name of the current connection.",
                    b"SETNAME <name> -- Assign the name <name> to the current connection.",
                    b"SETINFO <option> <value> -- Set client meta attr (LIB-NAME, LIB-VER).",
                    b"INFO -- Return information about the current client connection.",
                    b"LIST -- Return information about client connections.",
                    b"NO-EVICT|NO-TOUCH (ON|OFF) -- Accepted; nothing is evicted here.",
                ];
                reply.array(lines.len());
                for l in lines {
                    reply.simple(&String::from_utf8_lossy(l));
                }
            }
        }
        Flow::Continue
    }
}
