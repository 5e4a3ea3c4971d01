//! VP8 payload descriptor rewriting (RFC 7741 §4.2) for simulcast forwarding. Each simulcast
//! layer numbers its pictures on its own (PictureID, TL0PICIDX); when a consumer switches
//! layers the numbers jump, and a receiver may take the new layer's frames for old ones.
//! [`Vp8PictureRewriter`] continues both sequences across switches, in place.

/// Positions of the rewritable fields in a VP8 payload descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// Offset and width in bits (7 or 15) of the PictureID, when present.
    pub picture_id: Option<(usize, u8)>,
    /// Offset of TL0PICIDX, when present.
    pub tl0_pic_idx: Option<usize>,
}

/// Finds the PictureID and TL0PICIDX fields of a VP8 payload; `None` if it is too short.
pub fn parse_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let first = *payload.first()?;
    let mut d = Vp8Descriptor::default();
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

/// Continues PictureID and TL0PICIDX across source switches for one consumer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8PictureRewriter {
    picture_offset: u16,
    tl0_offset: u8,
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8PictureRewriter {
    /// A rewriter that passes the first source through unchanged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rewrites a payload in place. `switched` marks the first packet of a new source (a
    /// keyframe): its numbers continue right after the last ones forwarded.
    pub fn rewrite(&mut self, payload: &mut [u8], switched: bool) {
        let Some(d) = parse_descriptor(payload) else {
            return;
        };
        if let Some(field) = d.picture_id {
            let modulo = if field.1 == 15 { 0x8000 } else { 0x80 };
            let input = read_picture_id(payload, field);
            if switched && let Some(last) = self.last_picture {
                self.picture_offset = last.wrapping_add(1).wrapping_sub(input) % modulo;
            }
            let out = input.wrapping_add(self.picture_offset) % modulo;
            write_picture_id(payload, field, out);
            // Keep the newest (packets of one picture repeat it; reordering is rare).
            if self
                .last_picture
                .is_none_or(|l| out.wrapping_sub(l) % modulo < modulo / 2)
            {
                self.last_picture = Some(out);
            }
        }
        if let Some(at) = d.tl0_pic_idx {
            let input = payload[at];
            if switched && let Some(last) = self.last_tl0 {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(input);
            }
            let out = input.wrapping_add(self.tl0_offset);
            payload[at] = out;
            if self.last_tl0.is_none_or(|l| out.wrapping_sub(l) < 128) {
                self.last_tl0 = Some(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with X, I (15-bit PictureID), L, T set, then one payload byte.
    fn packet(picture_id: u16, tl0: u8) -> Vec<u8> {
        let pid = picture_id.to_be_bytes();
        vec![0x90, 0xe0, 0x80 | pid[0], pid[1], tl0, 0x20, 0x00]
    }

    #[test]
    fn parses_the_descriptor_forms() {
        assert_eq!(
            parse_descriptor(&[0x10, 0x00]),
            Some(Vp8Descriptor::default())
        );
        assert_eq!(
            parse_descriptor(&packet(300, 9)),
            Some(Vp8Descriptor {
                picture_id: Some((2, 15)),
                tl0_pic_idx: Some(4)
            })
        );
        assert_eq!(
            parse_descriptor(&[0x90, 0x80, 0x05, 0x00]),
            Some(Vp8Descriptor {
                picture_id: Some((2, 7)),
                tl0_pic_idx: None
            })
        );
        assert_eq!(
            parse_descriptor(&[0x90, 0x80, 0x85]),
            None,
            "15-bit PictureID cut short"
        );
        assert_eq!(parse_descriptor(&[]), None);
    }

    #[test]
    fn numbers_continue_across_a_switch() {
        let mut rw = Vp8PictureRewriter::new();
        let mut p = packet(100, 7);
        rw.rewrite(&mut p, true);
        assert_eq!(p, packet(100, 7), "first source passes through");
        let mut p = packet(101, 7);
        rw.rewrite(&mut p, false);
        assert_eq!(p, packet(101, 7));
        // Another layer numbered far away: continues at 102 / 8.
        let mut p = packet(32_760, 200);
        rw.rewrite(&mut p, true);
        assert_eq!(p, packet(102, 8));
        let mut p = packet(32_767, 201);
        rw.rewrite(&mut p, false);
        assert_eq!(p, packet(109, 9));
        // The input wraps (15 bits): the output keeps counting.
        let mut p = packet(0, 202);
        rw.rewrite(&mut p, false);
        assert_eq!(p, packet(110, 10));
    }

    #[test]
    fn seven_bit_picture_ids_wrap_at_128() {
        let mut rw = Vp8PictureRewriter::new();
        let mut p = vec![0x90, 0x80, 126, 0x00];
        rw.rewrite(&mut p, true);
        let mut p = vec![0x90, 0x80, 5, 0x00];
        rw.rewrite(&mut p, true);
        assert_eq!(p, vec![0x90, 0x80, 127, 0x00]);
        let mut p = vec![0x90, 0x80, 6, 0x00];
        rw.rewrite(&mut p, false);
        assert_eq!(p, vec![0x90, 0x80, 0, 0x00]);
    }
}
