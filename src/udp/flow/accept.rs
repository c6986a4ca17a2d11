//! Packet acceptance, in the order UDP-VALID-1 gives: key-free header checks, flow, kind for
//! this direction, source address (client), replay window, AEAD; then the address's
//! validation state (server), then the body. Anything that fails is dropped before it
//! touches the transfer.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use super::{Data, Event, Flow, FlowFailure, PathState, Timer, MAX_SINK_BACKLOG};
use crate::udp::packet::{self, DataFields, Header, PacketKind};
use crate::udp::receiver::DataVerdict;

impl Flow {
    /// Handles one received datagram (decrypted in place); returns true if it was accepted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) -> bool {
        self.handle_held_datagram(now, now, from, datagram)
    }

    /// Handles one datagram that arrived at `arrived`, before the flow existed, and was held
    /// until `now` (UDP-CTRL-9, -10). A receiving end times its acks from the arrival, so
    /// that the ack delay it reports covers the hold and the sender's reading of the first
    /// flight's spacing stays the path's (UDP-RATE-10).
    pub fn handle_held_datagram(
        &mut self,
        now: Instant,
        arrived: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> bool {
        let arrived = arrived.min(now);
        let accepted = self.failed.is_none() && self.accept(now, arrived, from, datagram).is_some();
        if !accepted {
            self.counters.dropped += 1;
        }
        self.check_done();
        self.refresh_machine_timer(now);
        accepted
    }

    fn accept(&mut self, now: Instant, arrived: Instant, from: SocketAddr, datagram: &mut [u8]) -> Option<()> {
        let header = Header::decode(datagram).ok()?;
        if header.flow != self.id || !self.kind_allowed(header.kind) {
            return None;
        }
        // UDP-VALID-6: a client takes datagrams from the server's address only.
        if let PathState::Client(c) = &self.path {
            if c.server != from {
                return None;
            }
        }
        // UDP-PKT-4: a Hello is padded to the minimum datagram size.
        if header.kind == PacketKind::Hello && datagram.len() < packet::MIN_DATAGRAM {
            return None;
        }
        if !self.replay.check(header.pn) {
            return None;
        }
        let len = datagram.len();
        let body = self.open.open(header.pn, datagram).ok()?;
        self.replay.commit(header.pn);
        self.timers.set(Timer::Idle, now + self.timing.idle);
        if let PathState::Server(_) = self.path {
            if !self.server_path(now, from, header.kind, len, body)? {
                return Some(()); // from an address not validated: nothing else is read
            }
        }
        self.dispatch(now, arrived, header, len, body)
    }

    /// Kinds each end may receive (UDP-PKT-3).
    fn kind_allowed(&self, kind: PacketKind) -> bool {
        let client = matches!(self.path, PathState::Client(_));
        let sending = matches!(self.data, Data::Send { .. });
        match kind {
            PacketKind::Hello | PacketKind::PathResponse => !client,
            PacketKind::PathChallenge => client,
            PacketKind::Data | PacketKind::Probe => !sending,
            PacketKind::Ack => sending,
            PacketKind::Close => true,
        }
    }

    /// The server's part of acceptance for an authentic datagram of `len` bytes: counts it
    /// toward the budget of an address that is not validated (UDP-AMP-1), answers a `Hello`
    /// or a new address with a challenge to that address (UDP-VALID-3, -7), and validates on
    /// a matching `PathResponse` (UDP-VALID-5). `Some(true)` when the datagram comes from the
    /// validated address and its body is to be read; `None` for a malformed body.
    fn server_path(
        &mut self,
        now: Instant,
        from: SocketAddr,
        kind: PacketKind,
        len: usize,
        body: &[u8],
    ) -> Option<bool> {
        if kind == PacketKind::Hello && packet::decode_hello(body).ok()? < packet::MIN_DATAGRAM as u16 {
            return None;
        }
        if kind == PacketKind::Hello {
            let max = packet::decode_hello(body).ok()?;
            if let Data::Send { sender, .. } = &mut self.data {
                // UDP-PMTU-2: never larger than the client takes.
                sender.limit_datagram(usize::from(max));
            }
        }
        let receiving = matches!(self.data, Data::Recv { .. });
        let PathState::Server(s) = &mut self.path else { return Some(true) };
        if s.paths.validated() == Some(from) {
            return Some(kind != PacketKind::PathResponse && kind != PacketKind::Hello);
        }
        let rng = &mut self.rng;
        let new = s.paths.handle_unvalidated(from, len, || rng.gen());
        // UDP-CTRL-10: before any address is validated, a receiving end reads authentic
        // `Data` (a first flight) and acks the first address it came from, within its budget.
        let read = kind == PacketKind::Data && receiving && s.paths.validated().is_none();
        if read {
            s.early_peer.get_or_insert(from);
        }
        if kind == PacketKind::PathResponse {
            let echo = packet::decode_challenge(kind, body).ok()?;
            if s.paths.handle_response(from, echo) {
                if let Some((a, sent)) = s.first_challenge.take() {
                    if let (true, Data::Send { sender, .. }) = (a == from, &mut self.data) {
                        sender.handle_rtt_sample(now.saturating_duration_since(sent));
                    }
                }
                s.due.retain(|a| *a != from);
                s.early_peer = None;
                if !s.paths.validating() {
                    self.timers.stop(Timer::Challenge);
                }
                self.events.push_back(Event::Validated(from));
            }
            return Some(false);
        }
        if (new || kind == PacketKind::Hello) && !s.due.contains(&from) {
            s.due.push_back(from);
        }
        if self.timers.get(Timer::Challenge).is_none() {
            self.timers.set(Timer::Challenge, now + self.timing.hello_every);
        }
        Some(read)
    }

    fn dispatch(&mut self, now: Instant, arrived: Instant, header: Header, len: usize, body: &mut [u8]) -> Option<()> {
        match header.kind {
            PacketKind::PathChallenge => {
                let ch = packet::decode_challenge(header.kind, body).ok()?;
                self.handle_challenge(now, ch);
            }
            PacketKind::Ack => {
                self.ack.decode_into(body).ok()?;
                if let Data::Send { sender, .. } = &mut self.data {
                    sender.handle_ack(now, &self.ack);
                }
            }
            PacketKind::Data => self.handle_data(arrived, header.pn, len, body)?,
            PacketKind::Probe => {
                if let Data::Recv { receiver, .. } = &mut self.data {
                    receiver.handle_probe(arrived, header.pn, len);
                }
            }
            PacketKind::Close => {
                self.fail(FlowFailure::PeerClosed(packet::decode_close(body).unwrap_or(u16::MAX)));
            }
            PacketKind::Hello | PacketKind::PathResponse => {}
        }
        Some(())
    }

    /// Client: the server answered (UDP-VALID-4). Every challenge is answered, also after the
    /// first, since a rebinding makes the server validate again.
    fn handle_challenge(&mut self, now: Instant, challenge: [u8; 8]) {
        let PathState::Client(c) = &mut self.path else { return };
        c.response = Some(challenge);
        if c.confirmed {
            return;
        }
        c.confirmed = true;
        c.hello_due = false;
        let sample = c.first_hello.filter(|_| c.hellos == 1).map(|t| now.saturating_duration_since(t));
        self.timers.stop(Timer::Hello);
        self.timers.stop(Timer::NoPath);
        if let (Some(rtt), Data::Send { sender, .. }) = (sample, &mut self.data) {
            sender.handle_rtt_sample(rtt);
        }
        self.events.push_back(Event::Confirmed);
    }

    /// Receiving end: checks and holds a `Data` payload that arrived at `now`, and hands it to
    /// the driver to write.
    fn handle_data(&mut self, now: Instant, pn: u64, len: usize, body: &[u8]) -> Option<()> {
        let (fields, payload) = DataFields::decode(body).ok()?;
        let queued = self.queued_writes;
        let Data::Recv { receiver, arena, backlog, .. } = &mut self.data else { return None };
        // UDP-DATA-2
        if crc32fast::hash(payload) != fields.crc32 {
            self.counters.corrupt += 1;
            return None;
        }
        if *backlog + queued > MAX_SINK_BACKLOG {
            return None; // the disk is behind; the sender will resend this later
        }
        match receiver.handle_data(now, pn, fields.offset, fields.len, len) {
            DataVerdict::New => {
                if arena.capacity() < payload.len() {
                    arena.reserve(super::ARENA.max(payload.len()));
                }
                arena.extend_from_slice(payload);
                let data = arena.split().freeze();
                self.queued_writes += data.len() as u64;
                self.events.push_back(Event::Write { offset: fields.offset, data });
                Some(())
            }
            DataVerdict::Duplicate => Some(()),
            DataVerdict::Refused => {
                self.counters.refused += 1;
                None
            }
            DataVerdict::OutOfBounds => None,
        }
    }
}
