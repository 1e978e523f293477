//! The host: the only part of the bridge that decides and executes.
//!
//! It holds the pure policy engine ([`policy`]: the permission rules of `PERMISSIONS.md`), the
//! approvals broker ([`approvals`]), confined file operations ([`confine`]), the sandboxed
//! executor ([`exec`], with [`landlock_sandbox`] as its fallback), the hash-chained audit log
//! ([`audit`]), the identity key ([`identity`]), the daemon and its local socket ([`daemon`],
//! [`local_api`]) and the command line ([`cli`]). Still to come: the device registry, pairing,
//! the remote link and PTY sessions. It will never hold relay routing logic.

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
