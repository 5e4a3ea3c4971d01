//! IVF files (the libvpx container: a 32-byte header, then a 12-byte header per frame),
//! which ffmpeg, ffprobe, VLC and mpv play. Picture size and length are filled in at
//! [`IvfWriter::finish`]; the length field holds the duration in time-base units, as
//! ffmpeg writes and reads it (with libvpx's 1/fps time bases that is the frame count).

use std::io::{self, Seek, SeekFrom, Write};

/// Codec of an IVF stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvfCodec {
    /// VP8 (`VP80`).
    Vp8,
    /// VP9 (`VP90`).
    Vp9,
}

/// Writes an IVF stream whose timestamps are 90 kHz RTP ticks from the first frame.
pub struct IvfWriter<W: Write + Seek> {
    out: W,
    frames: u32,
    first_ts: Option<u64>,
    last_pts: u64,
    size: (u16, u16),
}

impl<W: Write + Seek> IvfWriter<W> {
    /// Writes the file header (frame count and size are patched by [`Self::finish`]).
    pub fn new(mut out: W, codec: IvfCodec) -> io::Result<Self> {
        let mut header = [0u8; 32];
        header[..4].copy_from_slice(b"DKIF");
        header[6..8].copy_from_slice(&32u16.to_le_bytes());
        header[8..12].copy_from_slice(match codec {
            IvfCodec::Vp8 => b"VP80",
            IvfCodec::Vp9 => b"VP90",
        });
        // Time base 1/90000 (the RTP video clock): rate 90000, scale 1.
        header[16..20].copy_from_slice(&90_000u32.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        out.write_all(&header)?;
        Ok(Self {
            out,
            frames: 0,
            first_ts: None,
            last_pts: 0,
            size: (0, 0),
        })
    }

    /// Adds one frame with RTP timestamp `ts` (widened to 64 bits). Frames with the same
    /// or an earlier timestamp than the last get the next tick (IVF needs increasing pts).
    pub fn write_frame(&mut self, ts: u64, frame: &[u8]) -> io::Result<()> {
        let first = *self.first_ts.get_or_insert(ts);
        let mut pts = ts.saturating_sub(first);
        if self.frames > 0 && pts <= self.last_pts {
            pts = self.last_pts + 1;
        }
        if self.size == (0, 0)
            && let Some(size) = vp8_keyframe_size(frame)
        {
            self.size = size;
        }
        let mut header = [0u8; 12];
        header[..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&pts.to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(frame)?;
        self.frames += 1;
        self.last_pts = pts;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Time from the first frame to the last (90 kHz ticks).
    pub fn span_ticks(&self) -> u64 {
        self.last_pts
    }

    /// Patches picture size and length into the header and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.seek(SeekFrom::Start(12))?;
        self.out.write_all(&self.size.0.to_le_bytes())?;
        self.out.write_all(&self.size.1.to_le_bytes())?;
        // Duration with the last frame's share: span * frames / (frames - 1).
        let length = match u64::from(self.frames) {
            0 | 1 => 0,
            n => self.last_pts * n / (n - 1),
        };
        self.out.seek(SeekFrom::Start(24))?;
        self.out
            .write_all(&u32::try_from(length).unwrap_or(u32::MAX).to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Width and height of a VP8 keyframe (RFC 6386 §9.1), `None` for an interframe.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let tag = frame.get(..10)?;
    if tag[0] & 0x01 != 0 || tag[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([tag[6], tag[7]]) & 0x3fff;
    let height = u16::from_le_bytes([tag[8], tag[9]]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn header_and_frames_are_laid_out_as_libvpx_reads_them() {
        let mut w = IvfWriter::new(Cursor::new(Vec::new()), IvfCodec::Vp8).expect("header");
        // A keyframe of 320x240 (frame tag, start code, sizes).
        let key = [
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0xaa,
        ];
        w.write_frame(90_000, &key).expect("frame");
        w.write_frame(93_000, &[0x11, 0x22]).expect("frame");
        w.write_frame(93_000, &[0x33]).expect("same timestamp");
        let bytes = w.finish().expect("finish").into_inner();
        assert_eq!(&bytes[..4], b"DKIF");
        assert_eq!(&bytes[8..12], b"VP80");
        assert_eq!(u16::from_le_bytes([bytes[12], bytes[13]]), 320);
        assert_eq!(u16::from_le_bytes([bytes[14], bytes[15]]), 240);
        // Length in 1/90000 s: 3001 ticks over 2 intervals, plus one more frame's share.
        assert_eq!(
            u32::from_le_bytes(bytes[24..28].try_into().expect("4")),
            4501
        );
        let frame = |at: usize| {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            let pts = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().expect("8"));
            (len, pts, at + 12 + len)
        };
        let (len, pts, next) = frame(32);
        assert_eq!((len, pts), (key.len(), 0));
        let (len, pts, next) = frame(next);
        assert_eq!((len, pts), (2, 3_000));
        let (len, pts, next) = frame(next);
        assert_eq!((len, pts), (1, 3_001));
        assert_eq!(next, bytes.len());
    }
}
