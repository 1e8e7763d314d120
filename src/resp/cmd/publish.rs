//! `PUBLISH channel message`: publishes to the hub room `channel`, reaching RESP
//! subscribers and websocket and Socket.IO clients alike; answers how many
//! received it across all transports. On the Flask-SocketIO channels the message
//! is also decoded and emitted to the room it names (see [`crate::resp::bridge`]);
//! the answer then counts those receivers too.

use bytes::{Bytes, BytesMut};

use super::{Args, CmdError};
use crate::hub::Publication;
use crate::resp::bridge;
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `PUBLISH channel message`.
pub struct Publish {
    channel: Bytes,
    message: Bytes,
}

impl Publish {
    /// Exactly two arguments.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let channel = args.next_arg()?;
        let message = args.next_arg()?;
        args.finish()?;
        Ok(Publish { channel, message })
    }

    /// Publishes and answers the receiver count.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let mut reply = Reply::new(out, s.proto);
        let Ok(channel) = std::str::from_utf8(&self.channel) else {
            reply.error("ERR channel and pattern names must be UTF-8");
            return Flow::Continue;
        };
        let hub = &s.ctx.hub;
        let bridged = if bridge::is_bridge_channel(channel) {
            bridge::relay(hub, channel, &self.message)
        } else {
            0
        };
        let received = hub.publish(Publication::raw(channel, self.message));
        reply.integer(i64::try_from(received + bridged).unwrap_or(i64::MAX));
        Flow::Continue
    }
}
