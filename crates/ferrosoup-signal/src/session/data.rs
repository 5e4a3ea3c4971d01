//! Data channel requests: `produceData` (with the `canPublishData` grant), `consumeData`
//! (any data producer of the room), `closeDataProducer`, `closeDataConsumer`, and the
//! notifications that follow (`newDataProducer`, `dataProducerClosed`,
//! `dataConsumerClosed`).

use std::sync::Arc;

use ferrosoup_proto::signaling::{
    ConsumeDataRequest, ConsumeDataResponse, DataConsumerIdRequest, DataProducerIdRequest,
    IdResponse, NewDataProducerNotification, ProduceDataRequest, ServerNotification,
};
use ferrosoup_room::{ClosedDataConsumer, DataConsumerId, DataProducerId};

use super::{Answer, Session, done, reply};
use crate::error::SignalError;
use crate::hub::{DataProducerInfo, Direction, Room};

impl Session {
    pub(super) async fn produce_data(
        &mut self,
        room: &Arc<Room>,
        peer_id: &str,
        req: ProduceDataRequest,
    ) -> Answer {
        if self.claims.as_ref().is_some_and(|c| !c.can_publish_data) {
            return Err(SignalError::forbidden(
                "the token does not allow publishing data",
            ));
        }
        let (transport_id, direction) = self.own_transport(room, peer_id, &req.transport_id)?;
        if direction != Direction::Send {
            return Err(SignalError::conflict("transportId: not a send transport"));
        }
        let limits = &self.hub.config().limits;
        self.check_quota(
            room,
            peer_id,
            "data producers",
            |p| p.data_producers.len(),
            limits.max_producers_per_peer,
        )?;
        let id = room
            .routers
            .router_of_transport(transport_id)
            .produce_data(
                transport_id,
                &req.sctp_stream_parameters,
                limits.max_data_messages_per_second,
            )
            .await?;
        let info = DataProducerInfo {
            label: req.label,
            protocol: req.protocol,
            app_data: req.app_data,
        };
        let registered = match room.peers().get_mut(peer_id) {
            Some(peer) if peer.transports.contains_key(&transport_id) => {
                peer.data_producers.insert(id, info.clone());
                true
            }
            _ => false,
        };
        if !registered {
            let _ = room.routers.close_data_producer(id).await;
            return Err(SignalError::conflict("transport closed"));
        }
        self.hub.add_route(id.0, self.notifier.clone());
        room.broadcast(
            peer_id,
            &ServerNotification::NewDataProducer(NewDataProducerNotification {
                data_producer_id: id.to_string(),
                peer_id: peer_id.to_owned(),
                label: info.label,
                protocol: info.protocol,
                app_data: info.app_data,
            }),
        );
        reply(&IdResponse { id: id.to_string() })
    }

    pub(super) async fn consume_data(
        &mut self,
        room: &Arc<Room>,
        peer_id: &str,
        req: ConsumeDataRequest,
    ) -> Answer {
        if self.claims.as_ref().is_some_and(|c| !c.can_subscribe) {
            return Err(SignalError::forbidden(
                "the token does not allow subscribing",
            ));
        }
        let (transport_id, direction) = self.own_transport(room, peer_id, &req.transport_id)?;
        if direction != Direction::Recv {
            return Err(SignalError::conflict("transportId: not a recv transport"));
        }
        self.check_quota(
            room,
            peer_id,
            "data consumers",
            |p| p.data_consumers.len(),
            self.hub.config().limits.max_consumers_per_peer,
        )?;
        let data_producer_id = DataProducerId::parse(&req.data_producer_id)
            .ok_or_else(|| SignalError::not_found("data producer"))?;
        let info = room
            .peers()
            .values()
            .find_map(|p| p.data_producers.get(&data_producer_id).cloned())
            .ok_or_else(|| SignalError::not_found("data producer"))?;
        let (id, sctp_stream_parameters) = room
            .routers
            .consume_data(transport_id, data_producer_id)
            .await?;
        let registered = match room.peers().get_mut(peer_id) {
            Some(peer) if peer.transports.contains_key(&transport_id) => {
                peer.data_consumers.insert(id, data_producer_id);
                true
            }
            _ => false,
        };
        if !registered {
            let _ = room.routers.close_data_consumer(id).await;
            return Err(SignalError::conflict("transport closed"));
        }
        self.hub.add_route(id.0, self.notifier.clone());
        reply(&ConsumeDataResponse {
            id: id.to_string(),
            data_producer_id: data_producer_id.to_string(),
            sctp_stream_parameters,
            label: info.label,
            protocol: info.protocol,
            app_data: info.app_data,
        })
    }

    pub(super) async fn close_data_producer(
        &mut self,
        room: &Arc<Room>,
        peer_id: &str,
        req: DataProducerIdRequest,
    ) -> Answer {
        let id = DataProducerId::parse(&req.data_producer_id)
            .filter(|id| {
                room.peers()
                    .get(peer_id)
                    .is_some_and(|p| p.data_producers.contains_key(id))
            })
            .ok_or_else(|| SignalError::not_found("data producer"))?;
        let consumers = room.routers.close_data_producer(id).await?;
        let consumers: Vec<_> = consumers
            .into_iter()
            .map(|data_consumer_id| ClosedDataConsumer {
                data_consumer_id,
                data_producer_id: id,
            })
            .collect();
        self.after_data_close(room, peer_id, &[id], &consumers);
        done()
    }

    pub(super) async fn close_data_consumer(
        &mut self,
        room: &Arc<Room>,
        peer_id: &str,
        req: DataConsumerIdRequest,
    ) -> Answer {
        let id = DataConsumerId::parse(&req.data_consumer_id)
            .filter(|id| {
                room.peers()
                    .get(peer_id)
                    .is_some_and(|p| p.data_consumers.contains_key(id))
            })
            .ok_or_else(|| SignalError::not_found("data consumer"))?;
        room.routers.close_data_consumer(id).await?;
        if let Some(peer) = room.peers().get_mut(peer_id) {
            peer.data_consumers.remove(&id);
        }
        self.hub.remove_route(id.0);
        done()
    }

    /// Forgets data producers of `peer_id` and data consumers closed with them (or with a
    /// transport) and tells the room: `dataProducerClosed` to the other peers,
    /// `dataConsumerClosed` to each closed data consumer's owner but the one whose own
    /// request closed it.
    pub(super) fn after_data_close(
        &self,
        room: &Room,
        peer_id: &str,
        producers: &[DataProducerId],
        consumers: &[ClosedDataConsumer],
    ) {
        for id in producers {
            self.hub.remove_route(id.0);
            if let Some(peer) = room.peers().get_mut(peer_id) {
                peer.data_producers.remove(id);
            }
            room.broadcast(
                peer_id,
                &ServerNotification::DataProducerClosed(DataProducerIdRequest {
                    data_producer_id: id.to_string(),
                }),
            );
        }
        self.hub.forget_data_consumers(room, consumers, |peer, c| {
            peer.id != peer_id || producers.contains(&c.data_producer_id)
        });
    }
}
