//! `PSUBSCRIBE pattern [pattern ...]`: glob subscriptions in the hub (`*`, `?`,
//! `[...]`, `\` as in Redis); one confirmation per pattern. Patterns longer than
//! `resp_max_pattern_bytes`, or more than `resp_max_patterns` per connection, are
//! refused (nothing subscribed): every publication is matched against every
//! distinct pattern.

use bytes::BytesMut;

use super::{Args, CmdError};
use crate::resp::session::{Flow, Session};

/// `PSUBSCRIBE pattern...`.
pub struct Psubscribe {
    patterns: Vec<String>,
}

impl Psubscribe {
    /// At least one pattern.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        if args.remaining() == 0 {
            return Err(CmdError::Arity(args.name().to_owned()));
        }
        Ok(Psubscribe {
            patterns: args.rest_strings()?,
        })
    }

    /// Subscribes and confirms.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        s.subscribe(self.patterns, true, out);
        Flow::Continue
    }
}
