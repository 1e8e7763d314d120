//! The RESP (Redis protocol) listener: enough of Redis for pub/sub clients
//! (redis-cli, redis-py, ioredis, the `redis` crate, Celery workers running
//! Flask-SocketIO with a `message_queue`) to publish into and subscribe to the hub.
//!
//! Shape: [`frame`] turns bytes into frames and replies into bytes; [`connection`]
//! owns a socket and its buffers; [`session`] is one client's protocol state machine
//! (authentication, protocol version, subscriptions) that runs each [`cmd`] and
//! knows no socket, so it is tested without one; [`clients`] is the registry of
//! live connections that `CLIENT LIST` and `CLIENT KILL` use; [`bridge`] decodes the messages
//! python-socketio's pub/sub managers publish; [`server`] accepts connections and
//! drives each one until it ends or the server shuts down.
//!
//! Channels are hub rooms: a `PUBLISH` reaches websocket and Socket.IO clients of
//! the same room, and app events reach RESP subscribers. This module is pub/sub
//! only: it never touches the store or the domain.

pub mod bridge;
pub mod clients;
pub mod cmd;
pub mod connection;
pub mod frame;
pub mod server;
pub mod session;

pub use server::Listener;
pub use session::{Context, Flow, Session};
