//! A remote stream received from the server with `consume`.

use std::sync::Arc;

use ferrosoup_proto::rtp_parameters::{MediaKind, RtpParameters};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::rtp;
use serde_json::json;
use tokio::sync::OnceCell;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::error::Result;
use crate::transport::TransportShared;

/// What [`Consumer::read`] returns.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// An RTP packet (RTX already unwrapped by webrtc-rs into the original stream).
    Rtp(rtp::Packet),
    /// RTCP the server sent for this stream (sender reports).
    Rtcp(Vec<Box<dyn rtcp::Packet>>),
}

/// A consumer: media the server forwards to this client.
pub struct Consumer {
    id: String,
    producer_id: String,
    kind: MediaKind,
    mid: String,
    ssrc: u32,
    rtp_parameters: RtpParameters,
    track: OnceCell<Arc<dyn TrackRemote>>,
    transport: Arc<TransportShared>,
}

impl Consumer {
    pub(crate) fn new(
        id: String,
        producer_id: String,
        kind: MediaKind,
        mid: String,
        ssrc: u32,
        rtp_parameters: RtpParameters,
        transport: Arc<TransportShared>,
    ) -> Self {
        Self {
            id,
            producer_id,
            kind,
            mid,
            ssrc,
            rtp_parameters,
            track: OnceCell::new(),
            transport,
        }
    }

    /// The server's consumer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The producer this consumer receives.
    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// The m-section mid of this consumer.
    pub fn mid(&self) -> &str {
        &self.mid
    }

    /// The media SSRC the server sends with.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The consumer's RTP parameters as the server answered them.
    pub fn rtp_parameters(&self) -> &RtpParameters {
        &self.rtp_parameters
    }

    /// The webrtc-rs remote track, once its first packet arrived.
    async fn track(&self) -> Result<&Arc<dyn TrackRemote>> {
        self.track
            .get_or_try_init(|| self.transport.events.track(&self.id))
            .await
    }

    /// Next RTP packet or RTCP compound packet for this stream. Waits for the first packet
    /// (webrtc-rs opens the track then). `None` once the track or transport ended.
    ///
    /// webrtc-rs queues at most 256 packets per track and drops newer ones: read promptly.
    pub async fn read(&self) -> Option<ConsumerEvent> {
        let track = self.track().await.ok()?;
        loop {
            match track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(packet) => return Some(ConsumerEvent::Rtp(packet)),
                TrackRemoteEvent::OnRtcpPacket(packets) => {
                    return Some(ConsumerEvent::Rtcp(packets));
                }
                TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => return None,
                _ => {}
            }
        }
    }

    /// Next RTP packet (header and payload), skipping RTCP. `None` once the track ended.
    pub async fn read_rtp(&self) -> Option<rtp::Packet> {
        loop {
            if let ConsumerEvent::Rtp(packet) = self.read().await? {
                return Some(packet);
            }
        }
    }

    /// Sends an RTCP PLI for this stream to the server. Waits until the first packet arrived
    /// (webrtc-rs can only send feedback on an open track).
    pub async fn send_pli(&self) -> Result<()> {
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: self.ssrc,
        };
        self.send_rtcp(vec![Box::new(pli)]).await
    }

    /// Sends an RTCP NACK for the given sequence numbers (ascending) of this stream.
    pub async fn send_nack(&self, sequence_numbers: &[u16]) -> Result<()> {
        if sequence_numbers.is_empty() {
            return Ok(());
        }
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc: self.ssrc,
            nacks: nack_pairs_from_sequence_numbers(sequence_numbers),
        };
        self.send_rtcp(vec![Box::new(nack)]).await
    }

    /// Sends arbitrary RTCP packets on this stream's receiver.
    pub async fn send_rtcp(&self, packets: Vec<Box<dyn rtcp::Packet>>) -> Result<()> {
        self.track().await?.write_rtcp(packets).await?;
        Ok(())
    }

    /// `requestConsumerKeyFrame` over signaling (no RTCP involved).
    pub async fn request_keyframe(&self) -> Result<()> {
        self.request("requestConsumerKeyFrame").await
    }

    /// `resumeConsumer`.
    pub async fn resume(&self) -> Result<()> {
        self.request("resumeConsumer").await
    }

    /// `pauseConsumer`.
    pub async fn pause(&self) -> Result<()> {
        self.request("pauseConsumer").await
    }

    /// `closeConsumer`, then removes the m-section from use and renegotiates.
    pub async fn close(self) -> Result<()> {
        self.request("closeConsumer").await?;
        self.transport.close_section(&self.mid, None).await
    }

    async fn request(&self, method: &str) -> Result<()> {
        self.transport
            .signaling
            .request(method, json!({ "consumerId": self.id }))
            .await
            .map(|_| ())
    }
}
