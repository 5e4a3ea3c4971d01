//! RTP header and header-extension parsing, in-place extension id remapping, extension
//! value readers, keyframe detection for every codec and RTX unwrapping.
#![no_main]

use ferrosoup_rtc::rtp::{
    self, ExtensionIds, VideoCodec, extensions, find_extension, find_extension_mut, is_keyframe,
    parse_rtp, remap_extension_ids,
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

    // Remap ids on a copy: the length, the header before the extension block and the
    // payload must not change, and the copy must still parse the same way.
    let mut map = [0u8; 256];
    for (i, m) in map.iter_mut().enumerate() {
        *m = (i as u8).wrapping_mul(seed | 1).wrapping_add(seed);
    }
    let mut copy = packet.to_vec();
    if let Some(data) = find_extension_mut(&mut copy, &info, 5) {
        let _ = rtp::write_transport_cc(data, 0xabcd);
    }
    if let Some(data) = find_extension_mut(&mut copy, &info, 4) {
        let _ = rtp::write_abs_send_time(data, 0x12_3456);
    }
    remap_extension_ids(&mut copy, &info, &map);
    assert_eq!(copy.len(), packet.len());
    assert_eq!(
        &copy[..info.extensions_offset.max(12)],
        &packet[..info.extensions_offset.max(12)]
    );
    assert_eq!(info.payload(&copy), payload);
    assert_eq!(parse_rtp(&copy), Ok(info));
    assert!(extensions(&copy, &info).count() <= count);

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
