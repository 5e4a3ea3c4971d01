//! VP8 payload descriptor reading and rewriting (RFC 7741 §4.2) for simulcast and
//! temporal-layer forwarding. Each simulcast layer numbers its pictures on its own
//! (PictureID, TL0PICIDX); when a consumer switches layers the numbers jump, and a
//! receiver may take the new layer's frames for old ones. When a consumer drops temporal
//! layers, the pictures it drops would leave gaps in the PictureID that a receiver takes
//! for losses. [`Vp8PictureRewriter`] keeps both sequences continuous across switches and
//! drops: it maps each packet's numbers to output values ([`Vp8Numbers`]), which
//! [`write_numbers`] then writes in place.

use crate::seq::SeqRewriter;

/// What a VP8 payload descriptor says, and where its rewritable fields are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S bit with partition index 0: the packet starts a frame.
    pub start_of_frame: bool,
    /// Offset and width in bits (7 or 15) of the PictureID, when present.
    pub picture_id: Option<(usize, u8)>,
    /// Offset of TL0PICIDX, when present.
    pub tl0_pic_idx: Option<usize>,
    /// Temporal layer index (TID) and layer sync bit (Y), when present (T bit).
    pub temporal: Option<(u8, bool)>,
}

/// Reads a VP8 payload descriptor; `None` if the payload is too short for it.
pub fn parse_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let first = *payload.first()?;
    let mut d = Vp8Descriptor {
        start_of_frame: first & 0x10 != 0 && first & 0x07 == 0,
        ..Vp8Descriptor::default()
    };
    if first & 0x80 == 0 {
        return Some(d);
    }
    let ext = *payload.get(1)?;
    let mut pos = 2;
    if ext & 0x80 != 0 {
        let b = *payload.get(pos)?;
        if b & 0x80 != 0 {
            payload.get(pos + 1)?;
            d.picture_id = Some((pos, 15));
            pos += 2;
        } else {
            d.picture_id = Some((pos, 7));
            pos += 1;
        }
    }
    if ext & 0x40 != 0 {
        payload.get(pos)?;
        d.tl0_pic_idx = Some(pos);
        pos += 1;
    }
    if ext & 0x20 != 0 {
        let b = *payload.get(pos)?;
        d.temporal = Some((b >> 6, b & 0x20 != 0));
    }
    Some(d)
}

fn read_picture_id(payload: &[u8], (at, bits): (usize, u8)) -> u16 {
    if bits == 15 {
        u16::from_be_bytes([payload[at] & 0x7f, payload[at + 1]])
    } else {
        u16::from(payload[at] & 0x7f)
    }
}

fn write_picture_id(payload: &mut [u8], (at, bits): (usize, u8), v: u16) {
    if bits == 15 {
        let b = (v & 0x7fff).to_be_bytes();
        payload[at] = 0x80 | b[0];
        payload[at + 1] = b[1];
    } else {
        payload[at] = (v & 0x7f) as u8;
    }
}

/// The output values of one packet's picture numbers (`None`: the field is absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Numbers {
    /// Output PictureID (as wide as the packet's field).
    pub picture_id: Option<u16>,
    /// Output TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
}

/// Writes `numbers` into a VP8 payload in place (fields the payload lacks are skipped).
pub fn write_numbers(payload: &mut [u8], numbers: Vp8Numbers) {
    let Some(d) = parse_descriptor(payload) else {
        return;
    };
    if let (Some(field), Some(v)) = (d.picture_id, numbers.picture_id) {
        write_picture_id(payload, field, v);
    }
    if let (Some(at), Some(v)) = (d.tl0_pic_idx, numbers.tl0_pic_idx) {
        payload[at] = v;
    }
}

/// Continues PictureID and TL0PICIDX across source switches and dropped pictures for
/// one consumer. PictureIDs are widened to 64 bits and mapped like sequence numbers
/// ([`SeqRewriter`]): a dropped picture closes its gap, a picture lost upstream keeps it.
/// All storage is allocated in [`Vp8PictureRewriter::new`].
#[derive(Clone, Debug)]
pub struct Vp8PictureRewriter {
    pictures: SeqRewriter,
    /// Width of the current source's PictureID (7 or 15 bits).
    picture_bits: u8,
    /// Highest widened input PictureID of the current source.
    highest_picture: Option<u64>,
    tl0_offset: u8,
    last_tl0: Option<u8>,
}

impl Default for Vp8PictureRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8PictureRewriter {
    /// A rewriter that passes the first source's numbers through unchanged.
    pub fn new() -> Self {
        Self {
            pictures: SeqRewriter::new(0),
            picture_bits: 15,
            highest_picture: None,
            tl0_offset: 0,
            last_tl0: None,
        }
    }

    /// Widens an input PictureID of the current source (a new width starts a new source).
    fn widen(&mut self, input: u16, bits: u8, switched: bool) -> (u64, bool) {
        let switched = switched || bits != self.picture_bits;
        if switched {
            self.picture_bits = bits;
            self.highest_picture = None;
        }
        let modulo = 1i64 << bits;
        let ext = match self.highest_picture {
            None => (1u64 << bits) + u64::from(input),
            Some(h) => {
                let mut d = (i64::from(input) - (h as i64 & (modulo - 1))).rem_euclid(modulo);
                if d >= modulo / 2 {
                    d -= modulo;
                }
                h.saturating_add_signed(d)
            }
        };
        if self.highest_picture.is_none_or(|h| ext > h) {
            self.highest_picture = Some(ext);
        }
        (ext, switched)
    }

    /// The output numbers of a forwarded packet. `switched` marks the first packet of a
    /// new source (a keyframe): its numbers continue right after the last ones forwarded.
    /// `None` when the packet's picture was dropped before or is older than the last
    /// switch: its number has no output.
    pub fn map(&mut self, payload: &[u8], switched: bool) -> Option<Vp8Numbers> {
        let d = parse_descriptor(payload)?;
        let mut out = Vp8Numbers::default();
        if let Some(field) = d.picture_id {
            let input = read_picture_id(payload, field);
            let (ext, switched) = self.widen(input, field.1, switched);
            if !self.pictures.is_started() {
                // The first source passes through.
                self.pictures.start_at(input);
            } else if switched {
                self.pictures.sync(ext);
            }
            let mask = (1u16 << field.1) - 1;
            out.picture_id = Some(self.pictures.forward(ext)? & mask);
        }
        if let Some(at) = d.tl0_pic_idx {
            let input = payload[at];
            if switched && let Some(last) = self.last_tl0 {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(input);
            }
            let v = input.wrapping_add(self.tl0_offset);
            if self.last_tl0.is_none_or(|l| v.wrapping_sub(l) < 128) {
                self.last_tl0 = Some(v);
            }
            out.tl0_pic_idx = Some(v);
        }
        Some(out)
    }

    /// Records that the packet's picture is not forwarded (a temporal layer above the
    /// consumer's): the next forwarded picture takes its number.
    pub fn drop_picture(&mut self, payload: &[u8]) {
        let Some(d) = parse_descriptor(payload) else {
            return;
        };
        if let Some(field) = d.picture_id
            && self.pictures.is_started()
            && field.1 == self.picture_bits
        {
            let (ext, _) = self.widen(read_picture_id(payload, field), field.1, false);
            self.pictures.drop(ext);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with X, I (15-bit PictureID), L, T set (TID `tid`, Y `sync`), then one
    /// payload byte.
    fn packet_t(picture_id: u16, tl0: u8, tid: u8, sync: bool) -> Vec<u8> {
        let pid = picture_id.to_be_bytes();
        vec![
            0x90,
            0xe0,
            0x80 | pid[0],
            pid[1],
            tl0,
            tid << 6 | u8::from(sync) << 5,
            0x00,
        ]
    }

    fn packet(picture_id: u16, tl0: u8) -> Vec<u8> {
        packet_t(picture_id, tl0, 0, true)
    }

    /// Maps and writes, as a consumer does.
    fn rewrite(rw: &mut Vp8PictureRewriter, p: &mut [u8], switched: bool) {
        let n = rw.map(p, switched).expect("mapped");
        write_numbers(p, n);
    }

    #[test]
    fn parses_the_descriptor_forms() {
        assert_eq!(
            parse_descriptor(&[0x10, 0x00]),
            Some(Vp8Descriptor {
                start_of_frame: true,
                ..Vp8Descriptor::default()
            })
        );
        assert_eq!(
            parse_descriptor(&packet_t(300, 9, 2, false)),
            Some(Vp8Descriptor {
                start_of_frame: true,
                picture_id: Some((2, 15)),
                tl0_pic_idx: Some(4),
                temporal: Some((2, false)),
            })
        );
        assert_eq!(
            parse_descriptor(&[0x80, 0x80, 0x05, 0x00]),
            Some(Vp8Descriptor {
                start_of_frame: false,
                picture_id: Some((2, 7)),
                tl0_pic_idx: None,
                temporal: None,
            })
        );
        // T without L: the TID byte follows the PictureID.
        assert_eq!(
            parse_descriptor(&[0x91, 0xa0, 0x05, 0x60]).map(|d| (d.start_of_frame, d.temporal)),
            Some((false, Some((1, true))))
        );
        assert_eq!(
            parse_descriptor(&[0x90, 0x80, 0x85]),
            None,
            "15-bit PictureID cut short"
        );
        assert_eq!(parse_descriptor(&[0x90, 0x20]), None, "TID byte missing");
        assert_eq!(parse_descriptor(&[]), None);
    }

    #[test]
    fn numbers_continue_across_a_switch() {
        let mut rw = Vp8PictureRewriter::new();
        let mut p = packet(100, 7);
        rewrite(&mut rw, &mut p, true);
        assert_eq!(p, packet(100, 7), "first source passes through");
        let mut p = packet(101, 7);
        rewrite(&mut rw, &mut p, false);
        assert_eq!(p, packet(101, 7));
        // Another layer numbered far away: continues at 102 / 8.
        let mut p = packet(32_760, 200);
        rewrite(&mut rw, &mut p, true);
        assert_eq!(p, packet(102, 8));
        let mut p = packet(32_767, 201);
        rewrite(&mut rw, &mut p, false);
        assert_eq!(p, packet(109, 9));
        // The input wraps (15 bits): the output keeps counting.
        let mut p = packet(0, 202);
        rewrite(&mut rw, &mut p, false);
        assert_eq!(p, packet(110, 10));
    }

    #[test]
    fn dropped_pictures_leave_no_gap_lost_ones_do() {
        let mut rw = Vp8PictureRewriter::new();
        let mut got = Vec::new();
        // L1T3 pattern 0 2 1 2 0 2 1 2 from PictureID 32 765 (wrapping at 32 768); TID 2
        // dropped; picture 32 767 + 4 = 3 lost upstream.
        for i in 0..8u16 {
            let pid = (32_765 + i) & 0x7fff;
            let tid = [0, 2, 1, 2][usize::from(i % 4)];
            let mut p = packet_t(pid, (i / 4) as u8, tid, false);
            if tid == 2 {
                // Two packets per dropped picture: the second changes nothing.
                rw.drop_picture(&p);
                rw.drop_picture(&p);
            } else if pid != 1 {
                let n = rw.map(&p, i == 0).expect("forwarded picture");
                // A second packet of the same picture gets the same number.
                assert_eq!(rw.map(&p, false), Some(n));
                write_numbers(&mut p, n);
                got.push(n.picture_id);
            }
        }
        // 32 765 → 32 765, 32 767 → 32 766, (0 dropped) 1 lost → gap at 32 767, 2 dropped,
        // 3 → 0 (15-bit wrap).
        assert_eq!(got, [Some(32_765), Some(32_766), Some(0)]);
        // A dropped picture has no number any more (a late packet of it).
        let late = packet_t(0, 0, 2, false);
        assert_eq!(rw.map(&late, false), None);
        // The lost picture, recovered late, takes its slot.
        let recovered = packet_t(1, 0, 0, false);
        assert_eq!(
            rw.map(&recovered, false).and_then(|n| n.picture_id),
            Some(32_767)
        );
    }

    #[test]
    fn seven_bit_picture_ids_wrap_at_128() {
        let mut rw = Vp8PictureRewriter::new();
        let mut p = vec![0x90, 0x80, 126, 0x00];
        rewrite(&mut rw, &mut p, true);
        let mut p = vec![0x90, 0x80, 5, 0x00];
        rewrite(&mut rw, &mut p, true);
        assert_eq!(p, vec![0x90, 0x80, 127, 0x00]);
        let mut p = vec![0x90, 0x80, 6, 0x00];
        rewrite(&mut rw, &mut p, false);
        assert_eq!(p, vec![0x90, 0x80, 0, 0x00]);
    }
}
