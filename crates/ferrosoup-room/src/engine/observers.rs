//! What the worker observes and reports to the control path: scores (from loss) and the
//! active speaker of each router (from the audio-level extension).

use std::time::{Duration, Instant};

use super::Engine;
use crate::arena::TransportKey;
use crate::events::MediaEvent;
use crate::ids::{ProducerId, RouterId};
use crate::timers::Timer;

/// How often the loudest audio producer of a router is looked for.
pub(super) const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// Audio quieter than this (dBov, as a positive level 0..127) never counts as speech.
const SPEAKER_THRESHOLD: u8 = 70;

impl Engine {
    /// Reports the loudest audio producer of the router's last interval when it changes
    /// (mediasoup's audio-level observer), and looks again in an interval while the router
    /// has audio producers that send levels. Producers at the end of a pipe between workers
    /// are heard on their own router, not again here.
    pub(super) fn detect_active_speaker(&mut self, router_id: RouterId, now: Instant) {
        let Self {
            routers,
            transports,
            producers,
            events,
            timers,
            ..
        } = self;
        let Some(router) = routers.get_mut(&router_id) else {
            return;
        };
        let mut loudest: Option<(ProducerId, u32)> = None;
        let mut observed = false;
        for &t in router
            .transports
            .iter()
            .filter(|&&t| !transports[t].is_worker_pipe())
        {
            for &p in &transports[t].producers {
                let producer = &mut producers[p];
                observed |= producer.ext_ids.audio_level != 0;
                if producer.audio_level_count == 0 {
                    continue;
                }
                let avg = producer.audio_level_sum / producer.audio_level_count;
                producer.audio_level_sum = 0;
                producer.audio_level_count = 0;
                if producer.paused || avg > u32::from(SPEAKER_THRESHOLD) {
                    continue;
                }
                if loudest.is_none_or(|(_, l)| avg < l) {
                    loudest = Some((producer.id, avg));
                }
            }
        }
        if let Some((producer_id, level)) = loudest
            && router.active_speaker != Some(producer_id)
        {
            router.active_speaker = Some(producer_id);
            let _ = events.send(MediaEvent::ActiveSpeaker {
                router_id,
                producer_id,
                volume: -(level as i8),
            });
        }
        if observed {
            timers.arm(Timer::ActiveSpeaker(router_id), now + SPEAKER_INTERVAL);
        }
    }

    /// Scores 0..10 from packet loss of a transport's producers (what they lose on the way
    /// in) and consumers (what their receivers report lost), reported when they change.
    /// The producer at the end of a pipe between workers stands for one whose own score
    /// is reported: its score is kept, not reported.
    pub(super) fn update_scores(&mut self, key: TransportKey) {
        let Self {
            transports,
            producers,
            consumers,
            events,
            ..
        } = self;
        let t = &transports[key];
        for &p in &t.producers {
            let producer = &mut producers[p];
            let mut worst = 10;
            for stream in producer
                .streams
                .iter_mut()
                .filter(|s| s.last_packet.is_some())
            {
                stream.score = loss_score(stream.fraction_lost);
                worst = worst.min(stream.score);
            }
            if worst != producer.score {
                producer.score = worst;
                if t.is_worker_pipe() {
                    continue;
                }
                let _ = events.send(MediaEvent::ProducerScore {
                    producer_id: producer.id,
                    score: worst,
                });
            }
        }
        for &c in &t.consumers {
            let consumer = &mut consumers[c];
            let producer_score = producers
                .get(consumer.producer)
                .and_then(|p| {
                    // The stream forwarded, or (paused, switching) the one wanted, or the first.
                    let s = consumer
                        .forwarder
                        .current()
                        .or(consumer.forwarder.target())
                        .unwrap_or(0);
                    p.streams.get(s)
                })
                .map_or(0, |s| s.score);
            let score = loss_score(consumer.fraction_lost).min(producer_score);
            if score != consumer.score || producer_score != consumer.reported_producer_score {
                consumer.score = score;
                consumer.reported_producer_score = producer_score;
                let _ = events.send(MediaEvent::ConsumerScore {
                    consumer_id: consumer.id,
                    score,
                    producer_score,
                });
            }
        }
    }
}

/// A 0..10 score for a loss fraction (0..1): 10 without loss, 0 from 50% loss up.
fn loss_score(fraction_lost: f64) -> u8 {
    (10.0 * (1.0 - (fraction_lost * 2.0).min(1.0))).round() as u8
}
