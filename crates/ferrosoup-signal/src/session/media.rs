//! Requests inside a joined room: transports, producers, consumers, stats. A peer acts
//! only on its own objects (404 otherwise); the one exception is `consume`, which takes
//! any producer of the room.

use std::sync::Arc;

use ferrosoup_proto::signaling::{
    ConsumeRequest, ConsumeResponse, CreateTransportRequest, CreateTransportResponse,
    GetProducersResponse, IdResponse, Method, ProduceRequest, ProducerIdRequest,
    RestartIceResponse, ServerNotification, SignalRequest, StatsResponse, TransportDirection,
};
use ferrosoup_room::{ConsumerId, ProducerId, TransportId, TransportUse};

use super::{Answer, Session, done, reply, room_producer};
use crate::cluster::ProducerChange;
use crate::error::SignalError;
use crate::hub::{Direction, ProducerInfo, Room};

fn parse_id<T>(s: &str, what: &str, f: fn(&str) -> Option<T>) -> Result<T, SignalError> {
    f(s).ok_or_else(|| SignalError::not_found(what))
}

impl Session {
    /// Runs a request on the room `peer_id` joined.
    pub(super) async fn dispatch_in_room(
        &mut self,
        request: SignalRequest,
        room: &Arc<Room>,
        peer_id: &str,
    ) -> Answer {
        let method = request.method();
        match request {
            SignalRequest::CreateTransport(req) => self.create_transport(room, peer_id, req).await,
            SignalRequest::ConnectTransport(req) => {
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                room.routers
                    .router_of_transport(id)
                    .connect_transport(id, &req.dtls_parameters)
                    .await?;
                done()
            }
            SignalRequest::RestartIce(req) => {
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                let ice_parameters = room.routers.router_of_transport(id).restart_ice(id).await?;
                reply(&RestartIceResponse { ice_parameters })
            }
            SignalRequest::SetMaxIncomingBitrate(req) => {
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                room.routers
                    .router_of_transport(id)
                    .set_max_incoming_bitrate(id, req.bitrate)
                    .await?;
                done()
            }
            SignalRequest::CloseTransport(req) => {
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                let closed = room.routers.close_transport(id).await?;
                if let Some(peer) = room.peers().get_mut(peer_id) {
                    peer.transports.remove(&id);
                }
                self.hub.remove_route(id.0);
                self.after_close(room, peer_id, &closed);
                done()
            }
            SignalRequest::Produce(req) => self.produce(room, peer_id, req).await,
            SignalRequest::PauseProducer(req) => {
                self.set_producer_paused(room, peer_id, req, true).await
            }
            SignalRequest::ResumeProducer(req) => {
                self.set_producer_paused(room, peer_id, req, false).await
            }
            SignalRequest::CloseProducer(req) => {
                let id = self.own_producer(room, peer_id, &req.producer_id)?;
                let closed = room.routers.close_producer(id).await?;
                if let Some(peer) = room.peers().get_mut(peer_id) {
                    peer.producers.remove(&id);
                }
                self.after_close(room, peer_id, &closed);
                done()
            }
            SignalRequest::GetProducers => {
                let peers = room.peers();
                let producers = peers
                    .values()
                    .filter(|p| p.id != peer_id)
                    .flat_map(|p| {
                        p.producers
                            .iter()
                            .map(move |(id, info)| room_producer(*id, &p.id, info))
                    })
                    .chain(
                        room.remote()
                            .producers()
                            .iter()
                            .map(|(id, p)| room_producer(*id, &p.peer_id, &p.info)),
                    )
                    .collect();
                reply(&GetProducersResponse { producers })
            }
            SignalRequest::Consume(req) => self.consume(room, peer_id, req).await,
            SignalRequest::PauseConsumer(req) | SignalRequest::ResumeConsumer(req) => {
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.routers
                    .router_of_consumer(id)
                    .set_consumer_paused(id, method == Method::PauseConsumer)
                    .await?;
                done()
            }
            SignalRequest::CloseConsumer(req) => {
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.routers.close_consumer(id).await?;
                if let Some(peer) = room.peers().get_mut(peer_id) {
                    peer.consumers.remove(&id);
                }
                self.hub.remove_route(id.0);
                done()
            }
            SignalRequest::SetConsumerPreferredLayers(req) => {
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.routers
                    .router_of_consumer(id)
                    .set_consumer_preferred_layers(id, req.spatial_layer, req.temporal_layer)
                    .await?;
                done()
            }
            SignalRequest::SetConsumerPriority(req) => {
                if req.priority == 0 {
                    return Err(SignalError::bad_request("priority: must be 1..255"));
                }
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.routers
                    .router_of_consumer(id)
                    .set_consumer_priority(id, req.priority)
                    .await?;
                done()
            }
            SignalRequest::RequestConsumerKeyFrame(req) => {
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                room.routers
                    .router_of_consumer(id)
                    .request_consumer_key_frame(id)
                    .await?;
                done()
            }
            SignalRequest::GetTransportStats(req) => {
                let id = self.own_transport(room, peer_id, &req.transport_id)?.0;
                let router = room.routers.router_of_transport(id);
                reply(&StatsResponse::from(router.transport_stats(id).await?))
            }
            SignalRequest::GetProducerStats(req) => {
                let id = self.own_producer(room, peer_id, &req.producer_id)?;
                let router = room.routers.router_of_producer(id);
                reply(&StatsResponse::from(router.producer_stats(id).await?))
            }
            SignalRequest::GetConsumerStats(req) => {
                let id = self.own_consumer(room, peer_id, &req.consumer_id)?;
                let router = room.routers.router_of_consumer(id);
                reply(&StatsResponse::from(router.consumer_stats(id).await?))
            }
            SignalRequest::ProduceData(req) => self.produce_data(room, peer_id, req).await,
            SignalRequest::ConsumeData(req) => self.consume_data(room, peer_id, req).await,
            SignalRequest::CloseDataProducer(req) => {
                self.close_data_producer(room, peer_id, req).await
            }
            SignalRequest::CloseDataConsumer(req) => {
                self.close_data_consumer(room, peer_id, req).await
            }
            SignalRequest::P2pSignal(req) => self.p2p_signal(room, peer_id, req),
            SignalRequest::CreateRoom(_)
            | SignalRequest::GetRouterRtpCapabilities(_)
            | SignalRequest::JoinRoom(_)
            | SignalRequest::LeaveRoom
            | SignalRequest::Ping => Err(SignalError::internal(format!(
                "{method} is not a room request"
            ))),
        }
    }

    // ----- ownership checks -------------------------------------------------------------

    pub(super) fn own_transport(
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
        // A receiving transport may go to another worker of a big room; it is expected
        // to consume the room's producers.
        let usage = if direction == Direction::Recv {
            TransportUse::ReceiveOnly {
                expected_consumers: room_producer_count(room),
            }
        } else {
            TransportUse::Home
        };
        let params = room
            .routers
            .create_webrtc_transport(
                self.hub.pool(),
                usage,
                ferrosoup_room::router::CandidateOptions {
                    force_tcp: req.force_tcp,
                    prefer_tcp: req.prefer_tcp,
                },
            )
            .await?;
        let joined_at = match room.peers().get_mut(peer_id) {
            Some(peer) => {
                peer.transports.insert(params.id, direction);
                Some(peer.joined_at)
            }
            None => None,
        };
        let Some(joined_at) = joined_at else {
            let _ = room.routers.close_transport(params.id).await;
            return Err(SignalError::conflict("peer left"));
        };
        self.hub.add_route(params.id.0, self.notifier.clone());
        self.hub
            .request_stats()
            .transport_created(params.id.0, joined_at);
        let sctp_parameters = match req.sctp_capabilities {
            Some(_) => Some(
                room.routers
                    .router_of_transport(params.id)
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

    async fn produce(&mut self, room: &Arc<Room>, peer_id: &str, req: ProduceRequest) -> Answer {
        if self.claims.as_ref().is_some_and(|c| !c.can_publish) {
            return Err(SignalError::forbidden(
                "the token does not allow publishing",
            ));
        }
        let (transport_id, direction) = self.own_transport(room, peer_id, &req.transport_id)?;
        if direction == Direction::Recv {
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
            .routers
            .produce(transport_id, req.kind, req.rtp_parameters, paused)
            .await?;
        let info = ProducerInfo {
            kind: req.kind,
            app_data: req.app_data,
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
            let _ = room.routers.close_producer(id).await;
            return Err(SignalError::conflict("transport closed"));
        }
        self.hub.add_route(id.0, self.notifier.clone());
        room.broadcast(
            peer_id,
            &ServerNotification::NewProducer(room_producer(id, peer_id, &info)),
        );
        room.announce(
            peer_id,
            ProducerChange::Opened(ferrosoup_proto::signaling::ProducerInfo {
                producer_id: id.to_string(),
                kind: info.kind,
                app_data: info.app_data,
                paused,
            }),
        );
        reply(&IdResponse { id: id.to_string() })
    }

    /// `pauseProducer` / `resumeProducer`: the room hears of it, and the owners of its
    /// consumers get `consumerPaused` / `consumerResumed`.
    async fn set_producer_paused(
        &mut self,
        room: &Arc<Room>,
        peer_id: &str,
        req: ProducerIdRequest,
        paused: bool,
    ) -> Answer {
        let id = self.own_producer(room, peer_id, &req.producer_id)?;
        let changed = room.routers.set_producer_paused(id, paused).await?;
        if let Some(p) = room
            .peers()
            .get_mut(peer_id)
            .and_then(|p| p.producers.get_mut(&id))
        {
            p.paused = paused;
        }
        room.broadcast_producer_paused(peer_id, id.to_string(), peer_id.to_owned(), paused);
        room.announce(
            peer_id,
            ProducerChange::Paused {
                producer_id: id.to_string(),
                paused,
            },
        );
        room.notify_consumers_paused(&changed, paused);
        done()
    }

    async fn consume(&mut self, room: &Arc<Room>, peer_id: &str, req: ConsumeRequest) -> Answer {
        if self.claims.as_ref().is_some_and(|c| !c.can_subscribe) {
            return Err(SignalError::forbidden(
                "the token does not allow subscribing",
            ));
        }
        let (transport_id, direction) = self.own_transport(room, peer_id, &req.transport_id)?;
        if direction == Direction::Send {
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
        let local = room
            .peers()
            .values()
            .any(|p| p.producers.contains_key(&producer_id));
        if !local {
            // A producer of a peer on another node: consumed through its pipe (404 when
            // the room knows no such producer).
            self.hub.pipe_in(room, producer_id).await?;
        }
        let caps = {
            let peers = room.peers();
            match req
                .rtp_capabilities
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
            .routers
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
            let _ = room.routers.close_consumer(params.id).await;
            return Err(SignalError::conflict("transport closed"));
        }
        self.hub.add_route(params.id.0, self.notifier.clone());
        reply(&ConsumeResponse {
            id: params.id.to_string(),
            producer_id: producer_id.to_string(),
            kind: params.kind,
            rtp_parameters: params.rtp_parameters,
            r#type: params.consumer_type,
            producer_paused: params.producer_paused,
        })
    }
}

/// Producers a new subscriber of `room` is expected to consume: every producer of its
/// peers here and on other nodes.
fn room_producer_count(room: &Room) -> usize {
    let local: usize = room.peers().values().map(|p| p.producers.len()).sum();
    local + room.remote().producers().len()
}
