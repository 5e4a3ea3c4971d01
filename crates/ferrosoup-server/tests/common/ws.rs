//! Signaling by hand for the tests: the test kit's protoo client
//! ([`ferrosoup_testkit::protoo`]) with every failure turned into a panic that says what
//! was awaited, so that every answer can be checked exactly.

use std::time::Duration;

use serde_json::{Value, json};

pub use ferrosoup_testkit::protoo::Frame;
use ferrosoup_testkit::protoo::{ProtooClient, ProtooError, handshake_status as status};

use super::within;

/// One WebSocket connection speaking the protoo envelope; panics on any failure.
pub struct Ws {
    /// The client (ids, queued notifications, deadlines).
    pub client: ProtooClient,
}

/// Panics with what failed.
fn fail_on<T>(what: &str, result: Result<T, ProtooError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

impl Ws {
    /// Connects with the `protoo` subprotocol, as protoo-client does.
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, Some("protoo")).await.0
    }

    /// Connects, offering `protocol` if given; also returns the subprotocol the server chose.
    pub async fn connect_with(url: &str, protocol: Option<&str>) -> (Self, Option<String>) {
        let (client, chosen) = fail_on(
            &format!("WebSocket handshake to {url}"),
            ProtooClient::connect_with(url, protocol).await,
        );
        (Self { client }, chosen)
    }

    /// Id of the next request.
    pub fn next_id(&self) -> u64 {
        self.client.next_id()
    }

    /// Notifications read while waiting for something else, oldest first.
    pub fn notifications(&mut self) -> &mut std::collections::VecDeque<Value> {
        self.client.notifications()
    }

    /// Sends one text frame as is.
    pub async fn send_text(&mut self, text: String) {
        fail_on("send a text frame", self.client.send_text(text).await);
    }

    /// Reads the next JSON frame or the close (server pings are answered while reading).
    pub async fn read(&mut self) -> Frame {
        fail_on("read a frame from the server", self.client.read().await)
    }

    /// Reads until the response with `id`, keeping notifications; any other response fails.
    pub async fn response(&mut self, id: u64) -> Value {
        fail_on(
            &format!("the answer to request {id}"),
            self.client.response(id).await,
        )
    }

    /// Sends a request without waiting for its answer; returns its id.
    pub async fn send_request(&mut self, method: &str, data: Value) -> u64 {
        fail_on(
            &format!("send {method}"),
            self.client.send_request(method, data).await,
        )
    }

    /// Sends a request and returns the whole response envelope.
    pub async fn request(&mut self, method: &str, data: Value) -> Value {
        fail_on(
            &format!("request {method}"),
            self.client.request(method, data).await,
        )
    }

    /// Sends request `method` with `data` under the given `id` (for re-sent requests) and
    /// returns the whole response envelope.
    pub async fn request_with_id(&mut self, id: u64, method: &str, data: Value) -> Value {
        fail_on(
            &format!("request {method} with id {id}"),
            self.client.request_with_id(id, method, data).await,
        )
    }

    /// A request that must succeed; returns its data.
    pub async fn ok(&mut self, method: &str, data: Value) -> Value {
        let response = self.request(method, data).await;
        assert_eq!(response["ok"], true, "{method} failed: {response}");
        response["data"].clone()
    }

    /// A request that must fail; returns its error code and reason (checked non-empty).
    pub async fn fail(&mut self, method: &str, data: Value) -> (u64, String) {
        let response = self.request(method, data).await;
        error_of(&response)
    }

    /// The connection still answers requests.
    pub async fn assert_usable(&mut self, after: &str) {
        let response = self.request("ping", json!({})).await;
        assert_eq!(
            response["ok"], true,
            "ping after {after} failed: {response}"
        );
    }

    /// Waits for a notification named `method` whose data satisfies `pred`; the
    /// notifications before it are consumed.
    pub async fn notification(&mut self, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
        fail_on(
            &format!("waiting for {method}"),
            self.client.notification(method, pred).await,
        )
    }

    /// Waits up to `wait` for a notification named `method` whose data satisfies `pred`
    /// (others are kept); `None` if none came.
    pub async fn notification_within(
        &mut self,
        wait: Duration,
        method: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        fail_on(
            &format!("watching for {method}"),
            self.client.notification_within(wait, method, pred).await,
        )
    }

    /// Reads until the server closes the connection and returns the close code (failing on
    /// a response; notifications are kept).
    pub async fn closed(&mut self) -> Option<u16> {
        fail_on(
            "expected the connection to close",
            self.client.closed().await,
        )
    }

    /// Notifications (queued ones first) and the close code until the server closes the
    /// connection. A connection reset instead of a close frame ends it like a close
    /// without code.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Option<u16>) {
        let code = match within("the server closes the connection", 15, self.client.closed()).await
        {
            Ok(code) => code,
            Err(ProtooError::Transport(_)) => None,
            Err(e) => panic!("unexpected frame while waiting for the close: {e}"),
        };
        (self.client.notifications().drain(..).collect(), code)
    }
}

/// Error code and reason of an error response, checking the envelope.
pub fn error_of(response: &Value) -> (u64, String) {
    assert_eq!(
        response["ok"], false,
        "expected an error answer, got {response}"
    );
    let code = response["errorCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("errorCode not a number: {response}"));
    let reason = response["errorReason"]
        .as_str()
        .unwrap_or_else(|| panic!("errorReason not a string: {response}"));
    assert!(!reason.trim().is_empty(), "empty errorReason: {response}");
    (code, reason.to_owned())
}

/// The HTTP status of a WebSocket handshake: 101 when it upgraded, else the refusal's.
pub async fn handshake_status(url: &str) -> u16 {
    within("WebSocket handshake", 10, status(url))
        .await
        .unwrap_or_else(|e| panic!("handshake to {url} failed without an HTTP status: {e}"))
}
