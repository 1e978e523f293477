//! The link from a host or a device to a relay.
//!
//! It will hold the TLS WebSocket connection (system roots, or a pinned certificate fingerprint
//! for a self-signed relay), authentication to the relay by signing its challenge, reconnection
//! with jittered exponential backoff, and end-to-end resume (sequence numbers and
//! acknowledgements per direction) so that each application message is delivered exactly once.
//! It will hold no policy and execute nothing.
//!
//! Today it holds nothing but this description.

#![forbid(unsafe_code)]
