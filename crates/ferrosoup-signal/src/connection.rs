//! The connection loop. [`run`] serves one connection: it creates a session or takes one
//! over (`?resume=`), applies the rate limit, hands each frame to the session, keeps the
//! resume registry up to date with the session's tokens, and on disconnect either parks the
//! session for resume or closes it. Generic over the frame transport, so tests can drive it
//! over channels.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use ferrosoup_proto::signaling::{ErrorCode, Message, Method};

use crate::auth::Claims;
use crate::error::SignalError;
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::link::{ConnectionId, Notifier, Outgoing, close_code};
use crate::resume::ResumeRegistry;
use crate::session::{Frame, Session, SharedSession};

/// What a connection brought at the WebSocket handshake.
#[derive(Clone, Debug, Default)]
pub struct ConnectParams {
    /// `?resume=`: the session token of a peer to take over.
    pub resume: Option<String>,
    /// The verified access token's grants (when the server requires tokens).
    pub claims: Option<Claims>,
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Serves one connection (its text frames in, answers and notifications out) until the
/// incoming stream ends. Then a joined peer is kept for the resume grace period (or removed
/// at once when the grace is zero), and a peer that never joined is cleaned up.
pub async fn run<S>(
    hub: Arc<Hub>,
    sessions: Arc<ResumeRegistry>,
    mut incoming: S,
    out: mpsc::UnboundedSender<Outgoing>,
    params: ConnectParams,
) where
    S: Stream<Item = String> + Unpin,
{
    let connection: ConnectionId = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let Some((session, notifier)) = open_session(&hub, &sessions, &out, connection, params).await
    else {
        return;
    };
    let limits = hub.config().limits.clone();
    let mut limiter = RateLimiter::new(
        limits.requests_per_second,
        limits.request_burst,
        Instant::now(),
    );
    let mut invalid_frames = 0u32;
    while let Some(text) = incoming.next().await {
        if !limiter.allow(Instant::now()) {
            if let Ok(Message::Request(r)) = Message::parse(&text) {
                hub.request_stats().record(
                    &r.method,
                    Method::from_name(&r.method).is_some(),
                    ErrorCode::TooManyRequests.code(),
                    std::time::Duration::ZERO,
                );
                let e = SignalError::too_many("too many requests");
                let _ = out.send(Outgoing::Text(e.to_response(r.id)));
            }
            continue;
        }
        let frame = {
            let mut s = session.lock().await;
            let frame = s.handle_text(&text).await;
            sessions.update(&mut s, &session);
            frame
        };
        match frame {
            Frame::Answer(answer) => {
                let _ = out.send(Outgoing::Text(answer));
            }
            Frame::Ignored => {}
            Frame::Invalid(answer) => {
                if let Some(answer) = answer {
                    let _ = out.send(Outgoing::Text(answer));
                }
                invalid_frames += 1;
                if invalid_frames > limits.max_invalid_frames {
                    let _ = out.send(Outgoing::Close(
                        close_code::TOO_MANY_INVALID_FRAMES,
                        "too many invalid frames".into(),
                    ));
                    break;
                }
            }
        }
    }
    let joined = {
        let mut s = session.lock().await;
        let joined = s.is_joined();
        sessions.update(&mut s, &session);
        joined
    };
    match notifier.detach(connection) {
        // Another connection took the peer over: it is not ours to end.
        None => {}
        Some(generation) if joined && !hub.config().session_grace.is_zero() => {
            let grace = hub.config().session_grace;
            tracing::debug!(?grace, "connection lost: peer kept for resume");
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if notifier.still_detached(generation) {
                    close(&sessions, &session).await;
                }
            });
        }
        Some(_) => close(&sessions, &session).await,
    }
}

/// Ends a session and forgets its token.
async fn close(sessions: &ResumeRegistry, session: &SharedSession) {
    let mut s = session.lock().await;
    s.close().await;
    sessions.update(&mut s, session);
}

/// A new session for the connection, or the one `?resume=` names (taken over from its old
/// connection, with queued notifications flushed first). `None` when the connection was
/// refused (and told why).
async fn open_session(
    hub: &Arc<Hub>,
    sessions: &ResumeRegistry,
    out: &mpsc::UnboundedSender<Outgoing>,
    connection: ConnectionId,
    params: ConnectParams,
) -> Option<(SharedSession, Notifier)> {
    let Some(token) = params.resume else {
        let notifier = Notifier::attached(
            out.clone(),
            connection,
            hub.config().limits.max_send_queue_bytes,
        );
        let session = Session::new(hub.clone(), notifier.clone(), params.claims);
        return Some((Arc::new(tokio::sync::Mutex::new(session)), notifier));
    };
    let unknown = || {
        let _ = out.send(Outgoing::Close(
            close_code::UNKNOWN_SESSION,
            "unknown or expired session".into(),
        ));
    };
    let Some((session, notifier)) = sessions.find(&token) else {
        unknown();
        return None;
    };
    {
        let mut s = session.lock().await;
        // Its room may have been closed while the peer was away.
        let joined = s.is_joined();
        sessions.update(&mut s, &session);
        if !joined {
            unknown();
            return None;
        }
        if hub.config().auth_secret.is_some()
            && params.claims.as_ref().map(|c| &c.sub) != s.peer_id().as_ref()
        {
            let _ = out.send(Outgoing::Close(
                close_code::NOT_YOUR_SESSION,
                "token is not for this session".into(),
            ));
            return None;
        }
    }
    if let Some(old) = notifier.attach(out.clone(), connection) {
        let _ = old.send(Outgoing::Close(
            close_code::TAKEN_OVER,
            "session resumed by another connection".into(),
        ));
    }
    tracing::info!("session resumed");
    Some((session, notifier))
}
