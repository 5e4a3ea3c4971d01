//! Rust client SDK for ferrosoup, shaped like mediasoup-client, on webrtc-rs 0.21.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrosoup_client::ClientError> {
//! use ferrosoup_client::{MediaKind, Peer, ProduceOptions};
//! let a = Peer::join("ws://127.0.0.1:3000/ws", "room", "alice").await?;
//! let send = a.create_send_transport().await?;
//! let producer = send.produce(MediaKind::Video, ProduceOptions::default()).await?;
//! producer.send(1, 3000, true, bytes::Bytes::from_static(b"frame")).await?;
//!
//! let b = Peer::join("ws://127.0.0.1:3000/ws", "room", "bob").await?;
//! let recv = b.create_recv_transport().await?;
//! let consumer = recv.consume(producer.id()).await?;
//! consumer.resume().await?;
//! let _packet = consumer.read_rtp().await;
//! # Ok(()) }
//! ```
//!
//! Data channels (mediasoup-client's `produceData` / `consumeData`): create the transports
//! with [`TransportOptions::data_channels`], then [`SendTransport::produce_data`] and
//! [`RecvTransport::consume_data`]; see [`data`].
//!
//! Behind a NAT or a firewall, give the transports the server's STUN/TURN servers:
//! `TransportOptions { ice_servers: fetch_ice_servers(url).await?, ..Default::default() }`
//! (`GET /api/ice-servers`; TURN credentials are made for the token in the URL).
//!
//! # How it talks to the server
//!
//! The server is ICE-lite and never sees SDP. Each transport wraps one webrtc-rs
//! PeerConnection whose remote description is built locally ([`sdp`]) from the
//! `createTransport` answer and the RTP parameters, as mediasoup-client's `RemoteSdp` does.
//! The client is always the ICE controlling agent and the DTLS client (`role: "client"` in
//! `connectTransport`); the server takes `a=setup:passive`.
//!
//! What webrtc-rs 0.21 does on the wire (servers must accept it):
//! - Payload types and header-extension ids are the router's (the device registers the
//!   router's codecs with their preferred payload types).
//! - It writes no header extension on sent RTP by itself (no MID, abs-send-time or
//!   transport-cc): match producers by the SSRCs in `rtpParameters.encodings`.
//! - It sends RTX (on the `ssrc-group:FID` SSRC) when answering NACKs if the router offers
//!   `video/rtx`, and sends sender reports for producers and receiver reports for consumers.
//! - Receive transports send no NACKs of their own unless [`TransportOptions::auto_nack`].
//!
//! # Limits
//!
//! A webrtc-rs 0.21 PeerConnection is not freed after `close()` (webrtc-rs issue 906): keep
//! transports few and long-lived. webrtc-rs buffers at most 256 events per track and drops
//! the rest, so read consumers promptly.

pub mod consumer;
pub mod data;
pub mod device;
pub mod error;
pub mod ice_servers;
pub mod peer;
pub mod producer;
pub mod sdp;
pub mod signaling;
pub mod transport;

pub use consumer::{Consumer, ConsumerEvent};
pub use data::{DataConsumer, DataMessage, DataProduceOptions, DataProducer};
pub use device::Device;
pub use error::{ClientError, Result};
pub use ferrosoup_proto::rtp_parameters::{MediaKind, RtpCapabilities, RtpParameters};
pub use ice_servers::{IceServer, fetch_ice_servers};
pub use peer::Peer;
pub use producer::{KeyframeRequest, Producer};
pub use signaling::{Notification, NotificationStream, Signaling};
pub use transport::{ProduceOptions, RecvTransport, SendTransport, TransportOptions};

/// The RTP and RTCP packet types the SDK reads and writes (from webrtc-rs' `rtc`).
pub use rtc::{rtcp, rtp};
