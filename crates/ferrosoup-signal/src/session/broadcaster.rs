//! A broadcaster (mediasoup-demo's HTTP API) is a session without a connection: it joins
//! as a peer the others see, its requests go through the same checks and limits as a
//! WebSocket peer's, and its transports may be plain RTP ones, usable to send and receive.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::{Value, json};

use ferrosoup_proto::broadcaster::{
    BroadcasterPeerInfo, BroadcasterProducerInfo, BroadcasterTransportType,
    ConnectBroadcasterTransportRequest, CreateBroadcasterProducerRequest, CreateBroadcasterRequest,
    CreateBroadcasterResponse, CreateBroadcasterTransportRequest, PlainTransportResponse,
    SrtpCryptoSuite,
};
use ferrosoup_proto::signaling::{CreateTransportResponse, JoinRoomRequest, Method};
use ferrosoup_room::engine::PlainRemote;
use ferrosoup_room::plain::PlainOptions;
use ferrosoup_room::router::CandidateOptions;

use super::{Answer, Session, done, reply};
use crate::error::SignalError;
use crate::hub::{Direction, Room};
use crate::srtp_keys;

/// A body read into its type; 400 naming what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SignalError> {
    serde_json::from_slice(body).map_err(|e| SignalError::bad_request(format!("body: {e}")))
}

impl Session {
    /// Joins `room_id` as a broadcaster: a peer with `appData.device` (flag
    /// `broadcaster`). Answers the other peers and the producers it can consume, when it
    /// gave `rtpCapabilities`.
    pub async fn join_as_broadcaster(
        &mut self,
        room_id: &str,
        req: CreateBroadcasterRequest,
    ) -> Answer {
        if req.display_name.is_empty() {
            return Err(SignalError::bad_request("displayName: empty"));
        }
        if req.device.name.is_empty() {
            return Err(SignalError::bad_request("device.name: empty"));
        }
        let mut device = json!({"flag": "broadcaster", "name": req.device.name});
        if let Some(version) = &req.device.version {
            device["version"] = Value::from(version.clone());
        }
        let join = JoinRoomRequest {
            room_id: room_id.to_owned(),
            peer_id: Some(req.id.clone()),
            display_name: Some(req.display_name),
            rtp_capabilities: req.rtp_capabilities.clone(),
            sctp_capabilities: None,
            app_data: json!({ "device": device }),
        };
        let data =
            serde_json::to_value(&join).map_err(|e| SignalError::internal(format!("join: {e}")))?;
        self.dispatch(Method::JoinRoom, &data).await?;
        let (room, peer_id) = self.broadcaster_room()?;
        let peers = match &req.rtp_capabilities {
            None => Vec::new(),
            Some(caps) => room
                .peers()
                .values()
                .filter(|p| p.id != peer_id)
                .map(|p| BroadcasterPeerInfo {
                    id: p.id.clone(),
                    display_name: p.display_name.clone(),
                    device: p.app_data.get("device").cloned().unwrap_or(json!({})),
                    producers: p
                        .producers
                        .iter()
                        .filter(|(id, _)| {
                            room.routers
                                .router_of_producer(**id)
                                .can_consume(**id, caps)
                        })
                        .map(|(id, info)| BroadcasterProducerInfo {
                            id: id.to_string(),
                            kind: info.kind,
                        })
                        .collect(),
                })
                .collect(),
        };
        reply(&CreateBroadcasterResponse { peers })
    }

    /// The broadcaster's room and peer id (409 once it left or its room closed).
    fn broadcaster_room(&mut self) -> Result<(Arc<Room>, String), SignalError> {
        self.forget_closed_room();
        self.joined
            .clone()
            .ok_or_else(|| SignalError::not_found("broadcaster"))
    }

    /// Creates a plain or WebRTC transport of the broadcaster (usable in both directions).
    pub async fn create_broadcaster_transport(
        &mut self,
        req: CreateBroadcasterTransportRequest,
    ) -> Answer {
        let (room, peer_id) = self.broadcaster_room()?;
        self.check_quota(
            &room,
            &peer_id,
            "transports",
            |p| p.transports.len(),
            self.hub.config().limits.max_transports_per_peer,
        )?;
        match req.r#type {
            BroadcasterTransportType::Plain => {
                let srtp = req.enable_srtp.then(|| {
                    srtp_keys::profile(
                        req.srtp_crypto_suite
                            .unwrap_or(SrtpCryptoSuite::AesCm128HmacSha1_80),
                    )
                });
                let options = PlainOptions {
                    comedia: req.comedia.unwrap_or(true),
                    rtcp_mux: req.rtcp_mux.unwrap_or(false),
                    srtp,
                };
                let params = room.routers.home().create_plain_transport(options).await?;
                self.register_transport(&room, &peer_id, params.id).await?;
                let srtp_parameters = params.srtp.as_ref().and_then(srtp_keys::to_parameters);
                reply(&PlainTransportResponse {
                    id: params.id.to_string(),
                    ip: params.ip.to_string(),
                    port: params.port,
                    rtcp_port: params.rtcp_port,
                    srtp_parameters,
                })
            }
            BroadcasterTransportType::Webrtc => {
                let params = room
                    .routers
                    .home()
                    .create_webrtc_transport(CandidateOptions::default())
                    .await?;
                self.register_transport(&room, &peer_id, params.id).await?;
                let sctp_parameters = match req.sctp_capabilities {
                    Some(_) => Some(
                        room.routers
                            .home()
                            .enable_sctp(params.id, self.hub.config().limits.max_data_message_bytes)
                            .await?,
                    ),
                    None => None,
                };
                reply(&CreateTransportResponse {
                    id: params.id.to_string(),
                    ice_parameters: params.ice_parameters,
                    ice_candidates: params.ice_candidates,
                    dtls_parameters: params.dtls_parameters,
                    sctp_parameters,
                })
            }
        }
    }

    /// Adds a new transport to the broadcaster's peer (closing it if the peer is gone).
    async fn register_transport(
        &self,
        room: &Room,
        peer_id: &str,
        id: ferrosoup_room::TransportId,
    ) -> Result<(), SignalError> {
        let registered = match room.peers().get_mut(peer_id) {
            Some(peer) => {
                peer.transports.insert(id, Direction::Both);
                true
            }
            None => false,
        };
        if !registered {
            let _ = room.routers.close_transport(id).await;
            return Err(SignalError::conflict("broadcaster left"));
        }
        self.hub.add_route(id.0, self.notifier.clone());
        Ok(())
    }

    /// Connects a broadcaster transport: a plain one to its remote address and SRTP key,
    /// a WebRTC one with DTLS parameters.
    pub async fn connect_broadcaster_transport(
        &mut self,
        transport_id: &str,
        req: ConnectBroadcasterTransportRequest,
    ) -> Answer {
        let (room, peer_id) = self.broadcaster_room()?;
        let id = self.own_transport(&room, &peer_id, transport_id)?.0;
        if let Some(dtls) = &req.dtls_parameters {
            room.routers.home().connect_transport(id, dtls).await?;
            return done();
        }
        let ip = match &req.ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| SignalError::bad_request("ip: not an IP address"))?,
            ),
            None => None,
        };
        if req.port == Some(0) || req.rtcp_port == Some(0) {
            return Err(SignalError::bad_request("port: must be 1..65535"));
        }
        let rtp = match (ip, req.port) {
            (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            (None, None) => None,
            _ => return Err(SignalError::bad_request("ip, port: give both")),
        };
        let srtp = req
            .srtp_parameters
            .as_ref()
            .map(srtp_keys::from_parameters)
            .transpose()?;
        let remote = PlainRemote {
            rtp,
            rtcp: rtp
                .zip(req.rtcp_port)
                .map(|(a, p)| SocketAddr::new(a.ip(), p)),
            srtp,
        };
        room.routers
            .home()
            .connect_plain_transport(id, remote)
            .await?;
        done()
    }

    /// A producer on a broadcaster transport (announced to the room as any peer's).
    pub async fn broadcaster_produce(
        &mut self,
        transport_id: &str,
        req: CreateBroadcasterProducerRequest,
    ) -> Answer {
        self.broadcaster_room()?;
        let data = json!({
            "transportId": transport_id,
            "kind": req.kind,
            "rtpParameters": req.rtp_parameters,
        });
        self.dispatch(Method::Produce, &data).await
    }

    /// A consumer on a broadcaster transport, not paused, with the broadcaster's
    /// `rtpCapabilities`.
    pub async fn broadcaster_consume(&mut self, transport_id: &str, producer_id: &str) -> Answer {
        let (room, peer_id) = self.broadcaster_room()?;
        let has_caps = room
            .peers()
            .get(&peer_id)
            .is_some_and(|p| p.rtp_capabilities.is_some());
        if !has_caps {
            return Err(SignalError::bad_request(
                "rtpCapabilities: the broadcaster gave none",
            ));
        }
        let data = json!({
            "transportId": transport_id,
            "producerId": producer_id,
            "paused": false,
        });
        self.dispatch(Method::Consume, &data).await
    }
}
