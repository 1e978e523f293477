//! What goes on the wire for each of the host's errors, in one place (as rustls maps its
//! errors to alerts): the [`ErrorCode`] a device is told for each error of the parts below the
//! core and the drivers (the broker, confined files, sessions). The drivers' own errors wrap
//! these and say so by delegating here (`actions::DecideError`); the core's refusals of a
//! frame (a role that may not, a request nobody made) name their code where they are decided
//! ([`crate::host_core`]); the local API's answers are the daemon's (`daemon::to_api`).
//!
//! It holds mappings only, and imports only the modules whose errors it maps: the core and the
//! drivers, which use it, lie above it.

use protocol::ErrorCode;

use crate::approvals::DecisionError;
use crate::confine::FsError;
use crate::session::TypeError;

impl From<&DecisionError> for ErrorCode {
    fn from(e: &DecisionError) -> Self {
        match e {
            DecisionError::WrongAction(_) | DecisionError::Duplicate(_) | DecisionError::Full => {
                Self::Conflict
            }
            DecisionError::Lapsed(_) => Self::Expired,
            DecisionError::OwnRequest(_) => Self::Forbidden,
            DecisionError::NotPending(_) => Self::NotFound,
        }
    }
}

impl From<&FsError> for ErrorCode {
    fn from(e: &FsError) -> Self {
        match e {
            FsError::OutsideWorkspace(_) | FsError::Symlink(_) | FsError::HardLinked(..) => {
                Self::OutsideWorkspace
            }
            FsError::OldTextMissing(_) | FsError::OldTextNotUnique(..) => Self::Conflict,
            FsError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                Self::NotFound
            }
            FsError::WrongType(..) | FsError::TooLarge { .. } | FsError::NotText(_) => {
                Self::BadRequest
            }
            _ => Self::Internal,
        }
    }
}

impl From<&TypeError> for ErrorCode {
    fn from(e: &TypeError) -> Self {
        match e {
            // Send it again.
            TypeError::Conflict | TypeError::Busy => Self::Conflict,
            TypeError::Ended => Self::NotFound,
        }
    }
}
