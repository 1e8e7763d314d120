//! Integration tests: every test starts the real server on port 0 of loopback with a
//! temporary data directory and talks to it with real clients.

mod helpers;

mod accounts;
mod backup;
mod durability;
mod queue;
mod realtime;
mod resp;
mod social;
mod web;
