//! Layers inside one forwarded stream: temporal layers (VP8 and VP9 TID) and the spatial
//! layers of a VP9 SVC stream. [`PacketLayer`] is what a packet's payload descriptor says,
//! read once at ingress; [`LayerFilter`] is a consumer's per-picture choice of what to
//! keep, as a plain value: temporal layers go down at the next picture and up one layer
//! at a time at a layer sync point (VP8 Y, VP9 U) or a keyframe; SVC spatial layers change
//! on keyframes (K-SVC, and full SVC going up) or at the next picture (full SVC going
//! down). Pure logic, no I/O.

use ferrosoup_rtc::rtp::VideoCodec;
use ferrosoup_rtc::{vp8, vp9};

/// Temporal layers a consumer can be given (TID 0..=3).
pub const MAX_TEMPORAL_LAYERS: usize = 4;
/// Spatial layers inside one SVC stream that are told apart (SID 0..=3).
pub const MAX_SVC_SPATIAL_LAYERS: usize = 4;

/// The layer indices a packet's payload descriptor carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketLayer {
    /// The descriptor carries layer indices (else the packet is in layer 0/0 and always
    /// kept: H.264, VP8 without the T bit, audio).
    pub described: bool,
    /// Spatial layer inside the stream (VP9 SID; 0 otherwise).
    pub spatial: u8,
    /// Temporal layer (TID).
    pub temporal: u8,
    /// A temporal layer sync point: VP8 Y, VP9 U.
    pub switch_up: bool,
    /// VP9 E: the packet ends its layer frame.
    pub end_of_layer_frame: bool,
    /// VP9 P: the frame is predicted from earlier pictures.
    pub inter_picture: bool,
}

impl PacketLayer {
    /// Reads the layer indices of a payload of `codec` (nothing for other codecs or a
    /// payload too short for its descriptor).
    pub fn parse(codec: VideoCodec, payload: &[u8]) -> Self {
        match codec {
            VideoCodec::Vp8 => vp8::parse_descriptor(payload)
                .and_then(|d| d.temporal)
                .map_or_else(Self::default, |(tid, sync)| Self {
                    described: true,
                    temporal: tid,
                    switch_up: sync,
                    ..Self::default()
                }),
            VideoCodec::Vp9 => {
                let Some(d) = vp9::parse_descriptor(payload) else {
                    return Self::default();
                };
                let layers = d.layers.unwrap_or_default();
                Self {
                    described: d.layers.is_some(),
                    spatial: layers.spatial,
                    temporal: layers.temporal,
                    switch_up: layers.switching_up,
                    end_of_layer_frame: d.end,
                    inter_picture: d.inter_picture,
                }
            }
            VideoCodec::H264 | VideoCodec::Other => Self::default(),
        }
    }

    /// Index of its (spatial, temporal) layer in per-layer tables, `None` beyond them.
    pub fn index(&self) -> Option<usize> {
        let (s, t) = (usize::from(self.spatial), usize::from(self.temporal));
        (s < MAX_SVC_SPATIAL_LAYERS && t < MAX_TEMPORAL_LAYERS)
            .then_some(s * MAX_TEMPORAL_LAYERS + t)
    }
}

/// How the spatial layers of one stream depend on each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SvcMode {
    /// No spatial layers inside the stream (simulcast streams, single streams).
    #[default]
    None,
    /// Full SVC (`L3T3`): every spatial layer builds on the ones below.
    Full,
    /// K-SVC (`L3T3_KEY`): spatial layers depend on each other only on keyframes.
    KeyOnly,
}

/// A spatial and temporal layer inside one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamLayers {
    /// Spatial layer (SVC only; 0 otherwise).
    pub spatial: u8,
    /// Temporal layer.
    pub temporal: u8,
}

/// What to do with a packet of the forwarded stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Forward it; with `marker`, set its RTP marker bit (it ends the highest spatial
    /// layer forwarded of its picture).
    Keep {
        /// Set the marker bit.
        marker: bool,
    },
    /// A layer above what the consumer forwards: drop it.
    Drop,
}

/// A consumer's choice of layers inside the stream it forwards.
#[derive(Clone, Debug)]
pub struct LayerFilter {
    svc: SvcMode,
    target: StreamLayers,
    /// What is forwarded now (`None` before the first picture).
    current: Option<StreamLayers>,
    /// RTP timestamp of the newest picture decided.
    picture: Option<u32>,
    /// Highest layers seen in the stream (to report what is really forwarded).
    seen: StreamLayers,
    /// Pictures since a temporal layer above the current one was wanted and no sync
    /// point came.
    waiting_for_sync: u16,
}

/// Pictures a temporal step up waits for a layer sync point before it asks for a
/// keyframe: Chrome's VP8 marks sync points only in the pictures right after a keyframe,
/// so a consumer stepped down to a lower temporal layer would stay there for good.
pub const SYNC_WAIT_PICTURES: u16 = 8;

impl LayerFilter {
    /// A filter for a stream whose spatial layers depend on each other as `svc` says,
    /// forwarding every layer until told otherwise.
    pub fn new(svc: SvcMode) -> Self {
        let top = StreamLayers {
            spatial: (MAX_SVC_SPATIAL_LAYERS - 1) as u8,
            temporal: (MAX_TEMPORAL_LAYERS - 1) as u8,
        };
        Self {
            svc,
            target: top,
            current: None,
            picture: None,
            seen: StreamLayers::default(),
            waiting_for_sync: 0,
        }
    }

    /// How the stream's spatial layers depend on each other.
    pub fn svc(&self) -> SvcMode {
        self.svc
    }

    /// Sets the layers to forward: temporal changes happen at the next picture (down) or
    /// sync point (up); SVC spatial ones as [`LayerFilter::needs_keyframe`] says.
    pub fn set_target(&mut self, target: StreamLayers) {
        self.target = StreamLayers {
            spatial: if self.svc == SvcMode::None {
                0
            } else {
                target.spatial
            },
            temporal: target.temporal,
        };
    }

    /// The layers the consumer wants.
    pub fn target(&self) -> StreamLayers {
        self.target
    }

    /// Forgets what is forwarded (after a pause or a source switch).
    pub fn restart(&mut self) {
        self.current = None;
        self.picture = None;
        self.waiting_for_sync = 0;
    }

    /// True when reaching the target needs a keyframe of the stream: an SVC spatial layer
    /// as its mode says, or a temporal layer whose sync point did not come within
    /// [`SYNC_WAIT_PICTURES`].
    pub fn needs_keyframe(&self) -> bool {
        self.waiting_for_sync >= SYNC_WAIT_PICTURES
            || self.current.is_some_and(|c| {
                c.spatial != self.target.spatial
                    && (self.svc == SvcMode::KeyOnly || self.target.spatial > c.spatial)
            })
    }

    /// The layers really forwarded now: the current choice, capped by the highest seen.
    pub fn current(&self) -> Option<StreamLayers> {
        self.current.map(|c| StreamLayers {
            spatial: c.spatial.min(self.seen.spatial),
            temporal: c.temporal.min(self.seen.temporal),
        })
    }

    /// Decides for one packet of the forwarded stream with RTP timestamp `timestamp`
    /// (the picture it belongs to), layer indices `layer`, starting a keyframe or not.
    pub fn filter(&mut self, timestamp: u32, layer: &PacketLayer, keyframe: bool) -> Filtered {
        if layer.described {
            self.seen.spatial = self.seen.spatial.max(layer.spatial);
            self.seen.temporal = self.seen.temporal.max(layer.temporal);
        }
        let target = self.target;
        let mut current = *self.current.get_or_insert(target);
        let new_picture = self
            .picture
            .is_none_or(|p| (timestamp.wrapping_sub(p) as i32) > 0);
        if new_picture {
            self.picture = Some(timestamp);
            if keyframe {
                // Nothing after a keyframe refers to anything before it.
                current = target;
                self.waiting_for_sync = 0;
            } else {
                if target.temporal < current.temporal {
                    current.temporal = target.temporal;
                } else if target.temporal > current.temporal
                    && layer.described
                    && layer.temporal == current.temporal + 1
                    && layer.switch_up
                {
                    current.temporal += 1;
                }
                if self.svc == SvcMode::Full && target.spatial < current.spatial {
                    current.spatial = target.spatial;
                }
                // Counted only while the stream has the layer to go up to.
                self.waiting_for_sync = if target.temporal > current.temporal
                    && self.seen.temporal > current.temporal
                {
                    self.waiting_for_sync.saturating_add(1)
                } else {
                    0
                };
            }
            self.current = Some(current);
        }
        self.judge(current, layer)
    }

    /// What [`LayerFilter::filter`] would do now with a packet of an earlier picture
    /// (a retransmission), without changing anything.
    pub fn keeps(&self, layer: &PacketLayer) -> Filtered {
        self.current
            .map_or(Filtered::Drop, |current| self.judge(current, layer))
    }

    fn judge(&self, current: StreamLayers, layer: &PacketLayer) -> Filtered {
        if layer.described && layer.temporal > current.temporal {
            return Filtered::Drop;
        }
        let sid = layer.spatial;
        let keep_spatial = match self.svc {
            SvcMode::None => true,
            SvcMode::Full => sid <= current.spatial,
            // Lower layers only where the picture is not predicted from earlier ones (a
            // keyframe, whose upper layers are predicted from them).
            SvcMode::KeyOnly => {
                sid == current.spatial || (sid < current.spatial && !layer.inter_picture)
            }
        };
        if !keep_spatial {
            return Filtered::Drop;
        }
        Filtered::Keep {
            marker: self.svc != SvcMode::None && layer.end_of_layer_frame && sid == current.spatial,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 packet of temporal layer `tid`, layer sync or not.
    fn vp8(tid: u8, sync: bool) -> PacketLayer {
        PacketLayer {
            described: true,
            temporal: tid,
            switch_up: sync,
            ..PacketLayer::default()
        }
    }

    /// A VP9 packet of layer `sid`/`tid`, ending its layer frame or not, predicted from
    /// earlier pictures or not.
    fn vp9(sid: u8, tid: u8, end: bool, inter: bool) -> PacketLayer {
        PacketLayer {
            described: true,
            spatial: sid,
            temporal: tid,
            switch_up: true,
            end_of_layer_frame: end,
            inter_picture: inter,
        }
    }

    const KEEP: Filtered = Filtered::Keep { marker: false };
    const MARK: Filtered = Filtered::Keep { marker: true };

    fn layers(spatial: u8, temporal: u8) -> StreamLayers {
        StreamLayers { spatial, temporal }
    }

    #[test]
    fn parses_vp8_and_vp9_descriptors() {
        // X, T; TID 2, Y.
        let p = [0x90, 0x20, 0xa0, 0, 0, 0];
        assert_eq!(PacketLayer::parse(VideoCodec::Vp8, &p), vp8(2, true));
        assert_eq!(
            PacketLayer::parse(VideoCodec::Vp8, &[0x10, 0, 0, 0]),
            PacketLayer::default(),
            "no T bit: layer 0, not described"
        );
        // P, L, F, E; TID 1, U, SID 2, D.
        let p = [0x74, 0x35 /* TID 1, U, SID 2, D */, 0];
        assert_eq!(
            PacketLayer::parse(VideoCodec::Vp9, &p),
            vp9(2, 1, true, true)
        );
        assert_eq!(
            PacketLayer::parse(VideoCodec::H264, &[0x65]),
            PacketLayer::default()
        );
        assert_eq!(vp9(2, 1, true, true).index(), Some(9));
        assert_eq!(vp9(4, 0, true, true).index(), None);
    }

    #[test]
    fn temporal_down_at_the_next_picture_up_one_layer_per_sync_point() {
        let mut f = LayerFilter::new(SvcMode::None);
        f.set_target(layers(0, 2));
        // Pattern 0 2 1 2, timestamps 3000 apart.
        assert_eq!(f.filter(0, &vp8(0, false), true), KEEP);
        assert_eq!(f.current(), Some(layers(0, 0)), "only TID 0 seen yet");
        assert_eq!(f.filter(3_000, &vp8(2, false), false), KEEP);
        assert_eq!(f.current(), Some(layers(0, 2)));
        f.set_target(layers(0, 0));
        // The picture under way stays whole.
        assert_eq!(f.filter(3_000, &vp8(2, false), false), KEEP);
        assert_eq!(f.filter(6_000, &vp8(1, false), false), Filtered::Drop);
        assert_eq!(f.current(), Some(layers(0, 0)));
        assert_eq!(f.filter(9_000, &vp8(2, false), false), Filtered::Drop);
        assert_eq!(f.filter(12_000, &vp8(0, false), false), KEEP);
        f.set_target(layers(0, 2));
        // TID 2 sync: two layers up at once would leave TID 1 pictures without their
        // references; TID 1 without sync: not yet.
        assert_eq!(f.filter(15_000, &vp8(2, true), false), Filtered::Drop);
        assert_eq!(f.filter(18_000, &vp8(1, false), false), Filtered::Drop);
        assert_eq!(f.filter(21_000, &vp8(2, false), false), Filtered::Drop);
        assert_eq!(f.filter(24_000, &vp8(0, false), false), KEEP);
        assert_eq!(f.filter(27_000, &vp8(2, true), false), Filtered::Drop);
        assert_eq!(f.filter(30_000, &vp8(1, true), false), KEEP);
        assert_eq!(f.current(), Some(layers(0, 1)));
        assert_eq!(f.filter(33_000, &vp8(2, false), false), Filtered::Drop);
        assert_eq!(f.filter(36_000, &vp8(0, false), false), KEEP);
        assert_eq!(f.filter(39_000, &vp8(2, true), false), KEEP);
        assert_eq!(f.current(), Some(layers(0, 2)));
        // A keyframe brings every layer at once.
        f.set_target(layers(0, 0));
        assert_eq!(f.filter(42_000, &vp8(1, false), false), Filtered::Drop);
        f.set_target(layers(0, 2));
        assert_eq!(f.filter(45_000, &vp8(0, false), true), KEEP);
        assert_eq!(f.filter(48_000, &vp8(2, false), false), KEEP);
        // A late packet of an older picture is judged by the layers in force.
        f.set_target(layers(0, 1));
        assert_eq!(f.filter(51_000, &vp8(0, false), false), KEEP);
        assert_eq!(f.filter(48_000, &vp8(2, false), false), Filtered::Drop);
    }

    #[test]
    fn a_temporal_step_up_without_sync_points_asks_for_a_keyframe() {
        let mut f = LayerFilter::new(SvcMode::None);
        f.set_target(layers(0, 0));
        // TID pattern 0 2 1 2, no sync point after the first pictures (Chrome's VP8).
        let mut ts = 0u32;
        let mut picture = |f: &mut LayerFilter, tid: u8, sync: bool, keyframe: bool| {
            ts += 3_000;
            f.filter(ts, &vp8(tid, sync), keyframe);
        };
        for k in 0..8 {
            picture(&mut f, [0, 2, 1, 2][k % 4], false, false);
        }
        assert!(!f.needs_keyframe(), "at its target");
        f.set_target(layers(0, 2));
        for k in 0..usize::from(SYNC_WAIT_PICTURES) - 1 {
            picture(&mut f, [0, 2, 1, 2][k % 4], false, false);
            assert!(!f.needs_keyframe(), "picture {k}");
        }
        picture(&mut f, 0, false, false);
        assert!(f.needs_keyframe(), "no sync point within the wait");
        // The keyframe brings it up at once.
        picture(&mut f, 0, false, true);
        assert!(!f.needs_keyframe());
        assert_eq!(f.current(), Some(layers(0, 2)));
        // A sync point within the wait needs none.
        f.set_target(layers(0, 0));
        picture(&mut f, 2, false, false);
        f.set_target(layers(0, 1));
        picture(&mut f, 0, false, false);
        picture(&mut f, 1, true, false);
        assert_eq!(f.current(), Some(layers(0, 1)));
        assert!(!f.needs_keyframe());
    }

    #[test]
    fn streams_without_layer_indices_pass_whole() {
        let mut f = LayerFilter::new(SvcMode::None);
        f.set_target(layers(0, 0));
        for ts in 0..5u32 {
            assert_eq!(f.filter(ts * 3_000, &PacketLayer::default(), ts == 0), KEEP);
        }
        assert_eq!(f.current(), Some(layers(0, 0)));
    }

    #[test]
    fn ksvc_forwards_one_spatial_layer_and_the_lower_ones_on_keyframes() {
        let mut f = LayerFilter::new(SvcMode::KeyOnly);
        f.set_target(layers(1, 2));
        // Keyframe picture: S0, S1 (from S0), S2.
        assert_eq!(f.filter(0, &vp9(0, 0, true, false), true), KEEP);
        assert_eq!(f.filter(0, &vp9(1, 0, false, false), false), KEEP);
        assert_eq!(f.filter(0, &vp9(1, 0, true, false), false), MARK);
        assert_eq!(f.filter(0, &vp9(2, 0, true, false), false), Filtered::Drop);
        assert_eq!(f.current(), Some(layers(1, 0)));
        // Delta pictures: only S1.
        assert_eq!(
            f.filter(3_000, &vp9(0, 2, true, true), false),
            Filtered::Drop
        );
        assert_eq!(f.filter(3_000, &vp9(1, 2, true, true), false), MARK);
        assert_eq!(
            f.filter(3_000, &vp9(2, 2, true, true), false),
            Filtered::Drop
        );
        assert!(!f.needs_keyframe());
        // Up or down: both wait for a keyframe.
        f.set_target(layers(2, 2));
        assert!(f.needs_keyframe());
        assert_eq!(f.filter(6_000, &vp9(1, 1, true, true), false), MARK);
        assert_eq!(
            f.filter(6_000, &vp9(2, 1, true, true), false),
            Filtered::Drop
        );
        assert_eq!(f.filter(9_000, &vp9(0, 0, true, false), true), KEEP);
        assert_eq!(f.filter(9_000, &vp9(1, 0, true, false), false), KEEP);
        assert_eq!(f.filter(9_000, &vp9(2, 0, true, false), false), MARK);
        assert!(!f.needs_keyframe());
        f.set_target(layers(0, 0));
        assert!(f.needs_keyframe());
        assert_eq!(
            f.filter(12_000, &vp9(2, 2, true, true), false),
            Filtered::Drop
        );
        assert_eq!(
            f.filter(15_000, &vp9(2, 1, true, true), false),
            Filtered::Drop
        );
        assert_eq!(
            f.filter(18_000, &vp9(0, 0, true, true), false),
            Filtered::Drop
        );
        assert_eq!(f.filter(18_000, &vp9(2, 0, true, true), false), MARK);
        assert_eq!(f.current(), Some(layers(2, 0)));
    }

    #[test]
    fn full_svc_goes_down_at_the_next_picture_and_up_on_a_keyframe() {
        let mut f = LayerFilter::new(SvcMode::Full);
        f.set_target(layers(2, 0));
        assert_eq!(f.filter(0, &vp9(0, 0, true, false), true), KEEP);
        assert_eq!(f.filter(0, &vp9(1, 0, true, false), false), KEEP);
        assert_eq!(f.filter(0, &vp9(2, 0, true, false), false), MARK);
        f.set_target(layers(1, 0));
        assert!(!f.needs_keyframe());
        assert_eq!(f.filter(3_000, &vp9(0, 0, true, true), false), KEEP);
        assert_eq!(f.filter(3_000, &vp9(1, 0, true, true), false), MARK);
        assert_eq!(
            f.filter(3_000, &vp9(2, 0, true, true), false),
            Filtered::Drop
        );
        f.set_target(layers(2, 0));
        assert!(f.needs_keyframe());
        assert_eq!(
            f.filter(6_000, &vp9(2, 0, true, true), false),
            Filtered::Drop
        );
    }
}
