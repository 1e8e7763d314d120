//! `QUIT`: `+OK`, then the connection closes once the reply is sent.

use bytes::BytesMut;

use super::{Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `QUIT`.
pub struct Quit;

impl Quit {
    /// Arguments are ignored, as Redis does.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        args.rest();
        Ok(Quit)
    }

    /// Answers and asks for the connection to close.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        Reply::new(out, s.proto).simple("OK");
        Flow::Close
    }
}
