//! VP9 payload descriptor reading (RFC 9628 §4.2): what an SFU needs to drop spatial and
//! temporal layers of one SVC stream (layer indices, frame boundaries, whether a frame
//! is predicted from earlier pictures).

/// Layer indices of a VP9 packet (L bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp9Layers {
    /// Temporal layer (TID).
    pub temporal: u8,
    /// Switching up point (U): higher temporal layers after this picture do not depend
    /// on earlier pictures above this one's layer.
    pub switching_up: bool,
    /// Spatial layer (SID).
    pub spatial: u8,
    /// Inter-layer dependency (D): this layer frame depends on the spatial layer below.
    pub inter_layer: bool,
}

/// What a VP9 payload descriptor says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp9Descriptor {
    /// P: the frame is predicted from earlier pictures (not a key or intra-only frame).
    pub inter_picture: bool,
    /// F: flexible mode.
    pub flexible: bool,
    /// B: the packet starts a layer frame.
    pub begin: bool,
    /// E: the packet ends a layer frame.
    pub end: bool,
    /// V: scalability structure present.
    pub scalability_structure: bool,
    /// PictureID (7 or 15 bits), when present (I bit).
    pub picture_id: Option<u16>,
    /// Layer indices, when present.
    pub layers: Option<Vp9Layers>,
    /// TL0PICIDX (non-flexible mode with layer indices).
    pub tl0_pic_idx: Option<u8>,
}

/// Reads a VP9 payload descriptor up to the layer indices; `None` if the payload is too
/// short for the fields its flags announce.
pub fn parse_descriptor(payload: &[u8]) -> Option<Vp9Descriptor> {
    let b0 = *payload.first()?;
    let mut d = Vp9Descriptor {
        inter_picture: b0 & 0x40 != 0,
        flexible: b0 & 0x10 != 0,
        begin: b0 & 0x08 != 0,
        end: b0 & 0x04 != 0,
        scalability_structure: b0 & 0x02 != 0,
        ..Vp9Descriptor::default()
    };
    let mut pos = 1;
    if b0 & 0x80 != 0 {
        let b = *payload.get(pos)?;
        if b & 0x80 != 0 {
            let lo = *payload.get(pos + 1)?;
            d.picture_id = Some(u16::from_be_bytes([b & 0x7f, lo]));
            pos += 2;
        } else {
            d.picture_id = Some(u16::from(b));
            pos += 1;
        }
    }
    if b0 & 0x20 != 0 {
        let l = *payload.get(pos)?;
        d.layers = Some(Vp9Layers {
            temporal: l >> 5,
            switching_up: l & 0x10 != 0,
            spatial: (l >> 1) & 0x07,
            inter_layer: l & 0x01 != 0,
        });
        pos += 1;
        if !d.flexible {
            d.tl0_pic_idx = Some(*payload.get(pos)?);
        }
    }
    Some(d)
}

/// Length of a VP9 payload descriptor, all of it (RFC 9628 §4.2: PictureID, layer
/// indices, TL0PICIDX, the reference indices of flexible mode, the scalability
/// structure): where the VP9 bitstream starts. `None` if the payload ends inside it or
/// holds nothing after it.
pub fn descriptor_len(payload: &[u8]) -> Option<usize> {
    let d = parse_descriptor(payload)?;
    let mut len = 1;
    if d.picture_id.is_some() {
        // M: a 15-bit PictureID.
        len += if payload.get(1)? & 0x80 != 0 { 2 } else { 1 };
    }
    if d.layers.is_some() {
        len += if d.flexible { 1 } else { 2 };
    }
    if d.flexible && d.inter_picture {
        // Up to three reference indices, each with N: another follows.
        for _ in 0..3 {
            let p_diff = *payload.get(len)?;
            len += 1;
            if p_diff & 0x01 == 0 {
                break;
            }
        }
    }
    if d.scalability_structure {
        let ss = *payload.get(len)?;
        len += 1;
        let spatial_layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            len += 4 * spatial_layers;
        }
        if ss & 0x08 != 0 {
            let pictures = *payload.get(len)?;
            len += 1;
            for _ in 0..pictures {
                let references = usize::from((*payload.get(len)? >> 2) & 0x03);
                len += 1 + references;
            }
        }
    }
    (len < payload.len()).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_lengths_cover_every_optional_field() {
        // B E only: one byte, then the bitstream.
        assert_eq!(descriptor_len(&[0x0c, 0x82]), Some(1));
        // I with a 15-bit PictureID, L non-flexible (layer byte + TL0PICIDX).
        assert_eq!(descriptor_len(&[0xac, 0x92, 0x34, 0x53, 77, 0x82]), Some(5));
        // I 7-bit, P, L, F: the layer byte, then two reference indices (N on the first).
        assert_eq!(
            descriptor_len(&[0xf8, 0x05, 0x24, 0x03, 0x04, 0x82]),
            Some(5)
        );
        // B, V: two spatial layers with sizes (Y), one picture group entry with one
        // reference (G).
        let ss = [0x0a, 0x38, 1, 64, 0, 180, 2, 128, 1, 104, 1, 0x04, 1, 0x82];
        assert_eq!(descriptor_len(&ss), Some(13));
        // Nothing after the descriptor, or cut inside it.
        assert_eq!(descriptor_len(&[0x0c]), None);
        assert_eq!(descriptor_len(&ss[..10]), None);
    }

    #[test]
    fn reads_layer_indices_in_both_modes() {
        // I (15-bit PictureID 0x1234), L, B, E; non-flexible: TL0PICIDX follows.
        let p = [0xac, 0x92, 0x34, 0x53 /* TID 2, U, SID 1, D */, 77, 0];
        assert_eq!(
            parse_descriptor(&p),
            Some(Vp9Descriptor {
                inter_picture: false,
                flexible: false,
                begin: true,
                end: true,
                scalability_structure: false,
                picture_id: Some(0x1234),
                layers: Some(Vp9Layers {
                    temporal: 2,
                    switching_up: true,
                    spatial: 1,
                    inter_layer: true,
                }),
                tl0_pic_idx: Some(77),
            })
        );
        // P, L, F (flexible: no TL0PICIDX), 7-bit PictureID.
        let d = parse_descriptor(&[0xf0, 0x05, 0x24 /* TID 1, SID 2 */]).expect("parses");
        assert!(d.inter_picture && d.flexible && !d.begin && !d.end);
        assert_eq!(d.picture_id, Some(5));
        assert_eq!(d.tl0_pic_idx, None);
        assert_eq!(d.layers.map(|l| (l.spatial, l.temporal)), Some((2, 1)));
        // No layer indices at all.
        assert_eq!(parse_descriptor(&[0x0c]).map(|d| d.layers), Some(None));
    }

    #[test]
    fn short_payloads_are_refused() {
        assert_eq!(parse_descriptor(&[]), None);
        assert_eq!(parse_descriptor(&[0x80]), None, "PictureID missing");
        assert_eq!(
            parse_descriptor(&[0x80, 0x80]),
            None,
            "15-bit PictureID cut"
        );
        assert_eq!(parse_descriptor(&[0x20]), None, "layer indices missing");
        assert_eq!(parse_descriptor(&[0x20, 0x00]), None, "TL0PICIDX missing");
    }
}
