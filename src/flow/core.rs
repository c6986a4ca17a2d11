//! The shared state of one flow: what the demultiplexer updates for each arriving datagram
//! (authentication, replay, path validation, acks or data) and what the flow's task reads to
//! decide what to send. Every datagram is checked in the order the spec gives (UDP-RECV-*):
//! header, flow, kind for this direction, source address, replay window, AEAD; anything that
//! fails is dropped before it touches the transfer.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

use super::sink::SinkQueue;
use crate::udp::packet::{self, Ack, DataFields, Header, PacketKind};
use crate::udp::path::PathValidation;
use crate::udp::receiver::{DataVerdict, Receiver};
use crate::udp::replay::ReplayWindow;
use crate::udp::seal::Sealer;
use crate::udp::sender::Sender;

/// Bytes of a `PathChallenge` datagram.
pub const CHALLENGE_LEN: usize = packet::HEADER_LEN + 8 + packet::TAG_LEN;
/// Most bytes waiting for the disk before arriving data is dropped (and later resent).
const MAX_SINK_BACKLOG: u64 = 64 << 20;
/// Allocation unit for staged payloads.
const ARENA: usize = 1 << 20;

/// Which end of the flow this is.
pub enum Side {
    /// Client: datagrams must come from `server`; `challenge` is one to answer.
    Client { server: SocketAddr, confirmed: bool, challenge: Option<[u8; 8]> },
    /// Server: the peer proves its address by echoing a challenge.
    Server { path: PathValidation, challenge_to: Option<SocketAddr> },
}

/// What this end does with file data. One per flow, inside the flow's shared state, so the
/// size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Role {
    Send(Sender),
    Recv(RecvState),
}

/// The receiving end: the state machine plus where accepted bytes go.
pub struct RecvState {
    pub receiver: Receiver,
    pub sink: SinkQueue,
    arena: BytesMut,
    /// Data datagrams whose crc32 did not match (UDP-DATA-2).
    pub corrupt: u64,
}

impl RecvState {
    pub fn new(receiver: Receiver, sink: SinkQueue) -> RecvState {
        RecvState { receiver, sink, arena: BytesMut::new(), corrupt: 0 }
    }
}

/// One flow's state.
pub struct FlowCore {
    pub id: u64,
    pub side: Side,
    pub role: Role,
    open: Sealer,
    replay: ReplayWindow,
    pub last_heard: Option<Instant>,
    /// Reason code of a `Close` from the peer.
    pub closed_by_peer: Option<u16>,
    ack: Ack,
    /// Datagrams dropped by the checks, for diagnostics.
    pub dropped: u64,
}

impl FlowCore {
    /// `open` opens the peer's datagrams.
    pub fn new(id: u64, side: Side, role: Role, open: Sealer) -> FlowCore {
        FlowCore {
            id,
            side,
            role,
            open,
            replay: ReplayWindow::new(),
            last_heard: None,
            closed_by_peer: None,
            ack: Ack::default(),
            dropped: 0,
        }
    }

    /// Where data and acks go, once the path is confirmed.
    pub fn peer(&self) -> Option<SocketAddr> {
        match &self.side {
            Side::Client { server, confirmed: true, .. } => Some(*server),
            Side::Client { .. } => None,
            Side::Server { path, .. } => path.validated(),
        }
    }

    /// Handles one datagram; returns true if the flow's task should look at the state again.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) -> bool {
        match self.accept(now, from, datagram) {
            Some(wake) => wake,
            None => {
                self.dropped += 1;
                false
            }
        }
    }

    fn accept(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) -> Option<bool> {
        let header = Header::decode(datagram).ok()?;
        if header.flow != self.id || !self.kind_allowed(header.kind) {
            return None;
        }
        if let Side::Client { server, .. } = &self.side {
            if *server != from {
                return None;
            }
        }
        if let Side::Server { path, .. } = &self.side {
            let validating = matches!(header.kind, PacketKind::Hello | PacketKind::PathResponse);
            // UDP-VALID-5: before validation only the handshake; after it, only the peer.
            match path.validated() {
                None if !validating => return None,
                Some(v) if v != from && !validating => return None,
                _ => {}
            }
            // UDP-PKT-4: a Hello is padded to the minimum datagram size.
            if header.kind == PacketKind::Hello && datagram.len() < packet::MIN_DATAGRAM {
                return None;
            }
        }
        if !self.replay.check(header.pn) {
            return None;
        }
        let len = datagram.len();
        let body = self.open.open(header.pn, datagram).ok()?;
        self.replay.commit(header.pn);
        self.last_heard = Some(now);
        let mut wake = false;
        if header.kind == PacketKind::Hello && packet::decode_hello(body).ok()? < packet::MIN_DATAGRAM as u16 {
            return None;
        }
        if let Side::Server { path, challenge_to } = &mut self.side {
            if header.kind == PacketKind::PathResponse {
                let echo = packet::decode_challenge(header.kind, body).ok()?;
                return Some(path.handle_response(from, echo));
            }
            if path.handle_datagram(from, len, CHALLENGE_LEN).is_some() {
                *challenge_to = Some(from);
                wake = true;
            }
        }
        Some(self.dispatch(now, header, len, body) || wake)
    }

    /// Kinds each end may receive (UDP-PKT-*).
    fn kind_allowed(&self, kind: PacketKind) -> bool {
        let sending = matches!(self.role, Role::Send(_));
        match kind {
            PacketKind::Hello | PacketKind::PathResponse => matches!(self.side, Side::Server { .. }),
            PacketKind::PathChallenge => matches!(self.side, Side::Client { .. }),
            PacketKind::Data | PacketKind::Probe => !sending,
            PacketKind::Ack => sending,
            PacketKind::Close => true,
        }
    }

    fn dispatch(&mut self, now: Instant, header: Header, len: usize, body: &mut [u8]) -> bool {
        match (header.kind, &mut self.role) {
            (PacketKind::PathChallenge, _) => {
                let Ok(ch) = packet::decode_challenge(header.kind, body) else { return false };
                if let Side::Client { confirmed, challenge, .. } = &mut self.side {
                    *confirmed = true;
                    *challenge = Some(ch);
                }
                true
            }
            (PacketKind::Hello, Role::Send(sender)) => {
                // UDP-PMTU-2: never larger than the client takes (checked in `accept`).
                if let Ok(max) = packet::decode_hello(body) {
                    sender.limit_datagram(usize::from(max));
                }
                false
            }
            (PacketKind::Ack, Role::Send(sender)) => {
                if self.ack.decode_into(body).is_err() {
                    return false;
                }
                sender.handle_ack(now, &self.ack);
                true
            }
            (PacketKind::Data, Role::Recv(recv)) => recv.handle_data(now, header.pn, len, body),
            (PacketKind::Probe, Role::Recv(recv)) => {
                recv.receiver.handle_probe(now, header.pn, len);
                true
            }
            (PacketKind::Close, _) => {
                self.closed_by_peer = Some(packet::decode_close(body).unwrap_or(u16::MAX));
                true
            }
            _ => false,
        }
    }
}

impl RecvState {
    fn handle_data(&mut self, now: Instant, pn: u64, len: usize, body: &[u8]) -> bool {
        let Ok((fields, payload)) = DataFields::decode(body) else { return false };
        if crc32fast::hash(payload) != fields.crc32 {
            self.corrupt += 1;
            return false;
        }
        if self.sink.backlog() > MAX_SINK_BACKLOG {
            return false; // the disk is behind; the sender will resend this later
        }
        match self.receiver.handle_data(now, pn, fields.offset, fields.len, len) {
            DataVerdict::New => {
                if self.arena.capacity() < payload.len() {
                    self.arena.reserve(ARENA.max(payload.len()));
                }
                self.arena.extend_from_slice(payload);
                let bytes = self.arena.split().freeze();
                self.sink.write(fields.offset, bytes);
                true
            }
            DataVerdict::Duplicate => true,
            DataVerdict::OutOfBounds => false,
        }
    }
}
