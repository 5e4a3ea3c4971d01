//! Pipes between workers in the engine (see [`crate::worker_pipe`]): each side is a plain
//! transport without SRTP whose socket is a [`PipeEnd`], connected from the start to the
//! other side's address; its pipe consumer (producer's side) or pipe producer (other
//! side) is made as for a pipe between nodes. A side closes when the other one does, or
//! once it has neither producer nor consumer left.

use std::time::Instant;

use super::Engine;
use crate::arena::TransportKey;
use crate::error::RoomError;
use crate::events::MediaEvent;
use crate::ids::{RouterId, TransportId};
use crate::plain::{LocalSocket, PlainPath};
use crate::transmit::Transmit;
use crate::worker_pipe::PipeEnd;
use ferrosoup_rtc::sctp::Ppid;

impl Engine {
    /// Creates one side of a pipe between workers in a router: a plain transport on `end`,
    /// connected to the other side. Returns its id.
    pub fn create_worker_pipe_transport(
        &mut self,
        router_id: RouterId,
        end: PipeEnd,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> Result<TransportId, RoomError> {
        if !self.routers.contains_key(&router_id) {
            return Err(RoomError::NotFound("router"));
        }
        let (socket, remote) = out
            .attach_pipe(end)
            .map_err(|e| RoomError::Internal(format!("pipe between workers: {e}")))?;
        // The packets never leave the process: no SRTP.
        let path = PlainPath {
            rtp_socket: socket,
            rtcp_socket: None,
            comedia: false,
            remote: None,
            remote_rtcp: None,
            local_key: None,
            connected: false,
        };
        let (id, key) = self.insert_plain_transport(router_id, path, false, now);
        self.set_plain_remote(key, false, remote, out);
        self.check_plain_connected(key, now, out);
        Ok(id)
    }

    /// The other side of the pipe `socket` names closed: closes this side's transport
    /// and what is on it, and reports it ([`MediaEvent::WorkerPipeClosed`]).
    pub fn close_worker_pipe(&mut self, socket: LocalSocket, now: Instant, out: &mut dyn Transmit) {
        let Some(&(key, _)) = self.by_socket.get(&socket) else {
            out.close_socket(socket);
            return;
        };
        let (router_id, transport_id) = {
            let t = &self.transports[key];
            (t.router_id, t.id)
        };
        let closed = self.remove_pipe_transport(router_id, key, now, out);
        tracing::debug!(transport = %transport_id, "pipe between workers closed by its other side");
        self.emit(MediaEvent::WorkerPipeClosed {
            router_id,
            transport_id,
            closed,
        });
    }

    /// Notes a pipe transport between workers that lost its producer or consumer.
    pub(super) fn note_if_pipe(&mut self, key: TransportKey) {
        if let Some(t) = self.transports.get(key)
            && t.is_worker_pipe()
        {
            self.idle_pipes.push(t.id);
        }
    }

    /// Closes the pipe transports between workers noted as idle that still carry nothing
    /// (their other side follows when it sees the pipe closed).
    pub(super) fn close_idle_pipes(&mut self, now: Instant, out: &mut dyn Transmit) {
        for id in std::mem::take(&mut self.idle_pipes) {
            let Some(&key) = self.transport_ids.get(&id) else {
                continue;
            };
            let t = &self.transports[key];
            if t.producers.is_empty()
                && t.consumers.is_empty()
                && t.data_producers.is_empty()
                && t.data_consumers.is_empty()
            {
                let router_id = t.router_id;
                self.remove_pipe_transport(router_id, key, now, out);
            }
        }
    }

    fn remove_pipe_transport(
        &mut self,
        router_id: RouterId,
        key: TransportKey,
        now: Instant,
        out: &mut dyn Transmit,
    ) -> super::Closed {
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.transports.retain(|&t| t != key);
        }
        let closed = self.remove_transport(key, now, out);
        self.objects_changed();
        closed
    }

    /// A chunk of a data message that came through a pipe between workers (see
    /// [`send_data`]): added to the message of the pipe data producer of its stream, which
    /// is forwarded to that producer's data consumers once complete. A chunk out of order
    /// (one was dropped at a full ring) drops the message.
    pub(super) fn on_pipe_data(
        &mut self,
        key: TransportKey,
        data: &[u8],
        now: Instant,
        out: &mut dyn Transmit,
    ) {
        let Some((header, chunk)) = DataChunk::parse(data) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let Some(p) = self.data_producer_on(key, header.stream_id) else {
            return;
        };
        let message = &mut self.data_producers[p].pipe_message;
        if header.index == 0 {
            message.bytes.clear();
        } else if message.next_chunk != Some(header.index) {
            message.next_chunk = None;
            message.bytes.clear();
            self.counters.data_dropped_send_failed += 1;
            return;
        }
        message.bytes.extend_from_slice(chunk);
        if !header.last {
            message.next_chunk = header.index.checked_add(1);
            return;
        }
        message.next_chunk = None;
        let payload = bytes::Bytes::from(std::mem::take(&mut message.bytes));
        let mut touched = Vec::new();
        self.forward_data(p, header.ppid, &payload, now, &mut touched, out);
        for t in touched {
            self.flush_sctp(t, now, out);
        }
    }
}

/// The first byte of a data chunk on a pipe between workers: no RTP or RTCP packet
/// starts so (RFC 7983 leaves 192..=255 unassigned), and no other datagram crosses a pipe.
pub(super) const DATA_CHUNK: u8 = 0xff;

/// The header of a data chunk: `DATA_CHUNK`, flags (bit 0: last chunk), stream id
/// (u16), PPID (u32), chunk index (u16), all big-endian; the chunk's bytes follow.
const DATA_CHUNK_HEADER: usize = 10;

/// What a data chunk's header says.
struct DataChunk {
    stream_id: u16,
    ppid: Ppid,
    index: u16,
    last: bool,
}

impl DataChunk {
    fn parse(data: &[u8]) -> Option<(Self, &[u8])> {
        let (h, chunk) = data.split_at_checked(DATA_CHUNK_HEADER)?;
        if h[0] != DATA_CHUNK {
            return None;
        }
        let ppid = Ppid::from_value(u32::from_be_bytes([h[4], h[5], h[6], h[7]]))?;
        Some((
            Self {
                last: h[1] & 1 == 1,
                stream_id: u16::from_be_bytes([h[2], h[3]]),
                ppid,
                index: u16::from_be_bytes([h[8], h[9]]),
            },
            chunk,
        ))
    }
}

/// Sends one data message of stream `stream_id` through the pipe to `to`, in chunks of
/// one datagram each; `false` when it has too many chunks to send.
pub(super) fn send_data(
    out: &mut dyn Transmit,
    to: std::net::SocketAddr,
    stream_id: u16,
    ppid: Ppid,
    payload: &[u8],
) -> bool {
    const CHUNK: usize = crate::udp::MAX_DATAGRAM - DATA_CHUNK_HEADER;
    let chunks = payload.len().div_ceil(CHUNK).max(1);
    if chunks > usize::from(u16::MAX) {
        return false;
    }
    for index in 0..chunks {
        let bytes =
            &payload[(index * CHUNK).min(payload.len())..((index + 1) * CHUNK).min(payload.len())];
        let buf = out.buffer();
        buf[0] = DATA_CHUNK;
        buf[1] = u8::from(index + 1 == chunks);
        buf[2..4].copy_from_slice(&stream_id.to_be_bytes());
        buf[4..8].copy_from_slice(&ppid.value().to_be_bytes());
        buf[8..10].copy_from_slice(&(index as u16).to_be_bytes());
        buf[DATA_CHUNK_HEADER..DATA_CHUNK_HEADER + bytes.len()].copy_from_slice(bytes);
        out.commit(DATA_CHUNK_HEADER + bytes.len(), to);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transmit::Collect;

    fn chunks_of(payload: &[u8], ppid: Ppid) -> Vec<Vec<u8>> {
        let mut out = Collect::default();
        let to = "[100::1]:1".parse().expect("addr");
        assert!(send_data(&mut out, to, 7, ppid, payload));
        std::iter::from_fn(|| out.pop().map(|s| s.data)).collect()
    }

    #[test]
    fn a_message_crosses_in_datagram_sized_chunks_that_say_their_place() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let chunks = chunks_of(&payload, Ppid::Binary);
        assert_eq!(chunks.len(), 3);
        let mut joined = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= crate::udp::MAX_DATAGRAM);
            let (h, bytes) = DataChunk::parse(c).expect("a chunk");
            assert_eq!((h.stream_id, h.ppid, h.index), (7, Ppid::Binary, i as u16));
            assert_eq!(h.last, i == 2);
            joined.extend_from_slice(bytes);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn an_empty_message_is_one_chunk_and_garbage_is_no_chunk() {
        let chunks = chunks_of(&[], Ppid::StringEmpty);
        assert_eq!(chunks.len(), 1);
        let (h, bytes) = DataChunk::parse(&chunks[0]).expect("a chunk");
        assert!(h.last && bytes.is_empty() && h.ppid == Ppid::StringEmpty);
        assert!(DataChunk::parse(&[DATA_CHUNK, 1, 0]).is_none(), "short");
        let mut unknown_ppid = chunks[0].clone();
        unknown_ppid[4..8].copy_from_slice(&99u32.to_be_bytes());
        assert!(DataChunk::parse(&unknown_ppid).is_none());
        assert!(
            DataChunk::parse(&[0x80; 12]).is_none(),
            "RTP is not a chunk"
        );
    }
}
