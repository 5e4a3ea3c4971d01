//! A local RTP sender registered on the server with `produce`.

use std::sync::Arc;

use ferrosoup_proto::rtp_parameters::{MediaKind, RtpParameters};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use serde_json::json;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::error::{ClientError, Result};
use crate::transport::TransportShared;

/// A producer: media this client sends to the server.
///
/// Write RTP with [`Producer::write_rtp`]; read the RTCP the server sends about it (PLI, FIR,
/// NACK, receiver reports) with [`Producer::recv_rtcp`].
pub struct Producer {
    id: String,
    kind: MediaKind,
    mid: String,
    rtp_parameters: RtpParameters,
    ssrcs: Vec<u32>,
    payload_type: u8,
    track: Arc<TrackLocalStaticRTP>,
    track_dyn: Arc<dyn TrackLocal>,
    transport: Arc<TransportShared>,
}

impl Producer {
    pub(crate) fn new(
        id: String,
        kind: MediaKind,
        mid: String,
        rtp_parameters: RtpParameters,
        track: Arc<TrackLocalStaticRTP>,
        track_dyn: Arc<dyn TrackLocal>,
        transport: Arc<TransportShared>,
    ) -> Self {
        let ssrcs = rtp_parameters
            .encodings
            .iter()
            .filter_map(|e| e.ssrc)
            .collect();
        let payload_type = rtp_parameters
            .codecs
            .iter()
            .find(|c| !c.is_rtx())
            .map(|c| c.payload_type)
            .unwrap_or_default();
        Self {
            id,
            kind,
            mid,
            rtp_parameters,
            ssrcs,
            payload_type,
            track,
            track_dyn,
            transport,
        }
    }

    /// The server's producer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// The m-section mid of this producer.
    pub fn mid(&self) -> &str {
        &self.mid
    }

    /// The RTP parameters sent with `produce`.
    pub fn rtp_parameters(&self) -> &RtpParameters {
        &self.rtp_parameters
    }

    /// SSRC of the first (or only) encoding.
    pub fn ssrc(&self) -> u32 {
        self.ssrcs.first().copied().unwrap_or_default()
    }

    /// SSRCs of all encodings (simulcast layers in order `r0`, `r1`, ...).
    pub fn ssrcs(&self) -> &[u32] {
        &self.ssrcs
    }

    /// Payload type of the media codec.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// Sends one RTP packet on the first encoding: the SDK sets its SSRC and payload type;
    /// sequence number, timestamp, marker and payload are the caller's.
    pub async fn write_rtp(&self, packet: rtp::Packet) -> Result<()> {
        self.write_rtp_on(0, packet).await
    }

    /// Sends one RTP packet on encoding `layer` (simulcast).
    pub async fn write_rtp_on(&self, layer: usize, mut packet: rtp::Packet) -> Result<()> {
        let ssrc = *self.ssrcs.get(layer).ok_or_else(|| {
            ClientError::InvalidState(format!("producer has no encoding {layer}"))
        })?;
        packet.header.ssrc = ssrc;
        packet.header.payload_type = self.payload_type;
        packet.header.version = 2;
        self.track.write_rtp(packet).await?;
        Ok(())
    }

    /// Builds and sends a packet from its parts (first encoding).
    pub async fn send(
        &self,
        sequence_number: u16,
        timestamp: u32,
        marker: bool,
        payload: bytes::Bytes,
    ) -> Result<()> {
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker,
                sequence_number,
                timestamp,
                ..Default::default()
            },
            payload,
        };
        self.write_rtp(packet).await
    }

    /// The next RTCP compound packet the server sent about this producer (PLI, FIR, NACK,
    /// receiver reports), after webrtc-rs' own interceptors saw it (NACKs are answered by
    /// webrtc-rs from its send buffer). `None` once the transport is closed.
    ///
    /// webrtc-rs keeps at most 256 undelivered events per track and drops newer ones.
    pub async fn recv_rtcp(&self) -> Option<Vec<Box<dyn rtcp::Packet>>> {
        loop {
            match self.track_dyn.poll().await? {
                TrackLocalEvent::OnRtcpPacket(packets) => return Some(packets),
                _ => continue,
            }
        }
    }

    /// Waits for the next PLI or FIR about any of this producer's SSRCs, skipping other
    /// RTCP. `None` once the transport is closed.
    pub async fn next_keyframe_request(&self) -> Option<KeyframeRequest> {
        loop {
            for packet in self.recv_rtcp().await? {
                let any = packet.as_any();
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>()
                    && self.ssrcs.contains(&pli.media_ssrc)
                {
                    return Some(KeyframeRequest::Pli {
                        media_ssrc: pli.media_ssrc,
                    });
                }
                if let Some(fir) = any.downcast_ref::<FullIntraRequest>()
                    && let Some(entry) = fir.fir.iter().find(|e| self.ssrcs.contains(&e.ssrc))
                {
                    return Some(KeyframeRequest::Fir {
                        media_ssrc: entry.ssrc,
                    });
                }
            }
        }
    }

    /// `pauseProducer`.
    pub async fn pause(&self) -> Result<()> {
        self.transport
            .signaling
            .request("pauseProducer", json!({ "producerId": self.id }))
            .await?;
        Ok(())
    }

    /// `resumeProducer`.
    pub async fn resume(&self) -> Result<()> {
        self.transport
            .signaling
            .request("resumeProducer", json!({ "producerId": self.id }))
            .await?;
        Ok(())
    }

    /// `closeProducer`, then stops the sender and renegotiates the transport.
    pub async fn close(self) -> Result<()> {
        self.transport
            .signaling
            .request("closeProducer", json!({ "producerId": self.id }))
            .await?;
        self.transport
            .close_section(&self.mid, Some(&self.track_dyn))
            .await
    }
}

/// A keyframe request received for a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequest {
    /// RTCP PLI (RFC 4585).
    Pli {
        /// The SSRC the request is about.
        media_ssrc: u32,
    },
    /// RTCP FIR (RFC 5104).
    Fir {
        /// The SSRC the request is about.
        media_ssrc: u32,
    },
}
