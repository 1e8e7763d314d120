//! `PUNSUBSCRIBE [pattern ...]`: drops the named patterns, or all of them; one
//! confirmation per pattern, or one with a null pattern when there was none.

use bytes::BytesMut;

use super::{Args, CmdError};
use crate::resp::session::{Flow, Session};

/// `PUNSUBSCRIBE [pattern...]`.
pub struct Punsubscribe {
    patterns: Vec<String>,
}

impl Punsubscribe {
    /// Any number of patterns.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        Ok(Punsubscribe {
            patterns: args.rest_strings()?,
        })
    }

    /// Unsubscribes and confirms.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        s.unsubscribe(self.patterns, true, out);
        Flow::Continue
    }
}
