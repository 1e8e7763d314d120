//! Integration tests: every test starts the real server on port 0 of loopback with a
//! temporary data directory and talks to it with real clients.

mod helpers;

mod accounts;
mod attack_realtime;
mod attack_resp;
mod backup;
mod cluster;
mod cluster_edges;
mod comments;
mod crash;
mod durability;
mod edge;
mod errors;
mod faults;
mod feed;
mod matrix;
mod messages;
mod metrics;
mod notifications;
mod offline;
mod openapi;
mod outbox;
mod polling;
mod posts;
mod presence;
mod process;
mod queue;
mod readme;
mod realtime;
mod resp;
mod security;
mod sessions;
mod social;
mod throttle;
mod upgrade;
mod web;
