//! RTP header and header-extension parsing, the one-pass extension rewrite a consumer does
//! (id remap and this hop's values), extension value readers, keyframe detection for every
//! codec and RTX unwrapping.
#![no_main]

use ferrosoup_rtc::rtp::{
    self, ExtensionIds, HopValues, VideoCodec, extensions, find_extension, is_keyframe, parse_rtp,
    rewrite_extensions,
};
use ferrosoup_rtc::rtx::{unwrap_rtx, write_rtx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte seeds the extension id remap table; the rest is the packet.
    let Some((&seed, packet)) = input.split_first() else {
        return;
    };
    let Ok(info) = parse_rtp(packet) else {
        return;
    };
    assert!(info.payload_offset + info.payload_len + usize::from(info.padding_len) == packet.len());
    let payload = info.payload(packet);
    assert_eq!(payload.len(), info.payload_len);

    let mut count = 0usize;
    for (id, data) in extensions(packet, &info) {
        assert!(id != 0);
        assert!(find_extension(packet, &info, id).is_some());
        let _ = rtp::parse_sdes_str(data);
        let _ = rtp::parse_abs_send_time(data);
        let _ = rtp::parse_transport_cc(data);
        let _ = rtp::parse_audio_level(data);
        count += 1;
    }
    let ids = ExtensionIds {
        mid: 1,
        rid: 2,
        repaired_rid: 3,
        abs_send_time: 4,
        transport_wide_cc: 5,
        audio_level: 6,
    };
    let _ = ids.read(packet, &info);

    for codec in [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::H264,
        VideoCodec::Other,
    ] {
        let _ = is_keyframe(codec, payload);
    }

    // Rewrite on a copy (ids remapped, transport-cc and abs-send-time written under their
    // new ids): the length, the header before the extension block and the payload must not
    // change, the copy must still parse the same way, and every element left has a mapped id.
    let mut map = [0u8; 256];
    for (i, m) in map.iter_mut().enumerate() {
        *m = (i as u8).wrapping_mul(seed | 1).wrapping_add(seed);
    }
    let hop = HopValues {
        transport_cc_id: map[5],
        transport_cc: 0xabcd,
        abs_send_time_id: map[4],
        abs_send_time: 0x12_3456,
    };
    let mut copy = packet.to_vec();
    let wrote = rewrite_extensions(&mut copy, &info, &map, &hop);
    assert_eq!(copy.len(), packet.len());
    assert_eq!(
        &copy[..info.extensions_offset.max(12)],
        &packet[..info.extensions_offset.max(12)]
    );
    assert_eq!(info.payload(&copy), payload);
    assert_eq!(parse_rtp(&copy), Ok(info));
    assert!(extensions(&copy, &info).count() <= count);
    let mut mapped = [false; 256];
    for (id, _) in extensions(packet, &info) {
        mapped[usize::from(map[usize::from(id)])] = true;
    }
    assert!(extensions(&copy, &info).all(|(id, _)| mapped[usize::from(id)]));
    if wrote {
        assert!(
            extensions(&copy, &info).any(|(id, data)| id == hop.transport_cc_id
                && rtp::parse_transport_cc(data) == Some(0xabcd)),
            "transport-cc written where reported"
        );
    }

    // RTX: wrap then unwrap must give back the original header fields and payload.
    let mut rtx = vec![0u8; packet.len() + 2];
    if let Some(len) = write_rtx(packet, &info, 0x0102_0304, 97, 7, &mut rtx) {
        rtx.truncate(len);
        let rtx_info = parse_rtp(&rtx).expect("write_rtx output parses");
        let n = unwrap_rtx(&mut rtx, &rtx_info, info.ssrc, info.payload_type)
            .expect("write_rtx output unwraps");
        rtx.truncate(n);
        let back = parse_rtp(&rtx).expect("unwrapped RTX parses");
        assert_eq!(back.sequence_number, info.sequence_number);
        assert_eq!(back.ssrc, info.ssrc);
        assert_eq!(back.payload(&rtx), payload);
    }
    // Unwrapping the packet itself as if it were RTX.
    let mut copy = packet.to_vec();
    let _ = unwrap_rtx(&mut copy, &info, 1, 96);
});
