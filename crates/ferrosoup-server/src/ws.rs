//! The `/ws` endpoint: adapts an axum WebSocket to a signaling session, with server pings,
//! the 256 KiB frame limit and a bounded send queue.
//!
//! Frames go out through a writer task ([`Writer`]), so a peer that does not read never
//! stops the reading of its requests. What waits for the writer is bounded: over
//! `max_send_queue_bytes` queued, or one send stalled for `send_timeout`, the connection is
//! closed with 4408 and its peer enters the resume grace period like any dropped connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use ferrosoup_signal::link::close_code;
use ferrosoup_signal::{ConnectParams, Hub, Outgoing, ResumeRegistry};

/// Largest accepted frame.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Bytes read from a WebSocket per read call. Signaling messages are small (a few KiB); the
/// library default (128 KiB, zero-filled per connection) would be most of a peer's memory.
pub const READ_BUFFER: usize = 8 * 1024;
/// Interval of server pings.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// A connection silent for this long is considered lost.
const PING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the last frames and the close frame may take to reach the peer before the
/// socket is dropped (a peer that does not read would otherwise hold it forever).
const CLOSE_LINGER: Duration = Duration::from_secs(5);

type Sink = SplitSink<WebSocket, Message>;

/// Runs one WebSocket connection to the end.
pub async fn serve(
    hub: Arc<Hub>,
    sessions: Arc<ResumeRegistry>,
    socket: WebSocket,
    params: ConnectParams,
) {
    let _counted = hub.connection_guard();
    let limits = hub.config().limits.clone();
    let mut shutdown = hub.shutdown_signal();
    let (sink, mut stream) = socket.split();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<String>();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let session = tokio::spawn(ferrosoup_signal::connection::run(
        hub,
        sessions,
        tokio_stream_from(in_rx),
        out_tx,
        params,
    ));
    let mut writer = Writer::start(sink, limits.send_timeout);
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut last_seen = tokio::time::Instant::now();
    let ending = loop {
        tokio::select! {
            frame = stream.next() => {
                last_seen = tokio::time::Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        if in_tx.send(text.to_string()).is_err() { break Ending::Close(None); }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        // protoo is text only; a binary frame is garbage like invalid JSON.
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break Ending::Close(None),
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            break Ending::Close(Some(close(1009, "message too big")));
                        }
                        tracing::debug!("websocket read: {e}");
                        break Ending::Close(None);
                    }
                }
            }
            out = out_rx.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    if writer.backlog() + text.len() > limits.max_send_queue_bytes {
                        tracing::info!(
                            max = limits.max_send_queue_bytes,
                            "send queue full: the peer does not read, closing with 4408"
                        );
                        break Ending::NotReading("send queue full");
                    }
                    writer.send_text(text);
                }
                Some(Outgoing::Close(code, reason)) => break Ending::Close(Some(close(code, reason))),
                None => break Ending::Close(None),
            },
            end = &mut writer.task => break Ending::Writer(end.ok()),
            _ = shutdown.changed() => {
                // Frames already queued (roomClosed, a close) go first.
                let mut frame = close(1001, "server shutting down");
                while let Ok(out) = out_rx.try_recv() {
                    match out {
                        Outgoing::Text(text) => writer.send_text(text),
                        Outgoing::Close(code, reason) => {
                            frame = close(code, reason);
                            break;
                        }
                    }
                }
                break Ending::Close(Some(frame));
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > PING_TIMEOUT {
                    tracing::info!("websocket silent for {:?}: closing", PING_TIMEOUT);
                    break Ending::Close(None);
                }
                writer.send(Message::Ping(Default::default()));
            }
        }
    };
    // Nothing more can be written: from now on notifications for this peer must fail to
    // send, so its link queues them for a resume instead of losing them here; and the
    // session sees the end of the connection (the peer enters the grace period) now, not
    // after the closing handshake.
    drop(out_rx);
    drop(in_tx);
    if writer.finish(ending).await {
        // The closing handshake: read until the peer's close frame (or the end), so that
        // what it sends meanwhile (its close reply, a pong) is not left unread, which would
        // make the kernel reset the connection and drop our close frame before the peer
        // read it.
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    let _ = session.await;
}

/// Why the connection loop ended.
enum Ending {
    /// Write what is queued, then this close frame (if any).
    Close(Option<CloseFrame>),
    /// The peer does not read: drop what is queued and close with 4408.
    NotReading(&'static str),
    /// The writer stopped on its own (`None`: it panicked).
    Writer(Option<(Sink, WriteEnd)>),
}

/// How a writer task ended.
enum WriteEnd {
    /// Its queue was closed and everything in it was written.
    Drained,
    /// It was told to stop.
    Stopped,
    /// One send did not complete within the send timeout.
    Stalled,
    /// The socket failed.
    Failed,
}

fn close(code: u16, reason: impl Into<String>) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into().into(),
    }
}

/// The write half of a connection, on its own task.
struct Writer {
    tx: mpsc::UnboundedSender<Message>,
    /// Bytes of text frames handed to the task.
    queued: usize,
    /// Bytes of text frames the task has written.
    written: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<(Sink, WriteEnd)>,
}

impl Writer {
    fn start(sink: Sink, send_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let written = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(write_frames(
            sink,
            rx,
            written.clone(),
            send_timeout,
            stopped,
        ));
        Self {
            tx,
            queued: 0,
            written,
            stop: Some(stop),
            task,
        }
    }

    /// Bytes handed over and not written yet.
    fn backlog(&self) -> usize {
        self.queued
            .saturating_sub(self.written.load(Ordering::Relaxed))
    }

    fn send_text(&mut self, text: String) {
        self.queued += text.len();
        self.send(Message::Text(text.into()));
    }

    fn send(&self, frame: Message) {
        // The task may have ended (stall, socket error); the loop sees that on its own.
        let _ = self.tx.send(frame);
    }

    /// Ends the connection's writing as `ending` says, within [`CLOSE_LINGER`] for what is
    /// left, and closes the write half; whether a close frame went out.
    async fn finish(self, ending: Ending) -> bool {
        let Self {
            tx, stop, mut task, ..
        } = self;
        let (frame, ended) = match ending {
            Ending::Close(frame) => {
                drop(tx);
                // Keeps `stop` alive: dropping it would tell the task to stop now.
                let ended = tokio::time::timeout(CLOSE_LINGER, &mut task).await;
                drop(stop);
                if ended.is_err() {
                    task.abort();
                }
                (frame, ended.ok().and_then(Result::ok))
            }
            Ending::NotReading(reason) => {
                if let Some(stop) = stop {
                    let _ = stop.send(());
                }
                (
                    Some(close(close_code::NOT_READING, reason)),
                    task.await.ok(),
                )
            }
            Ending::Writer(ended) => (None, ended),
        };
        let Some((mut sink, end)) = ended else {
            return false;
        };
        let frame = match end {
            WriteEnd::Stalled => {
                tracing::info!("a send stalled: the peer does not read, closing with 4408");
                Some(close(close_code::NOT_READING, "send stalled"))
            }
            WriteEnd::Failed => return false,
            WriteEnd::Drained | WriteEnd::Stopped => frame,
        };
        let sent_close = frame.is_some();
        let closing = async {
            if let Some(frame) = frame {
                sink.send(Message::Close(Some(frame))).await?;
            }
            // Completes the closing handshake (answers the client's close frame) where possible.
            sink.close().await
        };
        let closed = tokio::time::timeout(CLOSE_LINGER, closing).await;
        sent_close && closed.is_ok()
    }
}

/// Writes frames until the queue closes, `stop` fires, a send fails or one stalls for
/// `send_timeout`; hands the sink back.
async fn write_frames(
    mut sink: Sink,
    mut frames: mpsc::UnboundedReceiver<Message>,
    written: Arc<AtomicUsize>,
    send_timeout: Duration,
    mut stop: oneshot::Receiver<()>,
) -> (Sink, WriteEnd) {
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            _ = &mut stop => return (sink, WriteEnd::Stopped),
        };
        let Some(frame) = frame else {
            return (sink, WriteEnd::Drained);
        };
        let len = match &frame {
            Message::Text(text) => text.len(),
            _ => 0,
        };
        let sent = tokio::select! {
            sent = tokio::time::timeout(send_timeout, sink.send(frame)) => sent,
            _ = &mut stop => return (sink, WriteEnd::Stopped),
        };
        match sent {
            Ok(Ok(())) => {
                written.fetch_add(len, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tracing::debug!("websocket write: {e}");
                return (sink, WriteEnd::Failed);
            }
            Err(_) => return (sink, WriteEnd::Stalled),
        }
    }
}

fn is_too_big(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("too long") || text.contains("Space limit") || text.contains("too big")
}

/// A `Stream` over an unbounded receiver.
fn tokio_stream_from<T>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Unpin {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
