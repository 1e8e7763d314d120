//! `PING [message]`: `+PONG`, or the message as a bulk string. In the RESP2
//! subscribed context Redis answers it as a pub/sub message: `["pong", message]`.

use bytes::{Bytes, BytesMut};

use super::{Args, CmdError};
use crate::resp::frame::{Proto, Reply};
use crate::resp::session::{Flow, Session};

/// `PING [message]`.
pub struct Ping {
    message: Option<Bytes>,
}

impl Ping {
    /// At most one argument.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let message = args.next_opt();
        args.finish()?;
        Ok(Ping { message })
    }

    /// Answers.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let mut reply = Reply::new(out, s.proto);
        if s.proto == Proto::Resp2 && s.subscription_count() > 0 {
            reply.array(2);
            reply.bulk(b"pong");
            reply.bulk(self.message.as_deref().unwrap_or_default());
        } else {
            match &self.message {
                Some(m) => reply.bulk(m),
                None => reply.simple("PONG"),
            }
        }
        Flow::Continue
    }
}
