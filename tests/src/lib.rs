//! End-to-end tests of the whole bridge: they start the real `relay` and `agent-host` binaries
//! on loopback, pair a `remote` CLI device and a real browser, and attack the result with a
//! hostile relay. No component of ours is mocked here.
//!
//! Today it holds nothing but this description: the binaries it will drive do not exist yet.

#![forbid(unsafe_code)]
