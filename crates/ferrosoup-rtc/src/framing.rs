//! RFC 4571 framing: RTP, RTCP, STUN and DTLS packets on a byte stream (ICE-TCP, RFC 6544),
//! each preceded by its length as a 16-bit big-endian number. Buffers are allocated once,
//! when a reader or ring is created; reading and writing allocate nothing.

use std::io::{self, IoSlice, Read, Write};

/// The length prefix of every frame.
pub const PREFIX: usize = 2;

/// Reassembles RFC 4571 frames from a byte stream.
pub struct FrameReader {
    buf: Box<[u8]>,
    max_frame: usize,
    start: usize,
    end: usize,
}

/// A frame longer than the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLong;

impl FrameReader {
    /// A reader of frames up to `max_frame` bytes with a buffer of `capacity` bytes (at
    /// least one whole frame).
    pub fn new(capacity: usize, max_frame: usize) -> Self {
        Self {
            buf: vec![0; capacity.max(PREFIX + max_frame)].into_boxed_slice(),
            max_frame,
            start: 0,
            end: 0,
        }
    }

    /// The bytes of a frame [`next_frame`](Self::next_frame) located.
    pub fn frame(&self, at: usize, len: usize) -> &[u8] {
        &self.buf[at..at + len]
    }

    /// The next complete frame in the buffer, as (offset, length).
    pub fn next_frame(&mut self) -> Result<Option<(usize, usize)>, FrameTooLong> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < PREFIX {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([avail[0], avail[1]]));
        if len > self.max_frame {
            return Err(FrameTooLong);
        }
        if avail.len() < PREFIX + len {
            return Ok(None);
        }
        let at = self.start + PREFIX;
        self.start += PREFIX + len;
        Ok(Some((at, len)))
    }

    /// Reads what the stream has into the free end of the buffer (after moving a partial
    /// frame to the front when the rest would not fit). `Ok(0)`: the peer closed.
    pub fn fill(&mut self, stream: &mut impl Read) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < PREFIX + self.max_frame {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

/// Frames waiting to be written to a stream: a ring of fixed size. A frame is queued whole
/// or not at all, so whatever is dropped, the stream stays a sequence of whole frames.
pub struct SendRing {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

impl SendRing {
    /// A ring of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity.max(PREFIX)].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// Queues `data` with its length prefix, whole or not at all.
    pub fn push_frame(&mut self, data: &[u8]) -> bool {
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        if self.buf.len() - self.len < PREFIX + data.len() {
            return false;
        }
        self.append(&len.to_be_bytes());
        self.append(data);
        true
    }

    fn append(&mut self, data: &[u8]) {
        let cap = self.buf.len();
        let tail = (self.head + self.len) % cap;
        let first = data.len().min(cap - tail);
        self.buf[tail..tail + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
        self.len += data.len();
    }

    /// Writes until empty or the socket would block; `Ok(true)` when everything went.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while self.len > 0 {
            let cap = self.buf.len();
            let first = self.len.min(cap - self.head);
            let (a, b) = (
                &self.buf[self.head..self.head + first],
                &self.buf[..self.len - first],
            );
            match w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.head = (self.head + n) % cap;
                    self.len -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.head = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_reassembled_across_reads() {
        let mut stream = Vec::new();
        for len in [20usize, 1200, 0, 1500] {
            stream.extend_from_slice(&(len as u16).to_be_bytes());
            stream.extend((0..len).map(|i| (i % 251) as u8));
        }
        let mut reader = FrameReader::new(8192, 1500);
        let mut got = Vec::new();
        // Feed in awkward pieces: 1, 3, 7, 100 ... bytes at a time.
        let mut rest = &stream[..];
        for piece in [1usize, 3, 7, 100, 999, 5000].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*piece).min(rest.len());
            let mut chunk = &rest[..n];
            assert_eq!(reader.fill(&mut chunk).unwrap(), n);
            rest = &rest[n..];
            while let Ok(Some((at, len))) = reader.next_frame() {
                got.push(reader.frame(at, len).to_vec());
            }
        }
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, [20, 1200, 0, 1500]);
        assert!(
            got[3]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8)
        );
    }

    #[test]
    fn a_frame_longer_than_any_packet_is_refused() {
        let mut reader = FrameReader::new(8192, 1500);
        let mut input = &[0x06u8, 0x00, 1, 2, 3][..];
        reader.fill(&mut input).unwrap();
        assert!(reader.next_frame().is_err());
    }

    /// A writer that takes at most `room` bytes, then blocks.
    struct Slow {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_ring_drops_whole_frames_and_keeps_the_stream_intact() {
        let mut ring = SendRing::new(4000);
        let frame = [7u8; 1000];
        // 1002 bytes each: three fit in 4000, the fourth does not.
        assert!(ring.push_frame(&frame));
        assert!(ring.push_frame(&frame));
        assert!(ring.push_frame(&frame));
        assert!(!ring.push_frame(&frame));
        let mut slow = Slow {
            room: 1500,
            got: Vec::new(),
        };
        assert!(!ring.write_to(&mut slow).unwrap());
        // Room again for one frame, wrapping around the end of the buffer.
        assert!(ring.push_frame(&[9u8; 1000]));
        slow.room = usize::MAX;
        assert!(ring.write_to(&mut slow).unwrap());
        // The bytes out are four whole frames, in order.
        let mut reader = FrameReader::new(8192, 1500);
        let mut input = &slow.got[..];
        let mut frames = Vec::new();
        while !input.is_empty() {
            reader.fill(&mut input).unwrap();
            while let Ok(Some((at, len))) = reader.next_frame() {
                frames.push(reader.frame(at, len).to_vec());
            }
        }
        assert_eq!(frames.len(), 4);
        assert!(frames[..3].iter().all(|f| f == &frame));
        assert_eq!(frames[3], [9u8; 1000]);
    }
}
