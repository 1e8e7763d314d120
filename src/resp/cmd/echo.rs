//! `ECHO message`: the message back as a bulk string.

use bytes::{Bytes, BytesMut};

use super::{Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `ECHO message`.
pub struct Echo {
    message: Bytes,
}

impl Echo {
    /// Exactly one argument.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let message = args.next_arg()?;
        args.finish()?;
        Ok(Echo { message })
    }

    /// Answers.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        Reply::new(out, s.proto).bulk(&self.message);
        Flow::Continue
    }
}
