//! The `/ws` endpoint: adapts an axum WebSocket to a signaling session, with server pings
//! and the 256 KiB frame limit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

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

/// Runs one WebSocket connection to the end.
pub async fn serve(
    hub: Arc<Hub>,
    sessions: Arc<ResumeRegistry>,
    socket: WebSocket,
    params: ConnectParams,
) {
    let _counted = hub.connection_guard();
    let mut shutdown = hub.shutdown_signal();
    let (mut sink, mut stream) = socket.split();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<String>();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let session = tokio::spawn(ferrosoup_signal::connection::run(
        hub,
        sessions,
        tokio_stream_from(in_rx),
        out_tx,
        params,
    ));
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut last_seen = tokio::time::Instant::now();
    loop {
        tokio::select! {
            frame = stream.next() => {
                last_seen = tokio::time::Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        if in_tx.send(text.to_string()).is_err() { break; }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        // protoo is text only; a binary frame is garbage like invalid JSON.
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            let frame = CloseFrame { code: 1009, reason: "message too big".into() };
                            let _ = sink.send(Message::Close(Some(frame))).await;
                        } else {
                            tracing::debug!("websocket read: {e}");
                        }
                        break;
                    }
                }
            }
            out = out_rx.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() { break; }
                }
                Some(Outgoing::Close(code, reason)) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    break;
                }
                None => break,
            },
            _ = shutdown.changed() => {
                let frame = CloseFrame { code: 1001, reason: "server shutting down".into() };
                // Frames already queued (roomClosed, a close) go first.
                while let Ok(out) = out_rx.try_recv() {
                    match out {
                        Outgoing::Text(text) => { let _ = sink.send(Message::Text(text.into())).await; }
                        Outgoing::Close(code, reason) => {
                            let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                            break;
                        }
                    }
                }
                let _ = sink.send(Message::Close(Some(frame))).await;
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > PING_TIMEOUT {
                    tracing::info!("websocket silent for {:?}: closing", PING_TIMEOUT);
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() { break; }
            }
        }
    }
    // Nothing more can be written: from now on notifications for this peer must fail to
    // send, so its link queues them for a resume instead of losing them here.
    drop(out_rx);
    // Completes the closing handshake (answers the client's close frame) where possible.
    let _ = sink.close().await;
    drop(in_tx);
    let _ = session.await;
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
