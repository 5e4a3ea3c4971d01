//! The SDK's error type.

/// Everything that can go wrong in the client SDK.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened or failed while in use.
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server answered a request with an error response.
    #[error("server error {code}: {reason}")]
    Server {
        /// HTTP-like error code (`errorCode`).
        code: u16,
        /// Human readable reason (`errorReason`).
        reason: String,
    },
    /// The signaling connection is closed; the request got no answer.
    #[error("signaling connection closed")]
    Closed,
    /// A JSON value did not have the expected shape.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The webrtc-rs PeerConnection reported an error.
    #[error("webrtc: {0}")]
    WebRtc(Box<webrtc::error::Error>),
    /// A local SDP could not be interpreted.
    #[error("sdp: {0}")]
    Sdp(String),
    /// The requested media or codec is not supported by this device or by the router.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An HTTP request to the server (`/api/ice-servers`) failed.
    #[error("http: {0}")]
    Http(String),
    /// The object was used in a state that does not allow the operation.
    #[error("invalid state: {0}")]
    InvalidState(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

impl From<webrtc::error::Error> for ClientError {
    fn from(e: webrtc::error::Error) -> Self {
        ClientError::WebRtc(Box::new(e))
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ClientError>;
