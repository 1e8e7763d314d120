//! `SUBSCRIBE channel [channel ...]`: joins hub rooms; one confirmation per channel.

use bytes::BytesMut;

use super::{Args, CmdError};
use crate::resp::session::{Flow, Session};

/// `SUBSCRIBE channel...`.
pub struct Subscribe {
    channels: Vec<String>,
}

impl Subscribe {
    /// At least one channel.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        if args.remaining() == 0 {
            return Err(CmdError::Arity(args.name().to_owned()));
        }
        Ok(Subscribe {
            channels: args.rest_strings()?,
        })
    }

    /// Joins and confirms.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        s.subscribe(self.channels, false, out);
        Flow::Continue
    }
}
