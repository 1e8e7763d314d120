//! likewise: one binary for a social app's storage, durable task queue, realtime push
//! and Redis-compatible pub/sub.
//!
//! # Layout
//! - [`config`]: typed settings from flags, environment, TOML file and defaults.
//! - [`store`]: the sled database, its typed tables and the group-commit writer.
//! - [`domain`]: the social operations and which tasks each one enqueues.
//! - [`queue`]: the durable task queue, its workers and periodic schedules.
//! - [`tasks`]: the task handlers.
//! - [`http`]: the HTTP API.
//! - [`startup`]: building and running the whole server.
//! - [`backup`]: the snapshot format, `likewise backup` and `likewise restore`.
//! - [`control`]: the unix socket through which `likewise backup` reaches a running
//!   server.
//! - [`telemetry`]: logging and metrics.

pub mod backup;
pub mod config;
pub mod control;
pub mod domain;
pub mod http;
pub mod queue;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
