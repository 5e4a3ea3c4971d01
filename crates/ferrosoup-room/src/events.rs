//! Events a worker reports to the control path (never per packet).

use crate::ids::{ConsumerId, ProducerId, RouterId, TransportId};
use ferrosoup_proto::transport::{DtlsState, IceState};

/// Something that happened inside a worker that clients may need to hear about.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    /// ICE or DTLS state of a transport changed.
    TransportStateChanged {
        /// The transport.
        transport_id: TransportId,
        /// Its ICE state.
        ice_state: IceState,
        /// Its DTLS state.
        dtls_state: DtlsState,
    },
    /// ICE has been disconnected for longer than the configured timeout.
    IceRestartRequired {
        /// The transport.
        transport_id: TransportId,
    },
    /// The layers a consumer forwards changed (`None`: nothing is forwarded).
    ConsumerLayersChanged {
        /// The consumer.
        consumer_id: ConsumerId,
        /// Spatial layer now forwarded.
        spatial_layer: Option<u8>,
        /// Temporal layer now forwarded.
        temporal_layer: Option<u8>,
    },
    /// A producer's score changed.
    ProducerScore {
        /// The producer.
        producer_id: ProducerId,
        /// 0..10.
        score: u8,
    },
    /// The loudest audio producer of a router changed.
    ActiveSpeaker {
        /// The router.
        router_id: RouterId,
        /// The producer now loudest.
        producer_id: ProducerId,
        /// Its average level in dBov (-127..0).
        volume: i8,
    },
    /// A worker panicked and restarted with empty state: these routers (and everything in
    /// them) are gone.
    WorkerRestarted {
        /// Index of the worker.
        worker: usize,
        /// The routers it had.
        routers: Vec<RouterId>,
    },
    /// The other side of a pipe between workers closed (its producer, transport or router
    /// closed, or its worker restarted): this side's pipe transport is closed, with the
    /// pipe producer or consumer on it (and a pipe producer's consumers).
    WorkerPipeClosed {
        /// The router of this side.
        router_id: RouterId,
        /// This side's pipe transport.
        transport_id: TransportId,
        /// What closed with it.
        closed: crate::engine::Closed,
    },
    /// A consumer's score changed.
    ConsumerScore {
        /// The consumer.
        consumer_id: ConsumerId,
        /// 0..10.
        score: u8,
        /// Score of the stream it forwards.
        producer_score: u8,
    },
}
