//! likewise: one binary for a social app's storage, durable task queue, realtime push
//! and Redis-compatible pub/sub.
//!
//! # Layout
//! - [`cli`]: the command line (clap), from which the manual pages are rendered too.
//! - [`config`]: typed settings from flags, environment, TOML file and defaults.
//! - [`store`]: sled tables and the group-commit writer (the only code that commits).
//! - [`domain`]: the social operations; decides which tasks each action enqueues.
//! - [`queue`]: the durable task queue, the worker pool and periodic schedules.
//! - [`tasks`]: what each named task does.
//! - [`hub`]: rooms and subscribers for realtime fan-out, shared by all transports.
//! - [`rooms`]: room names (`user:{id}`, `post:{id}`, `public:…`) and who may join.
//! - [`http`]: the HTTP API, the websocket and Socket.IO endpoints.
//! - [`demo`]: the demo accounts and content of `serve --demo`.
//! - [`resp`]: the Redis-protocol (RESP2/RESP3) pub/sub listener over the hub, and
//!   the Flask-SocketIO message-queue bridge.
//! - [`cluster`]: the cluster bus: hub events shared between nodes through a real
//!   Redis (or Valkey) server.
//! - [`edge`]: `likewise edge`, a node that forwards the API to the primary.
//! - [`startup`]: building, running and draining the whole server.
//! - [`backup`]: the snapshot format, `likewise backup` and `likewise restore`.
//! - [`control`]: the unix socket through which `likewise backup` reaches a running
//!   server.
//! - [`telemetry`]: logging and metrics.

pub mod backup;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod domain;
pub mod edge;
pub mod http;
pub mod hub;
pub mod queue;
pub mod resp;
pub mod rooms;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
