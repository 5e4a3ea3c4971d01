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

#[cfg(test)]
mod tests {
    use super::*;

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
