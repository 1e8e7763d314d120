//! Settings: one typed [`Settings`] built from four layers — command-line flags beat
//! environment variables, which beat the TOML config file, which beats the embedded
//! defaults. Nothing here is resolved against the current directory except the
//! documented default data directory, so a packaged binary behaves the same wherever
//! systemd starts it.
//!
//! Each subsystem owns its settings type (the queue's [`QueueSettings`] and
//! [`ScheduleSettings`], the webhooks' [`WebhookSettings`], the store's
//! durability); this module only composes them, layers them and validates them
//! together, including rules that span fields (`lease_ms` ≥ `task_timeout_ms`).
//!
//! This module never opens sockets or files other than the config file itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::DomainLimits;
use crate::hub::OutputLimits;
use crate::resp::frame::RequestLimits;
use crate::resp::session::RespLimits;

pub use crate::domain::AccountSettings;
pub use crate::store::Durability;

// The subsystems own their settings; `Settings` composes them, and they are
// re-exported here so that a config file's whole shape can be named from one place.
pub use crate::cluster::ClusterSettings;
pub use crate::domain::effects::WebhookSettings;
pub use crate::queue::{QueueSettings, ScheduleSettings};

/// The environment variable naming the cluster bus's Redis URL (it may carry a
/// password, so it is read like the other secrets, never from a flag).
pub const CLUSTER_REDIS_ENV: &str = "LIKEWISE_CLUSTER_REDIS";

/// Size and rate limits; every input the server accepts is bounded by one of these.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest user name, in characters.
    pub max_name_chars: usize,
    /// Longest password, in bytes (argon2 input).
    pub max_password_bytes: usize,
    /// Longest post title, in characters.
    pub max_title_chars: usize,
    /// Longest post, comment or message body, in characters.
    pub max_body_chars: usize,
    /// Largest page a listing returns.
    pub max_page: usize,
    /// Most user ids one `GET /api/presence` may ask about.
    pub max_presence_ids: usize,
    /// Failed sign-ins for one name within `login_window_s` after which the
    /// addresses that failed on it get 429 for that name (others still get in).
    pub login_failures: u32,
    /// Window for `login_failures`.
    pub login_window_s: u64,
    /// Largest websocket message accepted from a client, in bytes.
    pub max_ws_message_bytes: usize,
    /// Outbound messages buffered per connection before it is dropped as too slow.
    pub outbound_queue: usize,
    /// A websocket or Socket.IO send that the peer does not take within this is
    /// abandoned and the connection dropped (a peer that never reads).
    pub ws_write_timeout_ms: u64,
    /// A Socket.IO connection upgraded without a token must send its CONNECT
    /// packet within this, or it is closed.
    pub socketio_connect_timeout_ms: u64,
    /// A client must send a whole HTTP request head within this after the
    /// connection opens or goes idle (slowloris; also the keep-alive idle limit).
    pub http_header_timeout_ms: u64,
    /// A JSON request body must have arrived in full within this after its
    /// handler starts reading it (a client trickling its body); otherwise 408 and
    /// the connection is closed.
    pub http_body_timeout_ms: u64,
    /// Most simultaneous HTTP connections (websockets included); `0` derives it
    /// from the open-file limit (soft `RLIMIT_NOFILE` minus a tenth, at least 256
    /// kept for the store and the RESP listener).
    pub max_connections: usize,
    /// Most simultaneous HTTP connections from one IP address; `0` for no
    /// per-address cap (e.g. behind a reverse proxy on the same host).
    pub max_connections_per_ip: usize,
    /// Peers (addresses or CIDR blocks: the edges, a reverse proxy) whose
    /// `X-Forwarded-For` names the client for the per-address throttles; they are
    /// exempt from `max_connections_per_ip`. Empty: the header is never believed.
    pub trusted_proxies: crate::http::extract::TrustedProxies,
    /// Outbound bytes waiting for one subscriber (any transport) that drop it at
    /// once (Redis's pubsub hard limit: 32 MiB).
    pub output_hard_limit_bytes: usize,
    /// Outbound bytes waiting for one subscriber that drop it when exceeded for
    /// `output_soft_limit_s` (Redis's pubsub soft limit: 8 MiB for 60 s).
    pub output_soft_limit_bytes: usize,
    /// How long a subscriber may stay over `output_soft_limit_bytes`, in seconds.
    pub output_soft_limit_s: u64,
    /// Largest RESP bulk string a client may send, in bytes (Redis: 512 MiB).
    pub resp_max_bulk_bytes: usize,
    /// Most elements in one RESP array a client may send (Redis: 1,048,576).
    pub resp_max_array_len: usize,
    /// Accepted for compatibility and without effect: requests are flat arrays,
    /// and any nesting closes the connection with a protocol error.
    pub resp_max_nesting: usize,
    /// Longest inline command line, in bytes (Redis: 64 KiB).
    pub resp_max_inline_bytes: usize,
    /// Most bytes one RESP request may take, headers included (Redis's
    /// client-query-buffer-limit: 1 GiB).
    pub resp_max_query_bytes: usize,
    /// Most simultaneous RESP connections (Redis's maxclients: 10,000).
    pub resp_max_clients: usize,
    /// Longest `PSUBSCRIBE` pattern, in bytes.
    pub resp_max_pattern_bytes: usize,
    /// Most patterns one RESP connection may subscribe to.
    pub resp_max_patterns: usize,
    /// Longest channel name a RESP client may publish or subscribe to, in bytes.
    pub resp_max_channel_bytes: usize,
    /// Most rooms one bridged Flask-SocketIO message may name.
    pub resp_bridge_max_rooms: usize,
    /// A RESP connection that has not authenticated within this is closed (only
    /// when a password is set), in milliseconds.
    pub resp_auth_timeout_ms: u64,
    /// Failed `AUTH`s from one address within `resp_auth_window_s` after which
    /// that address's `AUTH`s are refused until the window ends.
    pub resp_auth_failures: u32,
    /// Window for `resp_auth_failures`, in seconds.
    pub resp_auth_window_s: u64,
    /// Interval between server heartbeats on websocket and Socket.IO connections.
    pub ping_interval_ms: u64,
    /// A connection that does not answer a heartbeat within this is dropped.
    pub ping_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_name_chars: 32,
            max_password_bytes: 1024,
            max_title_chars: 200,
            max_body_chars: 20_000,
            max_page: 100,
            max_presence_ids: 256,
            login_failures: 10,
            login_window_s: 300,
            max_ws_message_bytes: 64 * 1024,
            ws_write_timeout_ms: 10_000,
            socketio_connect_timeout_ms: 10_000,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            max_connections: 0,
            max_connections_per_ip: 1_000,
            trusted_proxies: crate::http::extract::TrustedProxies::default(),
            outbound_queue: 65_536,
            output_hard_limit_bytes: 32 * 1024 * 1024,
            output_soft_limit_bytes: 8 * 1024 * 1024,
            output_soft_limit_s: 60,
            resp_max_bulk_bytes: 8 * 1024 * 1024,
            resp_max_array_len: 1024 * 1024,
            resp_max_nesting: 8,
            resp_max_inline_bytes: 64 * 1024,
            resp_max_query_bytes: 64 * 1024 * 1024,
            resp_max_clients: 10_000,
            resp_max_pattern_bytes: 256,
            resp_max_patterns: 128,
            resp_max_channel_bytes: 1024,
            resp_bridge_max_rooms: 256,
            resp_auth_timeout_ms: 10_000,
            resp_auth_failures: 10,
            resp_auth_window_s: 60,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
        }
    }
}

/// Everything the server needs to start, fully resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// sled data directory.
    pub data: PathBuf,
    /// HTTP + websocket listen address.
    pub http: SocketAddr,
    /// RESP listen address; `None` when `off`.
    pub resp: Option<SocketAddr>,
    /// RESP `AUTH` password.
    pub resp_password: Option<String>,
    /// Admin token given by the operator; generated and stored when absent.
    pub admin_token: Option<String>,
    /// Worker concurrency.
    pub workers: usize,
    /// Write durability.
    pub durability: Durability,
    /// Background flush period in `relaxed` mode.
    pub flush_every_ms: u64,
    /// Megabytes of the store's page cache (`cache_mb`).
    pub cache_mb: u64,
    /// Seed demo data on start.
    pub demo: bool,
    /// Allowed websocket `Origin` values; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Queue tunables.
    pub queue: QueueSettings,
    /// Outgoing webhooks.
    pub webhooks: Vec<WebhookSettings>,
    /// Seconds a notification may stay undelivered (pushed to no connection of its
    /// receiver) and unread before `notification.undelivered` is sent for it.
    pub offline_after_s: u64,
    /// Periodic tasks.
    pub schedules: Vec<ScheduleSettings>,
    /// Input limits.
    pub limits: Limits,
    /// Sessions, tickets, sign-in throttles, password hashing (`[accounts]`).
    pub accounts: AccountSettings,
    /// The cluster bus (`[cluster]`); without a `redis` URL, a single node.
    pub cluster: ClusterSettings,
}

/// Default `offline_after_s`: a minute.
pub const DEFAULT_OFFLINE_AFTER_S: u64 = 60;
/// Largest `offline_after_s`: a day.
pub const MAX_OFFLINE_AFTER_S: u64 = 86_400;

/// Default worker count: cores x 4.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 4)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data: PathBuf::from("./likewise-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            resp: Some(SocketAddr::from(([127, 0, 0, 1], 6379))),
            resp_password: None,
            admin_token: None,
            workers: default_workers(),
            durability: Durability::Sync,
            flush_every_ms: 500,
            cache_mb: crate::store::DEFAULT_CACHE_BYTES / (1024 * 1024),
            demo: false,
            allowed_origins: Vec::new(),
            queue: QueueSettings::default(),
            webhooks: Vec::new(),
            offline_after_s: DEFAULT_OFFLINE_AFTER_S,
            schedules: Vec::new(),
            limits: Limits::default(),
            accounts: AccountSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl Settings {
    /// Settings for tests and tools: the defaults with both listeners on port 0 of
    /// loopback and the given data directory.
    pub fn for_tests(data: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            resp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            workers: 4,
            ..Self::default()
        }
    }

    /// How the store is opened.
    pub fn store(&self) -> crate::store::StoreSettings {
        crate::store::StoreSettings {
            durability: self.durability,
            flush_every_ms: self.flush_every_ms,
            cache_bytes: self.cache_mb.saturating_mul(1024 * 1024),
        }
    }

    /// Period of the relaxed-mode background flush.
    pub fn flush_every(&self) -> Duration {
        Duration::from_millis(self.flush_every_ms.max(1))
    }

    /// Checks the combination of settings; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > 4096 {
            return Err(ConfigError::Invalid(
                "workers must be between 1 and 4096".into(),
            ));
        }
        if let Some(resp) = self.resp {
            if !resp.ip().is_loopback() && self.resp_password.as_deref().unwrap_or("").is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "refusing to listen for RESP on non-loopback address {resp} without a \
                     password: set LIKEWISE_RESP_PASSWORD or bind to 127.0.0.1"
                )));
            }
        }
        if !(1..=65_536).contains(&self.cache_mb) {
            return Err(ConfigError::Invalid(
                "cache_mb must be between 1 and 65536".into(),
            ));
        }
        let q = &self.queue;
        if q.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "queue.max_attempts must be at least 1".into(),
            ));
        }
        if q.retry_base_ms == 0 || q.retry_max_ms < q.retry_base_ms {
            return Err(ConfigError::Invalid(
                "queue.retry_base_ms must be positive and at most queue.retry_max_ms".into(),
            ));
        }
        if q.lease_ms < 100 || q.task_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "queue.lease_ms must be at least 100 and queue.task_timeout_ms positive".into(),
            ));
        }
        // A lease shorter than the attempt it covers would hand a task that is still
        // running (and within its time) to a second worker.
        if q.lease_ms < q.task_timeout_ms {
            return Err(ConfigError::Invalid(format!(
                "queue.lease_ms ({}) must be at least queue.task_timeout_ms ({})",
                q.lease_ms, q.task_timeout_ms
            )));
        }
        for s in &self.schedules {
            if s.every_s == 0 {
                return Err(ConfigError::Invalid(format!(
                    "schedule for {:?}: every_s must be at least 1",
                    s.task
                )));
            }
        }
        if !(1..=MAX_OFFLINE_AFTER_S).contains(&self.offline_after_s) {
            return Err(ConfigError::Invalid(format!(
                "offline_after_s must be between 1 and {MAX_OFFLINE_AFTER_S}, not {}",
                self.offline_after_s
            )));
        }
        for w in &self.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "webhook url {:?} must start with http:// or https://",
                    w.url
                )));
            }
        }
        self.accounts.validate().map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        let l = &self.limits;
        if l.ping_interval_ms < 10 || l.ping_timeout_ms < 10 {
            return Err(ConfigError::Invalid(
                "limits: ping_interval_ms and ping_timeout_ms must be at least 10".into(),
            ));
        }
        if l.max_ws_message_bytes < 256 {
            return Err(ConfigError::Invalid(
                "limits: max_ws_message_bytes must be at least 256".into(),
            ));
        }
        if l.ws_write_timeout_ms < 10
            || l.socketio_connect_timeout_ms < 10
            || l.http_header_timeout_ms < 10
            || l.http_body_timeout_ms < 10
        {
            return Err(ConfigError::Invalid(
                "limits: ws_write_timeout_ms, socketio_connect_timeout_ms, \
                 http_header_timeout_ms and http_body_timeout_ms must be at least 10"
                    .into(),
            ));
        }
        if l.max_page == 0 || l.outbound_queue == 0 || l.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits: max_page and outbound_queue must be positive, max_body_bytes at least 1024"
                    .into(),
            ));
        }
        if l.max_presence_ids == 0 {
            return Err(ConfigError::Invalid(
                "limits: max_presence_ids must be positive".into(),
            ));
        }
        if l.output_soft_limit_bytes > l.output_hard_limit_bytes
            || l.output_hard_limit_bytes < 64 * 1024
        {
            return Err(ConfigError::Invalid(
                "limits: output_hard_limit_bytes must be at least 65536 and at least \
                 output_soft_limit_bytes"
                    .into(),
            ));
        }
        if l.resp_max_pattern_bytes == 0
            || l.resp_max_patterns == 0
            || l.resp_max_channel_bytes == 0
            || l.resp_bridge_max_rooms == 0
            || l.resp_auth_timeout_ms < 10
            || l.resp_auth_failures == 0
            || l.resp_auth_window_s == 0
        {
            return Err(ConfigError::Invalid(
                "limits: resp_max_pattern_bytes, resp_max_patterns, resp_max_channel_bytes, \
                 resp_bridge_max_rooms, resp_auth_failures and resp_auth_window_s must be \
                 positive, resp_auth_timeout_ms at least 10"
                    .into(),
            ));
        }
        if l.resp_max_bulk_bytes < 1024
            || l.resp_max_array_len < 16
            || l.resp_max_nesting == 0
            || l.resp_max_inline_bytes < 1024
            || l.resp_max_query_bytes < l.resp_max_bulk_bytes
            || l.resp_max_clients == 0
        {
            return Err(ConfigError::Invalid(
                "limits: resp_max_bulk_bytes and resp_max_inline_bytes must be at least 1024, \
                 resp_max_array_len at least 16, resp_max_nesting and resp_max_clients \
                 positive, resp_max_query_bytes at least resp_max_bulk_bytes"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range or the combination is unsafe.
    #[error("{0}")]
    Invalid(String),
}

/// The data directory of `serve --demo` when none is named.
pub const DEMO_DATA: &str = "./likewise-demo";

/// The config file's shape: every field optional so that each layer only overrides
/// what it names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    data: Option<PathBuf>,
    http: Option<String>,
    resp: Option<String>,
    resp_password: Option<String>,
    admin_token: Option<String>,
    workers: Option<usize>,
    durability: Option<Durability>,
    flush_every_ms: Option<u64>,
    cache_mb: Option<u64>,
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    queue: Option<QueueSettings>,
    #[serde(default)]
    webhooks: Vec<WebhookSettings>,
    offline_after_s: Option<u64>,
    #[serde(default)]
    schedules: Vec<ScheduleSettings>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    accounts: Option<AccountSettings>,
    #[serde(default)]
    cluster: Option<ClusterSettings>,
}

impl FileSettings {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_toml(path)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Reads and parses the TOML config file at `path` (the server's or an edge's).
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Values that came from flags or the environment (clap merges those two, flags
/// first); `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data` / `LIKEWISE_DATA`.
    pub data: Option<PathBuf>,
    /// `--http` / `LIKEWISE_HTTP`.
    pub http: Option<String>,
    /// `--resp` / `LIKEWISE_RESP`.
    pub resp: Option<String>,
    /// `LIKEWISE_RESP_PASSWORD`.
    pub resp_password: Option<String>,
    /// `LIKEWISE_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `--workers` / `LIKEWISE_WORKERS`.
    pub workers: Option<usize>,
    /// `--durability` / `LIKEWISE_DURABILITY`.
    pub durability: Option<Durability>,
    /// `--demo`.
    pub demo: bool,
}

fn parse_addr(what: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "{what} must be an address like 127.0.0.1:8080, not {value:?}"
        ))
    })
}

fn parse_resp(value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.trim().eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        parse_addr("resp", value).map(Some)
    }
}

/// Builds the settings from the layers: overrides (flags, then env) beat the file,
/// which beats the defaults. Empty strings from the environment count as unset.
pub fn resolve(file: FileSettings, over: Overrides) -> Result<Settings, ConfigError> {
    resolve_with_cluster_env(file, over, std::env::var(CLUSTER_REDIS_ENV).ok())
}

/// [`resolve`], with the value of [`CLUSTER_REDIS_ENV`] given rather than read.
pub fn resolve_with_cluster_env(
    file: FileSettings,
    over: Overrides,
    cluster_redis: Option<String>,
) -> Result<Settings, ConfigError> {
    let d = Settings::default();
    let nonempty = |s: Option<String>| s.filter(|v| !v.is_empty());
    let http = match nonempty(over.http).or(file.http) {
        Some(v) => parse_addr("http", &v)?,
        None => d.http,
    };
    let resp = match nonempty(over.resp).or(file.resp) {
        Some(v) => parse_resp(&v)?,
        None => d.resp,
    };
    let settings = Settings {
        // The demo gets a directory of its own unless one is named, so that its
        // accounts never meet real ones.
        data: over.data.or(file.data).unwrap_or_else(|| {
            if over.demo {
                PathBuf::from(DEMO_DATA)
            } else {
                d.data
            }
        }),
        http,
        resp,
        resp_password: nonempty(over.resp_password).or(file.resp_password),
        admin_token: nonempty(over.admin_token).or(file.admin_token),
        workers: over.workers.or(file.workers).unwrap_or(d.workers),
        durability: over.durability.or(file.durability).unwrap_or(d.durability),
        flush_every_ms: file.flush_every_ms.unwrap_or(d.flush_every_ms),
        cache_mb: file.cache_mb.unwrap_or(d.cache_mb),
        demo: over.demo,
        allowed_origins: file.allowed_origins.unwrap_or_default(),
        queue: file.queue.unwrap_or_default(),
        webhooks: file.webhooks,
        offline_after_s: file.offline_after_s.unwrap_or(d.offline_after_s),
        schedules: file.schedules,
        limits: file.limits.unwrap_or_default(),
        accounts: file.accounts.unwrap_or_default(),
        cluster: {
            let mut cluster = file.cluster.unwrap_or_default();
            if let Some(url) = nonempty(cluster_redis) {
                cluster.redis = Some(url);
            }
            cluster
        },
    };
    settings.validate()?;
    Ok(settings)
}

// Each subsystem owns its settings type; the file's flat `[limits]` is composed
// into them here, so no subsystem imports the file's types.

impl From<&Limits> for OutputLimits {
    fn from(l: &Limits) -> Self {
        OutputLimits {
            max_messages: l.outbound_queue,
            hard_bytes: l.output_hard_limit_bytes,
            soft_bytes: l.output_soft_limit_bytes,
            soft_for: std::time::Duration::from_secs(l.output_soft_limit_s),
        }
    }
}

impl From<&Limits> for RespLimits {
    fn from(l: &Limits) -> Self {
        RespLimits {
            request: RequestLimits {
                max_args: l.resp_max_array_len,
                max_bulk: l.resp_max_bulk_bytes,
                max_request: l.resp_max_query_bytes,
                max_inline: l.resp_max_inline_bytes,
            },
            max_pattern_bytes: l.resp_max_pattern_bytes,
            max_patterns: l.resp_max_patterns,
            max_channel_bytes: l.resp_max_channel_bytes,
            bridge_max_rooms: l.resp_bridge_max_rooms,
            auth_timeout: std::time::Duration::from_millis(l.resp_auth_timeout_ms),
            auth_failures: l.resp_auth_failures,
            auth_window: std::time::Duration::from_secs(l.resp_auth_window_s),
            max_clients: l.resp_max_clients,
        }
    }
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits::from(&Limits::default())
    }
}

impl From<&Limits> for DomainLimits {
    fn from(l: &Limits) -> Self {
        DomainLimits {
            max_name_chars: l.max_name_chars,
            max_password_bytes: l.max_password_bytes,
            max_title_chars: l.max_title_chars,
            max_body_chars: l.max_body_chars,
            max_page: l.max_page,
            login_failures: l.login_failures,
            login_window_s: l.login_window_s,
        }
    }
}

impl Default for DomainLimits {
    fn default() -> Self {
        DomainLimits::from(&Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let s = resolve(FileSettings::default(), Overrides::default()).unwrap();
        assert_eq!(s.http.to_string(), "127.0.0.1:8080");
        assert_eq!(s.resp.unwrap().to_string(), "127.0.0.1:6379");
        assert_eq!(s.data, PathBuf::from("./likewise-data"));
        assert_eq!(s.durability, Durability::Sync);
        assert_eq!(s.queue.max_attempts, 5);
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let file = FileSettings::parse(
            r#"
            http = "127.0.0.1:9000"
            resp = "off"
            workers = 3
            durability = "relaxed"
            [queue]
            max_attempts = 9
            [[schedules]]
            task = "purge_expired_results"
            every_s = 300
            "#,
        )
        .unwrap();
        let over = Overrides {
            http: Some("127.0.0.1:9001".into()),
            ..Overrides::default()
        };
        let s = resolve(file, over).unwrap();
        assert_eq!(s.http.port(), 9001);
        assert!(s.resp.is_none());
        assert_eq!(s.workers, 3);
        assert_eq!(s.durability, Durability::Relaxed);
        assert_eq!(s.queue.max_attempts, 9);
        assert_eq!(s.queue.retry_base_ms, 500, "unnamed fields keep defaults");
        assert_eq!(s.schedules.len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(FileSettings::parse("htp = \"x\"").is_err());
        assert!(FileSettings::parse("durability = \"fast\"").is_err());
        let over = Overrides {
            http: Some("nonsense".into()),
            ..Overrides::default()
        };
        assert!(resolve(FileSettings::default(), over).is_err());
    }

    #[test]
    fn a_lease_shorter_than_the_task_timeout_is_refused() {
        let file = FileSettings::parse("[queue]\nlease_ms = 1000\ntask_timeout_ms = 5000").unwrap();
        let err = resolve(file, Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("lease_ms (1000) must be at least"), "{err}");
        let file = FileSettings::parse("[queue]\nlease_ms = 5000\ntask_timeout_ms = 5000").unwrap();
        assert!(resolve(file, Overrides::default()).is_ok());
    }

    #[test]
    fn the_packaged_config_file_parses_and_keeps_the_defaults_it_documents() {
        let text = include_str!("../packaging/likewise.toml");
        let s = resolve(FileSettings::parse(text).unwrap(), Overrides::default()).unwrap();
        assert_eq!(s.data, PathBuf::from("/var/lib/likewise"));
        assert!(s.http.ip().is_loopback());
        assert!(s.resp.unwrap().ip().is_loopback());
        assert_eq!(s.durability, Durability::Sync);
        // Uncommenting every line must parse too: the comments show real keys.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix('#')
                    .filter(|r| !r.starts_with([' ', '#']))
                    .unwrap_or(l)
            })
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let all = resolve(
            FileSettings::parse(&uncommented).unwrap(),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(all.webhooks.len(), 1);
        assert_eq!(all.schedules.len(), 1);
        assert_eq!(
            all.queue.max_attempts,
            Settings::default().queue.max_attempts
        );
        assert_eq!(all.limits.max_page, Limits::default().max_page);
        assert_eq!(all.accounts, AccountSettings::default());
    }

    #[test]
    fn offline_after_s_defaults_to_a_minute_and_is_checked() {
        let s = resolve(FileSettings::default(), Overrides::default()).unwrap();
        assert_eq!(s.offline_after_s, 60);
        let file = FileSettings::parse("offline_after_s = 5").unwrap();
        assert_eq!(
            resolve(file, Overrides::default()).unwrap().offline_after_s,
            5
        );
        for bad in ["offline_after_s = 0", "offline_after_s = 86401"] {
            let file = FileSettings::parse(bad).unwrap();
            let err = resolve(file, Overrides::default()).unwrap_err().to_string();
            assert!(
                err.contains("offline_after_s must be between 1 and 86400"),
                "{err}"
            );
        }
    }

    #[test]
    fn account_settings_come_from_their_section_and_are_checked() {
        let file = FileSettings::parse("[accounts]\nsession_ttl_s = 3600").unwrap();
        let s = resolve(file, Overrides::default()).unwrap();
        assert_eq!(s.accounts.session_ttl_s, 3600);
        assert_eq!(
            s.accounts.login_failures_per_ip, 10,
            "unnamed fields keep defaults"
        );
        let file = FileSettings::parse("[accounts]\nsession_ttl_s = 1").unwrap();
        let err = resolve(file, Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("session_ttl_s"), "{err}");
        assert!(FileSettings::parse("[accounts]\nsesion_ttl_s = 3600").is_err());
    }

    #[test]
    fn the_cluster_bus_comes_from_its_section_or_the_environment_and_is_checked() {
        let s =
            resolve_with_cluster_env(FileSettings::default(), Overrides::default(), None).unwrap();
        assert!(s.cluster.redis.is_none(), "a single node by default");
        let file = FileSettings::parse("[cluster]\nredis = \"redis://127.0.0.1:6380/2\"").unwrap();
        let s = resolve_with_cluster_env(file, Overrides::default(), None).unwrap();
        assert_eq!(s.cluster.redis.as_deref(), Some("redis://127.0.0.1:6380/2"));
        assert_eq!(s.cluster.channel(), "likewise:events");
        let file = FileSettings::parse("[cluster]\nredis = \"redis://127.0.0.1:6380/2\"").unwrap();
        let s = resolve_with_cluster_env(
            file,
            Overrides::default(),
            Some("redis://:pw@10.0.0.5:6379/0".into()),
        )
        .unwrap();
        assert_eq!(
            s.cluster.redis.as_deref(),
            Some("redis://:pw@10.0.0.5:6379/0"),
            "the environment beats the file"
        );
        let err = resolve_with_cluster_env(
            FileSettings::default(),
            Overrides::default(),
            Some("http://:secret@host:6379".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cluster.redis"), "{err}");
        assert!(
            !err.contains("secret"),
            "the password is never echoed: {err}"
        );
        assert!(FileSettings::parse("[cluster]\nredis_url = \"x\"").is_err());
    }

    #[test]
    fn public_resp_needs_a_password() {
        let over = Overrides {
            resp: Some("0.0.0.0:6379".into()),
            ..Overrides::default()
        };
        let err = resolve(FileSettings::default(), over.clone()).unwrap_err();
        assert!(err.to_string().contains("LIKEWISE_RESP_PASSWORD"));
        let with_password = Overrides {
            resp_password: Some("s3cret".into()),
            ..over
        };
        assert!(resolve(FileSettings::default(), with_password).is_ok());
    }
}
