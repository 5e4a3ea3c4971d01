//! Data producers and data consumers: data channel messages a client sends on one SCTP
//! stream of its transport, forwarded to a stream of each consuming client's transport.
//!
//! A data producer is known by its transport and the stream id its client chose; a data
//! consumer by the stream id the server chose on the consuming transport (lowest free).
//! Messages keep their payload protocol identifier (string, binary, and their empty forms)
//! and go out with the producer's order and partial reliability (`ordered`,
//! `maxPacketLifeTime`, `maxRetransmits`), as mediasoup forwards them.

use std::time::Instant;

use ferrosoup_rtc::sctp::Reliability;

use crate::arena::{DataConsumerKey, DataProducerKey, TransportKey};
use crate::ids::{DataConsumerId, DataProducerId};

/// A data producer: one SCTP stream its client sends on.
pub struct DataProducer {
    /// Public id.
    pub id: DataProducerId,
    /// The transport it arrives on (its owner).
    pub transport: TransportKey,
    /// The client's stream id.
    pub stream_id: u16,
    /// How its messages are delivered onward.
    pub reliability: Reliability,
    /// Its data consumers (indexed; each owned by its own transport).
    pub consumers: Vec<DataConsumerKey>,
    /// The message rate it may send at.
    pub rate: MessageRate,
    /// Messages accepted.
    pub messages_in: u64,
    /// Bytes accepted.
    pub bytes_in: u64,
    /// Messages dropped (too big, over the rate).
    pub dropped: u64,
    /// The message being put together from a pipe between workers' chunks (a data
    /// producer at the end of such a pipe only).
    pub pipe_message: PipeMessage,
}

/// A data message arriving in chunks through a pipe between workers.
#[derive(Debug, Default)]
pub struct PipeMessage {
    /// The chunks so far.
    pub bytes: Vec<u8>,
    /// The index the next chunk must have (`None`: no message under way).
    pub next_chunk: Option<u16>,
}

/// A data consumer: one SCTP stream the server sends a data producer's messages on.
pub struct DataConsumer {
    /// Public id.
    pub id: DataConsumerId,
    /// The data producer it receives.
    pub data_producer: DataProducerKey,
    /// Its id.
    pub data_producer_id: DataProducerId,
    /// The transport it sends on (its owner).
    pub transport: TransportKey,
    /// The stream id chosen on that transport.
    pub stream_id: u16,
    /// Messages sent.
    pub messages_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// A token bucket of messages: one second's worth at once, refilled at `per_second`
/// (0: no limit). Time is an argument.
#[derive(Clone, Debug)]
pub struct MessageRate {
    per_second: u32,
    tokens: f64,
    last: Instant,
}

impl MessageRate {
    /// A full bucket.
    pub fn new(per_second: u32, now: Instant) -> Self {
        Self {
            per_second,
            tokens: f64::from(per_second),
            last: now,
        }
    }

    /// Takes one message's token; false when the bucket is empty (the message is dropped).
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let rate = f64::from(self.per_second);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The lowest stream id below `limit` that `used` does not contain.
pub fn free_stream_id(used: impl Iterator<Item = u16> + Clone, limit: u16) -> Option<u16> {
    (0..limit).find(|id| !used.clone().any(|u| u == *id))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_allows_a_second_at_once_then_the_rate() {
        let t0 = Instant::now();
        let mut r = MessageRate::new(100, t0);
        assert_eq!((0..150).filter(|_| r.allow(t0)).count(), 100);
        // 10 ms later: one message more, not two.
        let t1 = t0 + Duration::from_millis(10);
        assert!(r.allow(t1));
        assert!(!r.allow(t1));
        // A long pause refills a second's worth only.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..300).filter(|_| r.allow(t2)).count(), 100);
        // Time going backwards takes nothing and gives nothing.
        assert!(!r.allow(t0));
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut r = MessageRate::new(0, t0);
        assert!((0..10_000).all(|_| r.allow(t0)));
    }

    #[test]
    fn stream_ids_lowest_free() {
        assert_eq!(free_stream_id([].into_iter(), 4), Some(0));
        assert_eq!(free_stream_id([0, 1, 3].into_iter(), 4), Some(2));
        assert_eq!(free_stream_id([0, 1, 2, 3].into_iter(), 4), None);
    }
}
