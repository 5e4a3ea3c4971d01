//! Writes seed corpora (valid samples) for the byte-oriented fuzz targets into
//! `corpus/<target>/`. Run from `fuzz/`: `cargo run --example gen_seeds`. Packets are
//! built with ferrosoup-testkit, as the tests build them.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsRole, DtlsSession};
use ferrosoup_rtc::rtcp;
use ferrosoup_testkit::packets::{
    RtpPacket, nack, opus_payload, pli, receiver_report, report_block, sender_report,
    stun_binding_request, vp8_payload,
};

/// SSRCs of `fuzz_targets/engine.rs` (the publisher's streams and the subscriber's
/// consumers), which its seeds name.
const ENGINE_VIDEO_SSRC: u32 = 0x1111;
const ENGINE_AUDIO_SSRC: u32 = 0x1113;
const ENGINE_SUB_VIDEO_SSRC: u32 = 0x3333;
const ENGINE_SUB_AUDIO_SSRC: u32 = 0x3335;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

/// Ops of the `engine` target's input (see its module docs).
#[derive(Default)]
struct EngineOps(Vec<u8>);

impl EngineOps {
    /// A datagram op (0..=5) with its bytes.
    fn datagram(mut self, op: u8, bytes: &[u8]) -> Self {
        self.0.push(op);
        self.0
            .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// A well-formed publisher packet (op 6).
    fn media(mut self, flags: u8, step: u16, size: u8) -> Self {
        self.0.push(6);
        self.0.push(flags);
        self.0.extend_from_slice(&step.to_be_bytes());
        self.0.push(size);
        self
    }

    /// The clock moves on (op 7).
    fn advance(mut self, ms: u16) -> Self {
        self.0.push(7);
        self.0.extend_from_slice(&ms.to_be_bytes());
        self
    }

    /// A key frame, 3 more video packets, audio, then 100 ms.
    fn call(self) -> Self {
        self.media(0x04 | 0x10 | 0x20 | 0x08, 1, 200)
            .media(0x20, 1, 200)
            .media(0x20, 1, 200)
            .media(0x20 | 0x40, 1, 200)
            .media(0x02 | 0x80, 1, 25)
            .advance(100)
    }
}

fn main() {
    // RTP: one-byte and two-byte extensions (mid, rid, transport-cc, abs-send-time, audio
    // level, an unknown long element), VP8 / H.264 keyframe payloads, CSRCs, padding.
    let h264_idr = [0x65, 0x88, 0x84];
    let samples = [
        RtpPacket::new(96, 0x1234, 4096, 0x1234_5678).with_payload(vp8_payload(true, None, 8)),
        RtpPacket::new(96, 0x1234, 4096, 0x1234_5678)
            .with_mid(1, "0")
            .with_rid(2, "hi")
            .with_abs_send_time(4, 0x12_3456)
            .with_transport_cc(5, 7)
            .with_audio_level(6, true, 5)
            .with_payload(vp8_payload(true, Some(9), 16)),
        RtpPacket::new(102, 0x1234, 4096, 0x1234_5678)
            .with_mid(1, "0")
            .with_extension(200, vec![7u8; 20])
            .with_csrc(99)
            .with_padding(4)
            .with_payload(h264_idr),
        RtpPacket::new(111, 0x1234, 4096, 0x1234_5678)
            .with_transport_cc(5, 8)
            .with_audio_level(6, false, 60)
            .with_payload(opus_payload(40)),
    ];
    for (i, p) in samples.iter().map(RtpPacket::build).enumerate() {
        let mut seeded = vec![3u8];
        seeded.extend_from_slice(&p);
        write("rtp", &format!("seed{i}"), &seeded);
        write("demux", &format!("rtp{i}"), &p);
    }
    let (_, stun) = stun_binding_request("serverufrag", "clientufrag", "serverpwd", true, 1);
    write("demux", "stun", &stun);

    // RTCP: SR + SDES, RR, NACK, PLI, FIR, REMB as one compound and alone.
    let mut buf = [0u8; 1500];
    let mut compound = Vec::new();
    let block = rtcp::ReportBlock {
        ssrc: 5,
        fraction_lost: 3,
        total_lost: -2,
        highest_seq: 70_000,
        jitter: 9,
        last_sr: 1,
        delay_since_last_sr: 2,
    };
    let info = rtcp::SenderInfo {
        ntp: 0x1234_5678_9abc_def0,
        rtp_ts: 90_000,
        packets: 10,
        octets: 1000,
    };
    for (i, writer) in [
        &(|b: &mut [u8]| rtcp::write_sr(b, 1, &info, &[block]))
            as &dyn Fn(&mut [u8]) -> Option<usize>,
        &|b: &mut [u8]| rtcp::write_rr(b, 1, &[block, block]),
        &|b: &mut [u8]| rtcp::write_sdes_cname(b, 1, "cname"),
        &|b: &mut [u8]| rtcp::write_nack(b, 1, 2, &[100, 101, 105, 130, 400]),
        &|b: &mut [u8]| rtcp::write_pli(b, 1, 2),
        &|b: &mut [u8]| rtcp::write_fir(b, 1, &[(2, 9), (3, 10)]),
        &|b: &mut [u8]| rtcp::write_remb(b, 1, 1_500_000, &[2, 3]),
        &|b: &mut [u8]| rtcp::write_xr_rrtr(b, 1, 0x1234_5678_9abc_def0),
        &|b: &mut [u8]| {
            let dlrr = rtcp::DlrrItem {
                ssrc: 1,
                last_rr: 0x5678_9abc,
                delay: 0x100,
            };
            rtcp::write_xr_dlrr(b, 2, &[dlrr])
        },
    ]
    .into_iter()
    .enumerate()
    {
        let n = writer(&mut buf).expect("seed packet fits");
        write("rtcp", &format!("single{i}"), &buf[..n]);
        compound.extend_from_slice(&buf[..n]);
    }
    write("rtcp", "compound", &compound);
    write("demux", "rtcp", &compound);

    // DTLS: a real ClientHello (from a client-role session), framed as the target reads it.
    let cert = Arc::new(DtlsCertificate::generate().expect("certificate"));
    let fp = cert.fingerprints().to_vec();
    let mut client =
        DtlsSession::new(cert, DtlsRole::Client, fp, Instant::now()).expect("client session");
    let hello = client.poll_transmit().expect("client sends a ClientHello");
    let mut framed = (hello.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&hello);
    framed.extend_from_slice(&[0xff, 0xff, 20]);
    framed.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    framed.extend_from_slice(&hello);
    write("dtls", "client_hello", &framed);
    write("demux", "dtls", &hello);

    // Engine: a call, then feedback from both sides, raw datagrams from every address,
    // and a pause long enough for consent to expire.
    let sr_info = rtcp::SenderInfo {
        ntp: 0x1234_5678_9abc_def0,
        rtp_ts: 90_000,
        packets: 4,
        octets: 800,
    };
    let plain = samples[1].clone();
    let seeds = [
        ("call", EngineOps::default().call().call()),
        (
            "nack_rtx",
            EngineOps::default()
                .call()
                .datagram(5, &nack(9, ENGINE_SUB_VIDEO_SSRC, &[0, 1, 2, 1000]))
                .media(0x01, 2, 100)
                .media(0x00, 3, 100)
                .advance(50),
        ),
        (
            "feedback",
            EngineOps::default()
                .call()
                .datagram(5, &pli(9, ENGINE_SUB_VIDEO_SSRC))
                .datagram(
                    5,
                    &receiver_report(
                        9,
                        &[
                            report_block(ENGINE_SUB_VIDEO_SSRC, 3),
                            report_block(ENGINE_SUB_AUDIO_SSRC, 1),
                        ],
                    ),
                )
                .datagram(4, &sender_report(ENGINE_VIDEO_SSRC, &sr_info, &[]))
                .datagram(4, &sender_report(ENGINE_AUDIO_SSRC, &sr_info, &[]))
                .advance(1500),
        ),
        (
            "raw",
            EngineOps::default()
                .datagram(3, &plain.build())
                .datagram(0, &[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0x11, 0x11])
                .datagram(1, &[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .datagram(2, &stun)
                .datagram(0, &stun),
        ),
        (
            "consent_expiry",
            EngineOps::default().call().advance(40_000).call(),
        ),
    ];
    for (name, ops) in seeds {
        write("engine", name, &ops.0);
    }

    // Signaling: requests as mediasoup-client apps send them.
    let produce = r#"{"request":true,"id":7,"method":"produce","data":{"transportId":"t","kind":"video","rtpParameters":{"mid":"0","codecs":[{"mimeType":"video/VP8","payloadType":96,"clockRate":90000,"rtcpFeedback":[{"type":"nack"},{"type":"nack","parameter":"pli"},{"type":"goog-remb"}]},{"mimeType":"video/rtx","payloadType":97,"clockRate":90000,"parameters":{"apt":96}}],"headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":1},{"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","id":4}],"encodings":[{"rid":"r0","scalabilityMode":"L1T3","maxBitrate":100000},{"rid":"r1","scalabilityMode":"L1T3"}],"rtcp":{"cname":"abc","reducedSize":true}}}}"#;
    let produce_h264 = r#"{"request":true,"id":8,"method":"produce","data":{"transportId":"t","kind":"video","rtpParameters":{"codecs":[{"mimeType":"video/H264","payloadType":102,"clockRate":90000,"parameters":{"packetization-mode":1,"profile-level-id":"42e01f","level-asymmetry-allowed":1}}],"encodings":[{"ssrc":1234}]}}}"#;
    let produce_opus = r#"{"request":true,"id":9,"method":"produce","data":{"transportId":"t","kind":"audio","rtpParameters":{"codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,"parameters":{"useinbandfec":1,"minptime":10}}],"headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":10}],"encodings":[{"ssrc":42,"dtx":true}]}}}"#;
    let join = r#"{"request":true,"id":2,"method":"joinRoom","data":{"roomId":"r","displayName":"me","rtpCapabilities":{"codecs":[{"kind":"audio","mimeType":"audio/opus","preferredPayloadType":100,"clockRate":48000,"channels":2},{"kind":"video","mimeType":"video/VP8","preferredPayloadType":101,"clockRate":90000,"rtcpFeedback":[{"type":"nack"},{"type":"ccm","parameter":"fir"}]},{"kind":"video","mimeType":"video/rtx","preferredPayloadType":102,"clockRate":90000,"parameters":{"apt":101}}],"headerExtensions":[{"kind":"video","uri":"urn:ietf:params:rtp-hdrext:sdes:mid","preferredId":1}]}}}"#;
    let connect = r#"{"request":true,"id":3,"method":"connectTransport","data":{"transportId":"t","dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":"AB:CD"}]}}}"#;
    let create = r#"{"request":true,"id":4,"method":"createTransport","data":{"direction":"send","sctpCapabilities":{"numStreams":{"OS":1024,"MIS":1024}}}}"#;
    let layers = r#"{"request":true,"id":5,"method":"setConsumerPreferredLayers","data":{"consumerId":"c","spatialLayer":1,"temporalLayer":2}}"#;
    let data = r#"{"request":true,"id":6,"method":"produceData","data":{"transportId":"t","sctpStreamParameters":{"streamId":1,"ordered":true},"label":"chat"}}"#;
    let response = r#"{"response":true,"id":1,"ok":false,"errorCode":400,"errorReason":"bad"}"#;
    let notification = r#"{"notification":true,"method":"peerClosed","data":{"peerId":"x"}}"#;
    for (i, s) in [
        produce,
        produce_h264,
        produce_opus,
        join,
        connect,
        create,
        layers,
        data,
        response,
        notification,
    ]
    .iter()
    .enumerate()
    {
        write("signaling", &format!("seed{i}"), s.as_bytes());
    }
}
