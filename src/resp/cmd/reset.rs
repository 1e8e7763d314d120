//! `RESET`: back to a fresh connection's state (no subscriptions, RESP2, no name,
//! unauthenticated when a password is set); answers `+RESET`.

use bytes::BytesMut;

use super::{Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `RESET`.
pub struct Reset;

impl Reset {
    /// No arguments.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        args.finish()?;
        Ok(Reset)
    }

    /// Resets and answers in RESP2.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        s.reset();
        Reply::new(out, s.proto).simple("RESET");
        Flow::Continue
    }
}
