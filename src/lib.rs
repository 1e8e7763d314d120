//! likewise: one binary for a social app's storage, durable task queue, realtime push
//! and Redis-compatible pub/sub.
//!
//! # Layout
//! - [`config`]: typed settings from flags, environment, TOML file and defaults.

pub mod config;
pub mod domain;
pub mod http;
pub mod queue;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
