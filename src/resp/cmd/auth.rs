//! `AUTH [username] password`: the only user is `default`, its password
//! `LIKEWISE_RESP_PASSWORD`. Without a configured password the one-argument form
//! is an error (as in Redis) and `AUTH default anything` succeeds. Failures are
//! counted per address; past `resp_auth_failures` within `resp_auth_window_s`
//! an address's attempts are refused unchecked and the connection closed.

use bytes::{Bytes, BytesMut};

use super::{is, Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{AuthOutcome, Context, Flow, Session, THROTTLED};

/// The error for a wrong user or password.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// `AUTH [username] password`.
pub struct Auth {
    user: Option<Bytes>,
    password: Bytes,
}

impl Auth {
    /// One or two arguments.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let first = args.next_arg()?;
        let second = args.next_opt();
        if args.remaining() > 0 {
            return Err(CmdError::Syntax);
        }
        Ok(match second {
            Some(password) => Auth {
                user: Some(first),
                password,
            },
            None => Auth {
                user: None,
                password: first,
            },
        })
    }

    /// Checks the credentials.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let mut reply = Reply::new(out, s.proto);
        if s.ctx.password.is_none() && self.user.is_none() {
            reply.error(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            );
            return Flow::Continue;
        }
        match s.try_auth(self.user.as_deref(), &self.password) {
            AuthOutcome::Accepted => reply.simple("OK"),
            AuthOutcome::Refused => reply.error(WRONGPASS),
            AuthOutcome::Throttled => {
                reply.error(THROTTLED);
                return Flow::Close;
            }
        }
        Flow::Continue
    }
}

/// Whether `user` (absent: `default`) and `password` are the configured ones.
pub fn credentials_match(ctx: &Context, user: Option<&[u8]>, password: &[u8]) -> bool {
    user.is_none_or(|u| is(u, "default")) && ctx.password_matches(password)
}
