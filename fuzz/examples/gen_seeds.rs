//! Writes seed corpora (valid samples) for the byte-oriented fuzz targets into
//! `corpus/<target>/`. Run from `fuzz/`: `cargo run --example gen_seeds`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ferrosoup_rtc::dtls::{DtlsCertificate, DtlsRole, DtlsSession};
use ferrosoup_rtc::rtcp;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn rtp(ext: Option<(u16, &[u8])>, payload: &[u8], padding: u8) -> Vec<u8> {
    let mut p = vec![0x80 | if ext.is_some() { 0x10 } else { 0 }, 96, 0x12, 0x34];
    p.extend_from_slice(&[0, 0, 0x10, 0]);
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    if let Some((profile, elems)) = ext {
        let words = elems.len().div_ceil(4);
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&(words as u16).to_be_bytes());
        p.extend_from_slice(elems);
        p.resize(p.len() + words * 4 - elems.len(), 0);
    }
    p.extend_from_slice(payload);
    if padding > 0 {
        p[0] |= 0x20;
        p.resize(p.len() + usize::from(padding) - 1, 0);
        p.push(padding);
    }
    p
}

fn main() {
    // RTP: one-byte and two-byte extensions, VP8/H.264 keyframe payloads, padding.
    let one_byte: &[u8] = &[
        0x10, b'0', 0x21, b'h', b'i', 0x32, 1, 2, 3, 0x51, 0, 7, 0x60, 0x85,
    ];
    let two_byte: &[u8] = &[1, 1, b'0', 2, 2, b'h', b'i', 0, 5, 2, 0, 7];
    let vp8_key = [0x90, 0x80, 0x7f, 0x10, 0x02, 0x9d, 0x01, 0x2a];
    let h264_idr = [0x65, 0x88, 0x84];
    let samples = [
        rtp(None, &vp8_key, 0),
        rtp(Some((0xBEDE, one_byte)), &vp8_key, 0),
        rtp(Some((0x1000, two_byte)), &h264_idr, 4),
        rtp(Some((0xBEDE, one_byte)), &[0x7c, 0x85, 0x88], 0),
    ];
    for (i, p) in samples.iter().enumerate() {
        let mut seeded = vec![3u8];
        seeded.extend_from_slice(p);
        write("rtp", &format!("seed{i}"), &seeded);
        write("demux", &format!("rtp{i}"), p);
    }

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
