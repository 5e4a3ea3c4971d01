//! Codec payloads: VP8 (RFC 7741) with a payload descriptor and the frame's payload header,
//! VP9 (RFC 9628) payload descriptors with layer indices,
//! so that keyframe detection, PictureID rewriting and temporal-layer filtering see real
//! structure; Opus-sized audio.
//!
//! Bytes after the headers follow a fixed pattern (`i as u8` at payload offset `i`), so a
//! receiver can check a payload end to end.

/// VP8 key frame start code (RFC 6386 §9.1), after the 3-byte frame tag.
const VP8_START_CODE: [u8; 3] = [0x9D, 0x01, 0x2A];

/// The VP8 payload descriptor of one packet, and the VP8 payload header on the first
/// packet of a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Header {
    /// S bit with partition index 0: the packet starts the frame and carries the VP8
    /// payload header (frame tag, and on key frames the start code and dimensions).
    pub start_of_frame: bool,
    /// Key frame (the frame tag's inverse key frame bit is 0). Only written with
    /// `start_of_frame`.
    pub keyframe: bool,
    /// 15-bit PictureID (I bit, M bit set).
    pub picture_id: Option<u16>,
    /// TL0PICIDX (L bit).
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer index and layer-sync flag (T bit: TID, Y).
    pub temporal: Option<(u8, bool)>,
    /// Frame width written on key frames (14 bits).
    pub width: u16,
    /// Frame height written on key frames (14 bits).
    pub height: u16,
}

impl Vp8Header {
    /// Length of what [`write`](Self::write) writes.
    pub fn len(&self) -> usize {
        let extended =
            self.picture_id.is_some() || self.tl0_pic_idx.is_some() || self.temporal.is_some();
        let descriptor = 1
            + usize::from(extended)
            + if self.picture_id.is_some() { 2 } else { 0 }
            + usize::from(self.tl0_pic_idx.is_some())
            + usize::from(self.temporal.is_some());
        let payload_header = match (self.start_of_frame, self.keyframe) {
            (false, _) => 0,
            (true, false) => 3,
            (true, true) => 10,
        };
        descriptor + payload_header
    }

    /// Never empty: the descriptor has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the descriptor (and payload header) at the start of `buf`; returns the
    /// length written. Does not allocate.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`len`](Self::len).
    pub fn write(&self, buf: &mut [u8]) -> usize {
        let len = self.len();
        assert!(
            buf.len() >= len,
            "buffer of {} bytes for a VP8 header of {len}",
            buf.len()
        );
        let extended =
            self.picture_id.is_some() || self.tl0_pic_idx.is_some() || self.temporal.is_some();
        // X | N=0 | S | PID=0.
        buf[0] = u8::from(extended) << 7 | u8::from(self.start_of_frame) << 4;
        let mut at = 1;
        if extended {
            buf[1] = u8::from(self.picture_id.is_some()) << 7
                | u8::from(self.tl0_pic_idx.is_some()) << 6
                | u8::from(self.temporal.is_some()) << 5;
            at = 2;
            if let Some(id) = self.picture_id {
                let [hi, lo] = (id & 0x7FFF).to_be_bytes();
                buf[at] = 0x80 | hi;
                buf[at + 1] = lo;
                at += 2;
            }
            if let Some(idx) = self.tl0_pic_idx {
                buf[at] = idx;
                at += 1;
            }
            if let Some((tid, sync)) = self.temporal {
                buf[at] = (tid & 0x03) << 6 | u8::from(sync) << 5;
                at += 1;
            }
        }
        if !self.start_of_frame {
            return at;
        }
        // Frame tag: bit 0 inverse key frame flag, bits 1-3 version 0, bit 4 show_frame.
        buf[at] = 0x10 | u8::from(!self.keyframe);
        buf[at + 1] = 0;
        buf[at + 2] = 0;
        at += 3;
        if self.keyframe {
            buf[at..at + 3].copy_from_slice(&VP8_START_CODE);
            buf[at + 3..at + 5].copy_from_slice(&(self.width & 0x3FFF).to_le_bytes());
            buf[at + 5..at + 7].copy_from_slice(&(self.height & 0x3FFF).to_le_bytes());
            at += 7;
        }
        at
    }
}

/// The VP9 payload descriptor of one packet (RFC 9628 §4.2), non-flexible mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp9Header {
    /// 15-bit PictureID (I bit, M bit set).
    pub picture_id: Option<u16>,
    /// P: predicted from earlier pictures (a delta frame).
    pub inter_picture: bool,
    /// B: the packet starts a layer frame.
    pub begin: bool,
    /// E: the packet ends a layer frame.
    pub end: bool,
    /// Layer indices (L bit): temporal layer, switching up point, spatial layer,
    /// inter-layer dependency; with TL0PICIDX `tl0_pic_idx`.
    pub layers: Option<Vp9LayerIndices>,
}

/// VP9 layer indices and the TL0PICIDX that follows them in non-flexible mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp9LayerIndices {
    /// TID.
    pub temporal: u8,
    /// U.
    pub switching_up: bool,
    /// SID.
    pub spatial: u8,
    /// D.
    pub inter_layer: bool,
    /// TL0PICIDX.
    pub tl0_pic_idx: u8,
}

impl Vp9Header {
    /// Length of what [`write`](Self::write) writes.
    pub fn len(&self) -> usize {
        1 + if self.picture_id.is_some() { 2 } else { 0 }
            + if self.layers.is_some() { 2 } else { 0 }
    }

    /// Never empty: the descriptor has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the descriptor at the start of `buf`; returns its length. Does not allocate.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`len`](Self::len).
    pub fn write(&self, buf: &mut [u8]) -> usize {
        let len = self.len();
        assert!(
            buf.len() >= len,
            "buffer of {} bytes for a VP9 header of {len}",
            buf.len()
        );
        buf[0] = u8::from(self.picture_id.is_some()) << 7
            | u8::from(self.inter_picture) << 6
            | u8::from(self.layers.is_some()) << 5
            | u8::from(self.begin) << 3
            | u8::from(self.end) << 2;
        let mut at = 1;
        if let Some(id) = self.picture_id {
            let [hi, lo] = (id & 0x7FFF).to_be_bytes();
            buf[1] = 0x80 | hi;
            buf[2] = lo;
            at = 3;
        }
        if let Some(l) = self.layers {
            buf[at] = (l.temporal & 0x07) << 5
                | u8::from(l.switching_up) << 4
                | (l.spatial & 0x07) << 1
                | u8::from(l.inter_layer);
            buf[at + 1] = l.tl0_pic_idx;
            at += 2;
        }
        at
    }
}

/// Fills `buf[from..]` with the payload pattern (`i as u8` at offset `i`).
fn fill_pattern(buf: &mut [u8], from: usize) {
    for (i, b) in buf.iter_mut().enumerate().skip(from) {
        *b = i as u8;
    }
}

/// A VP8 payload of `size` bytes (or just the headers, if longer) that starts a frame:
/// key frame or delta frame as asked, with a 15-bit PictureID if given, 640×360 on key
/// frames, then the pattern.
pub fn vp8_payload(keyframe: bool, picture_id: Option<u16>, size: usize) -> Vec<u8> {
    let header = Vp8Header {
        start_of_frame: true,
        keyframe,
        picture_id,
        width: 640,
        height: 360,
        ..Vp8Header::default()
    };
    let mut payload = vec![0u8; size.max(header.len())];
    let at = header.write(&mut payload);
    fill_pattern(&mut payload, at);
    payload
}

/// An Opus payload of `size` bytes (at least 1): a TOC byte for a 20 ms CELT full-band
/// mono frame, then the pattern.
pub fn opus_payload(size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(1)];
    // TOC: config 31 (CELT FB 20 ms), mono, one frame.
    payload[0] = 31 << 3;
    fill_pattern(&mut payload, 1);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_rtc::rtp::{VideoCodec, is_keyframe};
    use ferrosoup_rtc::vp8::parse_descriptor;

    #[test]
    fn keyframe_detection_reads_the_bit() {
        for picture_id in [None, Some(0), Some(0x7FFF)] {
            let key = vp8_payload(true, picture_id, 100);
            let delta = vp8_payload(false, picture_id, 100);
            assert_eq!((key.len(), delta.len()), (100, 100));
            assert!(is_keyframe(VideoCodec::Vp8, &key), "{picture_id:?}");
            assert!(!is_keyframe(VideoCodec::Vp8, &delta), "{picture_id:?}");
        }
        // Not the start of the frame: never a key frame.
        let cont = Vp8Header {
            keyframe: true,
            ..Vp8Header::default()
        };
        let mut buf = [0u8; 20];
        assert_eq!(cont.write(&mut buf), 1);
        assert!(!is_keyframe(VideoCodec::Vp8, &buf));
        // Tiny sizes still hold the headers.
        assert_eq!(vp8_payload(true, None, 0).len(), 11);
        assert_eq!(vp8_payload(false, None, 0).len(), 4);
    }

    #[test]
    fn descriptor_fields_are_where_the_rewriter_looks() {
        let header = Vp8Header {
            start_of_frame: true,
            keyframe: false,
            picture_id: Some(300),
            tl0_pic_idx: Some(7),
            temporal: Some((1, true)),
            ..Vp8Header::default()
        };
        let mut buf = [0u8; 32];
        let n = header.write(&mut buf);
        assert_eq!(n, header.len());
        assert_eq!(n, 1 + 1 + 2 + 1 + 1 + 3);
        let d = parse_descriptor(&buf[..n]).expect("parses");
        let (at, bits) = d.picture_id.expect("picture id");
        assert_eq!(bits, 15);
        assert_eq!(u16::from_be_bytes([buf[at] & 0x7F, buf[at + 1]]), 300);
        assert_eq!(d.tl0_pic_idx.map(|at| buf[at]), Some(7));
        // TID 1, Y set.
        assert_eq!(buf[5], 0x60);
    }

    #[test]
    fn vp9_descriptor_reads_back() {
        let header = Vp9Header {
            picture_id: Some(0x1234),
            inter_picture: true,
            begin: true,
            end: false,
            layers: Some(Vp9LayerIndices {
                temporal: 2,
                switching_up: true,
                spatial: 1,
                inter_layer: false,
                tl0_pic_idx: 9,
            }),
        };
        let mut buf = [0u8; 8];
        let n = header.write(&mut buf);
        assert_eq!(n, header.len());
        let d = ferrosoup_rtc::vp9::parse_descriptor(&buf[..n]).expect("parses");
        assert!(d.inter_picture && d.begin && !d.end && !d.flexible);
        assert_eq!(d.picture_id, Some(0x1234));
        assert_eq!(d.tl0_pic_idx, Some(9));
        let l = d.layers.expect("layer indices");
        assert_eq!(
            (l.temporal, l.switching_up, l.spatial, l.inter_layer),
            (2, true, 1, false)
        );
        // A key picture's base layer is what keyframe detection looks for.
        let key = Vp9Header {
            inter_picture: false,
            layers: Some(Vp9LayerIndices::default()),
            ..header
        };
        let n = key.write(&mut buf);
        assert!(is_keyframe(VideoCodec::Vp9, &buf[..n]));
    }

    #[test]
    fn opus_payload_has_a_toc_and_the_pattern() {
        let p = opus_payload(60);
        assert_eq!(p.len(), 60);
        assert_eq!(p[0], 0xF8);
        assert!(p.iter().enumerate().skip(1).all(|(i, &b)| b == i as u8));
        assert_eq!(opus_payload(0).len(), 1);
    }
}
