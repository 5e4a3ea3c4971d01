//! Identifiers of the objects a worker owns. Outside the worker they are opaque UUID
//! strings (PROTOCOL.md); inside, each object also has a slab key for the media path.

use std::fmt;

macro_rules! object_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new random id.
            pub fn new() -> Self {
                Self(uuid::Uuid::new_v4())
            }

            /// Parses the string form a client sends back.
            pub fn parse(s: &str) -> Option<Self> {
                uuid::Uuid::parse_str(s).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

object_id!(
    /// A router (one per room).
    RouterId,
    /// A WebRTC transport.
    TransportId,
    /// A producer.
    ProducerId,
    /// A consumer.
    ConsumerId,
    /// A data producer (an SCTP stream a client sends on).
    DataProducerId,
    /// A data consumer (an SCTP stream the server sends on).
    DataConsumerId,
);
