//! Counters and stats documents. A worker counts in plain integers on its own thread and
//! publishes a copy to atomics once per tick, so `/stats` never touches the media path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use crate::consumer::Consumer;
use crate::producer::Producer;
use crate::transport::Transport;
use crate::udp::FlushOutcome;

macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// A worker's counters, owned by its thread.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct WorkerCounters {
            $($(#[$doc])* pub $field: u64,)*
        }

        /// The last published copy of a worker's counters, readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedCounters {
            $($field: AtomicU64,)*
        }

        impl SharedCounters {
            /// Stores a copy of `c`.
            pub fn publish(&self, c: &WorkerCounters) {
                $(self.$field.store(c.$field, Ordering::Relaxed);)*
            }

            /// Reads the last published copy.
            pub fn snapshot(&self) -> WorkerCounters {
                WorkerCounters { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }

        impl WorkerCounters {
            /// `(name, value)` pairs, for exposition.
            pub fn fields(&self) -> [(&'static str, u64); counters!(@count $($field)*)] {
                [$((stringify!($field), self.$field),)*]
            }
        }
    };
    (@count $($x:ident)*) => { <[()]>::len(&[$(counters!(@unit $x)),*]) };
    (@unit $x:ident) => { () };
}

counters!(
    /// Routers alive.
    routers,
    /// Transports alive.
    transports,
    /// Producers alive.
    producers,
    /// Consumers alive.
    consumers,
    /// Datagrams received.
    datagrams_in,
    /// Bytes received.
    bytes_in,
    /// Datagrams sent.
    datagrams_out,
    /// Bytes sent.
    bytes_out,
    /// Datagrams dropped on send (socket buffer full).
    send_dropped,
    /// RTP packets received (after SRTP).
    rtp_packets_in,
    /// RTP bytes received.
    rtp_bytes_in,
    /// RTP packets forwarded.
    rtp_packets_out,
    /// RTP bytes forwarded.
    rtp_bytes_out,
    /// RTCP packets received.
    rtcp_in,
    /// RTCP packets sent.
    rtcp_out,
    /// NACKed packets requested by consumers.
    nacks_received,
    /// Lost packets NACKed to producers.
    nacks_sent,
    /// Packets retransmitted to consumers.
    retransmissions,
    /// NACKs not answered because the packet was resent less than a round trip ago.
    nacks_throttled,
    /// PLI/FIR received from consumers.
    plis_received,
    /// PLIs sent to producers.
    plis_sent,
    /// STUN requests rejected (bad credentials, integrity, unknown ufrag).
    stun_rejected,
    /// Packets failing SRTP/SRTCP authentication.
    srtp_failures,
    /// SRTP packets dropped as replays (duplicates).
    srtp_replays,
    /// Packets from a 5-tuple that passed no ICE check.
    dropped_unknown_tuple,
    /// Media before DTLS completed.
    dropped_not_connected,
    /// Malformed packets.
    dropped_malformed,
    /// RTP with an SSRC matching no producer.
    dropped_unknown_ssrc,
    /// RTP with a payload type the producer did not declare.
    dropped_unknown_payload_type,
    /// Packets too big to forward with SRTP overhead.
    dropped_too_big,
);

impl WorkerCounters {
    /// Adds the outcome of a send flush.
    pub fn on_flush(&mut self, out: FlushOutcome) {
        self.datagrams_out += out.sent as u64;
        self.bytes_out += out.bytes as u64;
        self.send_dropped += out.dropped as u64;
    }
}

/// Milliseconds since the Unix epoch, as mediasoup's stats `timestamp`.
fn timestamp_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `getTransportStats` document (mediasoup's `WebRtcTransportStat` shape, subset).
pub fn transport_stats(t: &Transport) -> Value {
    let c = &t.counters;
    json!([{
        "type": "webrtc-transport",
        "transportId": t.id.to_string(),
        "timestamp": timestamp_ms(),
        "iceRole": "controlled",
        "iceState": t.ice_state(),
        "dtlsState": t.dtls_state(),
        "iceSelectedTuple": t.remote().map(|r| json!({
            "remoteIp": r.ip().to_string(), "remotePort": r.port(), "protocol": "udp"
        })),
        "rtpPacketsReceived": c.rtp_packets_in,
        "rtpBytesReceived": c.rtp_bytes_in,
        "rtpPacketsSent": c.rtp_packets_out,
        "rtpBytesSent": c.rtp_bytes_out,
        "rtcpPacketsReceived": c.rtcp_in,
        "rtcpPacketsSent": c.rtcp_out,
        "srtpFailures": c.srtp_failures,
        "maxIncomingBitrate": t.max_incoming_bitrate,
        "availableOutgoingBitrate": t.remb_bitrate,
    }])
}

/// `getProducerStats` document: one `inbound-rtp` entry per stream.
pub fn producer_stats(p: &Producer, now: Instant) -> Value {
    let ts = timestamp_ms();
    Value::Array(
        p.streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let ssrc = s.ssrc?;
                Some(json!({
                    "type": "inbound-rtp",
                    "timestamp": ts,
                    "ssrc": ssrc,
                    "rtxSsrc": s.rtx_ssrc,
                    "rid": s.rid,
                    "spatialLayer": i,
                    "kind": p.kind,
                    "packetCount": s.stats.packets(),
                    "byteCount": s.stats.bytes(),
                    "packetsLost": s.stats.cumulative_lost(),
                    "jitter": s.stats.jitter(),
                    "nackCount": s.nacks_sent,
                    "pliCount": s.plis_sent,
                    "keyFrames": s.keyframes,
                    "score": s.score,
                    "active": s.is_active(now),
                }))
            })
            .collect(),
    )
}

/// `getConsumerStats` document: the `outbound-rtp` entry, then the producer stream it forwards.
pub fn consumer_stats(c: &Consumer, p: Option<&Producer>) -> Value {
    let ts = timestamp_ms();
    let mut entries = vec![json!({
        "type": "outbound-rtp",
        "timestamp": ts,
        "ssrc": c.ssrc,
        "rtxSsrc": c.rtx.map(|r| r.0),
        "kind": c.kind,
        "packetCount": c.send_stats.packets(),
        "byteCount": c.send_stats.octets(),
        "roundTripTime": c.rtt_ms,
        "fractionLost": c.fraction_lost,
        "packetsRetransmitted": c.retransmitted,
        "nackCount": c.retransmitted + c.nack_misses,
        "pliCount": c.keyframe_requests,
        "score": c.score,
        "spatialLayer": c.forwarder.current(),
        "preferredSpatialLayer": c.preferred_spatial,
        "preferredTemporalLayer": c.preferred_temporal,
        "priority": c.priority,
    })];
    if let Some(s) = p.and_then(|p| c.forwarder.current().and_then(|i| p.streams.get(i))) {
        entries.push(json!({
            "type": "inbound-rtp",
            "timestamp": ts,
            "ssrc": s.ssrc,
            "packetCount": s.stats.packets(),
            "byteCount": s.stats.bytes(),
            "packetsLost": s.stats.cumulative_lost(),
            "jitter": s.stats.jitter(),
            "score": s.score,
        }));
    }
    Value::Array(entries)
}
