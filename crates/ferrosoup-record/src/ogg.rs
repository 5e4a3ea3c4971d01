//! Ogg Opus files (RFC 3533 pages, RFC 7845 Opus mapping), written by hand: one packet a
//! page, granule positions from the RTP timestamps so gaps (loss, DTX) keep their time.
//!
//! The page buffer is allocated once; writing a packet allocates nothing.

use std::io::{self, Write};

/// Opus always counts time in 48 kHz samples.
const OPUS_RATE: u64 = 48_000;

/// CRC-32 of Ogg: polynomial 0x04c11db7, not reflected, initial value 0.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from(((crc >> 24) as u8) ^ b)]
    })
}

/// Page header flag: first page of the stream.
const BEGIN_OF_STREAM: u8 = 0x02;
/// Page header flag: last page of the stream.
const END_OF_STREAM: u8 = 0x04;
/// Largest packet one page holds (255 lacing values of 255).
const MAX_PACKET: usize = 255 * 255 - 1;

/// Samples (at 48 kHz) an Opus packet decodes to (RFC 6716 §3.1); 0 for a malformed one.
pub fn opus_packet_samples(packet: &[u8]) -> u64 {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = toc >> 3;
    // Frame size in units of 2.5 ms (120 samples at 48 kHz).
    let frame_units: u64 = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)], // SILK: 10, 20, 40, 60 ms
        12..=15 => [4, 8][usize::from(config % 2)],        // hybrid: 10, 20 ms
        _ => [1, 2, 4, 8][usize::from(config % 4)],        // CELT: 2.5, 5, 10, 20 ms
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(0, |b| u64::from(b & 0x3f)),
    };
    frames * frame_units * 120
}

/// Writes an Ogg Opus stream.
pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    page: Vec<u8>,
    /// RTP timestamp (extended) of the first packet.
    first_ts: Option<u64>,
    /// Granule of the last page written.
    granule: u64,
    packets: u64,
    /// The last packet, held back so the final page can carry the end-of-stream flag.
    pending: Vec<u8>,
    pending_granule: Option<u64>,
}

impl<W: Write> OggOpusWriter<W> {
    /// Starts a stream of `channels` channels at `input_rate` Hz (OpusHead, OpusTags).
    pub fn new(out: W, channels: u8, input_rate: u32) -> io::Result<Self> {
        let mut w = Self {
            out,
            serial: rand::random(),
            sequence: 0,
            page: Vec::with_capacity(27 + 255 + MAX_PACKET),
            first_ts: None,
            granule: 0,
            packets: 0,
            pending: Vec::with_capacity(MAX_PACKET),
            pending_granule: None,
        };
        let mut head = [0u8; 19];
        head[..8].copy_from_slice(b"OpusHead");
        head[8] = 1; // version
        head[9] = channels.max(1);
        // Pre-skip 0: the encoder's delay is not known from RTP; nothing is cut.
        head[12..16].copy_from_slice(&input_rate.to_le_bytes());
        // Output gain 0, channel mapping family 0 (mono or stereo).
        w.write_page(&head, 0, BEGIN_OF_STREAM)?;
        let vendor = b"ferrosoup-record";
        let mut tags = [0u8; 8 + 4 + 16 + 4];
        tags[..8].copy_from_slice(b"OpusTags");
        tags[8..12].copy_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags[12..28].copy_from_slice(vendor);
        w.write_page(&tags, 0, 0)?;
        Ok(w)
    }

    /// Adds one Opus packet whose RTP timestamp, widened to 64 bits, is `ts` (48 kHz).
    /// A packet larger than a page can hold is skipped.
    pub fn write_packet(&mut self, ts: u64, packet: &[u8]) -> io::Result<()> {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            return Ok(());
        }
        let first = *self.first_ts.get_or_insert(ts);
        let end = ts.saturating_sub(first) + opus_packet_samples(packet);
        self.flush_pending(0)?;
        self.packets += 1;
        self.pending.clear();
        self.pending.extend_from_slice(packet);
        self.pending_granule = Some(end);
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Duration written so far.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.pending_granule.unwrap_or(self.granule) * 1_000_000 / OPUS_RATE,
        )
    }

    /// Writes the last page (end of stream) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.pending_granule.is_some() {
            self.flush_pending(END_OF_STREAM)?;
        } else {
            self.write_page(&[], self.granule, END_OF_STREAM)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_pending(&mut self, flags: u8) -> io::Result<()> {
        let Some(granule) = self.pending_granule.take() else {
            return Ok(());
        };
        // Granules never go back (a reordered packet after a later one keeps the order of
        // writing, as the decoder plays it).
        let granule = granule.max(self.granule);
        let packet = std::mem::take(&mut self.pending);
        let result = self.write_page(&packet, granule, flags);
        self.pending = packet;
        self.granule = granule;
        result
    }

    fn write_page(&mut self, packet: &[u8], granule: u64, flags: u8) -> io::Result<()> {
        let segments = packet.len() / 255 + 1;
        let page = &mut self.page;
        page.clear();
        page.extend_from_slice(b"OggS");
        page.push(0); // version
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&[0; 4]); // CRC, filled below
        page.push(segments as u8);
        for _ in 0..segments - 1 {
            page.push(255);
        }
        page.push((packet.len() % 255) as u8);
        page.extend_from_slice(packet);
        let crc = crc32(page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.sequence += 1;
        self.out.write_all(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_ogg_reference_value() {
        // Ogg's CRC is CRC-32/POSIX without its final xor: POSIX's check value over
        // "123456789", 0x765e7680, xor 0xffffffff.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn packet_durations_follow_the_toc() {
        assert_eq!(opus_packet_samples(&[0xfc, 0, 0]), 960); // CELT 20 ms, one frame
        assert_eq!(opus_packet_samples(&[(15 << 3) | 1]), 2 * 960); // hybrid 20 ms, two frames
        assert_eq!(opus_packet_samples(&[1 << 3]), 960); // SILK 20 ms
        assert_eq!(opus_packet_samples(&[(3 << 3) | 3, 3]), 3 * 2880); // SILK 60 ms x3
        assert_eq!(opus_packet_samples(&[]), 0);
    }

    #[test]
    fn pages_carry_granules_from_timestamps_and_end_of_stream() {
        let mut w = OggOpusWriter::new(Vec::new(), 2, 48_000).expect("head");
        let packet = [0xfcu8, 1, 2, 3]; // CELT 20 ms
        w.write_packet(1_000, &packet).expect("write");
        w.write_packet(1_960, &packet).expect("write");
        // A lost packet: the next one is 40 ms later.
        w.write_packet(3_880, &packet).expect("write");
        assert_eq!(w.packets(), 3);
        let bytes = w.finish().expect("finish");
        let pages: Vec<(u8, u64, &[u8])> = {
            let mut pages = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let h = &bytes[at..];
                assert_eq!(&h[..4], b"OggS");
                let segments = usize::from(h[26]);
                let len: usize = h[27..27 + segments].iter().map(|&l| usize::from(l)).sum();
                let granule = u64::from_le_bytes(h[6..14].try_into().expect("8 bytes"));
                let mut check = h[..27 + segments + len].to_vec();
                let crc = u32::from_le_bytes(check[22..26].try_into().expect("4 bytes"));
                check[22..26].fill(0);
                assert_eq!(crc32(&check), crc, "page CRC");
                pages.push((h[5], granule, &h[27 + segments..27 + segments + len]));
                at += 27 + segments + len;
            }
            pages
        };
        assert_eq!(pages.len(), 5);
        assert_eq!(pages[0].0, BEGIN_OF_STREAM);
        assert_eq!(&pages[0].2[..8], b"OpusHead");
        assert_eq!(pages[0].2[9], 2);
        assert_eq!(&pages[1].2[..8], b"OpusTags");
        assert_eq!(pages[2].1, 960);
        assert_eq!(pages[3].1, 1_920);
        assert_eq!(pages[4], (END_OF_STREAM, 3_840, &packet[..]));
    }
}
