//! RTCP the worker sends: Sender Reports to consumers' clients, Receiver Reports, NACKs,
//! keyframe requests and `setMaxIncomingBitrate`'s REMBs to producers' clients,
//! transport-cc feedback. Each is driven by its timer in the engine's table, by a packet
//! that asks for it, or by the control request that changes it.

use std::time::{Duration, Instant};

use ferrosoup_proto::rtp_parameters::MediaKind;
use ferrosoup_rtc::rtcp;

use super::Engine;
use crate::arena::{ConsumerKey, ProducerKey, TransportKey};
use crate::producer::KeyframeAction;
use crate::timers::Timer;
use crate::transmit::Transmit;
use crate::udp::MAX_DATAGRAM;

/// Interval between RTCP report rounds (SR for consumers, RR for producers) per transport.
pub(super) const RTCP_INTERVAL: Duration = Duration::from_millis(1000);
/// The SSRC the worker's own RTCP (receiver reports, feedback) is sent under.
pub(crate) const REPORTER_SSRC: u32 = 1;
/// REMBs of bitrate 0 sent after `setMaxIncomingBitrate(0)` lifted a limit, one now and
/// one per report round (as mediasoup: a client keeps the last REMB's cap until a REMB
/// lifts it, and one may be lost).
pub(super) const UNLIMITED_REMBS: u8 = 4;
/// Round trip assumed for NACK retries until one is measured on the transport.
const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// Sequence numbers per NACK packet at most: 128 scattered ones take 128 FCI entries,
/// 524 bytes, well within a datagram.
const NACK_SEQS_PER_PACKET: usize = 128;

impl Engine {
    /// A transport's report round: Sender and Receiver Reports, the REMB of
    /// `setMaxIncomingBitrate`, then scores.
    pub(super) fn on_reports_timer(
        &mut self,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        if self.transports.get(key).is_none_or(|t| t.srtp.is_none()) {
            return;
        }
        self.send_reports(key, now, out);
        self.send_limitation_remb(key, out);
        self.update_scores(key);
        self.steer_bandwidth(key, now, out);
        self.timers.arm(Timer::Reports(key), now + RTCP_INTERVAL);
    }

    /// Transport-cc feedback about everything the client sent since the last one.
    pub(super) fn send_twcc_feedback(&mut self, key: TransportKey, out: &mut dyn Transmit) {
        let Some(t) = self.transports.get(key) else {
            return;
        };
        let media_ssrc = t
            .producers
            .iter()
            .find_map(|&p| self.producers[p].streams.iter().find_map(|s| s.ssrc))
            .unwrap_or(0);
        // Bounded: each round reports at least one packet.
        for _ in 0..16 {
            let t = &mut self.transports[key];
            if !t.twcc.has_pending() {
                break;
            }
            let Some(len) =
                t.twcc
                    .write_feedback(&mut self.scratch.rtcp[..], REPORTER_SSRC, media_ssrc)
            else {
                break;
            };
            self.send_rtcp(key, len, out);
        }
    }

    /// NACKs for the missing packets of a producer stream that are due, or a keyframe
    /// request when too much is missing to repair.
    pub(super) fn send_nacks(
        &mut self,
        p: ProducerKey,
        s: usize,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some(producer) = self.producers.get_mut(p) else {
            return;
        };
        let t = producer.transport;
        let rtt = self
            .transports
            .get(t)
            .and_then(|t| t.rtt)
            .unwrap_or(DEFAULT_RTT);
        let Some(stream) = producer.streams.get_mut(s) else {
            return;
        };
        let Some(media_ssrc) = stream.ssrc else {
            return;
        };
        stream.nack.poll_nacks(now, rtt, &mut self.scratch.nacks);
        let next = stream.nack.poll_timeout();
        if stream.nack.too_many_missing() && stream.on_keyframe_request(now) == KeyframeAction::Send
        {
            // Too much lost to repair: a keyframe is the faster way back.
            self.send_keyframe_request(p, s, now, out);
        } else if !self.scratch.nacks.is_empty() {
            let n = self.scratch.nacks.len() as u64;
            stream.nacks_sent += n;
            self.counters.nacks_sent += n;
            // However scattered the losses, each NACK packet fits one datagram.
            let nacks = std::mem::take(&mut self.scratch.nacks);
            for chunk in nacks.chunks(NACK_SEQS_PER_PACKET) {
                let len =
                    rtcp::write_nack(&mut self.scratch.rtcp[..], REPORTER_SSRC, media_ssrc, chunk)
                        .unwrap_or(0);
                self.send_rtcp(t, len, out);
            }
            self.scratch.nacks = nacks;
        }
        if let Some(at) = next {
            self.timers.arm(Timer::Nack(p, s as u8), at);
        }
    }

    /// A keyframe request of a producer stream is overdue (no keyframe came) or was
    /// deferred by the rate limit.
    pub(super) fn on_keyframe_timer(
        &mut self,
        p: ProducerKey,
        s: usize,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some(stream) = self.producers.get(p).and_then(|p| p.streams.get(s)) else {
            return;
        };
        if stream.keyframe_request_due(now) {
            self.send_keyframe_request(p, s, now, out);
        } else if let Some(at) = stream.keyframe_request_deadline() {
            self.timers.arm(Timer::KeyframeRequest(p, s as u8), at);
        }
    }

    /// A keyframe request (PLI/FIR) naming `ssrc` of consumer `key`: for a pipe consumer
    /// the producer stream it sends under that SSRC, else the stream the consumer forwards
    /// or wants. Either way it goes through the producer stream's rate limit.
    pub(super) fn request_keyframe_for_ssrc(
        &mut self,
        key: ConsumerKey,
        ssrc: u32,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let c = &self.consumers[key];
        if c.pipe.is_empty() {
            self.request_keyframe_for_consumer(key, now, out);
        } else if let Some(stream) = c.pipe_stream(ssrc)
            && c.kind == MediaKind::Video
        {
            let p = c.producer;
            self.request_keyframe(p, stream, now, out);
        }
    }

    /// Asks for a keyframe of the stream a video consumer forwards or wants (a pipe
    /// consumer asks for none of its own: the consumers behind it do).
    pub(super) fn request_keyframe_for_consumer(
        &mut self,
        key: ConsumerKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let c = &self.consumers[key];
        if c.kind != MediaKind::Video || !c.pipe.is_empty() {
            return;
        }
        let stream = c.forwarder.target().or(c.forwarder.current()).unwrap_or(0);
        let p = c.producer;
        self.request_keyframe(p, stream, now, out);
    }

    /// Sends a PLI for a producer stream, unless one is on its way (aggregated) or went out
    /// very recently (deferred: its timer sends it when the rate limit allows).
    pub(super) fn request_keyframe(
        &mut self,
        p: ProducerKey,
        stream: usize,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some(s) = self
            .producers
            .get_mut(p)
            .and_then(|p| p.streams.get_mut(stream))
        else {
            return;
        };
        if s.ssrc.is_none() {
            return;
        }
        match s.on_keyframe_request(now) {
            KeyframeAction::Send => self.send_keyframe_request(p, stream, now, out),
            KeyframeAction::Deferred => {
                if let Some(at) = s.keyframe_request_deadline() {
                    self.timers.arm(Timer::KeyframeRequest(p, stream as u8), at);
                }
            }
            KeyframeAction::AlreadyPending => {}
        }
    }

    /// Sends a PLI for a producer stream to its client and arms the retry.
    fn send_keyframe_request(
        &mut self,
        p: ProducerKey,
        stream: usize,
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some(producer) = self.producers.get_mut(p) else {
            return;
        };
        let t = producer.transport;
        let Some(s) = producer.streams.get_mut(stream) else {
            return;
        };
        let Some(media_ssrc) = s.ssrc else { return };
        s.on_keyframe_request_sent(now);
        if let Some(at) = s.keyframe_request_deadline() {
            self.timers.arm(Timer::KeyframeRequest(p, stream as u8), at);
        }
        self.counters.plis_sent += 1;
        tracing::debug!(producer = %producer.id, stream, "keyframe request sent");
        let len =
            rtcp::write_pli(&mut self.scratch.rtcp[..], REPORTER_SSRC, media_ssrc).unwrap_or(0);
        self.send_rtcp(t, len, out);
    }

    /// Sender Reports for the consumers and Receiver Reports for the producers of a
    /// transport, packed into compound packets that fit a datagram.
    fn send_reports(&mut self, key: TransportKey, now: Instant, out: &mut dyn Transmit) {
        let ntp = self.ntp(now);
        let mut len = 0;
        let limit = MAX_DATAGRAM - 100;
        for i in 0..self.transports[key].consumers.len() {
            let c = self.transports[key].consumers[i];
            let consumer = &self.consumers[c];
            if !consumer.pipe.is_empty() {
                len = self.write_pipe_sender_reports(c, len, key, now, out);
                continue;
            }
            let Some(mut info) = consumer
                .send_stats
                .sender_report(now, ntp, consumer.clock_rate)
            else {
                continue;
            };
            // Lip-sync: derive the RTP time from the producer's own Sender Report when there
            // is one, so audio and video of one sender keep their relative timing.
            let producer_sr = self
                .producers
                .get(consumer.producer)
                .and_then(|p| consumer.forwarder.current().and_then(|s| p.streams.get(s)))
                .and_then(|s| s.last_sr_rtp);
            if let Some((sr_rtp, at)) = producer_sr {
                let elapsed = now.saturating_duration_since(at).as_secs_f64()
                    * f64::from(consumer.clock_rate);
                info.rtp_ts = consumer
                    .forwarder
                    .output_timestamp(sr_rtp.wrapping_add(elapsed as u32));
            }
            let ssrc = consumer.ssrc;
            if len + 28 > limit {
                self.send_rtcp(key, len, out);
                len = 0;
            }
            len += rtcp::write_sr(&mut self.scratch.rtcp[len..], ssrc, &info, &[]).unwrap_or(0);
        }
        for i in 0..self.transports[key].producers.len() {
            let p = self.transports[key].producers[i];
            for s in 0..self.producers[p].streams.len() {
                let stream = &mut self.producers[p].streams[s];
                let Some(ssrc) = stream.ssrc else { continue };
                if stream.last_packet.is_none() {
                    continue;
                }
                let block = stream.stats.report_block(now, ssrc);
                stream.fraction_lost = f64::from(block.fraction_lost) / 256.0;
                if len + 32 > limit {
                    self.send_rtcp(key, len, out);
                    len = 0;
                }
                len += rtcp::write_rr(&mut self.scratch.rtcp[len..], REPORTER_SSRC, &[block])
                    .unwrap_or(0);
            }
        }
        if self.transports[key].producers.iter().any(|&p| {
            self.producers[p]
                .streams
                .iter()
                .any(|s| s.last_packet.is_some())
        }) {
            // Its answer (DLRR) measures the round trip to a client we only receive from,
            // for NACK retries.
            if len + 20 > limit {
                self.send_rtcp(key, len, out);
                len = 0;
            }
            len +=
                rtcp::write_xr_rrtr(&mut self.scratch.rtcp[len..], REPORTER_SSRC, ntp).unwrap_or(0);
        }
        if len > 0 {
            self.send_rtcp(key, len, out);
        }
    }

    /// Sender Reports of a pipe consumer's streams, appended at `len` of the RTCP scratch
    /// (flushed when full): each stream's RTP time is the producer stream's, taken from
    /// the producer's own last Sender Report, so consumers on the other node keep audio
    /// and video of one sender in sync. A stream with no Sender Report from its producer
    /// yet, or nothing sent, gets none. Returns the new length.
    fn write_pipe_sender_reports(
        &mut self,
        c: ConsumerKey,
        mut len: usize,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> usize {
        let ntp = self.ntp(now);
        for i in 0..self.consumers[c].pipe.len() {
            let consumer = &self.consumers[c];
            let pipe = consumer.pipe[i];
            let Some((sr_rtp, at)) = self
                .producers
                .get(consumer.producer)
                .and_then(|p| p.streams.get(i))
                .and_then(|s| s.last_sr_rtp)
            else {
                continue;
            };
            if pipe.packets == 0 {
                continue;
            }
            let elapsed =
                now.saturating_duration_since(at).as_secs_f64() * f64::from(consumer.clock_rate);
            let info = rtcp::SenderInfo {
                ntp,
                rtp_ts: sr_rtp.wrapping_add(elapsed as u32),
                packets: pipe.packets,
                octets: pipe.octets,
            };
            if len + 28 > MAX_DATAGRAM - 100 {
                self.send_rtcp(key, len, out);
                len = 0;
            }
            len +=
                rtcp::write_sr(&mut self.scratch.rtcp[len..], pipe.ssrc, &info, &[]).unwrap_or(0);
        }
        len
    }

    /// The REMB that caps what a transport's client sends at its `setMaxIncomingBitrate`
    /// value (mediasoup's "limitation REMB"), naming the media SSRCs of its producers; or,
    /// while `unlimited_rembs` remain, one of bitrate 0 that lifts the cap. Only to a
    /// client that publishes on the transport, over SRTCP.
    ///
    /// The bitrate is the limit itself: the worker makes no receive-side estimate (the
    /// client estimates from our transport-cc feedback), and mediasoup also sends the bare
    /// limit when transport-cc is in use.
    pub(super) fn send_limitation_remb(&mut self, key: TransportKey, out: &mut dyn Transmit) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        if t.srtp.is_none() || t.producers.is_empty() {
            return;
        }
        let bitrate = if t.max_incoming_bitrate > 0 {
            t.max_incoming_bitrate
        } else if t.unlimited_rembs > 0 {
            t.unlimited_rembs -= 1;
            0
        } else {
            return;
        };
        // At most one media SSRC per encoding: 128 per transport (`MAX_INCOMING_SSRCS`
        // counts two), within the REMB's 255 and the scratch's capacity.
        let ssrcs = &mut self.scratch.ssrcs;
        ssrcs.clear();
        for &p in &t.producers {
            ssrcs.extend(self.producers[p].streams.iter().filter_map(|s| s.ssrc));
        }
        let len = rtcp::write_remb(
            &mut self.scratch.rtcp[..],
            REPORTER_SSRC,
            u64::from(bitrate),
            ssrcs,
        )
        .unwrap_or(0);
        self.send_rtcp(key, len, out);
    }

    /// Protects `scratch.rtcp[..len]` and queues it to a transport's client.
    pub(super) fn send_rtcp(&mut self, key: TransportKey, len: usize, out: &mut dyn Transmit) {
        if len == 0 {
            return;
        }
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        let to = t.rtcp_remote();
        let (Some(srtp), Some(to)) = (t.srtp.as_mut(), to) else {
            return;
        };
        if len + srtp.profile().rtcp_overhead() > MAX_DATAGRAM {
            return;
        }
        let buf = out.buffer();
        buf[..len].copy_from_slice(&self.scratch.rtcp[..len]);
        if let Ok(n) = srtp.protect_rtcp(&mut buf[..], len) {
            out.commit(n, to);
            t.counters.rtcp_out += 1;
            self.counters.rtcp_out += 1;
        }
    }
}
