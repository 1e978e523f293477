//! Size limits on everything a peer sends.
//!
//! The frame limit is checked before a single byte is parsed; the others are checked on the
//! parsed message before it is handed to anyone (see [`crate::message::Message::check`]).
//! Each violation is a [`LimitError`] naming the field, so a peer learns exactly what it broke.

/// The largest frame (header, payload and signature) that is decoded at all.
pub const MAX_FRAME: usize = 4 << 20;
/// The largest file content carried in one message (before base64 on the wire).
pub const MAX_CONTENT: usize = 2 << 20;
/// The largest output carried by one result or output chunk.
pub const MAX_OUTPUT: usize = 1 << 20;
/// The most arguments a command may have.
pub const MAX_ARGS: usize = 1024;
/// The longest single argument, in bytes.
pub const MAX_ARG: usize = 32 << 10;
/// The most bytes all arguments of one command may take together.
pub const MAX_ARGV_BYTES: usize = 256 << 10;
/// The longest path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// The most environment changes one command may carry.
pub const MAX_ENV: usize = 64;
/// The longest environment variable name or value, in bytes.
pub const MAX_ENV_ENTRY: usize = 4096;
/// The longest text meant for people: a summary, a reason, an error message, a device name.
pub const MAX_TEXT: usize = 4096;
/// The longest diff preview shown with a pending write or edit.
pub const MAX_PREVIEW: usize = 16 << 10;
/// The longest URL.
pub const MAX_URL: usize = 8 << 10;
/// The longest tool name.
pub const MAX_TOOL_NAME: usize = 256;
/// The longest single input sent to a session, in bytes.
pub const MAX_INPUT: usize = 64 << 10;
/// The most entries a directory listing carries.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// The widest terminal a session reports, in columns.
pub const MAX_TERM_COLS: usize = 1000;
/// The tallest terminal a session reports, in rows.
pub const MAX_TERM_ROWS: usize = 500;
/// The most pending actions one receipt names.
pub const MAX_RECEIPTS: usize = 64;
/// The longest key of a push subscription (base64url; a P-256 point takes 87 characters).
pub const MAX_PUSH_KEY: usize = 128;
/// The longest note with a decision, in bytes.
pub const MAX_NOTE: usize = 1024;
/// The most pending actions one notification lists.
pub const MAX_NOTICE_ACTIONS: usize = 4;

/// A field of a message was over its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {actual}, over the limit of {limit}")]
pub struct LimitError {
    /// The field, named as on the wire (`action.argv`, `event.output`, …).
    pub field: &'static str,
    /// The limit.
    pub limit: usize,
    /// What was sent.
    pub actual: usize,
}

/// Checks one length against its limit.
pub(crate) fn check(field: &'static str, actual: usize, limit: usize) -> Result<(), LimitError> {
    if actual > limit { Err(LimitError { field, limit, actual }) } else { Ok(()) }
}
