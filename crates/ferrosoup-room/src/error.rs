//! Errors of the room manager's control API.

/// What went wrong with a control request; the signaling layer maps it to an error code.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The request names an object that does not exist (or not in this router).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request's data is invalid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The object is in a state that does not allow the request.
    #[error("{0}")]
    InvalidState(String),
    /// The worker thread is gone (closed or crashed).
    #[error("worker unavailable")]
    WorkerGone,
    /// Setting up a worker or an object failed for a reason outside the request.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ferrosoup_proto::ortc::OrtcError> for RoomError {
    fn from(e: ferrosoup_proto::ortc::OrtcError) -> Self {
        RoomError::Invalid(e.to_string())
    }
}
