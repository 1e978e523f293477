//! The host: the only part of the bridge that decides and executes.
//!
//! It will hold the host's identity key and device registry, the pure policy engine (the
//! permission rules of `PERMISSIONS.md`), the approvals broker, confined file operations, the
//! sandboxed executor, the hash-chained audit log, PTY sessions and the local API on a unix
//! socket, with the `agent-host` binary in front. It will never hold relay routing logic.
//!
//! Today it holds nothing but this description: the protocol it will speak lives in `protocol`.

#![forbid(unsafe_code)]
