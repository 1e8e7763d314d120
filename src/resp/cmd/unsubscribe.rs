//! `UNSUBSCRIBE [channel ...]`: leaves the named channels, or all of them; one
//! confirmation per channel left, or one with a null channel when there was none.

use bytes::BytesMut;

use super::{Args, CmdError};
use crate::resp::session::{Flow, Session};

/// `UNSUBSCRIBE [channel...]`.
pub struct Unsubscribe {
    channels: Vec<String>,
}

impl Unsubscribe {
    /// Any number of channels.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        Ok(Unsubscribe {
            channels: args.rest_strings()?,
        })
    }

    /// Leaves and confirms.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        s.unsubscribe(self.channels, false, out);
        Flow::Continue
    }
}
