//! The relay: an untrusted router between hosts and their paired devices.
//!
//! It will hold the TLS WebSocket server (`Server::bind / serve / shutdown`), key
//! authentication by challenge, routing of opaque frames between a host and the devices it
//! registered, per-connection limits with backpressure, `/health` and `/metrics`, and the web
//! UI's static files. It will never hold a secret of a host or a device, nor any way to make a
//! host act: every frame it carries is signed end to end.
//!
//! Today it holds nothing but this description.

#![forbid(unsafe_code)]
