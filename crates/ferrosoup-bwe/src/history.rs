//! What was sent under each transport-wide sequence number: a fixed ring, allocated at
//! the first packet and never again.

use ferrosoup_rtc::seq::SeqExtender;

/// Packets remembered (about 2 s at 5 Mbit/s; feedback comes every ~100 ms).
pub const HISTORY: usize = 1024;

/// One sent packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sent {
    /// Widened transport-wide sequence number (0: empty slot).
    seq: u64,
    /// Send time, µs on the sender's clock.
    at_us: i64,
    /// Bytes (RTP header and payload).
    size: u32,
    /// Probe cluster id (0: not a probe).
    cluster: u32,
    /// Already reported by a feedback.
    reported: bool,
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
        self.slots[(ext % HISTORY as u64) as usize] = Sent {
            seq: ext,
            at_us,
            size: size.min(u32::MAX as usize) as u32,
            cluster,
            reported: false,
        };
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
        let slot = self.slots.get_mut((ext % HISTORY as u64) as usize)?;
        if slot.seq != ext || slot.reported {
            return None;
        }
        // A packet reported lost may still be reported received by a later feedback.
        slot.reported = arrival_us.is_some();
        Some(PacketResult {
            seq: ext,
            sent_us: slot.at_us,
            arrival_us,
            size: slot.size,
            cluster: slot.cluster,
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
    }
}
