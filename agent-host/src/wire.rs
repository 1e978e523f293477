//! What goes on the wire for each of the host's errors, in one place (as rustls maps its
//! errors to alerts): the [`ErrorCode`] a device is told for each error of the host's parts,
//! and how the local API reports an [`Outcome`] (a refusal that is a "no" is `denied`; one that
//! is a failure is `error`).
//!
//! It holds mappings only: no rule decides here whether something is refused. The core's own
//! refusals of a frame (a role that may not, a request nobody made) name their code where they
//! are decided ([`crate::host_core`]).

use protocol::ErrorCode;

use crate::actions::{DecideError, Outcome};
use crate::approvals::DecisionError;
use crate::confine::FsError;
use crate::host_core::{CoreError, TypeError};
use crate::local_api::ApiResponse;

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

impl From<&CoreError> for ErrorCode {
    fn from(_: &CoreError) -> Self {
        // The host is stopping.
        Self::Internal
    }
}

impl From<&DecideError> for ErrorCode {
    fn from(e: &DecideError) -> Self {
        match e {
            DecideError::Decision(e) => e.into(),
            DecideError::Core(e) => e.into(),
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

/// How the local API reports an outcome.
pub fn to_api(outcome: Outcome) -> ApiResponse {
    match outcome {
        Outcome::Pending(p) => ApiResponse::Pending {
            request: p.id,
            action_hash: p.action_hash,
            summary: p.summary,
            reason: p.reason,
        },
        Outcome::Done { request, exit_code, output, truncated, timed_out } => ApiResponse::Done {
            request,
            exit_code,
            output: protocol::Blob(output),
            truncated,
            timed_out,
        },
        Outcome::Refused {
            request,
            code:
                ErrorCode::DeniedByPolicy
                | ErrorCode::DeniedByApprover
                | ErrorCode::Expired
                | ErrorCode::OutsideWorkspace,
            message,
        } => ApiResponse::Denied { request, reason: message },
        Outcome::Refused { message, .. } => ApiResponse::Error { message },
        Outcome::Allowed { request, reason } => ApiResponse::Allowed { request, reason },
    }
}
