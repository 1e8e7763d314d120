//! Any command the listener does not implement: Redis's error text, naming the
//! command and the start of its arguments; the connection stays usable.

use bytes::{Bytes, BytesMut};

use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// An unknown command.
pub struct Unknown {
    name: String,
    args: Vec<Bytes>,
}

impl Unknown {
    /// Keeps the name (as sent) and the arguments for the message.
    pub fn new(name: Bytes, args: Vec<Bytes>) -> Self {
        Unknown {
            name: String::from_utf8_lossy(&name).into_owned(),
            args,
        }
    }

    /// The name as sent.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Answers `-ERR unknown command 'x', with args beginning with: 'a' 'b' `.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let mut listed = String::new();
        for a in &self.args {
            if listed.len() >= 128 {
                break;
            }
            let text = String::from_utf8_lossy(a);
            let room = 128 - listed.len();
            let cut: String = text.chars().take(room).collect();
            listed.push('\'');
            listed.push_str(&cut);
            listed.push_str("' ");
        }
        let name: String = self.name.chars().take(128).collect();
        Reply::new(out, s.proto).error(&format!(
            "ERR unknown command '{name}', with args beginning with: {listed}"
        ));
        Flow::Continue
    }
}
