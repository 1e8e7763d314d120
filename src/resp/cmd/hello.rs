//! `HELLO [protover [AUTH username password] [SETNAME name]]`: switches between
//! RESP2 and RESP3, optionally authenticating and naming the client at once, and
//! answers the server description (a map in RESP3, a flat array in RESP2).
//! redis-py 8 opens every connection with `HELLO 3`.

use bytes::{Bytes, BytesMut};

use super::auth::WRONGPASS;
use super::client::check_name;
use super::{integer, is, Args, CmdError, REDIS_VERSION};
use crate::resp::frame::{Proto, Reply};
use crate::resp::session::{AuthOutcome, Flow, Session, THROTTLED};

/// `HELLO`.
pub struct Hello {
    proto: Option<Proto>,
    auth: Option<(Bytes, Bytes)>,
    name: Option<String>,
}

impl Hello {
    /// Parses the version and options.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let mut hello = Hello {
            proto: None,
            auth: None,
            name: None,
        };
        let Some(version) = args.next_opt() else {
            return Ok(hello);
        };
        hello.proto = match integer(&version) {
            Ok(2) => Some(Proto::Resp2),
            Ok(3) => Some(Proto::Resp3),
            Ok(_) => {
                return Err(CmdError::Reply(
                    "NOPROTO unsupported protocol version".into(),
                ))
            }
            Err(_) => {
                return Err(CmdError::Reply(
                    "ERR Protocol version is not an integer or out of range".into(),
                ))
            }
        };
        while let Some(option) = args.next_opt() {
            let syntax = || {
                CmdError::Reply(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&option)
                ))
            };
            if is(&option, "auth") && args.remaining() >= 2 {
                let user = args.next_arg()?;
                let password = args.next_arg()?;
                hello.auth = Some((user, password));
            } else if is(&option, "setname") && args.remaining() >= 1 {
                let name = args.next_arg()?;
                hello.name = Some(check_name(&name)?);
            } else {
                return Err(syntax());
            }
        }
        Ok(hello)
    }

    /// Authenticates, switches protocol, names the client and describes the server.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        if let Some((user, password)) = &self.auth {
            match s.try_auth(Some(user), password) {
                AuthOutcome::Accepted => {}
                AuthOutcome::Refused => {
                    Reply::new(out, s.proto).error(WRONGPASS);
                    return Flow::Continue;
                }
                AuthOutcome::Throttled => {
                    Reply::new(out, s.proto).error(THROTTLED);
                    return Flow::Close;
                }
            }
        }
        if !s.authenticated {
            Reply::new(out, s.proto).error(
                "NOAUTH HELLO must be called with the client already authenticated, \
                 otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                 authenticate the client and select the RESP protocol version at the same time",
            );
            return Flow::Continue;
        }
        if let Some(proto) = self.proto {
            s.proto = proto;
        }
        if let Some(name) = self.name {
            s.name = Some(name).filter(|n| !n.is_empty());
        }
        let mut reply = Reply::new(out, s.proto);
        reply.map(7);
        reply.bulk(b"server");
        reply.bulk(b"redis");
        reply.bulk(b"version");
        reply.bulk(REDIS_VERSION.as_bytes());
        reply.bulk(b"proto");
        reply.integer(s.proto.number());
        reply.bulk(b"id");
        reply.integer(i64::try_from(s.id()).unwrap_or(i64::MAX));
        reply.bulk(b"mode");
        reply.bulk(b"standalone");
        reply.bulk(b"role");
        reply.bulk(b"master");
        reply.bulk(b"modules");
        reply.array(0);
        Flow::Continue
    }
}
