//! A producer: the media a client sends, as one receive stream per encoding.

use std::time::{Duration, Instant};

use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::nack::NackGenerator;
use ferrosoup_rtc::rtp::VideoCodec;
use ferrosoup_rtc::rtx::PacketStore;
use ferrosoup_rtc::seq::SeqExtender;

use crate::ids::ProducerId;

/// What the worker knows of one codec payload type a producer sends.
#[derive(Clone, Copy, Debug)]
pub struct CodecInfo {
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Video codec family, for keyframe detection.
    pub codec: VideoCodec,
}

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
}

impl RecvStream {
    /// A stream for one encoding.
    pub fn new(
        kind: MediaKind,
        ssrc: Option<u32>,
        rtx_ssrc: Option<u32>,
        rid: Option<String>,
    ) -> Self {
        Self {
            ssrc,
            rtx_ssrc,
            rid,
            seq: SeqExtender::new(),
            nack: NackGenerator::new(),
            stats: ferrosoup_rtc::rtcp::RecvStats::new(),
            // ~2.5 s of 1 Mbps video; audio is not retransmitted.
            store: (kind == MediaKind::Video)
                .then(|| PacketStore::new(512, crate::udp::MAX_DATAGRAM)),
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
        }
    }

    /// Whether packets arrived recently enough for consumers to select this stream.
    pub fn is_active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(2))
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

    /// Whether a request should go out now without a new trigger: the last one got no
    /// keyframe in time (retry), or one was deferred by the rate limit.
    pub fn keyframe_request_due(&self, now: Instant) -> bool {
        let Some(last) = self.last_keyframe_request else {
            return false;
        };
        let since = now.saturating_duration_since(last);
        (self.keyframe_pending && since >= KEYFRAME_RETRY)
            || (self.keyframe_deferred && since >= KEYFRAME_MIN_INTERVAL)
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
    /// Slab key of the transport it arrives on (its owner).
    pub transport: usize,
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
    /// Consumers of this producer (slab keys; indexed, not owned).
    pub consumers: Vec<usize>,
    /// The client's MID for this producer's m-section.
    pub mid: Option<String>,
    /// Header extension ids the client uses for this producer (0: not negotiated).
    pub ext_ids: ExtIds,
    /// `simple`, `simulcast` or `svc`, as consumers of it will be.
    pub consumer_type: &'static str,
    /// Last score reported.
    pub score: u8,
    /// Sum of audio levels (0..127, -dBov) since the last active-speaker check.
    pub audio_level_sum: u32,
    /// Number of levels in `audio_level_sum`.
    pub audio_level_count: u32,
}

/// Header extension ids of the extensions the worker reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtIds {
    /// urn:ietf:params:rtp-hdrext:sdes:mid
    pub mid: u8,
    /// urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
    pub rid: u8,
    /// urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
    pub rrid: u8,
    /// urn:ietf:params:rtp-hdrext:ssrc-audio-level
    pub audio_level: u8,
    /// http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
    pub twcc: u8,
}

impl Producer {
    /// Index of the stream for a media SSRC, and whether the SSRC is its RTX SSRC.
    pub fn stream_by_ssrc(&self, ssrc: u32) -> Option<(usize, bool)> {
        self.streams.iter().enumerate().find_map(|(i, s)| {
            if s.ssrc == Some(ssrc) {
                Some((i, false))
            } else if s.rtx_ssrc == Some(ssrc) {
                Some((i, true))
            } else {
                None
            }
        })
    }

    /// Index of the stream for a RID.
    pub fn stream_by_rid(&self, rid: &str) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.rid.as_deref() == Some(rid))
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
        RecvStream::new(MediaKind::Video, Some(1), None, None)
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
