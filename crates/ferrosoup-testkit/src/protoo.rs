//! A protoo signaling client for the integration tests, the benches and the load tester:
//! the one hand-made client of the project (the product's client is `ferrosoup-client`).
//!
//! It speaks the protoo envelope with plain JSON ([`serde_json::Value`]), never with the
//! server's own types, so that tests check the wire contract as a browser sees it:
//!
//! - requests with increasing ids (or an id of the caller's, to re-send one), and the
//!   response with the same id ([`ProtooClient::request`], [`ProtooClient::ok`]);
//! - notifications read meanwhile are queued ([`ProtooClient::notifications`]) and waited
//!   for by method and predicate ([`ProtooClient::notification`],
//!   [`ProtooClient::notification_within`]);
//! - raw text frames for bad-input tests ([`ProtooClient::send_text`]) and the close code
//!   the server ends with ([`ProtooClient::closed`]).
//!
//! Every wait has a deadline: the client's [`timeout`](ProtooClient::timeout) (15 s unless
//! set), or the one given. Failures are [`ProtooError`]s; tests turn them into panics, the
//! load tester into a failed peer.
//!
//! The frames travel over a [`Transport`]: a real [`WebSocket`] (subprotocol `protoo`,
//! `TCP_NODELAY`), or [`Channels`] for a connection loop driven in process (benches, tests
//! of the signaling crate).
//!
//! Unlike the rest of the test kit, this module does I/O and uses tokio's timers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrosoup_testkit::protoo::ProtooError> {
//! use ferrosoup_testkit::protoo::{ProtooClient, json};
//!
//! let mut ws = ProtooClient::connect("ws://127.0.0.1:3000/ws").await?;
//! let caps = ws.ok("createRoom", json!({"roomId": "r"})).await?["rtpCapabilities"].clone();
//! ws.ok("joinRoom", json!({"roomId": "r", "peerId": "a", "rtpCapabilities": caps}))
//!     .await?;
//! let joined = ws.notification("peerJoined", |d| d["peerId"] == "b").await?;
//! # let _ = joined;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

/// JSON values and the `json!` macro, re-exported for callers without their own
/// `serde_json` dependency.
pub use serde_json::{Value, json};

/// The WebSocket subprotocol protoo-client offers.
pub const SUBPROTOCOL: &str = "protoo";

/// Deadline of each wait unless [`ProtooClient::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong on a protoo connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtooError {
    /// The WebSocket (or the handshake, or the channel) failed.
    #[error("websocket: {0}")]
    Transport(String),
    /// Nothing came before the deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// The server closed the connection (with this close code if it sent one) while
    /// something else was awaited.
    #[error("connection closed (code {code:?}) while waiting for {what}")]
    Closed {
        /// The close code, if the server sent a close frame with one.
        code: Option<u16>,
        /// What was awaited.
        what: String,
    },
    /// The server answered a request with an error response.
    #[error("{method} failed: {code} {reason}")]
    Refused {
        /// The request's method.
        method: String,
        /// `errorCode` (0 if absent).
        code: u16,
        /// `errorReason` (empty if absent).
        reason: String,
    },
    /// A frame that has no place here: a response to another request, a response while
    /// only notifications were expected, a binary frame, a JSON value that is no protoo
    /// message.
    #[error("unexpected frame while waiting for {what}: {frame}")]
    Unexpected {
        /// What was awaited.
        what: String,
        /// The frame (JSON text, or a description).
        frame: String,
    },
    /// A text frame that is not JSON.
    #[error("server sent invalid JSON ({error}): {text}")]
    InvalidJson {
        /// The frame.
        text: String,
        /// The parser's complaint.
        error: String,
    },
}

impl From<tungstenite::Error> for ProtooError {
    fn from(e: tungstenite::Error) -> Self {
        Self::Transport(e.to_string())
    }
}

/// One frame as a [`Transport`] delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    /// A text frame.
    Text(String),
    /// A binary frame (protoo has none; a client reports it as unexpected).
    Binary(Vec<u8>),
    /// The connection ended: with the code of the server's close frame, or `None` when it
    /// sent none (or a close frame without code).
    Close(Option<u16>),
}

/// One protoo frame from the server, as [`ProtooClient::read`] gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON text frame (response or notification, as sent).
    Json(Value),
    /// The server closed the connection, with this close code if it sent one.
    Closed(Option<u16>),
}

/// A response as [`ProtooClient::request_text`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseText {
    /// The envelope's `ok`.
    pub ok: bool,
    /// The whole frame.
    pub text: String,
}

/// The head fields of an envelope; the rest (`data`) is skipped unparsed.
#[derive(serde::Deserialize)]
struct Head {
    #[serde(default)]
    response: bool,
    #[serde(default)]
    notification: bool,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    ok: bool,
}

/// Where a [`ProtooClient`]'s frames go to and come from.
pub trait Transport: Send {
    /// Sends one text frame.
    fn send_text(&mut self, text: String) -> impl Future<Output = Result<(), ProtooError>> + Send;

    /// Waits for the next frame. Cancel-safe: a frame is never lost by dropping the future.
    /// After a [`RawFrame::Close`], every call returns the same close again.
    fn recv(&mut self) -> impl Future<Output = Result<RawFrame, ProtooError>> + Send;

    /// Closes the client's side (a close frame, or the end of the channel).
    fn close(&mut self) -> impl Future<Output = Result<(), ProtooError>> + Send;
}

// ----- transports ----------------------------------------------------------------------------

/// A WebSocket to a server.
pub struct WebSocket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Set once the server's close frame (or the end of the stream) was read.
    closed: Option<Option<u16>>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// Opens `url`, offering `subprotocol` if given, with `TCP_NODELAY` (a request written in
    /// two segments would otherwise wait for the server's delayed ACK). Also returns the
    /// subprotocol the server chose.
    pub async fn connect(
        url: &str,
        subprotocol: Option<&str>,
    ) -> Result<(Self, Option<String>), ProtooError> {
        let mut request = url.into_client_request()?;
        if let Some(p) = subprotocol {
            let value = HeaderValue::from_str(p)
                .map_err(|e| ProtooError::Transport(format!("subprotocol {p:?}: {e}")))?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", value);
        }
        let (stream, response) = connect_async_with_config(request, None, true).await?;
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((
            Self {
                stream,
                closed: None,
            },
            chosen,
        ))
    }

    /// The underlying stream, for frames the client does not send itself (binary, pings).
    pub fn stream_mut(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.stream
    }
}

impl Transport for WebSocket {
    async fn send_text(&mut self, text: String) -> Result<(), ProtooError> {
        Ok(self.stream.send(Message::text(text)).await?)
    }

    async fn recv(&mut self) -> Result<RawFrame, ProtooError> {
        if let Some(code) = self.closed {
            return Ok(RawFrame::Close(code));
        }
        // Pings are answered by tungstenite while reading.
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => return Ok(RawFrame::Text(text.as_str().into())),
                Some(Ok(Message::Binary(bytes))) => return Ok(RawFrame::Binary(bytes.to_vec())),
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    self.closed = Some(code);
                    return Ok(RawFrame::Close(code));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Err(e.into()),
                None => {
                    self.closed = Some(None);
                    return Ok(RawFrame::Close(None));
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), ProtooError> {
        match self.stream.close(None).await {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The HTTP status of a WebSocket handshake to `url`: 101 when it upgraded, else the
/// refusal's (401, 403, 503…). An error only when there was no HTTP answer at all.
pub async fn handshake_status(url: &str) -> Result<u16, ProtooError> {
    match tokio_tungstenite::connect_async(url).await {
        Ok((_stream, response)) => Ok(response.status().as_u16()),
        Err(tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => Err(e.into()),
    }
}

/// An in-process connection: text frames go into an unbounded channel, frames of the
/// server's own type `O` come out of another and are read through a conversion function
/// (for ferrosoup-signal's `Outgoing`: text → [`RawFrame::Text`], close → [`RawFrame::Close`]).
pub struct Channels<O> {
    tx: Option<mpsc::UnboundedSender<String>>,
    rx: mpsc::UnboundedReceiver<O>,
    frame: fn(O) -> RawFrame,
    closed: Option<Option<u16>>,
}

impl<O> std::fmt::Debug for Channels<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("open", &self.tx.is_some())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<O> Channels<O> {
    /// A transport writing to `tx` and reading `rx`, each frame read converted by `frame`.
    /// The end of `rx` reads as a close without code.
    pub fn new(
        tx: mpsc::UnboundedSender<String>,
        rx: mpsc::UnboundedReceiver<O>,
        frame: fn(O) -> RawFrame,
    ) -> Self {
        Self {
            tx: Some(tx),
            rx,
            frame,
            closed: None,
        }
    }
}

impl<O: Send> Transport for Channels<O> {
    async fn send_text(&mut self, text: String) -> Result<(), ProtooError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| ProtooError::Transport("channel closed by the client".into()))?;
        tx.send(text)
            .map_err(|_| ProtooError::Transport("the server's end of the channel is gone".into()))
    }

    async fn recv(&mut self) -> Result<RawFrame, ProtooError> {
        if let Some(code) = self.closed {
            return Ok(RawFrame::Close(code));
        }
        let frame = match self.rx.recv().await {
            Some(out) => (self.frame)(out),
            None => RawFrame::Close(None),
        };
        if let RawFrame::Close(code) = frame {
            self.closed = Some(code);
        }
        Ok(frame)
    }

    async fn close(&mut self) -> Result<(), ProtooError> {
        // The server's incoming stream ends, as when a WebSocket closes.
        self.tx = None;
        Ok(())
    }
}

// ----- the client ----------------------------------------------------------------------------

/// What a wait was for, in error messages (formatted only when one is built).
#[derive(Clone, Copy)]
enum Awaited<'a> {
    Answer(u64),
    Notification(&'a str),
    Other(&'static str),
}

impl std::fmt::Display for Awaited<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answer(id) => write!(f, "the answer to request {id}"),
            Self::Notification(method) => write!(f, "notification {method}"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

impl Awaited<'_> {
    fn closed(self, code: Option<u16>) -> ProtooError {
        ProtooError::Closed {
            code,
            what: self.to_string(),
        }
    }

    fn unexpected(self, frame: String) -> ProtooError {
        ProtooError::Unexpected {
            what: self.to_string(),
            frame,
        }
    }
}

/// One protoo connection: requests by id, queued notifications, deadlines on every wait.
pub struct ProtooClient<T = WebSocket> {
    transport: T,
    next_id: u64,
    notifications: VecDeque<Value>,
    keep_notifications: bool,
    timeout: Option<Duration>,
}

impl<T> std::fmt::Debug for ProtooClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtooClient")
            .field("next_id", &self.next_id)
            .field("queued_notifications", &self.notifications.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ProtooClient<WebSocket> {
    /// Connects to `url` with the `protoo` subprotocol, as protoo-client does.
    pub async fn connect(url: &str) -> Result<Self, ProtooError> {
        Ok(Self::connect_with(url, Some(SUBPROTOCOL)).await?.0)
    }

    /// Connects to `url` offering `subprotocol` if given; also returns the subprotocol the
    /// server chose. The handshake has the default deadline.
    pub async fn connect_with(
        url: &str,
        subprotocol: Option<&str>,
    ) -> Result<(Self, Option<String>), ProtooError> {
        let (ws, chosen) = deadline(
            Some(DEFAULT_TIMEOUT),
            Awaited::Other("the WebSocket handshake"),
            WebSocket::connect(url, subprotocol),
        )
        .await??;
        Ok((Self::new(ws), chosen))
    }
}

impl<T: Transport> ProtooClient<T> {
    /// A client over `transport`; the first request gets id 1.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            next_id: 1,
            notifications: VecDeque::new(),
            keep_notifications: true,
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// The transport, for what the client does not do itself.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The deadline of each wait (`None`: none).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sets the deadline of each wait. `None` waits forever: only for a benchmark, where
    /// arming a timer per request would be timed too.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Whether notifications read while waiting for something else are queued (the
    /// default) or dropped (a load generator that never looks at them).
    pub fn set_keep_notifications(&mut self, keep: bool) {
        self.keep_notifications = keep;
        if !keep {
            self.notifications.clear();
        }
    }

    /// The id the next request gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Sets the id of the next request (to continue a dropped connection's numbering).
    pub fn set_next_id(&mut self, id: u64) {
        self.next_id = id;
    }

    /// Notifications read and not consumed yet, whole envelopes, oldest first.
    pub fn notifications(&mut self) -> &mut VecDeque<Value> {
        &mut self.notifications
    }

    /// Sends one text frame as is (valid protoo or not).
    pub async fn send_text(&mut self, text: String) -> Result<(), ProtooError> {
        let what = Awaited::Other("sending a frame");
        deadline(self.timeout, what, self.transport.send_text(text)).await?
    }

    /// Sends a request with the next id without waiting for its answer; returns the id.
    pub async fn send_request(&mut self, method: &str, data: Value) -> Result<u64, ProtooError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_request_with_id(id, method, data).await?;
        Ok(id)
    }

    /// Sends a request under `id` (a re-sent request keeps its id) without waiting.
    pub async fn send_request_with_id(
        &mut self,
        id: u64,
        method: &str,
        data: Value,
    ) -> Result<(), ProtooError> {
        // Written directly rather than through a JSON map: the benches time this path.
        let method = Value::String(method.to_owned());
        let text = format!(r#"{{"request":true,"id":{id},"method":{method},"data":{data}}}"#);
        self.send_text(text).await
    }

    /// Sends a request and returns the whole response envelope (`ok` true or false);
    /// notifications read meanwhile are queued.
    pub async fn request(&mut self, method: &str, data: Value) -> Result<Value, ProtooError> {
        let id = self.send_request(method, data).await?;
        self.response(id).await
    }

    /// [`request`](Self::request) under the caller's `id`.
    pub async fn request_with_id(
        &mut self,
        id: u64,
        method: &str,
        data: Value,
    ) -> Result<Value, ProtooError> {
        self.send_request_with_id(id, method, data).await?;
        self.response(id).await
    }

    /// A request that must succeed: its response's `data`, or [`ProtooError::Refused`].
    pub async fn ok(&mut self, method: &str, data: Value) -> Result<Value, ProtooError> {
        let mut response = self.request(method, data).await?;
        if response["ok"] == true {
            return Ok(response["data"].take());
        }
        Err(ProtooError::Refused {
            method: method.to_owned(),
            code: response["errorCode"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            reason: response["errorReason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// Sends a request and returns its response frame as received, with only the envelope's
    /// head read (`ok`): no JSON tree of the answer is built, so a benchmark times the
    /// server rather than the client's parser. Notifications meanwhile are queued.
    pub async fn request_text(
        &mut self,
        method: &str,
        data: Value,
    ) -> Result<ResponseText, ProtooError> {
        let id = self.send_request(method, data).await?;
        let what = Awaited::Answer(id);
        deadline(self.timeout, what, async {
            loop {
                let text = match self.transport.recv().await? {
                    RawFrame::Text(text) => text,
                    RawFrame::Binary(bytes) => {
                        return Err(what.unexpected(binary(&bytes)));
                    }
                    RawFrame::Close(code) => return Err(what.closed(code)),
                };
                // The server's canonical envelope starts with its head; anything else is
                // read with a parser that skips `data`.
                if let Some(ok) = canonical_head(&text, id) {
                    return Ok(ResponseText { ok, text });
                }
                let head: Head = parse(&text)?;
                if head.notification {
                    let value = parse(&text)?;
                    self.queue(value);
                } else if head.response && head.id == Some(id) {
                    return Ok(ResponseText { ok: head.ok, text });
                } else {
                    return Err(what.unexpected(text));
                }
            }
        })
        .await?
    }

    /// Waits for the next frame without a deadline (cancel-safe, for `select!` loops).
    pub async fn recv(&mut self) -> Result<Frame, ProtooError> {
        match self.transport.recv().await? {
            RawFrame::Text(text) => Ok(Frame::Json(parse(&text)?)),
            RawFrame::Binary(bytes) => {
                Err(Awaited::Other("a text frame").unexpected(binary(&bytes)))
            }
            RawFrame::Close(code) => Ok(Frame::Closed(code)),
        }
    }

    /// Reads the next frame (response, notification or the close) within the timeout.
    pub async fn read(&mut self) -> Result<Frame, ProtooError> {
        let what = Awaited::Other("a frame from the server");
        deadline(self.timeout, what, self.recv()).await?
    }

    /// Queues the notifications that have already arrived, without waiting; fails on a
    /// response (none is awaited) or the close.
    pub fn read_ready(&mut self) -> Result<(), ProtooError> {
        let what = Awaited::Other("notifications");
        while let Some(frame) = self.recv().now_or_never() {
            match frame? {
                Frame::Json(v) if is_notification(&v) => self.queue(v),
                Frame::Json(v) => return Err(what.unexpected(v.to_string())),
                Frame::Closed(code) => return Err(what.closed(code)),
            }
        }
        Ok(())
    }

    /// Reads until the response to request `id` and returns it whole; notifications read
    /// meanwhile are queued; a response to another request is an error.
    pub async fn response(&mut self, id: u64) -> Result<Value, ProtooError> {
        let what = Awaited::Answer(id);
        deadline(self.timeout, what, async {
            loop {
                match self.recv().await? {
                    Frame::Json(v) if is_notification(&v) => self.queue(v),
                    Frame::Json(v) if v["response"] == true && v["id"] == id => return Ok(v),
                    Frame::Json(v) => return Err(what.unexpected(v.to_string())),
                    Frame::Closed(code) => return Err(what.closed(code)),
                }
            }
        })
        .await?
    }

    /// Waits (up to the timeout) for a notification named `method` whose `data` satisfies
    /// `pred`, and returns its `data`. Waiting *until* something happens, it consumes what
    /// came before: queued and newly read notifications before the match are dropped.
    /// A response or the close meanwhile is an error.
    pub async fn notification(
        &mut self,
        method: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, ProtooError> {
        while let Some(n) = self.notifications.pop_front() {
            if matches(&n, method, &pred) {
                return Ok(data_of(n));
            }
        }
        let what = Awaited::Notification(method);
        deadline(self.timeout, what, async {
            loop {
                match self.recv().await? {
                    Frame::Json(v) if is_notification(&v) => {
                        if matches(&v, method, &pred) {
                            return Ok(data_of(v));
                        }
                    }
                    Frame::Json(v) => return Err(what.unexpected(v.to_string())),
                    Frame::Closed(code) => return Err(what.closed(code)),
                }
            }
        })
        .await?
    }

    /// Looks for a notification named `method` whose `data` satisfies `pred` for up to
    /// `wait`: its `data`, or `None` if none came (to check that something does *not*
    /// happen, or not yet). Only the match is consumed; other notifications stay queued.
    pub async fn notification_within(
        &mut self,
        wait: Duration,
        method: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, ProtooError> {
        if let Some(at) = self
            .notifications
            .iter()
            .position(|n| matches(n, method, &pred))
        {
            return Ok(self.notifications.remove(at).map(data_of));
        }
        let what = Awaited::Notification(method);
        let until = Instant::now() + wait;
        loop {
            let Ok(frame) = tokio::time::timeout_at(until, self.recv()).await else {
                return Ok(None);
            };
            match frame? {
                Frame::Json(v) if is_notification(&v) => {
                    if matches(&v, method, &pred) {
                        return Ok(Some(data_of(v)));
                    }
                    self.queue(v);
                }
                Frame::Json(v) => return Err(what.unexpected(v.to_string())),
                Frame::Closed(code) => return Err(what.closed(code)),
            }
        }
    }

    /// Reads until the server closes the connection and returns the close code;
    /// notifications read meanwhile are queued, a response is an error.
    pub async fn closed(&mut self) -> Result<Option<u16>, ProtooError> {
        let what = Awaited::Other("the server to close the connection");
        deadline(self.timeout, what, async {
            loop {
                match self.recv().await? {
                    Frame::Json(v) if is_notification(&v) => self.queue(v),
                    Frame::Json(v) => return Err(what.unexpected(v.to_string())),
                    Frame::Closed(code) => return Ok(code),
                }
            }
        })
        .await?
    }

    /// Closes the client's side of the connection (close frame, or end of channel).
    pub async fn close(&mut self) -> Result<(), ProtooError> {
        let what = Awaited::Other("closing");
        deadline(self.timeout, what, self.transport.close()).await?
    }

    fn queue(&mut self, notification: Value) {
        if self.keep_notifications {
            self.notifications.push_back(notification);
        }
    }
}

/// Runs `f` with a deadline, if any.
async fn deadline<F: Future>(
    after: Option<Duration>,
    what: Awaited<'_>,
    f: F,
) -> Result<F::Output, ProtooError> {
    let Some(after) = after else {
        return Ok(f.await);
    };
    tokio::time::timeout(after, f)
        .await
        .map_err(|_| ProtooError::Timeout {
            what: what.to_string(),
            after,
        })
}

/// Parses a text frame.
fn parse<V: serde::de::DeserializeOwned>(text: &str) -> Result<V, ProtooError> {
    serde_json::from_str(text).map_err(|e| ProtooError::InvalidJson {
        text: text.to_owned(),
        error: e.to_string(),
    })
}

/// `ok` of a response to `id` whose text starts the way ferrosoup writes it
/// (`{"response":true,"id":ID,"ok":BOOL`), without parsing the rest; `None` otherwise.
fn canonical_head(text: &str, id: u64) -> Option<bool> {
    let rest = text.strip_prefix(r#"{"response":true,"id":"#)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    if rest[..digits].parse::<u64>().ok()? != id {
        return None;
    }
    let rest = rest[digits..].strip_prefix(r#","ok":"#)?;
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

fn binary(bytes: &[u8]) -> String {
    format!("a binary frame of {} bytes", bytes.len())
}

fn is_notification(v: &Value) -> bool {
    v["notification"] == true
}

fn matches(n: &Value, method: &str, pred: &impl Fn(&Value) -> bool) -> bool {
    n["method"] == method && pred(&n["data"])
}

fn data_of(mut n: Value) -> Value {
    n["data"].take()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client over channels, and the server's ends.
    fn pair() -> (
        ProtooClient<Channels<RawFrame>>,
        mpsc::UnboundedReceiver<String>,
        mpsc::UnboundedSender<RawFrame>,
    ) {
        let (to_server, from_client) = mpsc::unbounded_channel();
        let (to_client, from_server) = mpsc::unbounded_channel();
        let client = ProtooClient::new(Channels::new(to_server, from_server, |f| f));
        (client, from_client, to_client)
    }

    fn text(v: Value) -> RawFrame {
        RawFrame::Text(v.to_string())
    }

    fn notification(method: &str, data: Value) -> RawFrame {
        text(json!({"notification": true, "method": method, "data": data}))
    }

    #[tokio::test]
    async fn requests_get_the_response_with_their_id_and_notifications_are_queued() {
        let (mut client, mut sent, server) = pair();
        server.send(notification("a", json!({"n": 1}))).unwrap();
        server
            .send(text(
                json!({"response": true, "id": 1, "ok": true, "data": {"x": 7}}),
            ))
            .unwrap();
        assert_eq!(client.ok("ping", json!({})).await.unwrap(), json!({"x": 7}));
        let request: Value = serde_json::from_str(&sent.recv().await.unwrap()).unwrap();
        assert_eq!(
            request,
            json!({"request": true, "id": 1, "method": "ping", "data": {}})
        );
        assert_eq!(client.notifications().len(), 1);
        assert_eq!(client.next_id(), 2);

        server
            .send(text(json!({"response": true, "id": 2, "ok": false, "errorCode": 404, "errorReason": "no"})))
            .unwrap();
        match client.ok("closeProducer", json!({})).await {
            Err(ProtooError::Refused {
                method,
                code,
                reason,
            }) => {
                assert_eq!(
                    (method.as_str(), code, reason.as_str()),
                    ("closeProducer", 404, "no")
                );
            }
            other => panic!("{other:?}"),
        }
        // A response to another request is reported.
        server
            .send(text(
                json!({"response": true, "id": 9, "ok": true, "data": {}}),
            ))
            .unwrap();
        assert!(matches!(
            client.request("ping", json!({})).await,
            Err(ProtooError::Unexpected { .. })
        ));
    }

    #[tokio::test]
    async fn request_text_reads_only_the_head() {
        let (mut client, mut sent, server) = pair();
        server.send(notification("a", json!({"n": 1}))).unwrap();
        let answer = json!({"response": true, "id": 1, "ok": true, "data": {"big": [1, 2, 3]}});
        server.send(text(answer.clone())).unwrap();
        let got = client
            .request_text("getRouterRtpCapabilities", json!({"roomId": "r\"1"}))
            .await
            .unwrap();
        assert!(got.ok);
        assert_eq!(serde_json::from_str::<Value>(&got.text).unwrap(), answer);
        assert_eq!(client.notifications().len(), 1);
        let request: Value = serde_json::from_str(&sent.recv().await.unwrap()).unwrap();
        assert_eq!(
            request,
            json!({"request": true, "id": 1, "method": "getRouterRtpCapabilities", "data": {"roomId": "r\"1"}})
        );
    }

    #[test]
    fn canonical_heads_are_read_without_a_parser() {
        let head = |t: &str, id| canonical_head(t, id);
        assert_eq!(
            head(r#"{"response":true,"id":12,"ok":true,"data":{}}"#, 12),
            Some(true)
        );
        assert_eq!(
            head(r#"{"response":true,"id":12,"ok":false,"errorCode":1}"#, 12),
            Some(false)
        );
        assert_eq!(head(r#"{"response":true,"id":123,"ok":true}"#, 12), None);
        assert_eq!(head(r#"{"id":12,"response":true,"ok":true}"#, 12), None);
        assert_eq!(head(r#"{"response":true,"id":12}"#, 12), None);
    }

    #[tokio::test]
    async fn notification_waits_skip_or_keep_the_others() {
        let (mut client, _sent, server) = pair();
        for (m, n) in [("a", 1), ("b", 2), ("a", 3), ("b", 4)] {
            server.send(notification(m, json!({"n": n}))).unwrap();
        }
        // Looking without consuming the others.
        let found = client
            .notification_within(Duration::from_millis(50), "b", |d| d["n"] == 4)
            .await
            .unwrap();
        assert_eq!(found, Some(json!({"n": 4})));
        assert_eq!(client.notifications().len(), 3);
        // Nothing more: None after the wait.
        let none = client
            .notification_within(Duration::from_millis(20), "c", |_| true)
            .await
            .unwrap();
        assert_eq!(none, None);
        // Waiting until: what came before the match is consumed.
        let a3 = client.notification("a", |d| d["n"] == 3).await.unwrap();
        assert_eq!(a3, json!({"n": 3}));
        assert!(client.notifications().is_empty());
    }

    #[tokio::test]
    async fn close_code_and_deadlines() {
        let (mut client, _sent, server) = pair();
        client.set_timeout(Some(Duration::from_millis(30)));
        assert!(matches!(
            client.notification("x", |_| true).await,
            Err(ProtooError::Timeout { .. })
        ));
        server.send(notification("x", json!({}))).unwrap();
        client.read_ready().unwrap();
        assert_eq!(client.notifications().len(), 1);
        server.send(RawFrame::Close(Some(4404))).unwrap();
        assert_eq!(client.closed().await.unwrap(), Some(4404));
        // The close is sticky; requests after it fail with the code.
        match client.request("ping", json!({})).await {
            Err(ProtooError::Closed { code, .. }) => assert_eq!(code, Some(4404)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn invalid_json_and_binary_frames_are_errors() {
        let (mut client, _sent, server) = pair();
        server.send(RawFrame::Text("{nope".into())).unwrap();
        assert!(matches!(
            client.read().await,
            Err(ProtooError::InvalidJson { .. })
        ));
        server.send(RawFrame::Binary(vec![1, 2])).unwrap();
        assert!(matches!(
            client.read().await,
            Err(ProtooError::Unexpected { .. })
        ));
    }
}
