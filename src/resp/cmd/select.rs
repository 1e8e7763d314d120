//! `SELECT db`: there is one database, 0; clients that select it (ioredis and
//! redis-py do when a URL names `/0`) get `+OK`, any other index an error.

use bytes::BytesMut;

use super::{integer, Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `SELECT db`.
pub struct Select {
    db: i64,
}

impl Select {
    /// One integer argument.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let db = args.next_arg()?;
        args.finish()?;
        Ok(Select { db: integer(&db)? })
    }

    /// Answers.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let mut reply = Reply::new(out, s.proto);
        if self.db == 0 {
            reply.simple("OK");
        } else {
            reply.error("ERR DB index is out of range");
        }
        Flow::Continue
    }
}
