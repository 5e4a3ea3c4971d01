//! Signaling errors: an [`ErrorCode`] of the contract and a reason (PROTOCOL.md). Every
//! error answer, refused handshake and failed room operation goes through [`SignalError`].

use ferrosoup_proto::signaling::{ErrorCode, Message, RequestError};
use ferrosoup_room::RoomError;

/// An error answer: an HTTP-like code and a reason that names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}")]
pub struct SignalError {
    /// What kind of error (its number is the answer's `errorCode`).
    pub code: ErrorCode,
    /// Human-readable reason (`errorReason`).
    pub reason: String,
}

impl SignalError {
    /// An error of any code.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// 400: malformed or invalid data.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, reason)
    }

    /// 401: no or bad access token.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, reason)
    }

    /// 403: not allowed by the access token.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, reason)
    }

    /// 404: unknown id (`"{what} not found"`).
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// 409: wrong state.
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, reason)
    }

    /// 429: rate limit or quota.
    pub fn too_many(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooManyRequests, reason)
    }

    /// 500: internal error.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, reason)
    }

    /// 501: a request of the contract this server does not implement yet.
    pub fn not_implemented(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotImplemented, reason)
    }

    /// 503: shutting down or full.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, reason)
    }

    /// The error response frame to request `id`.
    pub fn to_response(&self, id: u64) -> String {
        Message::error(id, self.code, self.reason.clone()).to_canonical_json()
    }
}

impl From<RequestError> for SignalError {
    fn from(e: RequestError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<RoomError> for SignalError {
    fn from(e: RoomError) -> Self {
        let code = match &e {
            RoomError::NotFound(_) => ErrorCode::NotFound,
            RoomError::Invalid(_) => ErrorCode::BadRequest,
            RoomError::InvalidState(_) => ErrorCode::Conflict,
            RoomError::WorkerGone => ErrorCode::Unavailable,
            RoomError::Internal(_) => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_the_numeric_code_and_reason() {
        let e = SignalError::not_found("transport");
        assert_eq!(e.to_string(), "404 transport not found");
        let frame: serde_json::Value = serde_json::from_str(&e.to_response(3)).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"response": true, "id": 3, "ok": false,
                               "errorCode": 404, "errorReason": "transport not found"})
        );
        let unknown = SignalError::from(RequestError::UnknownMethod("makeCoffee".into()));
        assert_eq!(unknown.code, ErrorCode::BadRequest);
        assert_eq!(unknown.reason, "unknown method makeCoffee");
        assert_eq!(
            SignalError::from(RoomError::WorkerGone).code,
            ErrorCode::Unavailable
        );
    }
}
