//! A consumer: one outgoing RTP stream that forwards one of its producer's streams (one
//! simulcast layer at a time, and the temporal / SVC spatial layers of it that it is
//! given) to a receiving transport, and the per-consumer send work: decide
//! (forwarder.rs), rewrite, write this hop's extensions, protect, queue.

use std::time::{Duration, Instant};

use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::rtcp::SendStats;
use ferrosoup_rtc::rtp::{self, HopValues, RtpHeaderInfo, VideoCodec};
use ferrosoup_rtc::srtp::SendIndex;
use ferrosoup_rtc::vp8::{self, Vp8Numbers, Vp8PictureRewriter};

use crate::allocator::{Layer, UpgradeHold};
use crate::arena::{Arena, ConsumerKey, ProducerKey, TransportKey};
use crate::forwarder::{ConsumerForwarder, Decision, DropReason, LayerChange};
use crate::ids::{ConsumerId, ProducerId};
use crate::layers::{Filtered, PacketLayer};
use crate::pacer::Paced;
use crate::stats::RtpDrop;
use crate::transmit::Transmit;
use crate::transport::{Egress, Transport};
use crate::udp::MAX_DATAGRAM;

/// Retransmissions remembered per video consumer, to answer each NACK once per round trip.
pub const RESENT_HISTORY: usize = 128;

/// The RTX stream of a consumer, when its client negotiated RTX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtxOut {
    /// Outgoing RTX SSRC.
    pub ssrc: u32,
    /// RTX payload type.
    pub payload_type: u8,
}

/// One stream of a pipe consumer: a producer stream (simulcast layer) sent on under an SSRC
/// of the pipe's own, its sequence numbers, timestamps, payload types and header
/// extensions unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeStream {
    /// SSRC on the pipe (the pipe producer on the other side declares it).
    pub ssrc: u32,
    /// SRTP index state of that SSRC.
    pub srtp_index: SendIndex,
    /// Highest widened producer sequence number sent on it (0: none yet).
    pub highest_ext_seq: u64,
    /// Packets sent (Sender Reports).
    pub packets: u32,
    /// Payload octets sent (Sender Reports).
    pub octets: u32,
}

impl PipeStream {
    /// A stream that has sent nothing yet.
    pub fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            srtp_index: SendIndex::default(),
            highest_ext_seq: 0,
            packets: 0,
            octets: 0,
        }
    }
}

/// Packets older than this many behind the newest one a pipe stream sent are not sent
/// (nor resent): the producer's store no longer tells a duplicate from a first arrival,
/// and an SRTP index must never be protected twice with other bytes.
pub const PIPE_SEQ_WINDOW: u64 = 512;

/// A retransmission a consumer remembers, to throttle repeated NACKs for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resent {
    /// Output sequence number resent.
    pub seq: u16,
    /// When, in ms since the worker started (0: never).
    pub at_ms: u32,
}

/// Bytes a consumer may retransmit: refilled at its stream's own bitrate, holding at most
/// one second of it, so that NACKs (however many, however repeated) never make the server
/// send a client more retransmission than the stream itself carries.
#[derive(Clone, Copy, Debug)]
pub struct RetransmitBudget {
    bytes: f64,
    last: Option<Instant>,
}

/// What a retransmission budget holds at least (a stream too young to be measured can
/// still be repaired).
const MIN_RETRANSMIT_BURST: f64 = 16_000.0;

impl Default for RetransmitBudget {
    fn default() -> Self {
        Self {
            bytes: MIN_RETRANSMIT_BURST,
            last: None,
        }
    }
}

impl RetransmitBudget {
    /// Takes `len` bytes at `now` if the budget has them, after refilling it at `rate_bps`.
    pub fn take(&mut self, now: Instant, rate_bps: u64, len: usize) -> bool {
        let per_second = rate_bps as f64 / 8.0;
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.bytes = (self.bytes + per_second * dt).min(per_second.max(MIN_RETRANSMIT_BURST));
        }
        self.last = Some(now);
        if self.bytes < len as f64 {
            return false;
        }
        self.bytes -= len as f64;
        true
    }
}

/// A producer packet on its way to the consumers (already received and unwrapped).
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    /// The packet.
    pub packet: &'a [u8],
    /// Its parsed header.
    pub info: &'a RtpHeaderInfo,
    /// Producer stream (encoding) it belongs to.
    pub stream: usize,
    /// Widened input sequence number.
    pub ext_seq: u64,
    /// It starts a keyframe.
    pub keyframe: bool,
    /// Its layer indices.
    pub layer: PacketLayer,
    /// This hop's send time (abs-send-time).
    pub abs_send_time: u32,
}

/// The layer the transport's bandwidth allocation gives a consumer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Allocation {
    /// No estimate steers it: the preferred layer.
    #[default]
    Unlimited,
    /// At most this layer.
    Layer(Layer),
    /// Not even the lowest layer fits: nothing is forwarded.
    Paused,
}

impl Allocation {
    /// Its name in stats: `unlimited`, `layer` or `paused`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unlimited => "unlimited",
            Self::Layer(_) => "layer",
            Self::Paused => "paused",
        }
    }

    /// The layer it gives at most, when it names one.
    pub fn layer(self) -> Option<Layer> {
        match self {
            Self::Layer(l) => Some(l),
            Self::Unlimited | Self::Paused => None,
        }
    }
}

/// A NACKed packet to send again.
#[derive(Clone, Copy, Debug)]
pub struct Resend<'a> {
    /// Output sequence number NACKed.
    pub seq: u16,
    /// The producer packet it was made of (from the producer's store).
    pub original: &'a [u8],
    /// Now.
    pub now: Instant,
    /// Now, in ms since the worker started.
    pub now_ms: u32,
    /// Bitrate of the producer stream it belongs to (the retransmission budget's refill).
    pub stream_bps: u64,
    /// This hop's send time (abs-send-time).
    pub abs_send_time: u32,
}

/// What forwarding one packet to a consumer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// Bytes sent (0: queued by the pacer), or why nothing was.
    pub sent: Result<usize, RtpDrop>,
    /// The forwarded layer changed (for `consumerLayersChanged`).
    pub layer_change: Option<LayerChange>,
    /// The consumer waits for a keyframe of this packet's stream.
    pub wants_keyframe: bool,
}

impl Forwarded {
    fn dropped(reason: RtpDrop) -> Self {
        Self {
            sent: Err(reason),
            layer_change: None,
            wants_keyframe: false,
        }
    }
}

/// A consumer as the worker keeps it.
pub struct Consumer {
    /// Public id.
    pub id: ConsumerId,
    /// Public id of the producer it consumes.
    pub producer_id: ProducerId,
    /// That producer (indexed, not owned).
    pub producer: ProducerKey,
    /// The transport it sends on (its owner).
    pub transport: TransportKey,
    /// Audio or video.
    pub kind: MediaKind,
    /// `simple`, `simulcast` or `svc`.
    pub consumer_type: ProducerType,
    /// Paused by its client.
    pub paused: bool,
    /// Its transport's DTLS is connected (SRTP keys known).
    pub transport_connected: bool,
    /// Paused because its producer is.
    pub producer_paused: bool,
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Outgoing RTX stream, when the client negotiated RTX.
    pub rtx: Option<RtxOut>,
    /// Next RTX sequence number.
    pub rtx_seq: u16,
    /// SRTP index state of the outgoing SSRC (every packet under it goes through this).
    pub srtp_index: SendIndex,
    /// SRTP index state of the outgoing RTX SSRC.
    pub rtx_srtp_index: SendIndex,
    /// Producer header extension id → consumer id (0: removed).
    pub ext_map: [u8; 256],
    /// VP8 PictureID/TL0PICIDX continuity across layer switches and dropped temporal
    /// layers (VP8 only).
    pub vp8: Option<Vp8PictureRewriter>,
    /// The producer's video codec (to read the layers of a packet sent again).
    pub codec: VideoCodec,
    /// Consumer id of the transport-wide-cc extension (0: not negotiated).
    pub twcc_ext: u8,
    /// Consumer id of the abs-send-time extension (0: not negotiated).
    pub abs_send_time_ext: u8,
    /// Codec clock rate.
    pub clock_rate: u32,
    /// Layer selection and rewriting.
    pub forwarder: ConsumerForwarder,
    /// Preferred spatial layer (`None`: the highest).
    pub preferred_spatial: Option<u8>,
    /// Preferred temporal layer at the preferred spatial layer (`None`: the highest).
    pub preferred_temporal: Option<u8>,
    /// Bandwidth priority 1..255.
    pub priority: u8,
    /// What the transport's bandwidth allocation gives it.
    pub allocation: Allocation,
    /// Holds its upgrades back after upgrades that did not last.
    pub upgrade_hold: UpgradeHold,
    /// Counters for Sender Reports and stats.
    pub send_stats: SendStats,
    /// Round-trip time from the receiver's reports.
    pub rtt: Option<Duration>,
    /// Fraction lost reported by the receiver (0..1).
    pub fraction_lost: f64,
    /// Packets retransmitted on NACK.
    pub retransmitted: u64,
    /// What it may still retransmit.
    pub retransmit_budget: RetransmitBudget,
    /// NACKed packets the consumer could not serve.
    pub nack_misses: u64,
    /// Recent retransmissions, indexed by sequence number modulo its length (empty for
    /// audio).
    pub resent: Vec<Resent>,
    /// Keyframe requests (PLI/FIR) received from the client.
    pub keyframe_requests: u64,
    /// Last score sent to the client.
    pub score: u8,
    /// A pipe consumer's streams, one per producer stream (empty for a consumer of a
    /// client): it forwards every stream as the producer sends it, to another node.
    pub pipe: Vec<PipeStream>,
    /// Producer score sent with it.
    pub reported_producer_score: u8,
}

impl Consumer {
    /// True when packets may flow to the client: neither side paused, and the transport
    /// can send (a keyframe forwarded before DTLS completes would be lost).
    pub fn is_active(&self) -> bool {
        !self.paused && !self.producer_paused && self.transport_connected
    }

    /// The producer stream a pipe consumer sends under `ssrc` (`None` for other SSRCs and
    /// for a consumer of a client).
    pub fn pipe_stream(&self, ssrc: u32) -> Option<usize> {
        self.pipe.iter().position(|s| s.ssrc == ssrc)
    }

    /// The send work for one producer packet: decide, then rewrite a copy into a buffer of
    /// `out`, write this hop's extensions, protect it and queue it to the client over its
    /// transport (found in `transports`).
    // Inlined into the fan-out loop: with 1,000 consumers out of cache, one loop body lets
    // the loads of consecutive consumers overlap (measured: about 8 % less worker CPU).
    #[inline]
    pub fn forward(
        &mut self,
        key: ConsumerKey,
        now: Instant,
        packet: &Outgoing<'_>,
        transports: &mut Arena<TransportKey, Transport>,
        out: &mut dyn Transmit,
    ) -> Forwarded {
        if !self.is_active() {
            // Skipped on purpose: the output sequence has no gap for it on resume.
            self.forwarder.skip(packet.stream, packet.ext_seq);
            return Forwarded::dropped(if self.paused {
                RtpDrop::ConsumerPaused
            } else {
                RtpDrop::ProducerPaused
            });
        }
        if !self.pipe.is_empty() {
            return Forwarded {
                sent: self.forward_pipe(now, packet, transports, out),
                layer_change: None,
                wants_keyframe: false,
            };
        }
        let (decision, change) = self.forwarder.decide(
            now,
            packet.stream,
            packet.ext_seq,
            packet.info.timestamp,
            packet.info.payload_type,
            packet.keyframe,
            &packet.layer,
        );
        let layer_change = change.filter(|_| self.consumer_type != ProducerType::Simple);
        let payload = packet.info.payload(packet.packet);
        let (seq, timestamp, payload_type, marker) = match decision {
            Decision::Forward {
                seq,
                timestamp,
                payload_type,
                marker,
            } => (seq, timestamp, payload_type, marker),
            Decision::Drop(reason) => {
                if reason == DropReason::FilteredLayer
                    && let Some(vp8) = self.vp8.as_mut()
                {
                    // Its picture is not forwarded: the next one takes its number.
                    vp8.drop_picture(payload);
                }
                return Forwarded {
                    sent: Err(reason.into()),
                    layer_change,
                    wants_keyframe: self.forwarder.needs_keyframe()
                        && self.forwarder.target() == Some(packet.stream),
                };
            }
        };
        let vp8 = match self.vp8.as_mut() {
            Some(vp8) => match vp8.map(payload, self.forwarder.is_sync_point(seq)) {
                Some(numbers) => Some(numbers),
                // A packet of a picture dropped before: it has no number to go out under.
                None => return Forwarded::dropped(RtpDrop::OtherLayer),
            },
            None => None,
        };
        let header = Rewrite {
            seq,
            timestamp,
            payload_type,
            marker,
            vp8,
        };
        // The transport is looked at only for packets that go out (one cache miss less for
        // every packet a consumer drops).
        let Some(transport) = transports.get_mut(self.transport) else {
            return Forwarded::dropped(RtpDrop::NoRoute);
        };
        if self.kind == MediaKind::Video
            && let Some(bwe) = transport.bwe.as_deref_mut()
            && bwe.pacer.holds(now)
        {
            let paced = Paced {
                consumer: key,
                stream: packet.stream,
                ext_seq: packet.ext_seq,
                header,
                queued_at: now,
            };
            let sent = if bwe.pacer.enqueue(paced) {
                Ok(0)
            } else {
                Err(RtpDrop::PacerOverflow)
            };
            return Forwarded {
                sent,
                layer_change,
                wants_keyframe: false,
            };
        }
        let sent = self.send(now, packet, header, transport.egress(), out);
        Forwarded {
            sent,
            layer_change,
            wants_keyframe: false,
        }
    }

    /// A pipe consumer's send work for one producer packet: a copy under the pipe stream's
    /// SSRC, everything else as the producer sent it, protected and queued to the other
    /// node. Returns bytes sent, or why not.
    #[inline]
    fn forward_pipe(
        &mut self,
        now: Instant,
        packet: &Outgoing<'_>,
        transports: &mut Arena<TransportKey, Transport>,
        out: &mut dyn Transmit,
    ) -> Result<usize, RtpDrop> {
        let stream = self
            .pipe
            .get_mut(packet.stream)
            .ok_or(RtpDrop::UnknownSsrc)?;
        if packet.ext_seq + PIPE_SEQ_WINDOW <= stream.highest_ext_seq {
            return Err(RtpDrop::TooOld);
        }
        let mut egress = transports
            .get_mut(self.transport)
            .and_then(Transport::egress)
            .ok_or(RtpDrop::NoRoute)?;
        let len = send_on_pipe(stream, packet.packet, &mut egress, now, out)?;
        stream.highest_ext_seq = stream.highest_ext_seq.max(packet.ext_seq);
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(packet.info.payload_len as u32);
        self.send_stats.on_packet(now, packet.info.timestamp, len);
        Ok(len)
    }

    /// Resends a pipe stream's packet `original` (widened sequence number `ext_seq`, from
    /// the producer's store) exactly as it was first sent: the same bytes under the same
    /// SRTP index, so nothing is protected twice with other bytes. Returns bytes sent.
    pub fn retransmit_pipe(
        &mut self,
        stream: usize,
        ext_seq: u64,
        original: &[u8],
        now: Instant,
        egress: Option<Egress<'_>>,
        out: &mut dyn Transmit,
    ) -> Result<usize, RtpDrop> {
        let s = self.pipe.get_mut(stream).ok_or(RtpDrop::UnknownSsrc)?;
        if ext_seq > s.highest_ext_seq || ext_seq + PIPE_SEQ_WINDOW <= s.highest_ext_seq {
            return Err(RtpDrop::NotStored);
        }
        let mut egress = egress.ok_or(RtpDrop::NoRoute)?;
        let len = send_on_pipe(s, original, &mut egress, now, out)?;
        self.retransmitted += 1;
        Ok(len)
    }

    /// Rewrites, protects and queues one forwarded packet (at once, or when the pacer
    /// lets it go).
    #[inline]
    pub fn send(
        &mut self,
        now: Instant,
        packet: &Outgoing<'_>,
        header: Rewrite,
        egress: Option<Egress<'_>>,
        out: &mut dyn Transmit,
    ) -> Result<usize, RtpDrop> {
        let mut egress = egress.ok_or(RtpDrop::NoRoute)?;
        let len = packet.packet.len();
        if len + egress.srtp.profile().rtp_overhead() > MAX_DATAGRAM {
            return Err(RtpDrop::TooBig);
        }
        let buf = out.buffer();
        buf[..len].copy_from_slice(packet.packet);
        let hop = HopValues {
            transport_cc_id: self.twcc_ext,
            transport_cc: *egress.twcc_seq,
            abs_send_time_id: self.abs_send_time_ext,
            abs_send_time: packet.abs_send_time,
        };
        let twcc = self.rewrite(&mut buf[..len], packet.info, header, &hop);
        egress.on_sending(now, len, twcc, true);
        let n = egress
            .srtp
            .protect_rtp_stream(&mut self.srtp_index, &mut buf[..], len)
            .map_err(|_| RtpDrop::ProtectFailed)?;
        out.commit(n, egress.to);
        self.send_stats.on_packet(now, header.timestamp, len);
        egress.counters.rtp_packets_out += 1;
        egress.counters.rtp_bytes_out += len as u64;
        Ok(len)
    }

    /// Resends output `seq` from `original` (the producer packet it was made of, from the
    /// producer's store) as RTX; a consumer without RTX does not resend (its media SSRC's
    /// SRTP index would be used twice with other bytes). NACKs repeated within a round trip of the
    /// last resend of the same packet are not answered again. Returns bytes sent, or why not.
    pub fn retransmit(
        &mut self,
        resend: Resend<'_>,
        egress: Option<Egress<'_>>,
        scratch: &mut [u8; MAX_DATAGRAM],
        out: &mut dyn Transmit,
    ) -> Result<usize, RtpDrop> {
        let Resend {
            seq,
            original,
            now,
            now_ms,
            abs_send_time,
            stream_bps,
        } = resend;
        let window_ms = self.rtt.map_or(100, |rtt| (rtt.as_millis() as u32).max(20));
        let slot = (!self.resent.is_empty()).then(|| usize::from(seq) % self.resent.len());
        if let Some(i) = slot {
            let last = self.resent[i];
            if last.seq == seq && last.at_ms != 0 && now_ms.wrapping_sub(last.at_ms) < window_ms {
                return Err(RtpDrop::ResentRecently);
            }
        }
        // Without RTX a resend would reuse the media stream's SRTP index with other bytes.
        let rtx = self.rtx.ok_or(RtpDrop::NoRtx)?;
        let info = rtp::parse_rtp(original).map_err(|_| RtpDrop::Malformed)?;
        let payload_type = self
            .forwarder
            .output_payload_type(info.payload_type)
            .ok_or(RtpDrop::UnsupportedByConsumer)?;
        let mut egress = egress.ok_or(RtpDrop::NoRoute)?;
        let overhead = egress.srtp.profile().rtp_overhead();
        let n = original.len();
        if n + overhead > MAX_DATAGRAM {
            return Err(RtpDrop::TooBig);
        }
        // Retransmissions share the estimate with media: none while the pacer holds media.
        if egress
            .bwe
            .as_deref_mut()
            .is_some_and(|b| b.pacer.holds(now))
            || !self.retransmit_budget.take(now, stream_bps, n)
        {
            return Err(RtpDrop::RetransmitBudget);
        }
        let payload = info.payload(original);
        let layer = PacketLayer::parse(self.codec, payload);
        let Filtered::Keep { marker } = self.forwarder.keeps_layer(&layer) else {
            return Err(RtpDrop::OtherLayer);
        };
        let vp8 = match self.vp8.as_mut() {
            Some(vp8) => Some(vp8.map(payload, false).ok_or(RtpDrop::OtherLayer)?),
            None => None,
        };
        let header = Rewrite {
            seq,
            timestamp: self.forwarder.output_timestamp(info.timestamp),
            payload_type,
            marker,
            vp8,
        };
        let hop = HopValues {
            transport_cc_id: self.twcc_ext,
            transport_cc: *egress.twcc_seq,
            abs_send_time_id: self.abs_send_time_ext,
            abs_send_time,
        };
        let buf = out.buffer();
        // Rewritten in the scratch first, then wrapped as RTX into the send buffer.
        scratch[..n].copy_from_slice(original);
        let counted = self.rewrite(&mut scratch[..n], &info, header, &hop);
        let rtx_seq = self.rtx_seq;
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        let mut out_info = info;
        out_info.sequence_number = seq;
        let len = ferrosoup_rtc::rtx::write_rtx(
            &scratch[..n],
            &out_info,
            rtx.ssrc,
            rtx.payload_type,
            rtx_seq,
            &mut buf[..MAX_DATAGRAM - overhead],
        )
        .ok_or(RtpDrop::TooBig)?;
        egress.on_sending(now, len, counted, true);
        let sent = egress
            .srtp
            .protect_rtp_stream(&mut self.rtx_srtp_index, &mut buf[..], len)
            .map_err(|_| RtpDrop::ProtectFailed)?;
        out.commit(sent, egress.to);
        if let Some(i) = slot {
            self.resent[i] = Resent { seq, at_ms: now_ms };
        }
        self.retransmitted += 1;
        egress.counters.rtp_packets_out += 1;
        egress.counters.rtp_bytes_out += len as u64;
        Ok(len)
    }

    /// Sends one padding-only packet of `padding` bytes (1..=255) on the RTX stream, with
    /// this transport's next transport-wide sequence number: probe traffic the client
    /// counts in its feedback and then drops. Returns bytes sent.
    pub fn send_padding(
        &mut self,
        now: Instant,
        padding: usize,
        egress: Option<Egress<'_>>,
        out: &mut dyn Transmit,
    ) -> Result<usize, RtpDrop> {
        let rtx = self.rtx.ok_or(RtpDrop::NoRtx)?;
        let mut egress = egress.ok_or(RtpDrop::NoRoute)?;
        let header = rtp::PaddingHeader {
            ssrc: rtx.ssrc,
            payload_type: rtx.payload_type,
            sequence_number: self.rtx_seq,
            timestamp: self.forwarder.last_output_timestamp().unwrap_or(0),
            transport_cc_id: self.twcc_ext,
            transport_cc: 0,
        };
        let len = egress.send_padding(now, header, padding, &mut self.rtx_srtp_index, out)?;
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        Ok(len)
    }

    /// Rewrites a copy of a producer packet for this consumer, in place: SSRC, sequence
    /// number, timestamp, payload type, marker (set where an SVC stream's forwarded
    /// layers end), header extension ids and this hop's extension values, and the VP8
    /// picture numbering. Returns true when the transport-wide sequence number was written.
    fn rewrite(
        &mut self,
        out: &mut [u8],
        info: &RtpHeaderInfo,
        header: Rewrite,
        hop: &HopValues,
    ) -> bool {
        rtp::set_ssrc(out, self.ssrc);
        rtp::set_sequence_number(out, header.seq);
        rtp::set_timestamp(out, header.timestamp);
        rtp::set_payload_type(out, header.payload_type);
        if header.marker {
            rtp::set_marker(out, true);
        }
        let wrote = rtp::rewrite_extensions(out, info, &self.ext_map, hop);
        if let Some(numbers) = header.vp8
            && let Some(payload) =
                out.get_mut(info.payload_offset..info.payload_offset + info.payload_len)
        {
            vp8::write_numbers(payload, numbers);
        }
        wrote
    }
}

/// Copies `packet` into a buffer of `out` under the pipe stream's SSRC, protects and
/// queues it. Returns bytes sent.
#[inline]
fn send_on_pipe(
    stream: &mut PipeStream,
    packet: &[u8],
    egress: &mut Egress<'_>,
    now: Instant,
    out: &mut dyn Transmit,
) -> Result<usize, RtpDrop> {
    let len = packet.len();
    if len + egress.srtp.profile().rtp_overhead() > MAX_DATAGRAM {
        return Err(RtpDrop::TooBig);
    }
    let buf = out.buffer();
    buf[..len].copy_from_slice(packet);
    rtp::set_ssrc(&mut buf[..len], stream.ssrc);
    egress.on_sending(now, len, false, false);
    let n = egress
        .srtp
        .protect_rtp_stream(&mut stream.srtp_index, &mut buf[..], len)
        .map_err(|_| RtpDrop::ProtectFailed)?;
    out.commit(n, egress.to);
    egress.counters.rtp_packets_out += 1;
    egress.counters.rtp_bytes_out += len as u64;
    Ok(len)
}

/// The header values of one rewritten packet.
#[derive(Clone, Copy, Debug)]
pub struct Rewrite {
    /// Output sequence number.
    pub seq: u16,
    /// Output timestamp.
    pub timestamp: u32,
    /// Output payload type.
    pub payload_type: u8,
    /// Set the marker bit.
    pub marker: bool,
    /// Output VP8 picture numbers (VP8 consumers).
    pub vp8: Option<Vp8Numbers>,
}
