//! What a flow sends and how it is encoded: path datagrams first (a client's `PathResponse`
//! before anything else, so data never overtakes the answer that validates its path), then
//! acks or data; equal-sized data datagrams to one address are batched for one GSO send.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BufMut;

use super::{Data, Flow, PathState};
use crate::udp::packet::{
    DataFields, Header, PacketKind, DATA_FIELDS_LEN, DATA_OVERHEAD, HEADER_LEN, MIN_DATAGRAM, TAG_LEN,
};
use crate::udp::sender;

/// Bytes of a `PathChallenge` datagram.
pub const CHALLENGE_LEN: usize = HEADER_LEN + 8 + TAG_LEN;

/// One [`Transmit`] carries at most this many bytes (a GSO send's limit).
pub const MAX_GSO_BYTES: usize = 64_000;

/// Datagrams to send: `size` bytes of the buffer given to
/// [`poll_transmit`](Flow::poll_transmit), to `dest`, cut into datagrams of `segment_size`
/// bytes (the last may be shorter) when it is `Some`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub size: usize,
    pub segment_size: Option<usize>,
}

impl Flow {
    /// Encodes the next datagrams to send now into `buf` (cleared first), or `None` when
    /// nothing is due ([`poll_timeout`](Self::poll_timeout) says when to look again).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if self.failed.is_some() {
            return None;
        }
        let t = self.poll_path(now, buf).or_else(|| self.poll_data(now, buf));
        self.check_done();
        self.refresh_machine_timer(now);
        t
    }

    /// `PathResponse` or `Hello` from a client, `PathChallenge` from a server.
    fn poll_path(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (dest, kind, body) = match &mut self.path {
            PathState::Client(c) => {
                if let Some(ch) = c.response.take() {
                    (c.server, PacketKind::PathResponse, ch.to_vec())
                } else if c.hello_due {
                    c.hello_due = false;
                    c.hellos += 1;
                    c.first_hello.get_or_insert(now);
                    self.timers.set(super::Timer::Hello, now + self.timing.hello_every);
                    (c.server, PacketKind::Hello, hello_body(self.timing.max_datagram))
                } else {
                    return None;
                }
            }
            PathState::Server(s) => loop {
                let to = s.due.pop_front()?;
                let first = s.paths.budget(to).is_some_and(|(sent, _)| sent == 0);
                // UDP-AMP-1: within three times what came from that address.
                let Some(ch) = s.paths.take_challenge(to, CHALLENGE_LEN) else { continue };
                if first && s.first_challenge.is_none() {
                    s.first_challenge = Some((to, now));
                } else if s.first_challenge.is_some_and(|(a, _)| a == to) {
                    s.first_challenge = None;
                }
                break (to, PacketKind::PathChallenge, ch.to_vec());
            },
        };
        let pn = self.next_pn();
        self.seal_datagram(buf, kind, pn, &body);
        Some(Transmit { dest, size: buf.len(), segment_size: None })
    }

    /// Acks (receiving end) or data and probes (sending end), only to the peer
    /// ([`Flow::peer`]).
    fn poll_data(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let dest = self.peer()?;
        match &mut self.data {
            Data::Recv { acks_held: true, .. } => None,
            Data::Recv { receiver, .. } => {
                if !receiver.poll_ack(now, &mut self.ack) {
                    return None;
                }
                // UDP-CTRL-10, UDP-AMP-1: acks to an address not validated yet stay within
                // its budget; one that does not fit is not sent (a later ack covers it).
                if let PathState::Server(s) = &mut self.path {
                    if s.paths.validated().is_none() {
                        s.paths.charge(dest, HEADER_LEN + self.ack.encoded_len() + TAG_LEN)?;
                    }
                }
                let pn = receiver.next_pn();
                let mut body = Vec::with_capacity(self.ack.encoded_len());
                self.ack.encode(&mut body);
                self.seal_datagram(buf, PacketKind::Ack, pn, &body);
                Some(Transmit { dest, size: buf.len(), segment_size: None })
            }
            Data::Send { .. } => self.poll_batch(now, dest, buf),
        }
    }

    /// Data datagrams of one size (the last may be shorter), or one probe.
    fn poll_batch(&mut self, now: Instant, dest: SocketAddr, buf: &mut Vec<u8>) -> Option<Transmit> {
        let max_segments = self.max_segments;
        let Data::Send { sender, buf: source, pending } = &mut self.data else { return None };
        sender.handle_timeout(now);
        let (mut count, mut segment) = (0usize, 0usize);
        while count < max_segments {
            let Some(t) = pending.take().or_else(|| sender.poll_transmit(now)) else { break };
            match t {
                sender::Transmit::Data { pn, offset, len } => {
                    let size = DATA_OVERHEAD + usize::from(len);
                    let unloaded = offset + u64::from(len) > source.loaded_end();
                    if unloaded || (count > 0 && (size > segment || buf.len() + size > MAX_GSO_BYTES)) {
                        *pending = Some(t);
                        break;
                    }
                    if !encode_data(&self.seal, buf, self.id, pn, offset, len, source) {
                        continue; // bytes the receiver already holds; nothing to resend
                    }
                    if count == 0 {
                        segment = size;
                    }
                    count += 1;
                    if size < segment {
                        break;
                    }
                }
                sender::Transmit::Probe { pn, size } => {
                    if count > 0 {
                        *pending = Some(t);
                        break;
                    }
                    let body = vec![0u8; size.saturating_sub(HEADER_LEN + TAG_LEN)];
                    seal_into(&self.seal, buf, PacketKind::Probe, self.id, pn, &body);
                    count = 1;
                    segment = buf.len();
                    break;
                }
            }
        }
        source.release_below(sender.cumulative());
        (count > 0).then(|| Transmit { dest, size: buf.len(), segment_size: (count > 1).then_some(segment) })
    }

    fn seal_datagram(&self, buf: &mut Vec<u8>, kind: PacketKind, pn: u64, body: &[u8]) {
        seal_into(&self.seal, buf, kind, self.id, pn, body);
    }
}

impl Flow {
    /// Client: encodes into `buf` (cleared first) the `Hello` of flow `id`, numbered
    /// [`EARLY_HELLO_PN`](super::EARLY_HELLO_PN), to send beside the request that opens the
    /// flow (UDP-CTRL-9); the flow made later is told with
    /// [`note_early_hello`](Self::note_early_hello).
    pub fn encode_early_hello(keys: &crate::udp::seal::FlowKeys, id: u64, max_datagram: u16, buf: &mut Vec<u8>) {
        buf.clear();
        seal_into(&keys.client, buf, PacketKind::Hello, id, super::EARLY_HELLO_PN, &hello_body(max_datagram));
    }
}

/// A `Hello` body: `max_datagram`, padded so the datagram is `MIN_DATAGRAM` bytes (UDP-PKT-4).
fn hello_body(max_datagram: u16) -> Vec<u8> {
    let mut body = max_datagram.to_be_bytes().to_vec();
    body.resize(MIN_DATAGRAM - HEADER_LEN - TAG_LEN, 0);
    body
}

/// Appends one sealed datagram to `buf`.
fn seal_into(seal: &crate::udp::seal::Sealer, buf: &mut Vec<u8>, kind: PacketKind, flow: u64, pn: u64, body: &[u8]) {
    let start = buf.len();
    Header { kind, flow, pn }.encode(buf);
    buf.extend_from_slice(body);
    buf.put_bytes(0, TAG_LEN);
    seal.seal(pn, &mut buf[start..]);
}

/// Appends one sealed `Data` datagram; false (and nothing appended) if its bytes are no
/// longer loaded.
fn encode_data(
    seal: &crate::udp::seal::Sealer,
    buf: &mut Vec<u8>,
    flow: u64,
    pn: u64,
    offset: u64,
    len: u16,
    source: &super::SendBuffer,
) -> bool {
    let start = buf.len();
    Header { kind: PacketKind::Data, flow, pn }.encode(buf);
    let fields_at = buf.len();
    buf.put_bytes(0, DATA_FIELDS_LEN);
    let payload_at = buf.len();
    buf.resize(payload_at + usize::from(len), 0);
    if !source.copy_to(offset, &mut buf[payload_at..]) {
        buf.truncate(start);
        return false;
    }
    let crc32 = crc32fast::hash(&buf[payload_at..]);
    DataFields { offset, len, crc32 }.encode(&mut &mut buf[fields_at..payload_at]);
    buf.put_bytes(0, TAG_LEN);
    seal.seal(pn, &mut buf[start..]);
    true
}
