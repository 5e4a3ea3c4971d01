//! The ferrosoup room manager: worker threads that own all media state, and the async
//! handles the control path uses to drive them.
//!
//! - [`WorkerPool`] starts `NUM_WORKERS` threads, each with its own event loop and UDP
//!   socket, and creates [`Router`]s on them round-robin.
//! - A [`Router`] is one room's media domain: WebRTC transports, producers and consumers
//!   live on its worker. Its async methods validate input (ORTC) on the caller's task and
//!   then run one closure on the worker; the media path itself never leaves the worker
//!   thread, never locks and never allocates per packet.
//! - Workers report [`MediaEvent`]s (state changes, scores, layer changes) on a channel.

pub mod allocator;
pub mod arena;
pub mod consumer;
pub mod data;
pub mod engine;
pub mod error;
pub mod events;
pub mod forwarder;
pub mod ids;
pub mod layers;
pub mod pacer;
pub mod placement;
pub mod plain;
pub mod plain_sockets;
pub mod producer;
pub mod room_routers;
pub mod router;
pub mod settings;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod tcp;
pub mod thread_cpu;
pub mod timers;
pub mod transmit;
pub mod transport;
pub mod udp;
pub mod worker;
pub mod worker_pipe;

pub use engine::{Closed, ClosedConsumer, ClosedDataConsumer, Engine};
pub use error::RoomError;
pub use events::MediaEvent;
pub use ids::{ConsumerId, DataConsumerId, DataProducerId, ProducerId, RouterId, TransportId};
pub use room_routers::{RoomRouters, Spread, TransportUse};
pub use router::{ConsumerParams, Router, WebRtcTransportParams, WorkerPipe, WorkerPool};
pub use settings::WorkerSettings;
pub use stats::WorkerCounters;
