//! `PUBLISH channel message`: publishes to the hub room `channel`, reaching RESP
//! subscribers and websocket and Socket.IO clients alike; answers how many
//! received it across all transports. On the Flask-SocketIO channels the message
//! is also decoded and emitted to the room it names (see [`crate::resp::bridge`]);
//! the answer then counts those receivers too. The raw bridge message itself
//! reaches RESP subscribers of the channel only: websocket and Socket.IO clients
//! get the decoded event, in exactly the rooms it names.

use bytes::{Bytes, BytesMut};

use super::{Args, CmdError};
use crate::hub::Publication;
use crate::hub::Transport;
use crate::resp::bridge;
use crate::resp::frame::Reply;
use crate::resp::session::{channel_too_long, Flow, Session};

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
        let limits = &s.ctx.limits;
        if channel.len() > limits.max_channel_bytes {
            reply.error(&channel_too_long(limits.max_channel_bytes));
            return Flow::Continue;
        }
        let hub = &s.ctx.hub;
        let publication = Publication::raw(channel, self.message.clone());
        let (bridged, publication) = if bridge::is_bridge_channel(channel) {
            let rooms = bridge::Bounds {
                max_rooms: limits.bridge_max_rooms,
                max_room_bytes: limits.max_channel_bytes,
            };
            (
                bridge::relay(hub, channel, &self.message, &rooms),
                publication.only_for(Transport::Resp),
            )
        } else {
            (0, publication)
        };
        let received = hub.publish(publication);
        reply.integer(i64::try_from(received + bridged).unwrap_or(i64::MAX));
        Flow::Continue
    }
}
