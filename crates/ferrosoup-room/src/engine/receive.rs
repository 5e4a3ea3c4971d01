//! What comes in: one datagram is demultiplexed (RFC 7983) to ICE, DTLS, RTP or RTCP of the
//! transport its 5-tuple belongs to. RTP is unprotected, parsed, handed to its producer's
//! receive stream and then fanned out (forward.rs); RTCP feedback is answered.

use std::net::SocketAddr;
use std::time::Instant;

use ferrosoup_rtc::demux::{PacketKind, classify};
use ferrosoup_rtc::ice::{StunOutcome, stun_local_ufrag};
use ferrosoup_rtc::rtcp::{self, RtcpItem};
use ferrosoup_rtc::rtp::{self, RtpHeaderInfo};
use ferrosoup_rtc::srtp::SrtpError;

use super::Engine;
use crate::arena::TransportKey;
use crate::layers::SvcMode;
use crate::producer::Arrived;
use crate::stats::{Distribution, RtpDrop};
use crate::timers::Timer;
use crate::transmit::Transmit;
use crate::transport::StreamRef;

impl Engine {
    /// Handles one received datagram; `data` is modified in place (SRTP is removed there).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
        out: &mut dyn Transmit,
    ) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += data.len() as u64;
        let kind = classify(data);
        if kind == PacketKind::Stun {
            self.handle_stun(now, from, data, out);
            return;
        }
        if kind == PacketKind::Unknown {
            self.counters.dropped_malformed += 1;
            return;
        }
        let Some(&key) = self.by_tuple.get(&from) else {
            self.counters.dropped_unknown_tuple += 1;
            return;
        };
        match kind {
            PacketKind::Dtls => {
                if let Some(dtls) = self.transports[key].dtls.as_mut() {
                    dtls.handle_read(now, data);
                }
                self.drain_transport(key, now, out);
            }
            PacketKind::Rtp => {
                if let Err(reason) = self.handle_rtp(now, key, from, data, out) {
                    self.counters.rtp_dropped.add(reason);
                }
            }
            PacketKind::Rtcp => self.handle_rtcp(now, key, from, data, out),
            PacketKind::Stun | PacketKind::Unknown => {}
        }
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8], out: &mut dyn Transmit) {
        let key = match self.by_tuple.get(&from) {
            Some(&k) => k,
            None => match stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                Some(&k) => k,
                None => {
                    self.counters.stun_rejected += 1;
                    return;
                }
            },
        };
        let t = &mut self.transports[key];
        match t.ice.handle_stun(now, from, data, &mut self.scratch.stun) {
            StunOutcome::Respond => out.push(&self.scratch.stun, from),
            StunOutcome::Ignored(_) => self.counters.stun_rejected += 1,
        }
        if t.ice.is_valid_tuple(from) && !self.by_tuple.contains_key(&from) {
            self.by_tuple.insert(from, key);
            t.tuples.push(from);
        }
        self.drain_transport(key, now, out);
    }

    /// The receive half of the media path: unprotect, parse, find the producer stream, let
    /// it do its receive work, then fan out.
    pub(super) fn handle_rtp(
        &mut self,
        now: Instant,
        key: TransportKey,
        from: SocketAddr,
        data: &mut [u8],
        out: &mut dyn Transmit,
    ) -> Result<(), RtpDrop> {
        let t = &mut self.transports[key];
        let srtp = t.srtp.as_mut().ok_or(RtpDrop::NotConnected)?;
        let len = match srtp.unprotect_rtp(data) {
            Ok(len) => len,
            // A duplicate (e.g. a retransmission sent on the media SSRC twice): not an attack.
            Err(SrtpError::Replayed) => return Err(RtpDrop::SrtpReplay),
            Err(_) => {
                t.counters.srtp_failures += 1;
                self.counters.srtp_failures += 1;
                return Err(RtpDrop::SrtpAuth);
            }
        };
        t.ice.on_media_from(from);
        let info = rtp::parse_rtp(&data[..len]).map_err(|_| RtpDrop::Malformed)?;
        t.counters.rtp_packets_in += 1;
        t.counters.rtp_bytes_in += len as u64;
        self.counters.rtp_packets_in += 1;
        self.counters.rtp_bytes_in += len as u64;
        let Some(sref) = self.lookup_stream(key, &data[..len], &info) else {
            self.transports[key].counters.unknown_ssrc += 1;
            return Err(RtpDrop::UnknownSsrc);
        };
        let p = sref.producer;
        let exts = self.producers[p].ext_ids.read(&data[..len], &info);
        let (twcc_seq, audio_level) = (exts.transport_wide_cc, exts.audio_level);
        if let Some(seq) = twcc_seq {
            self.transports[key].twcc.on_packet(now, seq);
            // A no-op while feedback is already due earlier.
            self.timers.arm(
                Timer::TwccFeedback(key),
                now + ferrosoup_rtc::twcc::FEEDBACK_INTERVAL,
            );
        }
        let arrived = self.producers[p].receive(now, sref, data, len, info, audio_level)?;
        if arrived.received.keyframe {
            tracing::debug!(producer = %self.producers[p].id, stream = arrived.stream, "keyframe arrived");
        }
        self.after_receive(now, p, &arrived);
        let producer = &self.producers[p];
        if producer.paused {
            return Err(RtpDrop::ProducerPaused);
        }
        self.fan_out(now, p, &data[..arrived.len], &arrived, out);
        Ok(())
    }

    /// Timers a received packet may start: NACKs for a new gap, a layer check when a
    /// simulcast stream starts or resumes.
    fn after_receive(&mut self, now: Instant, p: crate::arena::ProducerKey, arrived: &Arrived) {
        if arrived.received.gap {
            self.timers.arm(Timer::Nack(p, arrived.stream as u8), now);
        }
        // A simulcast stream or an SVC spatial layer that starts: consumers may go up.
        let producer = &self.producers[p];
        if (arrived.received.woke_up && producer.streams.len() > 1)
            || (arrived.received.layer_woke_up && producer.svc != SvcMode::None)
        {
            self.timers.arm(Timer::StreamActivity(p), now);
        }
    }

    /// Finds the producer stream of an incoming packet: by SSRC, else by MID/RID (and then
    /// remembers the SSRC as the stream's, forgetting the one it had: the table holds at
    /// most the media and RTX SSRC of each stream, however many SSRCs a client sends).
    fn lookup_stream(
        &mut self,
        key: TransportKey,
        packet: &[u8],
        info: &RtpHeaderInfo,
    ) -> Option<StreamRef> {
        let t = &mut self.transports[key];
        if let Some(r) = t.ssrc_table.get(&info.ssrc) {
            return Some(*r);
        }
        // Unknown SSRC: identify by MID (+ RID / repaired RID) header extensions, read in
        // one pass per producer.
        let (p, exts) = t.producers.iter().find_map(|&p| {
            let producer = &self.producers[p];
            let mid = producer.mid.as_deref()?;
            let exts = producer.ext_ids.read(packet, info);
            (exts.mid? == mid).then_some((p, exts))
        })?;
        let producer = &mut self.producers[p];
        let (stream, rtx) = if let Some(rid) = exts.rid {
            (producer.stream_by_rid(rid)?, false)
        } else if let Some(rid) = exts.repaired_rid {
            (producer.stream_by_rid(rid)?, true)
        } else if producer.streams.len() == 1 {
            let rtx = producer
                .rtx_apt
                .get(usize::from(info.payload_type))
                .copied()
                .flatten()
                .is_some();
            (0, rtx)
        } else {
            return None;
        };
        let s = &mut producer.streams[stream];
        let previous = if rtx {
            s.rtx_ssrc.replace(info.ssrc)
        } else {
            s.ssrc.replace(info.ssrc)
        };
        let r = StreamRef {
            producer: p,
            stream,
            rtx,
        };
        // Reports, NACKs and keyframe requests name the stream's current SSRC, and a
        // Sender Report of the old one describes a stream that is gone: nothing reads
        // the old entry.
        if let Some(old) = previous
            && t.ssrc_table.get(&old) == Some(&r)
        {
            t.ssrc_table.remove(&old);
        }
        t.ssrc_table.insert(info.ssrc, r);
        Some(r)
    }

    pub(super) fn handle_rtcp(
        &mut self,
        now: Instant,
        key: TransportKey,
        from: SocketAddr,
        data: &mut [u8],
        out: &mut dyn Transmit,
    ) {
        let t = &mut self.transports[key];
        let Some(srtp) = t.srtp.as_mut() else {
            self.counters.rtcp_dropped += 1;
            return;
        };
        let len = match srtp.unprotect_rtcp(data) {
            Ok(len) => len,
            Err(_) => {
                t.counters.srtp_failures += 1;
                self.counters.srtp_failures += 1;
                self.counters.rtcp_dropped += 1;
                return;
            }
        };
        t.ice.on_media_from(from);
        t.counters.rtcp_in += 1;
        self.counters.rtcp_in += 1;
        for item in rtcp::parse_compound(&data[..len]) {
            let Ok(item) = item else {
                self.counters.dropped_malformed += 1;
                break;
            };
            match item {
                RtcpItem::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => {
                    if let Some(r) = self.transports[key].ssrc_table.get(&ssrc).copied()
                        && let Some(s) = self
                            .producers
                            .get_mut(r.producer)
                            .and_then(|p| p.streams.get_mut(r.stream))
                    {
                        s.stats.on_sender_report(now, info.ntp, info.rtp_ts);
                        s.last_sr_rtp = Some((info.rtp_ts, now));
                    }
                    for block in reports {
                        self.on_report_block(now, key, &block);
                    }
                }
                RtcpItem::ReceiverReport { reports, .. } => {
                    for block in reports {
                        self.on_report_block(now, key, &block);
                    }
                }
                RtcpItem::Nack {
                    media_ssrc, pairs, ..
                } => {
                    let Some(&c) = self.transports[key].consumer_ssrcs.get(&media_ssrc) else {
                        continue;
                    };
                    if let Some(stream) = self.consumers[c].pipe_stream(media_ssrc) {
                        for seq in pairs.seqs() {
                            self.retransmit_pipe(now, c, stream, seq, out);
                        }
                        continue;
                    }
                    for seq in pairs.seqs() {
                        self.retransmit(now, c, seq, out);
                    }
                }
                RtcpItem::Pli { media_ssrc, .. } => {
                    self.counters.plis_received += 1;
                    if let Some(&c) = self.transports[key].consumer_ssrcs.get(&media_ssrc) {
                        tracing::debug!(consumer = %self.consumers[c].id, "keyframe request from the client");
                        self.consumers[c].keyframe_requests += 1;
                        self.request_keyframe_for_ssrc(c, media_ssrc, now, out);
                    }
                }
                RtcpItem::Fir { entries, .. } => {
                    self.counters.plis_received += 1;
                    for (ssrc, _) in entries {
                        if let Some(&c) = self.transports[key].consumer_ssrcs.get(&ssrc) {
                            self.consumers[c].keyframe_requests += 1;
                            self.request_keyframe_for_ssrc(c, ssrc, now, out);
                        }
                    }
                }
                RtcpItem::TransportCc { raw, .. } => {
                    self.on_transport_feedback(now, key, raw, out);
                }
                RtcpItem::Remb { bitrate, .. } => self.transports[key].remb_bitrate = Some(bitrate),
                RtcpItem::ExtendedReport { blocks, .. } => {
                    let ntp = self.ntp(now);
                    if let Some(rtt) = blocks
                        .dlrr()
                        .filter(|d| d.ssrc == super::feedback::REPORTER_SSRC)
                        .find_map(|d| d.rtt(ntp))
                    {
                        self.transports[key].rtt = Some(rtt);
                    }
                }
                _ => {}
            }
        }
    }

    /// A report block about one of our consumers' streams: round-trip time and loss.
    fn on_report_block(&mut self, now: Instant, key: TransportKey, block: &rtcp::ReportBlock) {
        let Some(&c) = self.transports[key].consumer_ssrcs.get(&block.ssrc) else {
            return;
        };
        let ntp = self.ntp(now);
        let consumer = &mut self.consumers[c];
        let histograms = &mut self.counters.histograms;
        if let Some(rtt) = consumer.send_stats.on_report_block(ntp, block) {
            consumer.rtt = Some(rtt);
            self.transports[key].rtt = Some(rtt);
            histograms.record(Distribution::Rtt, rtt.as_micros() as u64);
        }
        consumer.fraction_lost = f64::from(block.fraction_lost) / 256.0;
        histograms.record(
            Distribution::Loss,
            u64::from(block.fraction_lost) * 1000 / 256,
        );
        if consumer.clock_rate > 0 {
            let jitter_us = u64::from(block.jitter) * 1_000_000 / u64::from(consumer.clock_rate);
            histograms.record(Distribution::Jitter, jitter_us);
        }
    }
}
