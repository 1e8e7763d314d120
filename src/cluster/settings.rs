//! The `[cluster]` settings: where the bus's Redis is, what the bus may buffer,
//! and how it reconnects. Owned here and composed into `config::Settings`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[cluster]`: the cluster bus. Without `redis`, the node runs alone and none
/// of the rest matters.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` of the Redis (or Valkey)
    /// server every node of the cluster uses; env `LIKEWISE_CLUSTER_REDIS`.
    pub redis: Option<String>,
    /// Prefix of the bus's channel on that server (`{prefix}:events`): nodes
    /// with the same prefix form one cluster, so one Redis can carry several.
    pub channel_prefix: String,
    /// Bytes of publications waiting to be sent to Redis beyond which further
    /// ones are dropped (and counted), so a slow Redis never holds up a publisher.
    pub queue_bytes: usize,
    /// Largest bus message sent or accepted, in bytes; larger ones are dropped
    /// and counted.
    pub max_message_bytes: usize,
    /// Deadline for opening a connection to Redis, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Deadline for each command (`PUBLISH`, `SUBSCRIBE`, `PING`), in milliseconds.
    pub command_timeout_ms: u64,
    /// Interval between `PING`s on an idle connection, which find a dead
    /// Redis without waiting for a publication, in milliseconds.
    pub heartbeat_ms: u64,
    /// First wait before reconnecting, in milliseconds; doubled per failure.
    pub reconnect_min_ms: u64,
    /// Longest wait before reconnecting, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Seconds after its last presence heartbeat (sent every third of this) at
    /// which a node counts as dead: its users no longer count as online through
    /// it, and the next sweep by a live node removes its entries.
    pub presence_ttl_s: u64,
    /// Presence changes of this node waiting to be written to Redis beyond which
    /// the node stops queueing them and later resynchronises its whole set.
    pub presence_queue: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis: None,
            channel_prefix: "likewise".to_owned(),
            queue_bytes: 8 * 1024 * 1024,
            max_message_bytes: 1024 * 1024,
            connect_timeout_ms: 2_000,
            command_timeout_ms: 2_000,
            heartbeat_ms: 1_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            presence_ttl_s: 15,
            presence_queue: 65_536,
        }
    }
}

impl std::fmt::Debug for ClusterSettings {
    // By hand: the URL may carry a password, and settings get logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis", &self.redis.as_deref().map(redact))
            .field("channel_prefix", &self.channel_prefix)
            .field("queue_bytes", &self.queue_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("presence_ttl_s", &self.presence_ttl_s)
            .field("presence_queue", &self.presence_queue)
            .finish()
    }
}

/// `url` without its user and password, for logs, errors and `/healthz`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl ClusterSettings {
    /// The Redis channel the bus publishes and subscribes to.
    pub fn channel(&self) -> String {
        format!("{}:events", self.channel_prefix)
    }

    /// The Redis channel on which presence changes are announced, by the script
    /// that made each one, so that every node delivers them in one order.
    pub fn presence_channel(&self) -> String {
        format!("{}:presence", self.channel_prefix)
    }

    /// How long a node counts as alive after its last presence heartbeat.
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_s)
    }

    /// Interval between a node's presence heartbeats (and its sweeps of dead
    /// nodes): a third of the ttl, so that two lost heartbeats in a row do not
    /// yet make a live node dead.
    pub fn presence_heartbeat(&self) -> Duration {
        self.presence_ttl() / 3
    }

    /// Deadline for opening a connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Deadline for one command.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// Checks the section; the message never contains the password.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.redis {
            let shown = redact(url);
            if !url.starts_with("redis://") {
                return Err(format!(
                    "cluster.redis must be a URL like redis://127.0.0.1:6379/0 (with a \
                     password: redis://:PASSWORD@HOST:PORT/DB), not {shown}"
                ));
            }
            // The client's own error is not shown: it may quote the URL.
            if redis::Client::open(url.as_str()).is_err() {
                return Err(format!(
                    "cluster.redis {shown} is not a valid Redis URL; write it as \
                     redis://[:PASSWORD@]HOST:PORT[/DB]"
                ));
            }
        }
        let prefix_ok = !self.channel_prefix.is_empty()
            && self.channel_prefix.len() <= 64
            && self
                .channel_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !prefix_ok {
            return Err(
                "cluster.channel_prefix must be 1 to 64 characters among letters, digits and \
                 - _ . :"
                    .into(),
            );
        }
        if self.max_message_bytes < 1024 || self.queue_bytes < self.max_message_bytes {
            return Err(
                "cluster: max_message_bytes must be at least 1024 and queue_bytes at least \
                 max_message_bytes"
                    .into(),
            );
        }
        if self.connect_timeout_ms < 10
            || self.command_timeout_ms < 10
            || self.heartbeat_ms < 10
            || self.reconnect_min_ms == 0
            || self.reconnect_max_ms < self.reconnect_min_ms
        {
            return Err(
                "cluster: connect_timeout_ms, command_timeout_ms and heartbeat_ms must be at \
                 least 10, reconnect_min_ms positive and at most reconnect_max_ms"
                    .into(),
            );
        }
        if !(1..=3600).contains(&self.presence_ttl_s) {
            return Err("cluster.presence_ttl_s must be between 1 and 3600 seconds".into());
        }
        if !(16..=16_777_216).contains(&self.presence_queue) {
            return Err("cluster.presence_queue must be between 16 and 16777216 changes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_bad_urls_refused() {
        assert_eq!(
            redact("redis://:pw@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact("nonsense"), "<not a URL>");
        let bad = |url: &str| ClusterSettings {
            redis: Some(url.to_owned()),
            ..ClusterSettings::default()
        };
        assert!(bad("redis://127.0.0.1:6379/0").validate().is_ok());
        let err = bad("redis://u:topsecret@").validate();
        assert!(
            err.as_ref().is_err_and(|e| !e.contains("topsecret")),
            "{err:?}"
        );
        assert!(bad("rediss://x:1").validate().is_err());
        let debug = format!("{:?}", bad("redis://:topsecret@h:1/0"));
        assert!(!debug.contains("topsecret"), "{debug}");
        let prefix = ClusterSettings {
            channel_prefix: "a b".into(),
            ..ClusterSettings::default()
        };
        assert!(prefix.validate().is_err());
    }

    #[test]
    fn the_presence_ttl_and_queue_are_bounded_and_heartbeats_come_thrice_per_ttl() {
        let with = |presence_ttl_s, presence_queue| ClusterSettings {
            presence_ttl_s,
            presence_queue,
            ..ClusterSettings::default()
        };
        assert!(with(15, 65_536).validate().is_ok());
        assert!(with(1, 16).validate().is_ok());
        for (ttl, queue) in [(0, 65_536), (3601, 65_536), (15, 15), (15, 1 << 25)] {
            assert!(with(ttl, queue).validate().is_err(), "{ttl} {queue}");
        }
        assert_eq!(with(15, 16).presence_heartbeat(), Duration::from_secs(5));
        assert_eq!(with(1, 16).presence_heartbeat(), Duration::from_secs(1) / 3);
    }
}
