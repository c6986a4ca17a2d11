//! The task that drives one flow: it sends what the state machine asks for (data from the
//! block source, acks, path datagrams), re-arms one timer at the machine's next deadline, and
//! sleeps until then or until the demultiplexer wakes it. It makes no protocol decisions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BufMut;
use tokio::sync::watch;

use super::core::{Role, Side, CHALLENGE_LEN};
use super::io::UdpIo;
use super::source::BlockSource;
use super::FlowShared;
use crate::proto::control::Md5Digest;
use crate::transfer::TransferError;
use crate::udp::packet::{Ack, DataFields, Header, PacketKind, DATA_OVERHEAD, HEADER_LEN, MIN_DATAGRAM, TAG_LEN};
use crate::udp::seal::Sealer;
use crate::udp::sender::Transmit;

/// Datagrams one step may send before the task yields to the runtime.
const MAX_TRANSMITS_PER_STEP: usize = 512;

/// GSO sends at most this many bytes in one call.
const MAX_GSO_BYTES: usize = 64_000;

/// A receiving end holds its acks while more than this waits for the disk: short of acks,
/// the sender stops at its window (and its delivery rate falls to what the disk takes)
/// instead of sending datagrams the receiver would have to drop.
const ACK_HOLD_BACKLOG: u64 = 16 << 20;

/// How often held acks are reconsidered.
const ACK_HOLD_RECHECK: Duration = Duration::from_millis(1);

/// How a flow ended normally.
#[derive(Debug)]
pub enum FlowEnd {
    /// The sending end: the receiver holds every byte; `md5` covers the whole file.
    Sent { md5: Md5Digest },
    /// Stopped from outside (the control channel decided).
    Stopped,
}

/// Why a flow failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("no UDP reply from the server within {0:?}")]
    NoPath(Duration),
    #[error("UDP peer silent for {0:?}")]
    Idle(Duration),
    #[error("UDP peer closed the flow (reason {0})")]
    PeerClosed(u16),
    #[error("{0}")]
    Source(#[from] TransferError),
    #[error("UDP socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Timing of a flow's task.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// The flow fails when nothing authentic arrives for this long.
    pub idle: Duration,
    /// Client: fail with `NoPath` if no `PathChallenge` arrives within this (UDP-FALLBACK-1).
    pub confirm_within: Duration,
    /// Client: `Hello` is repeated this often until confirmed; server: likewise its
    /// `PathChallenge` until validated.
    pub hello_every: Duration,
    /// Largest datagram this end accepts (sent in `Hello`).
    pub max_datagram: u16,
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            idle: Duration::from_secs(15),
            confirm_within: Duration::from_secs(1),
            hello_every: Duration::from_millis(200),
            max_datagram: crate::udp::packet::MAX_DATAGRAM as u16,
        }
    }
}

struct Driver<'a> {
    shared: &'a Arc<FlowShared>,
    io: &'a UdpIo,
    seal: Sealer,
    opts: DriveOptions,
    started: Instant,
    next_hello: Instant,
    buf: Vec<u8>,
    batch_count: usize,
    batch_segment: usize,
    ack: Ack,
    acks_held: bool,
}

/// Runs the flow until the sending side is done, `stop` turns true, or it fails. `source` is
/// the file for a sending end, `None` for a receiving end.
pub async fn drive(
    shared: Arc<FlowShared>,
    io: Arc<UdpIo>,
    seal: Sealer,
    mut source: Option<BlockSource>,
    mut stop: watch::Receiver<bool>,
    opts: DriveOptions,
) -> Result<FlowEnd, FlowError> {
    let now = Instant::now();
    let mut d = Driver {
        shared: &shared,
        io: &io,
        seal,
        opts,
        started: now,
        next_hello: now,
        buf: Vec::with_capacity(MAX_GSO_BYTES + 1500),
        batch_count: 0,
        batch_segment: 0,
        ack: Ack::default(),
        acks_held: false,
    };
    loop {
        if *stop.borrow() {
            return Ok(FlowEnd::Stopped);
        }
        let now = Instant::now();
        let deadline = d.step(now, source.as_mut()).await?;
        if d.sent_everything() {
            let md5 = match source.take() {
                Some(s) => s.md5().await?,
                None => Md5Digest::default(),
            };
            return Ok(FlowEnd::Sent { md5 });
        }
        if deadline <= Instant::now() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            r = stop.changed() => if r.is_err() { return Ok(FlowEnd::Stopped) },
        }
    }
}

impl Driver<'_> {
    /// Sends everything due now; returns when to look again.
    async fn step(&mut self, now: Instant, source: Option<&mut BlockSource>) -> Result<Instant, FlowError> {
        self.check_alive(now)?;
        self.send_path_datagrams(now).await?;
        let peer = self.shared.lock().peer();
        if let Some(to) = peer {
            match source {
                Some(src) => self.send_data(to, src).await?,
                None => self.send_acks(to, now).await?,
            }
        }
        Ok(self.deadline(now))
    }

    fn check_alive(&self, now: Instant) -> Result<(), FlowError> {
        let core = self.shared.lock();
        if let Some(code) = core.closed_by_peer {
            return Err(FlowError::PeerClosed(code));
        }
        if let Side::Client { confirmed: false, .. } = core.side {
            if now >= self.started + self.opts.confirm_within {
                return Err(FlowError::NoPath(self.opts.confirm_within));
            }
        }
        let heard = core.last_heard.unwrap_or(self.started);
        if now >= heard + self.opts.idle {
            return Err(FlowError::Idle(self.opts.idle));
        }
        Ok(())
    }

    fn sent_everything(&self) -> bool {
        matches!(&self.shared.lock().role, Role::Send(s) if s.is_done())
    }

    fn deadline(&self, now: Instant) -> Instant {
        let core = self.shared.lock();
        let machine = match &core.role {
            Role::Send(s) => s.poll_timeout(),
            Role::Recv(r) if self.acks_held => r.receiver.poll_timeout().map(|t| t.max(now + ACK_HOLD_RECHECK)),
            Role::Recv(r) => r.receiver.poll_timeout(),
        };
        let mut at = core.last_heard.unwrap_or(self.started) + self.opts.idle;
        match &core.side {
            Side::Client { confirmed: false, .. } => {
                at = at.min(self.next_hello).min(self.started + self.opts.confirm_within);
            }
            Side::Server { path, .. } if path.validated().is_none() => at = at.min(self.next_hello),
            _ => {}
        }
        at = machine.map_or(at, |m| m.min(at));
        at.max(now)
    }

    /// `Hello`/`PathResponse` from a client, `PathChallenge` from a server (UDP-VALID-*).
    async fn send_path_datagrams(&mut self, now: Instant) -> Result<(), FlowError> {
        let mut out: Vec<(std::net::SocketAddr, Vec<u8>)> = Vec::new();
        {
            let mut core = self.shared.lock();
            let id = core.id;
            let mut items: Vec<(std::net::SocketAddr, PacketKind, Vec<u8>)> = Vec::new();
            match &mut core.side {
                Side::Client { server, confirmed, challenge } => {
                    if !*confirmed && now >= self.next_hello {
                        let mut body = self.opts.max_datagram.to_be_bytes().to_vec();
                        body.resize(MIN_DATAGRAM - HEADER_LEN - TAG_LEN, 0);
                        items.push((*server, PacketKind::Hello, body));
                        self.next_hello = now + self.opts.hello_every;
                    }
                    if let Some(ch) = challenge.take() {
                        items.push((*server, PacketKind::PathResponse, ch.to_vec()));
                    }
                }
                Side::Server { path, challenge_to } => {
                    let due = now >= self.next_hello;
                    let to = challenge_to.take().or_else(|| due.then(|| path.retry(CHALLENGE_LEN)).flatten());
                    if let Some(to) = to {
                        items.push((to, PacketKind::PathChallenge, path.challenge().to_vec()));
                        self.next_hello = now + self.opts.hello_every;
                    }
                }
            }
            for (to, kind, body) in items {
                let pn = next_pn(&mut core.role);
                out.push((to, self.datagram(kind, id, pn, &body)));
            }
        }
        for (to, d) in out {
            self.io.send(to, &d, d.len()).await?;
        }
        Ok(())
    }

    fn datagram(&self, kind: PacketKind, flow: u64, pn: u64, body: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        Header { kind, flow, pn }.encode(&mut d);
        d.extend_from_slice(body);
        d.resize(d.len() + TAG_LEN, 0);
        self.seal.seal(pn, &mut d);
        d
    }

    async fn send_acks(&mut self, to: std::net::SocketAddr, now: Instant) -> Result<(), FlowError> {
        let mut out = Vec::new();
        {
            let mut core = self.shared.lock();
            let id = core.id;
            let Role::Recv(recv) = &mut core.role else { return Ok(()) };
            self.acks_held = recv.sink.backlog() > ACK_HOLD_BACKLOG;
            if self.acks_held {
                return Ok(());
            }
            while recv.receiver.poll_ack(now, &mut self.ack) {
                let pn = recv.receiver.next_pn();
                let mut body = Vec::with_capacity(self.ack.encoded_len());
                self.ack.encode(&mut body);
                out.push(self.datagram(PacketKind::Ack, id, pn, &body));
            }
        }
        for d in out {
            self.io.send(to, &d, d.len()).await?;
        }
        Ok(())
    }

    /// Sends data and probes while the machine allows, batching equal-sized datagrams into one
    /// GSO send.
    async fn send_data(&mut self, to: std::net::SocketAddr, src: &mut BlockSource) -> Result<(), FlowError> {
        let max_segments = self.io.max_segments();
        // Bounded, so the task yields and sees `stop` even when the machine always has more.
        for _ in 0..MAX_TRANSMITS_PER_STEP {
            let (transmit, cumulative, id) = {
                let mut core = self.shared.lock();
                let id = core.id;
                let Role::Send(sender) = &mut core.role else { return Ok(()) };
                sender.handle_timeout(Instant::now());
                (sender.poll_transmit(Instant::now()), sender.cumulative(), id)
            };
            src.release_below(cumulative);
            let Some(t) = transmit else { break };
            match t {
                Transmit::Data { pn, offset, len } => {
                    let end = offset + u64::from(len);
                    if !src.is_loaded(end) {
                        self.flush(to).await?;
                        src.ensure(end).await?;
                    }
                    let size = DATA_OVERHEAD + usize::from(len);
                    let full = self.batch_count >= max_segments || self.buf.len() + size > MAX_GSO_BYTES;
                    if self.batch_count > 0 && (size > self.batch_segment || full) {
                        self.flush(to).await?;
                    }
                    if !self.push_data(id, pn, offset, len, src) {
                        continue; // bytes the receiver already holds; nothing to resend
                    }
                    if size < self.batch_segment {
                        self.flush(to).await?;
                    }
                }
                Transmit::Probe { pn, size } => {
                    self.flush(to).await?;
                    let body = vec![0u8; size.saturating_sub(HEADER_LEN + TAG_LEN)];
                    let d = self.datagram(PacketKind::Probe, id, pn, &body);
                    self.io.send(to, &d, d.len()).await?;
                }
            }
        }
        self.flush(to).await
    }

    /// Appends one sealed data datagram to the batch; false (and nothing appended) if its
    /// bytes are no longer loaded.
    fn push_data(&mut self, flow: u64, pn: u64, offset: u64, len: u16, src: &BlockSource) -> bool {
        let start = self.buf.len();
        Header { kind: PacketKind::Data, flow, pn }.encode(&mut self.buf);
        let fields_at = self.buf.len();
        self.buf.put_bytes(0, crate::udp::packet::DATA_FIELDS_LEN);
        let payload_at = self.buf.len();
        self.buf.resize(payload_at + usize::from(len), 0);
        if !src.copy_to(offset, &mut self.buf[payload_at..]) {
            self.buf.truncate(start);
            return false;
        }
        let crc32 = crc32fast::hash(&self.buf[payload_at..]);
        DataFields { offset, len, crc32 }.encode(&mut &mut self.buf[fields_at..payload_at]);
        self.buf.put_bytes(0, TAG_LEN);
        self.seal.seal(pn, &mut self.buf[start..]);
        if self.batch_count == 0 {
            self.batch_segment = self.buf.len() - start;
        }
        self.batch_count += 1;
        true
    }

    async fn flush(&mut self, to: std::net::SocketAddr) -> Result<(), FlowError> {
        if self.batch_count > 0 {
            self.io.send(to, &self.buf, self.batch_segment).await?;
        }
        self.buf.clear();
        self.batch_count = 0;
        Ok(())
    }
}

fn next_pn(role: &mut Role) -> u64 {
    match role {
        Role::Send(s) => s.next_pn(),
        Role::Recv(r) => r.receiver.next_pn(),
    }
}
