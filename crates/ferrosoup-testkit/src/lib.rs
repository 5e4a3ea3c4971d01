//! Dev-only test kit for ferrosoup: simulated time, a simulated network, packet builders,
//! a sans-IO WebRTC client, and the protoo signaling client of the tests and tools. Nothing
//! but [`protoo`] opens a socket, sleeps or reads the clock (except [`ManualClock::new`],
//! once, for its base): every test that uses the sans-IO parts is deterministic and runs
//! as fast as the CPU allows.
//!
//! - [`clock`]: [`ManualClock`], time that moves only when told to.
//! - [`link`]: [`SimLink`], a one-way link with rate limit, bottleneck queue, delay,
//!   jitter, Gilbert-Elliott loss and reordering, seeded ([`LinkConfig`]).
//! - [`net`]: [`SimNet`] (one link per direction between addresses), the [`Endpoint`]
//!   trait and [`Sim`], which drives endpoints over the network jumping from event to event.
//! - [`packets`]: STUN binding requests and response checks, RTP packets with header
//!   extensions, VP8 / Opus payloads, RTCP reports and feedback.
//! - [`client`]: [`SimClient`], the client side of one WebRTC transport as a browser runs
//!   it against an ICE-lite server: ICE checks, DTLS, SRTP.
//! - [`media`]: [`StreamSender`] (numbering, history, RTX answers to NACKs) and
//!   [`StreamReceiver`] (distinct packets, NACKs for gaps), the media logic of a client.
//! - [`rng`]: [`SimRng`], the small seeded generator behind every random choice.
//! - [`protoo`]: [`ProtooClient`], the one hand-made signaling client (tests, benches, load
//!   tester): requests by id, notification waits with deadlines, raw frames, close codes,
//!   over a WebSocket or in-process channels. The only module with I/O (tokio).
//!
//! The drive loop, by hand: send, ask the link for its next event, jump the clock there,
//! take what arrived.
//!
//! ```
//! use std::time::Duration;
//! use ferrosoup_testkit::{Datagram, LinkConfig, ManualClock, SimLink};
//!
//! let (a, b) = ("192.0.2.1:5000".parse()?, "192.0.2.2:6000".parse()?);
//! let mut clock = ManualClock::new();
//! let mut link = SimLink::new(
//!     LinkConfig::random_loss(0.05)
//!         .with_delay(Duration::from_millis(20))
//!         .with_seed(1),
//! );
//! for i in 0..100u8 {
//!     link.send(clock.now(), Datagram::new(a, b, vec![i; 100]));
//!     clock.advance(Duration::from_millis(1));
//! }
//! let mut received = 0;
//! while let Some(at) = link.poll_timeout() {
//!     clock.advance_to(at);
//!     while let Some(_datagram) = link.poll_deliver(clock.now()) {
//!         received += 1;
//!     }
//! }
//! assert_eq!(received + link.stats().lost, 100);
//! # Ok::<(), std::net::AddrParseError>(())
//! ```
//!
//! With [`Sim`], the same loop runs over any number of [`Endpoint`]s (a [`SimClient`], the
//! engine under test, a stub): every datagram an endpoint transmits goes through the link
//! of its direction, and [`Sim::step`] handles everything due now, then jumps to the next
//! delivery or timer.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use ferrosoup_testkit::{Datagram, Endpoint, LinkConfig, Sim};
//!
//! /// Answers every datagram with the same bytes.
//! struct Echo(SocketAddr, VecDeque<Datagram>);
//!
//! impl Endpoint for Echo {
//!     fn owns(&self, addr: SocketAddr) -> bool { addr == self.0 }
//!     fn receive(&mut self, _now: Instant, d: Datagram) {
//!         self.1.push_back(Datagram::new(d.to, d.from, d.data));
//!     }
//!     fn timeout(&mut self, _now: Instant) {}
//!     fn transmit(&mut self) -> Option<Datagram> { self.1.pop_front() }
//!     fn next_timeout(&self) -> Option<Instant> { None }
//! }
//!
//! let (a, b) = ("192.0.2.1:5000".parse()?, "192.0.2.2:6000".parse()?);
//! let mut sim = Sim::new(LinkConfig::default().with_delay(Duration::from_millis(30)));
//! let start = sim.now();
//! let (mut client, mut server) = (Echo(a, VecDeque::new()), Echo(b, VecDeque::new()));
//! client.1.push_back(Datagram::new(a, b, b"ping".to_vec()));
//! // Each step handles what is due now and jumps to the next event, up to the limit.
//! while sim.step(&mut [&mut client, &mut server], start + Duration::from_millis(100)) {}
//! // 100 ms of ping-pong over 30 ms each way: 3 crossings delivered, the 4th in flight.
//! assert_eq!(sim.net.link(a, b).map(|l| l.stats().delivered), Some(2));
//! assert_eq!(sim.net.link(b, a).map(|l| l.stats().delivered), Some(1));
//! assert_eq!(sim.now(), start + Duration::from_millis(100));
//! # Ok::<(), std::net::AddrParseError>(())
//! ```

use std::net::SocketAddr;

pub mod client;
pub mod clock;
pub mod link;
pub mod media;
pub mod net;
pub mod packets;
pub mod protoo;
pub mod rng;

pub use client::{SimClient, SimClientConfig};
pub use clock::ManualClock;
pub use link::{Fate, GilbertElliott, LinkConfig, LinkStats, SimLink};
pub use media::{StreamReceiver, StreamSender};
pub use net::{Endpoint, Sim, SimNet};
pub use protoo::ProtooClient;
pub use rng::SimRng;

/// One UDP datagram on the simulated network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Datagram {
    /// Source address.
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// Payload.
    pub data: Vec<u8>,
}

impl Datagram {
    /// A datagram from `from` to `to` carrying `data`.
    pub fn new(from: SocketAddr, to: SocketAddr, data: Vec<u8>) -> Self {
        Self { from, to, data }
    }
}
