//! A producer: the media a client sends, as one receive stream per encoding.

use std::time::{Duration, Instant};

use ferrosoup_bwe::rate::BitrateMeter;
use ferrosoup_proto::ortc::ProducerType;
use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::nack::NackGenerator;
use ferrosoup_rtc::rtp::{self, AudioLevel, ExtensionIds, RtpHeaderInfo, VideoCodec};
use ferrosoup_rtc::rtx::PacketStore;
use ferrosoup_rtc::seq::SeqExtender;

use crate::allocator::{Layer, MAX_LAYERS, MAX_SPATIAL_LAYERS};
use crate::arena::{ConsumerKey, TransportKey};
use crate::ids::ProducerId;
use crate::layers::{MAX_SVC_SPATIAL_LAYERS, MAX_TEMPORAL_LAYERS, PacketLayer, SvcMode};
use crate::stats::RtpDrop;
use crate::transport::StreamRef;

/// What the worker knows of one codec payload type a producer sends.
#[derive(Clone, Copy, Debug)]
pub struct CodecInfo {
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Video codec family, for keyframe detection.
    pub codec: VideoCodec,
}

/// How long a stream stays selectable by consumers after its last packet.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a keyframe request waits for the keyframe before it is sent again.
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);
/// The least time between two keyframe requests to the same stream.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(300);

/// One encoding of a producer as it arrives (a simulcast layer, or the only stream).
pub struct RecvStream {
    /// Media SSRC, once known (given by the client, or learned from MID/RID).
    pub ssrc: Option<u32>,
    /// RTX SSRC, once known.
    pub rtx_ssrc: Option<u32>,
    /// RID of this encoding, for RID-based simulcast.
    pub rid: Option<String>,
    /// Widens sequence numbers.
    pub seq: SeqExtender,
    /// Asks the client again for lost packets.
    pub nack: NackGenerator,
    /// Receive statistics for Receiver Reports and scores.
    pub stats: ferrosoup_rtc::rtcp::RecvStats,
    /// Recent packets, served to consumers' NACKs (video only).
    pub store: Option<PacketStore>,
    /// Last time any packet of this stream arrived.
    pub last_packet: Option<Instant>,
    /// A keyframe was requested and has not arrived yet.
    pub keyframe_pending: bool,
    /// A request came while the rate limit held it back; it goes out when the limit allows.
    pub keyframe_deferred: bool,
    /// When the last keyframe request went out to the client.
    pub last_keyframe_request: Option<Instant>,
    /// Keyframes received.
    pub keyframes: u64,
    /// PLIs sent to the client.
    pub plis_sent: u64,
    /// NACKed sequence numbers sent to the client.
    pub nacks_sent: u64,
    /// Last score reported.
    pub score: u8,
    /// RTP timestamp of the client's last Sender Report and when it arrived.
    pub last_sr_rtp: Option<(u32, Instant)>,
    /// Fraction lost (0..1) in the interval of the last Receiver Report sent about it.
    pub fraction_lost: f64,
    /// Bitrate of the stream as it arrives (what forwarding it costs a consumer).
    pub bitrate: BitrateMeter,
    /// Bitrate of each of its layers (video only).
    pub layers: LayerRates,
    /// Size of its keyframes (video only).
    pub keyframe_size: KeyframeSize,
}

/// The size of a stream's keyframes on the wire, counted from their packets: what
/// switching a consumer onto the stream sends it at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyframeSize {
    /// RTP timestamp and bytes so far of the keyframe arriving now.
    arriving: Option<(u32, usize)>,
    /// Bytes of the last complete keyframe (0: none yet).
    last: usize,
}

impl KeyframeSize {
    /// Counts a packet of the picture with RTP timestamp `timestamp`, `bytes` long on the
    /// wire; `keyframe`: it starts a keyframe.
    fn on_packet(&mut self, timestamp: u32, keyframe: bool, bytes: usize) {
        if let Some((at, sum)) = self.arriving.as_mut() {
            if *at == timestamp {
                *sum += bytes;
                return;
            }
            if (timestamp.wrapping_sub(*at) as i32) < 0 {
                // A late packet of an older picture.
                return;
            }
            // The next picture began: the keyframe is complete.
            self.last = *sum;
            self.arriving = None;
        }
        if keyframe {
            self.arriving = Some((timestamp, bytes));
        }
    }

    /// Bits of its last keyframe (the one arriving, when bigger); 0 before the first.
    pub fn bits(&self) -> u64 {
        let arriving = self.arriving.map_or(0, |(_, sum)| sum);
        8 * self.last.max(arriving) as u64
    }
}

/// The bitrate of each (spatial, temporal) layer inside one stream, measured from its
/// packets, and when each was last seen; fixed storage allocated with the stream.
pub struct LayerRates {
    /// One meter per [`PacketLayer::index`].
    meters: Vec<BitrateMeter>,
    /// Pictures of each layer per second (one count per picture).
    pictures: Vec<BitrateMeter>,
    /// RTP timestamp of each layer's newest picture.
    newest_picture: Vec<Option<u32>>,
    /// When each layer last had a packet.
    last: Vec<Option<Instant>>,
    /// Each layer's highest rate lately and when it was seen (see [`LayerRates::bps`]).
    peaks: Vec<Option<(u64, Instant)>>,
}

/// What a layer's past peak still counts for per second since it was seen.
const PEAK_KEPT_PER_SECOND: f64 = 0.85;

impl LayerRates {
    /// Meters for `spatial_layers` spatial layers of [`MAX_TEMPORAL_LAYERS`] each (none
    /// for 0).
    fn new(spatial_layers: usize) -> Self {
        let n = spatial_layers.min(MAX_SVC_SPATIAL_LAYERS) * MAX_TEMPORAL_LAYERS;
        Self {
            meters: vec![BitrateMeter::new(BITRATE_WINDOW); n],
            pictures: vec![BitrateMeter::new(BITRATE_WINDOW); n],
            newest_picture: vec![None; n],
            last: vec![None; n],
            peaks: vec![None; n],
        }
    }

    /// Counts a packet of `layer` in the picture with RTP timestamp `timestamp` (a
    /// retransmission counts its bytes only); true when the layer had been silent (or
    /// never sent).
    fn add(
        &mut self,
        now: Instant,
        layer: &PacketLayer,
        timestamp: u32,
        bytes: usize,
        recovered: bool,
    ) -> bool {
        let Some(i) = layer.index().filter(|&i| i < self.meters.len()) else {
            return false;
        };
        self.meters[i].add(now, bytes);
        if !recovered
            && self.newest_picture[i].is_none_or(|n| (timestamp.wrapping_sub(n) as i32) > 0)
        {
            self.newest_picture[i] = Some(timestamp);
            self.pictures[i].add(now, 1);
        }
        let woke_up =
            self.last[i].is_none_or(|t| now.saturating_duration_since(t) >= ACTIVE_TIMEOUT);
        self.last[i] = Some(now);
        woke_up
    }

    /// Bitrate of a layer (`spatial` inside the stream, `temporal`) to budget for: its
    /// rate over the last second, or its highest such rate lately when that was higher,
    /// counting 15 % less for each second since (a camera's layers swing by 2× from one
    /// second to the next with keyframes and motion; a layer taken in a quiet second
    /// overflows the link in the next). 0 when it had no packet within
    /// [`ACTIVE_TIMEOUT`], at least 1 while too young to be measured.
    pub fn bps(&mut self, now: Instant, spatial: usize, temporal: usize) -> u64 {
        if spatial >= MAX_SVC_SPATIAL_LAYERS || temporal >= MAX_TEMPORAL_LAYERS {
            return 0;
        }
        let i = spatial * MAX_TEMPORAL_LAYERS + temporal;
        let active = self
            .last
            .get(i)
            .copied()
            .flatten()
            .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_TIMEOUT);
        if !active {
            return 0;
        }
        let rate = self.meters[i].bps(now).unwrap_or(1).max(1);
        let kept = self.peaks[i].map_or(0, |(peak, at)| {
            let age = now.saturating_duration_since(at).as_secs_f64();
            (peak as f64 * PEAK_KEPT_PER_SECOND.powf(age)) as u64
        });
        if rate >= kept {
            self.peaks[i] = Some((rate, now));
        }
        rate.max(kept)
    }

    /// Pictures per second of a layer (`spatial` inside the stream, `temporal`) and the
    /// temporal layers below it: the frame rate a consumer forwarding it gets (0 while
    /// too young to be measured).
    pub fn frame_rate(&mut self, now: Instant, spatial: usize, temporal: usize) -> f64 {
        if spatial >= MAX_SVC_SPATIAL_LAYERS || temporal >= MAX_TEMPORAL_LAYERS {
            return 0.0;
        }
        let first = spatial * MAX_TEMPORAL_LAYERS;
        self.pictures
            .get_mut(first..=first + temporal)
            .map_or(0.0, |meters| {
                meters.iter_mut().filter_map(|m| m.per_second(now)).sum()
            })
    }
}

/// IPv4, UDP and an SRTP tag around each forwarded packet, in a stream's bitrate.
const WIRE_OVERHEAD: usize = 28 + 16;

/// Window of a stream's bitrate: long enough to smooth keyframes over.
pub const BITRATE_WINDOW: Duration = Duration::from_secs(1);

/// What a receive stream made of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Widened sequence number.
    pub ext_seq: u64,
    /// The packet starts a keyframe.
    pub keyframe: bool,
    /// The stream had been silent (or never sent): consumers may now select it.
    pub woke_up: bool,
    /// The packet opened a gap: NACKs are due at once.
    pub gap: bool,
    /// Its layer indices.
    pub layer: PacketLayer,
    /// Its layer had been silent (or never sent): consumers may now select it.
    pub layer_woke_up: bool,
}

impl RecvStream {
    /// A stream for one encoding, with `spatial_layers` inside it (1 but for SVC).
    pub fn new(
        kind: MediaKind,
        ssrc: Option<u32>,
        rtx_ssrc: Option<u32>,
        rid: Option<String>,
        spatial_layers: usize,
    ) -> Self {
        let video = kind == MediaKind::Video;
        Self {
            ssrc,
            rtx_ssrc,
            rid,
            seq: SeqExtender::new(),
            nack: NackGenerator::new(),
            stats: ferrosoup_rtc::rtcp::RecvStats::new(),
            // ~2.5 s of 1 Mbps video; audio is not retransmitted.
            store: video.then(|| PacketStore::new(512, crate::udp::MAX_DATAGRAM)),
            last_packet: None,
            keyframe_pending: false,
            keyframe_deferred: false,
            last_keyframe_request: None,
            keyframes: 0,
            plis_sent: 0,
            nacks_sent: 0,
            score: 10,
            last_sr_rtp: None,
            fraction_lost: 0.0,
            bitrate: BitrateMeter::new(BITRATE_WINDOW),
            layers: LayerRates::new(if video { spatial_layers.max(1) } else { 0 }),
            keyframe_size: KeyframeSize::default(),
        }
    }

    /// Whether packets arrived recently enough for consumers to select this stream.
    pub fn is_active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_TIMEOUT)
    }

    /// The receive work for one packet of this stream (RTX already unwrapped): widen the
    /// sequence number, update the statistics, track losses for NACK, detect keyframes and
    /// keep the packet for retransmissions.
    pub fn on_rtp(
        &mut self,
        now: Instant,
        codec: CodecInfo,
        packet: &[u8],
        info: &RtpHeaderInfo,
        recovered: bool,
    ) -> Result<Received, RtpDrop> {
        let ext_seq = self.seq.extend(info.sequence_number);
        // A packet already here (a retransmission of one that was not lost, or the late
        // original of one already recovered) is not forwarded again: consumers would send
        // it under the same output sequence number, protecting one SRTP index twice.
        if self
            .store
            .as_ref()
            .is_some_and(|store| store.get(ext_seq).is_some())
        {
            return Err(RtpDrop::Duplicate);
        }
        let video = self.store.is_some();
        let keyframe = video
            && codec.codec != VideoCodec::Other
            && rtp::is_keyframe(codec.codec, info.payload(packet));
        let layer = if video {
            PacketLayer::parse(codec.codec, info.payload(packet))
        } else {
            PacketLayer::default()
        };
        let woke_up = !self.is_active(now);
        self.last_packet = Some(now);
        // What forwarding it costs on the wire: IP, UDP and the SRTP tag included.
        self.bitrate.add(now, packet.len() + WIRE_OVERHEAD);
        let layer_woke_up = self.layers.add(
            now,
            &layer,
            info.timestamp,
            packet.len() + WIRE_OVERHEAD,
            recovered,
        );
        if video && !recovered {
            self.keyframe_size
                .on_packet(info.timestamp, keyframe, packet.len() + WIRE_OVERHEAD);
        }
        self.stats
            .on_packet(now, ext_seq, info.timestamp, codec.clock_rate, packet.len());
        let gap = video && self.nack.on_packet(now, ext_seq, keyframe, recovered);
        if keyframe {
            self.on_keyframe();
        }
        if let Some(store) = self.store.as_mut() {
            store.insert(ext_seq, 0, packet);
        }
        Ok(Received {
            ext_seq,
            keyframe,
            woke_up,
            gap,
            layer,
            layer_woke_up,
        })
    }

    /// What to do with a new keyframe request at `now`: requests are aggregated (one is
    /// already on its way: nothing), rate-limited (too soon after the last one: deferred)
    /// or sent.
    pub fn on_keyframe_request(&mut self, now: Instant) -> KeyframeAction {
        let Some(last) = self.last_keyframe_request else {
            return KeyframeAction::Send;
        };
        let since = now.saturating_duration_since(last);
        if self.keyframe_pending && since < KEYFRAME_RETRY {
            KeyframeAction::AlreadyPending
        } else if since < KEYFRAME_MIN_INTERVAL {
            self.keyframe_deferred = true;
            KeyframeAction::Deferred
        } else {
            KeyframeAction::Send
        }
    }

    /// When a request should go out without a new trigger: the last one got no keyframe
    /// in time (retry), or one was deferred by the rate limit.
    pub fn keyframe_request_deadline(&self) -> Option<Instant> {
        let last = self.last_keyframe_request?;
        if self.keyframe_deferred {
            Some(last + KEYFRAME_MIN_INTERVAL)
        } else if self.keyframe_pending {
            Some(last + KEYFRAME_RETRY)
        } else {
            None
        }
    }

    /// Whether [`RecvStream::keyframe_request_deadline`] has passed at `now`.
    pub fn keyframe_request_due(&self, now: Instant) -> bool {
        self.keyframe_request_deadline().is_some_and(|at| at <= now)
    }

    /// Records that a request went out.
    pub fn on_keyframe_request_sent(&mut self, now: Instant) {
        self.last_keyframe_request = Some(now);
        self.keyframe_pending = true;
        self.keyframe_deferred = false;
        self.plis_sent += 1;
    }

    /// Records a keyframe: every request so far is satisfied.
    pub fn on_keyframe(&mut self) {
        self.keyframes += 1;
        self.keyframe_pending = false;
        self.keyframe_deferred = false;
    }
}

/// The outcome of a keyframe request for a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyframeAction {
    /// Send a PLI now.
    Send,
    /// A request is already on its way and not overdue: the keyframe it brings serves this
    /// one too.
    AlreadyPending,
    /// Too soon after the last request: sent when the minimum interval has passed.
    Deferred,
}

/// A producer as the worker keeps it.
pub struct Producer {
    /// Public id.
    pub id: ProducerId,
    /// The transport it arrives on (its owner).
    pub transport: TransportKey,
    /// Audio or video.
    pub kind: MediaKind,
    /// Paused by its client.
    pub paused: bool,
    /// Producer payload type → codec info (media codecs only).
    pub codecs: [Option<CodecInfo>; 128],
    /// RTX payload type → media payload type it repairs.
    pub rtx_apt: [Option<u8>; 128],
    /// One stream per encoding, in encoding order (spatial layer 0 first).
    pub streams: Vec<RecvStream>,
    /// Consumers of this producer (indexed, not owned).
    pub consumers: Vec<ConsumerKey>,
    /// The client's MID for this producer's m-section.
    pub mid: Option<String>,
    /// Header extension ids the client uses for this producer (0: not negotiated).
    pub ext_ids: ExtensionIds,
    /// `simple`, `simulcast` or `svc`, as consumers of it will be.
    pub producer_type: ProducerType,
    /// How the spatial layers inside its stream depend on each other (SVC).
    pub svc: SvcMode,
    /// Last score reported.
    pub score: u8,
    /// Sum of audio levels (0..127, -dBov) since the last active-speaker check.
    pub audio_level_sum: u32,
    /// Number of levels in `audio_level_sum`.
    pub audio_level_count: u32,
}

/// A packet as a producer hands it on to its consumers.
#[derive(Clone, Copy, Debug)]
pub struct Arrived {
    /// Stream (encoding) index.
    pub stream: usize,
    /// Length of the (RTX-unwrapped) packet.
    pub len: usize,
    /// Its parsed header.
    pub info: RtpHeaderInfo,
    /// What its stream made of it.
    pub received: Received,
}

impl Producer {
    /// The receive work for one packet of the stream `to` names, in place in `data[..len]`:
    /// RTX unwrapped, codec looked up, audio level summed, then the stream's own work.
    pub fn receive(
        &mut self,
        now: Instant,
        to: StreamRef,
        data: &mut [u8],
        len: usize,
        mut info: RtpHeaderInfo,
        audio_level: Option<AudioLevel>,
    ) -> Result<Arrived, RtpDrop> {
        let StreamRef { stream, rtx, .. } = to;
        let mut len = len;
        if rtx {
            let apt = self
                .rtx_apt
                .get(usize::from(info.payload_type))
                .copied()
                .flatten()
                .ok_or(RtpDrop::UnknownPayloadType)?;
            let ssrc = self
                .streams
                .get(stream)
                .and_then(|s| s.ssrc)
                .ok_or(RtpDrop::UnknownSsrc)?;
            if info.payload_len < 2 {
                return Err(RtpDrop::RtxPadding);
            }
            len = ferrosoup_rtc::rtx::unwrap_rtx(&mut data[..len], &info, ssrc, apt)
                .ok_or(RtpDrop::Malformed)?;
            info = rtp::parse_rtp(&data[..len]).map_err(|_| RtpDrop::Malformed)?;
        }
        let codec = self
            .codecs
            .get(usize::from(info.payload_type))
            .copied()
            .flatten()
            .ok_or(RtpDrop::UnknownPayloadType)?;
        if let Some(level) = audio_level.filter(|_| self.kind == MediaKind::Audio) {
            self.audio_level_sum += u32::from(level.level);
            self.audio_level_count += 1;
        }
        let s = self.streams.get_mut(stream).ok_or(RtpDrop::UnknownSsrc)?;
        let received = s.on_rtp(now, codec, &data[..len], &info, rtx)?;
        Ok(Arrived {
            stream,
            len,
            info,
            received,
        })
    }

    /// Index of the stream for a RID.
    pub fn stream_by_rid(&self, rid: &str) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.rid.as_deref() == Some(rid))
    }

    /// What each layer step ([`Layer::step`]) would cost a consumer that prefers spatial
    /// layer `spatial` (`None`: the highest) and, at that spatial layer, temporal layer
    /// `temporal`, bit/s: the layer and those it builds on (the lower temporal layers; in
    /// full SVC the lower spatial layers too). 0 for a step that is not receiving or is
    /// above the preference.
    pub fn layer_steps(
        &mut self,
        now: Instant,
        spatial: Option<u8>,
        temporal: Option<u8>,
    ) -> [u64; MAX_LAYERS] {
        let mut steps = [0u64; MAX_LAYERS];
        let allowed = |s: usize, t: usize| {
            spatial.map_or(usize::MAX, usize::from) >= s
                && (spatial != u8::try_from(s).ok() || temporal.is_none_or(|p| usize::from(p) >= t))
        };
        let mut set = |s: usize, t: usize, bps: u64| {
            let layer = Layer {
                spatial: s as u8,
                temporal: t as u8,
            };
            if allowed(s, t) {
                steps[layer.step()] = bps;
            }
        };
        if self.svc == SvcMode::None {
            for (s, stream) in self.streams.iter_mut().enumerate().take(MAX_SPATIAL_LAYERS) {
                if !stream.is_active(now) {
                    continue;
                }
                let mut sum = 0;
                for t in 0..MAX_TEMPORAL_LAYERS {
                    let bps = stream.layers.bps(now, 0, t);
                    sum += bps;
                    if bps > 0 {
                        set(s, t, sum);
                    }
                }
            }
        } else if let Some(stream) = self.streams.first_mut() {
            // Full SVC forwards the spatial layers below too, at the same temporal layer.
            let full = self.svc == SvcMode::Full;
            let mut below = [0u64; MAX_TEMPORAL_LAYERS];
            for s in 0..MAX_SVC_SPATIAL_LAYERS {
                let mut sum = 0;
                for (t, below) in below.iter_mut().enumerate() {
                    let bps = stream.layers.bps(now, s, t);
                    sum += bps;
                    if bps > 0 {
                        set(s, t, sum + if full { *below } else { 0 });
                    }
                    *below += sum;
                }
            }
        }
        steps
    }

    /// The frame rate a consumer gets at each layer step ([`Layer::step`]): pictures per
    /// second of the step's temporal layer and those below it (0: not measured).
    pub fn frame_rates(&mut self, now: Instant) -> [f64; MAX_LAYERS] {
        let mut rates = [0.0; MAX_LAYERS];
        for (step, rate) in rates.iter_mut().enumerate() {
            let layer = Layer::from_step(step);
            let (s, t) = (usize::from(layer.spatial), usize::from(layer.temporal));
            *rate = if self.svc == SvcMode::None {
                self.streams
                    .get_mut(s)
                    .map_or(0.0, |stream| stream.layers.frame_rate(now, 0, t))
            } else {
                self.streams
                    .first_mut()
                    .map_or(0.0, |stream| stream.layers.frame_rate(now, s, t))
            };
        }
        rates
    }

    /// Bits of the last keyframe of each spatial layer ([`KeyframeSize::bits`]): its
    /// simulcast stream's, or an SVC stream's whole keyframe for each of its layers.
    pub fn keyframe_bits(&self) -> [u64; MAX_SPATIAL_LAYERS] {
        let mut bits = [0; MAX_SPATIAL_LAYERS];
        if self.svc == SvcMode::None {
            for (b, stream) in bits.iter_mut().zip(&self.streams) {
                *b = stream.keyframe_size.bits();
            }
        } else if let Some(stream) = self.streams.first() {
            bits.fill(stream.keyframe_size.bits());
        }
        bits
    }

    /// The highest spatial layer of an SVC stream at or below `cap` that is receiving
    /// (0 when none is).
    pub fn svc_top_spatial(&mut self, now: Instant, cap: Option<u8>) -> u8 {
        let Some(stream) = self.streams.first_mut() else {
            return 0;
        };
        let max = cap.map_or(MAX_SVC_SPATIAL_LAYERS - 1, |c| {
            usize::from(c).min(MAX_SVC_SPATIAL_LAYERS - 1)
        });
        (0..=max)
            .rev()
            .find(|&s| (0..MAX_TEMPORAL_LAYERS).any(|t| stream.layers.bps(now, s, t) > 0))
            .map_or(0, |s| s as u8)
    }

    /// The highest stream index at or below `preferred` that is receiving packets; falls back
    /// to the lowest active one.
    pub fn best_active_stream(&self, now: Instant, preferred: Option<u8>) -> Option<usize> {
        let max = preferred.map_or(self.streams.len().saturating_sub(1), |p| {
            (p as usize).min(self.streams.len().saturating_sub(1))
        });
        (0..=max)
            .rev()
            .find(|&i| self.streams[i].is_active(now))
            .or_else(|| (0..self.streams.len()).find(|&i| self.streams[i].is_active(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> RecvStream {
        RecvStream::new(MediaKind::Video, Some(1), None, None, 1)
    }

    #[test]
    fn a_keyframe_is_sized_from_its_packets_until_the_next_picture() {
        let mut size = KeyframeSize::default();
        size.on_packet(100, false, 500);
        assert_eq!(size.bits(), 0, "no keyframe yet");
        size.on_packet(200, true, 1_000);
        size.on_packet(200, false, 1_000);
        assert_eq!(size.bits(), 16_000, "counted while it arrives");
        size.on_packet(100, false, 1_000);
        size.on_packet(200, false, 500);
        size.on_packet(300, false, 700);
        assert_eq!(
            size.bits(),
            20_000,
            "a late packet of an older picture is not counted"
        );
        size.on_packet(u32::MAX, true, 300);
        size.on_packet(2, false, 100);
        assert_eq!(
            size.bits(),
            2_400,
            "the last one, across the timestamp's wrap"
        );
        size.on_packet(5, true, 3_000);
        assert_eq!(size.bits(), 24_000);
    }

    #[test]
    fn keyframe_requests_are_aggregated_rate_limited_and_retried() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = stream();
        assert_eq!(s.on_keyframe_request(t0), KeyframeAction::Send);
        s.on_keyframe_request_sent(t0);
        // While the keyframe is on its way, more requests add nothing.
        assert_eq!(
            s.on_keyframe_request(t0 + ms(500)),
            KeyframeAction::AlreadyPending
        );
        assert!(!s.keyframe_request_due(t0 + ms(999)));
        // No keyframe within the retry time: ask again.
        assert!(s.keyframe_request_due(t0 + ms(1000)));
        s.on_keyframe_request_sent(t0 + ms(1000));
        s.on_keyframe();
        // A new request just after the keyframe is deferred, not lost.
        assert_eq!(
            s.on_keyframe_request(t0 + ms(1100)),
            KeyframeAction::Deferred
        );
        assert!(!s.keyframe_request_due(t0 + ms(1299)));
        assert!(s.keyframe_request_due(t0 + ms(1300)));
        s.on_keyframe_request_sent(t0 + ms(1300));
        assert!(!s.keyframe_request_due(t0 + ms(1300)));
        assert_eq!(s.plis_sent, 3);
    }
}
