//! `INFO [section ...]`: Redis-style `field:value` lines. Clients read a few of
//! them: `redis_version`, and `loading:0`, which ioredis waits for before it
//! considers the connection ready.

use std::fmt::Write;

use bytes::BytesMut;

use super::{Args, CmdError, REDIS_VERSION};
use crate::hub::Transport;
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `INFO [section...]`.
pub struct Info {
    sections: Vec<String>,
}

const SECTIONS: [&str; 6] = [
    "server",
    "clients",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

impl Info {
    /// Section names (any case); none means the default set.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        Ok(Info {
            sections: args
                .rest()
                .iter()
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
                .collect(),
        })
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.is_empty()
            || self
                .sections
                .iter()
                .any(|s| s == section || s == "all" || s == "default" || s == "everything")
    }

    /// Answers the text of the requested sections.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let hub = &s.ctx.hub;
        let uptime = s.ctx.started.elapsed().as_secs();
        let mut text = String::new();
        for section in SECTIONS.iter().filter(|sec| self.wants(sec)) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = section.to_string();
            title[..1].make_ascii_uppercase();
            let _ = write!(text, "# {title}\r\n");
            let _ = match *section {
                "server" => write!(
                    text,
                    "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
                     likewise_version:{}\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
                     tcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
                    env!("CARGO_PKG_VERSION"),
                    std::env::consts::OS,
                    std::env::consts::ARCH,
                    usize::BITS,
                    std::process::id(),
                    s.ctx.port,
                    uptime / 86_400
                ),
                "clients" => write!(
                    text,
                    "connected_clients:{}\r\nwebsocket_clients:{}\r\nsocketio_clients:{}\r\n",
                    hub.connections(Transport::Resp),
                    hub.connections(Transport::Ws),
                    hub.connections(Transport::SocketIo)
                ),
                "persistence" => write!(text, "loading:0\r\nasync_loading:0\r\n"),
                "stats" => {
                    let stats = hub.stats();
                    let load = |a: &std::sync::atomic::AtomicU64| {
                        a.load(std::sync::atomic::Ordering::Relaxed)
                    };
                    write!(
                        text,
                        "pubsub_channels:{}\r\npubsub_patterns:{}\r\n\
                         total_published:{}\r\ntotal_delivered:{}\r\n\
                         client_output_buffer_limit_disconnections:{}\r\n",
                        hub.rooms(None).len(),
                        hub.pattern_count(),
                        load(&stats.published),
                        load(&stats.delivered),
                        load(&stats.dropped_slow)
                    )
                }
                "replication" => write!(text, "role:master\r\nconnected_slaves:0\r\n"),
                _ => Ok(()),
            };
        }
        Reply::new(out, s.proto).bulk(text.as_bytes());
        Flow::Continue
    }
}
