//! What was sent under each transport-wide sequence number: a fixed ring, allocated at
//! the first packet and never again.

use ferrosoup_rtc::seq::SeqExtender;

/// Packets remembered (about 2 s at 5 Mbit/s; feedback comes every ~100 ms).
pub const HISTORY: usize = 1024;

/// One sent packet, in 16 bytes (one slot is written per packet sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sent {
    /// Low 32 bits of the widened transport-wide sequence number.
    seq: u32,
    /// Send time, µs on the sender's clock, low 32 bits (wraps every 71 minutes; a
    /// packet is reported within seconds).
    at_us: u32,
    /// Bytes on the wire.
    size: u16,
    /// Probe cluster id (0: not a probe).
    cluster: u16,
    /// Written and not yet reported received.
    live: bool,
}

/// A sent packet as a feedback reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketResult {
    /// Widened transport-wide sequence number.
    pub seq: u64,
    /// Send time, µs on the sender's clock.
    pub sent_us: i64,
    /// Arrival time, µs on the receiver's clock; `None`: lost.
    pub arrival_us: Option<i64>,
    /// Bytes.
    pub size: u32,
    /// Probe cluster id (0: not a probe).
    pub cluster: u32,
}

/// The send history of one transport.
#[derive(Debug, Default)]
pub struct SendHistory {
    slots: Box<[Sent]>,
    seq: SeqExtender,
    highest: Option<u64>,
    last_sent_us: i64,
}

impl SendHistory {
    /// An empty history (no storage until the first packet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes a packet sent at `at_us` under transport-wide sequence number `seq`.
    pub fn on_sent(&mut self, seq: u16, at_us: i64, size: usize, cluster: u32) {
        if self.slots.is_empty() {
            self.slots = vec![Sent::default(); HISTORY].into_boxed_slice();
        }
        let ext = self.seq.extend(seq);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.last_sent_us = at_us;
        self.slots[(ext % HISTORY as u64) as usize] = Sent {
            seq: ext as u32,
            at_us: at_us as u32,
            size: size.min(usize::from(u16::MAX)) as u16,
            cluster: cluster as u16,
            live: true,
        };
    }

    /// The send time of a slot, widened against the latest send.
    fn widen(&self, at_us: u32) -> i64 {
        self.last_sent_us - i64::from((self.last_sent_us as u32).wrapping_sub(at_us))
    }

    /// Bytes sent in the `window_us` before the latest send (read back from the ring;
    /// nothing is counted per packet).
    pub fn sent_bytes(&self, window_us: i64) -> u64 {
        let Some(highest) = self.highest else {
            return 0;
        };
        let mut bytes = 0u64;
        for back in 0..(HISTORY as u64).min(highest + 1) {
            let ext = highest - back;
            let slot = self.slots[(ext % HISTORY as u64) as usize];
            if slot.seq != ext as u32 || self.last_sent_us - self.widen(slot.at_us) > window_us {
                break;
            }
            bytes += u64::from(slot.size);
        }
        bytes
    }

    /// The result for sequence number `seq` of a feedback (`arrival_us` as reported), if
    /// it is still in the history and was not reported before.
    pub fn on_reported(&mut self, seq: u16, arrival_us: Option<i64>) -> Option<PacketResult> {
        let highest = self.highest?;
        // The widened value nearest to the highest sent.
        let back = (highest as u16).wrapping_sub(seq);
        let ext = if back < 0x8000 {
            highest.checked_sub(u64::from(back))?
        } else {
            return None; // ahead of anything sent
        };
        let index = (ext % HISTORY as u64) as usize;
        let slot = *self.slots.get(index)?;
        if slot.seq != ext as u32 || !slot.live {
            return None;
        }
        // A packet reported lost may still be reported received by a later feedback.
        self.slots[index].live = arrival_us.is_none();
        Some(PacketResult {
            seq: ext,
            sent_us: self.widen(slot.at_us),
            arrival_us,
            size: u32::from(slot.size),
            cluster: u32::from(slot.cluster),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_match_what_was_sent_across_the_wrap_once_each() {
        let mut h = SendHistory::new();
        for k in 0..10u16 {
            h.on_sent(
                65530u16.wrapping_add(k),
                i64::from(k) * 1000,
                1000 + usize::from(k),
                0,
            );
        }
        let r = h.on_reported(65535, Some(77)).unwrap();
        assert_eq!((r.sent_us, r.size, r.arrival_us), (5000, 1005, Some(77)));
        let r = h.on_reported(2, None).unwrap();
        assert_eq!((r.sent_us, r.arrival_us), (8000, None));
        // Lost then received: reported again; received: never again.
        assert!(h.on_reported(2, Some(9)).is_some());
        assert_eq!(h.on_reported(2, Some(9)), None);
        assert_eq!(h.on_reported(65535, Some(77)), None);
        // Never sent.
        assert_eq!(h.on_reported(100, Some(1)), None);
        assert_eq!(h.on_reported(60000, Some(1)), None);
        // What was sent lately is read back from the ring: the last 4 ms hold 4 packets.
        assert_eq!(h.sent_bytes(3_500), 1006 + 1007 + 1008 + 1009);
    }
}
