//! The host: the only part of the bridge that decides and executes.
//!
//! It holds the pure policy engine ([`policy`]: the permission rules of `PERMISSIONS.md`), the
//! approvals broker ([`approvals`]) inside the host's sans-IO decision state ([`host_core`]),
//! confined file operations ([`confine`]), the sandboxed executor ([`exec`], with
//! [`landlock_sandbox`] as its fallback), the hash-chained audit log ([`audit`]), the identity key
//! ([`identity`]), the running host's shared parts ([`host`], [`refusals`]), the daemon and its
//! local socket ([`daemon`], [`local_api`]), the core's driver ([`driver`]), the one path every
//! action takes ([`actions`]) and what its refusals put on the wire ([`wire`]), the paired devices
//! ([`devices`]), the link to them through a relay and pairing ([`link`]), agents' hooks ([`hook`])
//! and sessions in a pseudo-terminal ([`session`]). The command line, `agent-host up` with its
//! embedded relay among it, is the binary's (`src/main.rs`, `src/cli/`). It holds no relay routing
//! logic: `up` runs the `relay` crate's server beside the host.
//!
//! The modules form layers (`tests/modules.rs` checks it): [`host`] imports none of the drivers
//! ([`daemon`], [`link`], [`driver`], [`actions`]) that import it, and no module reaches one that
//! reaches it back.

#![forbid(unsafe_code)]

pub mod actions;
pub mod approvals;
pub mod audit;
pub mod confine;
pub mod daemon;
pub mod devices;
pub mod dirs;
pub mod driver;
pub mod exec;
pub mod fsutil;
pub mod hook;
pub mod host;
pub mod host_core;
pub mod identity;
pub mod jail;
pub mod landlock_sandbox;
pub mod link;
pub mod local_api;
pub mod notices;
pub mod policy;
pub mod push;
pub mod refusals;
pub mod session;
pub mod userenv;
pub mod wire;
