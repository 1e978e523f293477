//! The host: the only part of the bridge that decides and executes.
//!
//! Today it holds the pure policy engine ([`policy`]: the permission rules of `PERMISSIONS.md`,
//! with `agent-host check` in front), the host's directories ([`dirs`]) and the atomic file
//! writes every state file uses ([`fsutil`]). Still to come here: the identity key and device
//! registry, the approvals broker, confined file operations, the sandboxed executor, the
//! hash-chained audit log, PTY sessions and the local API on a unix socket. It will never hold
//! relay routing logic.

#![forbid(unsafe_code)]

pub mod approvals;
pub mod audit;
pub mod cli;
pub mod confine;
pub mod daemon;
pub mod dirs;
pub mod exec;
pub mod fsutil;
pub mod identity;
pub mod landlock_sandbox;
pub mod local_api;
pub mod policy;
