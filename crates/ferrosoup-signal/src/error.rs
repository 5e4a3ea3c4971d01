//! Signaling errors and their protoo error codes (PROTOCOL.md).

use ferrosoup_room::RoomError;

/// An error answer: an HTTP-like code and a reason that names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}")]
pub struct SignalError {
    /// 400, 401, 403, 404, 409, 429, 500 or 503.
    pub code: u16,
    /// Human-readable reason.
    pub reason: String,
}

impl SignalError {
    /// 400: malformed or invalid data.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: reason.into(),
        }
    }

    /// 404: unknown id.
    pub fn not_found(what: &str) -> Self {
        Self {
            code: 404,
            reason: format!("{what} not found"),
        }
    }

    /// 409: wrong state.
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self {
            code: 409,
            reason: reason.into(),
        }
    }

    /// 500: internal error.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self {
            code: 500,
            reason: reason.into(),
        }
    }
}

impl From<RoomError> for SignalError {
    fn from(e: RoomError) -> Self {
        let code = match &e {
            RoomError::NotFound(_) => 404,
            RoomError::Invalid(_) => 400,
            RoomError::InvalidState(_) => 409,
            RoomError::WorkerGone => 503,
            RoomError::Internal(_) => 500,
        };
        Self {
            code,
            reason: e.to_string(),
        }
    }
}
