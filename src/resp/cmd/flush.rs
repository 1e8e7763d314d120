//! `FLUSHALL [ASYNC|SYNC]` and `FLUSHDB [ASYNC|SYNC]`: test harnesses written for
//! Redis send them between steps. The listener keeps no keys, so there is nothing
//! to remove and both answer `+OK`; anything but one optional `ASYNC` or `SYNC`
//! is a syntax error, as in Redis.

use bytes::BytesMut;

use super::{is, Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `FLUSHALL` or `FLUSHDB`, with its mode checked and otherwise ignored.
pub struct Flush;

impl Flush {
    /// At most one argument, `ASYNC` or `SYNC`.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let all = args.rest();
        match all.as_slice() {
            [] => Ok(Flush),
            [mode] if is(mode, "async") || is(mode, "sync") => Ok(Flush),
            _ => Err(CmdError::Syntax),
        }
    }

    /// There is no keyspace: nothing to remove.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        Reply::new(out, s.proto).simple("OK");
        Flow::Continue
    }
}
