//! Signaling sessions. A [`Session`] is one peer's signaling state (its room, the objects
//! it owns, its recent answers); it outlives a dropped WebSocket for the resume grace period.
//!
//! [`Session::handle_text`] is the whole request path: the protoo envelope is parsed, a
//! re-sent request gets its cached answer, the method and data are read once into a
//! [`SignalRequest`], and the session matches on it. Answers and notifications are built
//! from ferrosoup-proto's structs. Requests on the room's transports, producers and
//! consumers are in the `media` submodule. The connection loop that drives a session is
//! [`crate::connection`].

mod broadcaster;
mod data;
mod media;
mod p2p;

pub use broadcaster::parse_body;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use ferrosoup_proto::signaling::{
    self, CreateRoomRequest, CreateRoomResponse, Empty, GetRouterRtpCapabilitiesResponse,
    JoinRoomRequest, JoinRoomResponse, Message, Method, PeerInfo, PeerJoinedNotification,
    PeerLeftNotification, ProducerPeerNotification, RequestError, ServerNotification,
    SignalRequest,
};
use ferrosoup_room::Closed;

use crate::auth::Claims;
use crate::cache::RequestCache;
use crate::cluster::{ClusterPeer, ProducerChange};
use crate::error::SignalError;
use crate::hub::{Hub, Peer, Room, room_producer};
use crate::link::Notifier;

/// A session shared between the connection serving it, its grace timer and the resume
/// registry.
pub type SharedSession = Arc<tokio::sync::Mutex<Session>>;

/// What to send back for one frame.
pub enum Frame {
    /// A response.
    Answer(String),
    /// Nothing (a response or notification from the client).
    Ignored,
    /// The frame was not a valid protoo message; the 400 answer when its id was readable.
    Invalid(Option<String>),
}

/// A change of the session's resume token, for [`crate::resume::ResumeRegistry::update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenChange {
    /// `joinRoom` handed out this token: it resumes the session from now on.
    Issued(String),
    /// The peer left (or its room was closed): the token resumes nothing any more.
    Revoked(String),
}

/// One peer's signaling state: the room and peer it joined, its rooms, its recent answers.
pub struct Session {
    hub: Arc<Hub>,
    notifier: Notifier,
    joined: Option<(Arc<Room>, String)>,
    /// Rooms this session asked for with `createRoom`, closed at the end if still empty;
    /// `true` for those it created (counted against `max_rooms_per_connection`).
    touched_rooms: Vec<(Arc<Room>, bool)>,
    /// Grants of the access token, when tokens are required.
    claims: Option<Claims>,
    /// Recent answers, for re-sent requests.
    cache: RequestCache,
    /// The session token handed out at `joinRoom`.
    token: Option<String>,
    /// Token changes the resume registry has not seen yet.
    token_changes: Vec<TokenChange>,
    /// `p2pSignal` rate and numbering, from the first one after `joinRoom`.
    p2p: Option<p2p::P2pRelay>,
}

/// The answer's data, or the error.
type Answer = Result<Value, SignalError>;

/// An answer from its proto struct.
fn reply<T: Serialize>(answer: &T) -> Answer {
    serde_json::to_value(answer).map_err(|e| SignalError::internal(format!("answer: {e}")))
}

/// The empty answer `{}`.
fn done() -> Answer {
    reply(&Empty {})
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
            token_changes: Vec::new(),
            p2p: None,
        }
    }

    /// The link to the session's connection.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Whether the session's peer is in a room (after forgetting a room the hub closed).
    pub fn is_joined(&mut self) -> bool {
        self.forget_closed_room();
        self.joined.is_some()
    }

    /// The peer id, once joined.
    pub fn peer_id(&self) -> Option<String> {
        self.joined.as_ref().map(|(_, p)| p.clone())
    }

    /// The token changes since the last call, for the resume registry.
    pub fn take_token_changes(&mut self) -> Vec<TokenChange> {
        std::mem::take(&mut self.token_changes)
    }

    fn revoke_token(&mut self) {
        if let Some(token) = self.token.take() {
            self.token_changes.push(TokenChange::Revoked(token));
        }
    }

    /// Forgets the room, without notifying anyone, when the hub closed it (and removed the
    /// peer with it).
    fn forget_closed_room(&mut self) {
        if self.notifier.take_room_closed() {
            self.joined = None;
            self.touched_rooms.clear();
            self.revoke_token();
        }
    }

    /// Handles one text frame.
    pub async fn handle_text(&mut self, text: &str) -> Frame {
        self.forget_closed_room();
        let request = match Message::parse(text) {
            Ok(Message::Request(r)) => r,
            // Responses and notifications from a client have no meaning here.
            Ok(_) => return Frame::Ignored,
            Err(e) => {
                tracing::debug!("unparsable frame: {e}");
                return Frame::Invalid(
                    e.id()
                        .map(|id| SignalError::bad_request(e.to_string()).to_response(id)),
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
        let method = Method::from_name(&request.method);
        let started = std::time::Instant::now();
        let result = match method {
            Some(m) => self.dispatch(m, &request.data).await,
            None => Err(RequestError::UnknownMethod(request.method.clone()).into()),
        };
        let code = result.as_ref().map_or_else(|e| e.code.code(), |_| 200);
        let took = started.elapsed();
        tracing::debug!(
            method = %request.method,
            id = request.id,
            code,
            took_us = took.as_micros() as u64,
            "request answered"
        );
        self.hub
            .request_stats()
            .record(&request.method, method.is_some(), code, took);
        let answer = match result {
            Ok(data) => Message::ok(request.id, data).to_canonical_json(),
            Err(e) => {
                tracing::debug!(method = %request.method, code = %e.code, reason = %e.reason, "request failed");
                e.to_response(request.id)
            }
        };
        self.cache
            .store(request.id, &request.method, &request.data, answer.clone());
        Frame::Answer(answer)
    }

    /// Runs one request. A room request before `joinRoom` is refused before the data is
    /// read; then the data is read once into a [`SignalRequest`].
    async fn dispatch(&mut self, method: Method, data: &Value) -> Answer {
        if method.is_in_room() && self.joined.is_none() {
            return Err(SignalError::conflict("joinRoom first"));
        }
        match SignalRequest::parse_data(method, data, &self.hub.config().limits.input)? {
            SignalRequest::Ping => done(),
            SignalRequest::CreateRoom(req) => self.create_room(req).await,
            SignalRequest::GetRouterRtpCapabilities(req) => {
                self.get_router_rtp_capabilities(req).await
            }
            SignalRequest::JoinRoom(req) => self.join_room(req).await,
            SignalRequest::LeaveRoom => {
                if self.joined.is_none() {
                    return Err(SignalError::conflict("not in a room"));
                }
                self.leave().await;
                done()
            }
            request => {
                let (room, peer_id) = self
                    .joined
                    .clone()
                    .ok_or_else(|| SignalError::conflict("joinRoom first"))?;
                self.dispatch_in_room(request, &room, &peer_id).await
            }
        }
    }

    // ----- rooms and peers --------------------------------------------------------------

    async fn create_room(&mut self, req: CreateRoomRequest) -> Answer {
        if let Some(claims) = &self.claims
            && claims.room != req.room_id
        {
            return Err(SignalError::forbidden(format!(
                "roomId: the token is for room {:?}",
                claims.room
            )));
        }
        if self.hub.room(&req.room_id).is_none() {
            // Closed rooms are forgotten; the open ones nobody joined count.
            let hub = &self.hub;
            self.touched_rooms.retain(|(room, _)| !room.is_closed());
            let unjoined = self
                .touched_rooms
                .iter()
                .filter(|(room, created)| *created && hub.is_open_and_empty(room))
                .count();
            let max = hub.config().limits.max_rooms_per_connection;
            if unjoined >= max {
                return Err(SignalError::too_many(format!(
                    "limit reached: {max} rooms created by this connection and not joined"
                )));
            }
        }
        let (room, created) = self.hub.get_or_create_room(&req.room_id).await?;
        let answer = reply(&CreateRoomResponse {
            room_id: room.id.clone(),
            rtp_capabilities: room.routers.rtp_capabilities().clone(),
        });
        if !self
            .touched_rooms
            .iter()
            .any(|(r, _)| Arc::ptr_eq(r, &room))
        {
            self.touched_rooms.push((room, created));
        }
        answer
    }

    async fn get_router_rtp_capabilities(&mut self, req: CreateRoomRequest) -> Answer {
        let room = self
            .hub
            .room(&req.room_id)
            .ok_or_else(|| SignalError::not_found("room"))?;
        reply(&GetRouterRtpCapabilitiesResponse {
            rtp_capabilities: room.routers.rtp_capabilities().clone(),
        })
    }

    async fn join_room(&mut self, req: JoinRoomRequest) -> Answer {
        let joined_at = std::time::Instant::now();
        if self.joined.is_some() {
            return Err(SignalError::conflict("already joined a room"));
        }
        if self.hub.is_draining() {
            return Err(SignalError::unavailable("server shutting down"));
        }
        if let Some(claims) = &self.claims {
            if claims.room != req.room_id {
                return Err(SignalError::forbidden(format!(
                    "roomId: the token is for room {:?}",
                    claims.room
                )));
            }
            if req.peer_id.as_ref().is_some_and(|p| *p != claims.sub) {
                return Err(SignalError::forbidden(
                    "peerId: differs from the token's subject",
                ));
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
        // A token's subject is checked like a peerId sent in the request.
        let max_id = self.hub.config().limits.input.max_id_chars;
        if peer_id.is_empty() || peer_id.chars().nth(max_id).is_some() {
            return Err(SignalError::bad_request(format!(
                "peerId: must be 1..{max_id} characters"
            )));
        }
        let display_name = req.display_name.clone().unwrap_or_default();
        let app_data = req.app_data.clone();
        let max_node_peers = self.hub.config().limits.max_node_peers;
        if max_node_peers > 0 && self.hub.peer_count() >= max_node_peers {
            return Err(SignalError::unavailable(format!(
                "node over capacity: {max_node_peers} peers"
            )));
        }
        // In a cluster the peer is registered for every node first: the cluster checks the
        // peer id and the room's size over all nodes and answers the peers elsewhere.
        let remote = match self.hub.cluster() {
            Some(cluster) => {
                let peer = ClusterPeer {
                    peer_id: peer_id.clone(),
                    display_name: display_name.clone(),
                    app_data: app_data.clone(),
                    node: cluster.node_id().to_owned(),
                    producers: Vec::new(),
                };
                let max = self.hub.config().limits.max_peers_per_room;
                cluster.join(&req.room_id, &peer, max).await?
            }
            None => Vec::new(),
        };
        let joined = self
            .join_local(&req, &peer_id, &display_name, &app_data, joined_at)
            .await;
        let (room, mut peers) = match joined {
            Ok(joined) => joined,
            Err(e) => {
                if let Some(cluster) = self.hub.cluster() {
                    cluster.leave(&req.room_id, &peer_id).await;
                }
                return Err(e);
            }
        };
        // Read again now that the peer is in the local room and hears the cluster's
        // events: a peer that joined or left elsewhere since `join` is listed as it is
        // now, never missed (at worst its `peerJoined` also arrives).
        let remote = match self.hub.cluster() {
            Some(cluster) => cluster.peers(&req.room_id).await.unwrap_or(remote),
            None => remote,
        };
        // Peers on other nodes come with their producers, consumed here through pipes
        // (docs/cluster.md); their data producers are not listed (data stays on its node).
        room.remote().learn(&remote);
        peers.extend(remote.into_iter().map(|p| PeerInfo {
            peer_id: p.peer_id,
            display_name: p.display_name,
            app_data: p.app_data,
            producers: p.producers,
            data_producers: Vec::new(),
        }));
        room.broadcast(
            &peer_id,
            &ServerNotification::PeerJoined(PeerJoinedNotification {
                peer_id: peer_id.clone(),
                display_name,
                app_data,
            }),
        );
        tracing::info!(room = %room.id, peer = %peer_id, "peer joined");
        self.joined = Some((room, peer_id.clone()));
        self.p2p = None;
        let session_token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.token = Some(session_token.clone());
        self.token_changes
            .push(TokenChange::Issued(session_token.clone()));
        reply(&JoinRoomResponse {
            peer_id,
            session_token,
            peers,
        })
    }

    /// Adds the peer to the room on this server (creating the room if needed); the room
    /// and the peers already in it here.
    async fn join_local(
        &mut self,
        req: &JoinRoomRequest,
        peer_id: &str,
        display_name: &str,
        app_data: &Value,
        joined_at: std::time::Instant,
    ) -> Result<(Arc<Room>, Vec<PeerInfo>), SignalError> {
        loop {
            let (room, _) = self.hub.get_or_create_room(&req.room_id).await?;
            let mut peers = room.peers();
            // Closed (emptied, expired) since it was looked up: get the room anew.
            if room.is_closed() {
                continue;
            }
            if peers.contains_key(peer_id) {
                return Err(SignalError::conflict(format!(
                    "peerId {peer_id} already in the room"
                )));
            }
            let max = self.hub.config().limits.max_peers_per_room;
            if peers.len() >= max {
                return Err(SignalError::too_many(format!("room full: {max} peers")));
            }
            let others: Vec<PeerInfo> = peers.values().map(peer_info).collect();
            peers.insert(
                peer_id.to_owned(),
                Peer {
                    id: peer_id.to_owned(),
                    display_name: display_name.to_owned(),
                    app_data: app_data.clone(),
                    rtp_capabilities: req.rtp_capabilities.clone(),
                    notifier: self.notifier.clone(),
                    transports: Default::default(),
                    producers: Default::default(),
                    consumers: Default::default(),
                    data_producers: Default::default(),
                    data_consumers: Default::default(),
                    joined_at,
                },
            );
            drop(peers);
            return Ok((room, others));
        }
    }

    /// Ends the session: leaves the room and closes rooms it created that nobody joined.
    pub async fn close(&mut self) {
        self.forget_closed_room();
        self.leave().await;
        for (room, _) in std::mem::take(&mut self.touched_rooms) {
            self.hub.close_room_if_empty(&room).await;
        }
    }

    /// Removes this session's peer and everything it owns, and tells the others.
    pub async fn leave(&mut self) {
        self.revoke_token();
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
        for id in peer.data_consumers.keys() {
            self.hub.remove_route(id.0);
        }
        for id in peer.data_producers.keys() {
            self.hub.remove_route(id.0);
        }
        for id in peer.transports.keys() {
            self.hub.remove_route(id.0);
            match room.routers.close_transport(*id).await {
                Ok(closed) => self.after_close(&room, &peer_id, &closed),
                Err(e) => tracing::warn!(transport = %id, "closing transport on leave: {e}"),
            }
        }
        room.broadcast(
            &peer_id,
            &ServerNotification::PeerLeft(PeerLeftNotification {
                peer_id: peer_id.clone(),
            }),
        );
        if let Some(cluster) = self.hub.cluster() {
            cluster.leave(&room.id, &peer_id).await;
        }
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
            room.announce(
                peer_id,
                ProducerChange::Closed {
                    producer_id: pid.to_string(),
                },
            );
            room.broadcast(
                peer_id,
                &ServerNotification::ProducerClosed(ProducerPeerNotification {
                    producer_id: pid.to_string(),
                    peer_id: peer_id.to_owned(),
                }),
            );
        }
        // The peer that closed its own transport is not told of its consumers on it.
        self.hub
            .forget_consumers(room, &closed.consumers, |peer, c| {
                if peer.id == peer_id && closed.producers.is_empty() {
                    None
                } else if closed.producers.contains(&c.producer_id) {
                    Some("producerClosed")
                } else {
                    Some("transportClosed")
                }
            });
        self.after_data_close(
            room,
            peer_id,
            &closed.data_producers,
            &closed.data_consumers,
        );
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
            return Err(SignalError::too_many(format!(
                "limit reached: {max} {what} per peer"
            )));
        }
        Ok(())
    }
}

/// A peer as the `joinRoom` answer lists it.
fn peer_info(p: &Peer) -> PeerInfo {
    PeerInfo {
        peer_id: p.id.clone(),
        display_name: p.display_name.clone(),
        app_data: p.app_data.clone(),
        producers: p.producer_infos(),
        data_producers: p
            .data_producers
            .iter()
            .map(|(id, info)| signaling::DataProducerInfo {
                data_producer_id: id.to_string(),
                label: info.label.clone(),
                protocol: info.protocol.clone(),
                app_data: info.app_data.clone(),
            })
            .collect(),
    }
}
