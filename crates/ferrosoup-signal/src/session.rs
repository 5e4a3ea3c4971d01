//! Signaling sessions. A [`Session`] is one peer's signaling state (its room, the objects
//! it owns, its recent answers); it outlives a dropped WebSocket for the resume grace period.
//! [`run`] serves one connection: it creates a session or takes one over (`?resume=`),
//! parses protoo requests, applies the rate limit, and on disconnect either parks the
//! session for resume or closes it. Generic over the frame transport, so tests can drive it
//! over channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use ferrosoup_proto::signaling::{
    ConnectTransportRequest, ConsumeRequest, ConsumerIdRequest, CreateRoomRequest,
    CreateTransportRequest, JoinRoomRequest, Message, ProduceRequest, ProducerIdRequest,
    SetConsumerPreferredLayersRequest, SetConsumerPriorityRequest, SetMaxIncomingBitrateRequest,
    TransportDirection, TransportIdRequest, method,
};
use ferrosoup_room::{Closed, ClosedConsumer, ConsumerId, ProducerId, TransportId};

use crate::auth::Claims;
use crate::cache::RequestCache;
use crate::error::SignalError;
use crate::hub::{Direction, Hub, Peer, ProducerInfo, Room, SharedSession};
use crate::limits::RateLimiter;
use crate::link::{ConnectionId, Notifier, Outgoing};

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
    mut incoming: S,
    out: mpsc::UnboundedSender<Outgoing>,
    params: ConnectParams,
) where
    S: Stream<Item = String> + Unpin,
{
    let connection: ConnectionId = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let Some((session, notifier)) = open_session(&hub, &out, connection, params).await else {
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
                    method::ALL.contains(&r.method.as_str()),
                    429,
                );
                let e = SignalError {
                    code: 429,
                    reason: "too many requests".into(),
                };
                let _ = out.send(Outgoing::Text(error_response(r.id, &e)));
            }
            continue;
        }
        let (frame, new_token) = {
            let mut s = session.lock().await;
            let frame = s.handle_text(&text).await;
            (frame, s.take_unregistered_token())
        };
        if let Some(token) = new_token {
            hub.register_session(&token, session.clone(), notifier.clone());
        }
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
                    let _ = out.send(Outgoing::Close(1008, "too many invalid frames".into()));
                    break;
                }
            }
        }
    }
    let joined = session.lock().await.is_joined();
    match notifier.detach(connection) {
        // Another connection took the peer over: it is not ours to end.
        None => {}
        Some(generation) if joined && !hub.config().session_grace.is_zero() => {
            let grace = hub.config().session_grace;
            tracing::debug!(?grace, "connection lost: peer kept for resume");
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if notifier.still_detached(generation) {
                    session.lock().await.close().await;
                }
            });
        }
        Some(_) => session.lock().await.close().await,
    }
}

/// A new session for the connection, or the one `?resume=` names (taken over from its old
/// connection, with queued notifications flushed first). `None` when the connection was
/// refused (and told why).
async fn open_session(
    hub: &Arc<Hub>,
    out: &mpsc::UnboundedSender<Outgoing>,
    connection: ConnectionId,
    params: ConnectParams,
) -> Option<(SharedSession, Notifier)> {
    let Some(token) = params.resume else {
        let notifier = Notifier::attached(out.clone(), connection);
        let session = Session::new(hub.clone(), notifier.clone(), params.claims);
        return Some((Arc::new(tokio::sync::Mutex::new(session)), notifier));
    };
    let Some((session, notifier)) = hub.find_session(&token) else {
        let _ = out.send(Outgoing::Close(4404, "unknown or expired session".into()));
        return None;
    };
    if hub.config().auth_secret.is_some() {
        let peer_id = session.lock().await.peer_id();
        if params.claims.as_ref().map(|c| &c.sub) != peer_id.as_ref() {
            let _ = out.send(Outgoing::Close(
                4403,
                "token is not for this session".into(),
            ));
            return None;
        }
    }
    if let Some(old) = notifier.attach(out.clone(), connection) {
        let _ = old.send(Outgoing::Close(
            4000,
            "session resumed by another connection".into(),
        ));
    }
    tracing::info!("session resumed");
    Some((session, notifier))
}

/// What to send back for one frame.
pub enum Frame {
    /// A response.
    Answer(String),
    /// Nothing (a response or notification from the client).
    Ignored,
    /// The frame was not a valid protoo message; the 400 answer when its id was readable.
    Invalid(Option<String>),
}

/// One peer's signaling state: the room and peer it joined, its rooms, its recent answers.
pub struct Session {
    hub: Arc<Hub>,
    notifier: Notifier,
    joined: Option<(Arc<Room>, String)>,
    /// Rooms this session asked for with `createRoom`, closed at the end if still empty.
    touched_rooms: Vec<Arc<Room>>,
    /// Grants of the access token, when tokens are required.
    claims: Option<Claims>,
    /// Recent answers, for re-sent requests.
    cache: RequestCache,
    /// The session token handed out at `joinRoom`, and whether the hub knows it yet.
    token: Option<(String, bool)>,
}

type Answer = Result<Value, SignalError>;

/// Reads a request's data; the error names the offending field by its path.
fn parse<T: DeserializeOwned>(data: &Value) -> Result<T, SignalError> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            SignalError::bad_request(format!("invalid data: {}", e.inner()))
        } else {
            SignalError::bad_request(format!("{path}: {}", e.inner()))
        }
    })
}

fn parse_id<T>(s: &str, what: &str, f: fn(&str) -> Option<T>) -> Result<T, SignalError> {
    f(s).ok_or_else(|| SignalError::not_found(what))
}

impl Session {
    /// A session that has not joined a room yet.
    pub fn new(hub: Arc<Hub>, notifier: Notifier, claims: Option<Claims>) -> Self {
        Self {
            hub,
            notifier,
            joined: None,
            touched_rooms: Vec::new(),
            claims,
            cache: RequestCache::default(),
            token: None,
        }
    }

    /// Whether the session's peer is in a room.
    pub fn is_joined(&self) -> bool {
        self.joined.is_some()
    }

    /// The peer id, once joined.
    pub fn peer_id(&self) -> Option<String> {
        self.joined.as_ref().map(|(_, p)| p.clone())
    }

    /// The session token issued at `joinRoom`, the first time it is asked for.
    fn take_unregistered_token(&mut self) -> Option<String> {
        match &mut self.token {
            Some((token, registered)) if !*registered => {
                *registered = true;
                Some(token.clone())
            }
            _ => None,
        }
    }

    /// Forgets the room without notifying anyone (the room is being closed as a whole).
    pub fn forget_room(&mut self) {
        self.joined = None;
        self.token = None;
        self.touched_rooms.clear();
    }

    /// Handles one text frame.
    pub async fn handle_text(&mut self, text: &str) -> Frame {
        let request = match Message::parse(text) {
            Ok(Message::Request(r)) => r,
            // Responses and notifications from a client have no meaning here.
            Ok(_) => return Frame::Ignored,
            Err(e) => {
                tracing::debug!("unparsable frame: {e}");
                return Frame::Invalid(
                    e.id()
                        .map(|id| error_response(id, &SignalError::bad_request(e.to_string()))),
                );
            }
        };
        if let Some(answer) = self
            .cache
            .lookup(request.id, &request.method, &request.data)
        {
            tracing::debug!(method = %request.method, id = request.id, "re-sent request: cached answer");
            return Frame::Answer(answer.to_owned());
        }
        let known = method::ALL.contains(&request.method.as_str());
        let result = if known {
            self.dispatch(&request.method, &request.data).await
        } else {
            Err(SignalError::bad_request(format!(
                "unknown method {}",
                request.method
            )))
        };
        let code = result.as_ref().map_or_else(|e| e.code, |_| 200);
        self.hub
            .request_stats()
            .record(&request.method, known, code);
        let answer = match result {
            Ok(data) => {
                json!({"response": true, "id": request.id, "ok": true, "data": data}).to_string()
            }
            Err(e) => {
                tracing::debug!(method = %request.method, code = e.code, reason = %e.reason, "request failed");
                error_response(request.id, &e)
            }
        };
        self.cache
            .store(request.id, &request.method, &request.data, answer.clone());
        Frame::Answer(answer)
    }

    async fn dispatch(&mut self, m: &str, data: &Value) -> Answer {
        match m {
            method::PING => Ok(json!({})),
            method::CREATE_ROOM => self.create_room(parse(data)?).await,
            method::GET_ROUTER_RTP_CAPABILITIES => {
                self.get_router_rtp_capabilities(parse(data)?).await
            }
            method::JOIN_ROOM => self.join_room(parse(data)?).await,
            method::LEAVE_ROOM => {
                if self.joined.is_none() {
                    return Err(SignalError::conflict("not in a room"));
                }
                self.leave().await;
                Ok(json!({}))
            }
            _ => {
                let (room, peer_id) = self
                    .joined
                    .clone()
                    .ok_or_else(|| SignalError::conflict("joinRoom first"))?;
                self.dispatch_in_room(m, data, &room, &peer_id).await
            }
        }
    }

    async fn dispatch_in_room(
        &mut self,
        m: &str,
        data: &Value,
        room: &Arc<Room>,
        peer_id: &str,
    ) -> Answer {
        match m {
            method::CREATE_TRANSPORT | method::CREATE_WEBRTC_TRANSPORT => {
                self.create_transport(room, peer_id, parse(data)?).await
            }
            method::CONNECT_TRANSPORT => {
                let req: ConnectTransportRequest = parse(data)?;
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                room.router
                    .connect_transport(id, &req.dtls_parameters)
                    .await?;
                Ok(json!({}))
            }
            method::RESTART_ICE => {
                let req: TransportIdRequest = parse(data)?;
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                let ice = room.router.restart_ice(id).await?;
                Ok(json!({"iceParameters": ice}))
            }
            method::SET_MAX_INCOMING_BITRATE => {
                let req: SetMaxIncomingBitrateRequest = parse(data)?;
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                room.router
                    .set_max_incoming_bitrate(id, req.bitrate)
                    .await?;
                Ok(json!({}))
            }
            method::CLOSE_TRANSPORT => {
                let req: TransportIdRequest = parse(data)?;
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                let closed = room.router.close_transport(id).await?;
                if let Some(peer) = room.peers().get_mut(peer_id) {
                    peer.transports.remove(&id);
                }
                self.hub.remove_route(id.0);
                self.after_close(room, peer_id, &closed);
                Ok(json!({}))
            }
            method::PRODUCE => self.produce(room, peer_id, parse(data)?).await,
            method::PAUSE_PRODUCER | method::RESUME_PRODUCER => {
                let req: ProducerIdRequest = parse(data)?;
                let id = self.own_producer(room, peer_id, &req.producer_id)?;
                let paused = m == method::PAUSE_PRODUCER;
                let changed = room.router.set_producer_paused(id, paused).await?;
                if let Some(p) = room
                    .peers()
                    .get_mut(peer_id)
                    .and_then(|p| p.producers.get_mut(&id))
                {
                    p.paused = paused;
                }
                let (producer_event, consumer_event) = if paused {
                    ("producerPaused", "consumerPaused")
                } else {
                    ("producerResumed", "consumerResumed")
                };
                room.broadcast(
                    peer_id,
                    producer_event,
                    json!({"producerId": id.to_string(), "peerId": peer_id}),
                );
                self.notify_consumer_owners(
                    room,
                    &changed,
                    consumer_event,
                    |c| json!({"consumerId": c.to_string()}),
                );
                Ok(json!({}))
            }
            method::CLOSE_PRODUCER => {
                let req: ProducerIdRequest = parse(data)?;
                let id = self.own_producer(room, peer_id, &req.producer_id)?;
                let consumers = room.router.close_producer(id).await?;
                if let Some(peer) = room.peers().get_mut(peer_id) {
                    peer.producers.remove(&id);
                }
                let closed = Closed {
                    producers: vec![id],
                    consumers: consumers
                        .into_iter()
                        .map(|consumer_id| ClosedConsumer {
                            consumer_id,
                            producer_id: id,
                        })
                        .collect(),
                };
                self.after_close(room, peer_id, &closed);
                Ok(json!({}))
            }
            method::GET_PRODUCERS => {
                let peers = room.peers();
                let producers: Vec<Value> = peers
                    .values()
                    .filter(|p| p.id != peer_id)
                    .flat_map(|p| {
                        p.producers
                            .iter()
                            .map(move |(id, info)| producer_json(*id, &p.id, info))
                    })
                    .collect();
                Ok(json!({"producers": producers}))
            }
            method::CONSUME => self.consume(room, peer_id, parse(data)?).await,
            method::PAUSE_CONSUMER | method::RESUME_CONSUMER => {
                let req: ConsumerIdRequest = parse(data)?;
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.router
                    .set_consumer_paused(id, m == method::PAUSE_CONSUMER)
                    .await?;
                Ok(json!({}))
            }
            method::CLOSE_CONSUMER => {
                let req: ConsumerIdRequest = parse(data)?;
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.router.close_consumer(id).await?;
                if let Some(peer) = room.peers().get_mut(peer_id) {
                    peer.consumers.remove(&id);
                }
                self.hub.remove_route(id.0);
                Ok(json!({}))
            }
            method::SET_CONSUMER_PREFERRED_LAYERS => {
                let req: SetConsumerPreferredLayersRequest = parse(data)?;
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.router
                    .set_consumer_preferred_layers(id, req.spatial_layer, req.temporal_layer)
                    .await?;
                Ok(json!({}))
            }
            method::SET_CONSUMER_PRIORITY => {
                let req: SetConsumerPriorityRequest = parse(data)?;
                if req.priority == 0 {
                    return Err(SignalError::bad_request("priority: must be 1..255"));
                }
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.router.set_consumer_priority(id, req.priority).await?;
                Ok(json!({}))
            }
            method::REQUEST_CONSUMER_KEY_FRAME => {
                let req: ConsumerIdRequest = parse(data)?;
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.router.request_consumer_key_frame(id).await?;
                Ok(json!({}))
            }
            method::GET_TRANSPORT_STATS => {
                let req: TransportIdRequest = parse(data)?;
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                Ok(json!({"stats": room.router.transport_stats(id).await?}))
            }
            method::GET_PRODUCER_STATS => {
                let req: ProducerIdRequest = parse(data)?;
                let id = self.own_producer(room, peer_id, &req.producer_id)?;
                Ok(json!({"stats": room.router.producer_stats(id).await?}))
            }
            method::GET_CONSUMER_STATS => {
                let req: ConsumerIdRequest = parse(data)?;
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                Ok(json!({"stats": room.router.consumer_stats(id).await?}))
            }
            other => Err(SignalError {
                code: 501,
                reason: format!("{other} is not supported yet"),
            }),
        }
    }

    // ----- rooms and peers --------------------------------------------------------------

    async fn create_room(&mut self, req: CreateRoomRequest) -> Answer {
        validate_room_id(&req.room_id)?;
        if let Some(claims) = &self.claims
            && claims.room != req.room_id
        {
            return Err(SignalError {
                code: 403,
                reason: format!("roomId: the token is for room {:?}", claims.room),
            });
        }
        let room = self.hub.get_or_create_room(&req.room_id).await?;
        let answer = json!({"roomId": room.id, "rtpCapabilities": room.router.rtp_capabilities()});
        if !self.touched_rooms.iter().any(|r| Arc::ptr_eq(r, &room)) {
            self.touched_rooms.push(room);
        }
        Ok(answer)
    }

    async fn get_router_rtp_capabilities(&mut self, req: CreateRoomRequest) -> Answer {
        validate_room_id(&req.room_id)?;
        let room = self
            .hub
            .room(&req.room_id)
            .await
            .ok_or_else(|| SignalError::not_found("room"))?;
        Ok(json!({"rtpCapabilities": room.router.rtp_capabilities()}))
    }

    async fn join_room(&mut self, req: JoinRoomRequest) -> Answer {
        if self.joined.is_some() {
            return Err(SignalError::conflict("already joined a room"));
        }
        validate_room_id(&req.room_id)?;
        if self.hub.is_draining() {
            return Err(SignalError {
                code: 503,
                reason: "server shutting down".into(),
            });
        }
        if let Some(claims) = &self.claims {
            if claims.room != req.room_id {
                return Err(SignalError {
                    code: 403,
                    reason: format!("roomId: the token is for room {:?}", claims.room),
                });
            }
            if req.peer_id.as_ref().is_some_and(|p| *p != claims.sub) {
                return Err(SignalError {
                    code: 403,
                    reason: "peerId: differs from the token's subject".into(),
                });
            }
        }
        if let Some(caps) = &req.rtp_capabilities {
            ferrosoup_proto::ortc::validate_rtp_capabilities(caps)
                .map_err(|e| SignalError::bad_request(format!("rtpCapabilities: {e}")))?;
        }
        let peer_id = req
            .peer_id
            .clone()
            .or_else(|| self.claims.as_ref().map(|c| c.sub.clone()))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if peer_id.is_empty() || peer_id.len() > 128 {
            return Err(SignalError::bad_request(
                "peerId: must be 1..128 characters",
            ));
        }
        let room = self.hub.get_or_create_room(&req.room_id).await?;
        let display_name = req.display_name.clone().unwrap_or_default();
        let app_data = req.app_data.clone();
        let peers_json = {
            let mut peers = room.peers();
            if peers.contains_key(&peer_id) {
                return Err(SignalError::conflict(format!(
                    "peerId {peer_id} already in the room"
                )));
            }
            let max = self.hub.config().limits.max_peers_per_room;
            if peers.len() >= max {
                return Err(SignalError {
                    code: 429,
                    reason: format!("room full: {max} peers"),
                });
            }
            let others: Vec<Value> = peers
                .values()
                .map(|p| {
                    let producers: Vec<Value> = p
                        .producers
                        .iter()
                        .map(|(id, info)| json!({"producerId": id.to_string(), "kind": info.kind, "appData": info.app_data, "paused": info.paused}))
                        .collect();
                    json!({"peerId": p.id, "displayName": p.display_name, "appData": p.app_data, "producers": producers})
                })
                .collect();
            peers.insert(
                peer_id.clone(),
                Peer {
                    id: peer_id.clone(),
                    display_name: display_name.clone(),
                    app_data: app_data.clone(),
                    rtp_capabilities: req.rtp_capabilities.clone(),
                    notifier: self.notifier.clone(),
                    transports: HashMap::new(),
                    producers: HashMap::new(),
                    consumers: HashMap::new(),
                },
            );
            others
        };
        room.broadcast(
            &peer_id,
            "peerJoined",
            json!({"peerId": peer_id, "displayName": display_name, "appData": app_data}),
        );
        tracing::info!(room = %room.id, peer = %peer_id, "peer joined");
        self.joined = Some((room, peer_id.clone()));
        let session_token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.token = Some((session_token.clone(), false));
        Ok(json!({"peerId": peer_id, "sessionToken": session_token, "peers": peers_json}))
    }

    /// Ends the session: leaves the room and closes rooms it created that nobody joined.
    pub async fn close(&mut self) {
        self.leave().await;
        for room in std::mem::take(&mut self.touched_rooms) {
            self.hub.close_room_if_empty(&room).await;
        }
    }

    /// Removes this session's peer and everything it owns, and tells the others.
    pub async fn leave(&mut self) {
        if let Some((token, _)) = self.token.take() {
            self.hub.unregister_session(&token);
        }
        let Some((room, peer_id)) = self.joined.take() else {
            return;
        };
        let Some(peer) = room.peers().remove(&peer_id) else {
            return;
        };
        for id in peer.consumers.keys() {
            self.hub.remove_route(id.0);
        }
        for id in peer.producers.keys() {
            self.hub.remove_route(id.0);
        }
        for id in peer.transports.keys() {
            self.hub.remove_route(id.0);
            match room.router.close_transport(*id).await {
                Ok(closed) => self.after_close(&room, &peer_id, &closed),
                Err(e) => tracing::warn!(transport = %id, "closing transport on leave: {e}"),
            }
        }
        room.broadcast(&peer_id, "peerLeft", json!({"peerId": peer_id}));
        tracing::info!(room = %room.id, peer = %peer_id, "peer left");
        self.hub.close_room_if_empty(&room).await;
    }

    /// Notifies what closing a transport or producer of `peer_id` closed with it.
    fn after_close(&self, room: &Room, peer_id: &str, closed: &Closed) {
        for pid in &closed.producers {
            self.hub.remove_route(pid.0);
            if let Some(peer) = room.peers().get_mut(peer_id) {
                peer.producers.remove(pid);
            }
            room.broadcast(
                peer_id,
                "producerClosed",
                json!({"producerId": pid.to_string(), "peerId": peer_id}),
            );
        }
        let mut peers = room.peers();
        for ClosedConsumer {
            consumer_id: cid,
            producer_id: pid,
        } in &closed.consumers
        {
            self.hub.remove_route(cid.0);
            for peer in peers.values_mut() {
                if peer.consumers.remove(cid).is_some() {
                    if peer.id != peer_id || !closed.producers.is_empty() {
                        let reason = if closed.producers.contains(pid) {
                            "producerClosed"
                        } else {
                            "transportClosed"
                        };
                        peer.notifier.notify(
                            "consumerClosed",
                            json!({"consumerId": cid.to_string(), "producerId": pid.to_string(), "reason": reason}),
                        );
                    }
                    break;
                }
            }
        }
    }

    fn notify_consumer_owners(
        &self,
        room: &Room,
        consumers: &[ConsumerId],
        method: &str,
        data: impl Fn(ConsumerId) -> Value,
    ) {
        let peers = room.peers();
        for c in consumers {
            if let Some(peer) = peers.values().find(|p| p.consumers.contains_key(c)) {
                peer.notifier.notify(method, data(*c));
            }
        }
    }

    /// 429 when the peer already has `max` objects of a kind.
    fn check_quota(
        &self,
        room: &Room,
        peer_id: &str,
        what: &str,
        count: impl Fn(&Peer) -> usize,
        max: usize,
    ) -> Result<(), SignalError> {
        let n = room.peers().get(peer_id).map_or(0, count);
        if n >= max {
            return Err(SignalError {
                code: 429,
                reason: format!("limit reached: {max} {what} per peer"),
            });
        }
        Ok(())
    }

    // ----- ownership checks -------------------------------------------------------------

    fn own_transport(
        &self,
        room: &Room,
        peer_id: &str,
        id: &str,
    ) -> Result<(TransportId, Direction), SignalError> {
        let id = parse_id(id, "transport", TransportId::parse)?;
        let peers = room.peers();
        let dir = peers
            .get(peer_id)
            .and_then(|p| p.transports.get(&id))
            .ok_or_else(|| SignalError::not_found("transport"))?;
        Ok((id, *dir))
    }

    fn own_producer(
        &self,
        room: &Room,
        peer_id: &str,
        id: &str,
    ) -> Result<ProducerId, SignalError> {
        let id = parse_id(id, "producer", ProducerId::parse)?;
        let peers = room.peers();
        peers
            .get(peer_id)
            .filter(|p| p.producers.contains_key(&id))
            .map(|_| id)
            .ok_or_else(|| SignalError::not_found("producer"))
    }

    fn own_consumer(
        &self,
        room: &Room,
        peer_id: &str,
        id: &str,
    ) -> Result<ConsumerId, SignalError> {
        let id = parse_id(id, "consumer", ConsumerId::parse)?;
        let peers = room.peers();
        peers
            .get(peer_id)
            .filter(|p| p.consumers.contains_key(&id))
            .map(|_| id)
            .ok_or_else(|| SignalError::not_found("consumer"))
    }

    // ----- transports, producers, consumers ---------------------------------------------

    async fn create_transport(
        &mut self,
        room: &Arc<Room>,
        peer_id: &str,
        req: CreateTransportRequest,
    ) -> Answer {
        let direction = match req.direction {
            TransportDirection::Send => Direction::Send,
            TransportDirection::Recv => Direction::Recv,
        };
        self.check_quota(
            room,
            peer_id,
            "transports",
            |p| p.transports.len(),
            self.hub.config().limits.max_transports_per_peer,
        )?;
        let params = room.router.create_webrtc_transport().await?;
        let registered = match room.peers().get_mut(peer_id) {
            Some(peer) => {
                peer.transports.insert(params.id, direction);
                true
            }
            None => false,
        };
        if !registered {
            let _ = room.router.close_transport(params.id).await;
            return Err(SignalError::conflict("peer left"));
        }
        self.hub.add_route(params.id.0, self.notifier.clone());
        Ok(json!({
            "id": params.id.to_string(),
            "iceParameters": params.ice_parameters,
            "iceCandidates": params.ice_candidates,
            "dtlsParameters": params.dtls_parameters,
        }))
    }

    async fn produce(&mut self, room: &Arc<Room>, peer_id: &str, req: ProduceRequest) -> Answer {
        if self.claims.as_ref().is_some_and(|c| !c.can_publish) {
            return Err(SignalError {
                code: 403,
                reason: "the token does not allow publishing".into(),
            });
        }
        let (transport_id, direction) = self.own_transport(room, peer_id, &req.transport_id)?;
        if direction != Direction::Send {
            return Err(SignalError::conflict("transportId: not a send transport"));
        }
        self.check_quota(
            room,
            peer_id,
            "producers",
            |p| p.producers.len(),
            self.hub.config().limits.max_producers_per_peer,
        )?;
        let paused = req.paused;
        let id = room
            .router
            .produce(transport_id, req.kind, req.rtp_parameters, paused)
            .await?;
        let info = ProducerInfo {
            kind: req.kind,
            app_data: req.app_data.clone(),
            paused,
        };
        let registered = match room.peers().get_mut(peer_id) {
            Some(peer) if peer.transports.contains_key(&transport_id) => {
                peer.producers.insert(id, info.clone());
                true
            }
            _ => false,
        };
        if !registered {
            let _ = room.router.close_producer(id).await;
            return Err(SignalError::conflict("transport closed"));
        }
        self.hub.add_route(id.0, self.notifier.clone());
        room.broadcast(peer_id, "newProducer", producer_json(id, peer_id, &info));
        Ok(json!({"id": id.to_string()}))
    }

    async fn consume(&mut self, room: &Arc<Room>, peer_id: &str, req: ConsumeRequest) -> Answer {
        if self.claims.as_ref().is_some_and(|c| !c.can_subscribe) {
            return Err(SignalError {
                code: 403,
                reason: "the token does not allow subscribing".into(),
            });
        }
        let (transport_id, direction) = self.own_transport(room, peer_id, &req.transport_id)?;
        if direction != Direction::Recv {
            return Err(SignalError::conflict("transportId: not a recv transport"));
        }
        self.check_quota(
            room,
            peer_id,
            "consumers",
            |p| p.consumers.len(),
            self.hub.config().limits.max_consumers_per_peer,
        )?;
        let producer_id = parse_id(&req.producer_id, "producer", ProducerId::parse)?;
        let caps = {
            let peers = room.peers();
            if !peers
                .values()
                .any(|p| p.producers.contains_key(&producer_id))
            {
                return Err(SignalError::not_found("producer"));
            }
            match req
                .rtp_capabilities
                .clone()
                .or_else(|| peers.get(peer_id).and_then(|p| p.rtp_capabilities.clone()))
            {
                Some(c) => c,
                None => {
                    return Err(SignalError::bad_request(
                        "rtpCapabilities: required (not given at joinRoom)",
                    ));
                }
            }
        };
        let paused = req.paused;
        let layers = req
            .preferred_layers
            .map(|l| (l.spatial_layer, l.temporal_layer));
        let params = room
            .router
            .consume(transport_id, producer_id, &caps, paused, layers)
            .await?;
        let registered = match room.peers().get_mut(peer_id) {
            Some(peer) if peer.transports.contains_key(&transport_id) => {
                peer.consumers.insert(params.id, producer_id);
                true
            }
            _ => false,
        };
        if !registered {
            let _ = room.router.close_consumer(params.id).await;
            return Err(SignalError::conflict("transport closed"));
        }
        self.hub.add_route(params.id.0, self.notifier.clone());
        Ok(json!({
            "id": params.id.to_string(),
            "producerId": producer_id.to_string(),
            "kind": params.kind,
            "rtpParameters": params.rtp_parameters,
            "type": params.consumer_type,
            "producerPaused": params.producer_paused,
        }))
    }
}

fn producer_json(id: ProducerId, peer_id: &str, info: &ProducerInfo) -> Value {
    json!({"producerId": id.to_string(), "peerId": peer_id, "kind": info.kind, "appData": info.app_data, "paused": info.paused})
}

fn validate_room_id(id: &str) -> Result<(), SignalError> {
    if id.is_empty() || id.len() > 128 {
        return Err(SignalError::bad_request(
            "roomId: must be 1..128 characters",
        ));
    }
    Ok(())
}

fn error_response(id: u64, e: &SignalError) -> String {
    json!({"response": true, "id": id, "ok": false, "errorCode": e.code, "errorReason": e.reason})
        .to_string()
}
