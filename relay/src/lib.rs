//! The relay: an untrusted router between hosts and their paired devices.
//!
//! It holds the TLS WebSocket server ([`Server`]: `bind`, `serve`, `shutdown`, so tests run a
//! real one in-process on port 0), authentication of hosts and devices by a signed challenge
//! bound to the TLS certificate, routing of opaque frames between a host and the devices it
//! registered in a message it signs ([`hub`]), per-connection limits on frame size, rate and
//! queued bytes, connection caps, idle timeouts, pings, `/health` and `/metrics`
//! ([`metrics`]), an echo mode for the Autobahn conformance suite ([`echo`]), the web UI's
//! files ([`web`]), and an event-stream transport for browsers that will not open a WebSocket
//! to it ([`sse`]).
//! It holds no secret of a host or a device and no way to make a host act: every payload is an
//! end-to-end signed envelope it cannot forge.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod conn;
pub mod echo;
pub mod http;
pub mod hub;
pub mod local;
pub mod metrics;
pub mod server;
pub mod sse;
pub mod tls;
pub mod web;

pub use server::{Config, Limits, Server};
