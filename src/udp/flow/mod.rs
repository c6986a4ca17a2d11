//! One end of a UDP flow as a single sans-I/O state machine, in the manner of quinn-proto's
//! `Connection`: packet acceptance (header, flow, kind, address, replay, AEAD), path
//! validation per address and the amplification limit (server), `Hello` and challenge
//! retries, the idle and no-path timers, the ack hold, and datagram encoding, around the
//! [`Sender`] or [`Receiver`] that decides what data to send or hold.
//!
//! Call order: feed every received datagram to [`handle_datagram`](Flow::handle_datagram)
//! and file blocks to [`push_block`](Flow::push_block) (a sending end, while
//! [`needs_data`](Flow::needs_data) asks); drain [`poll_transmit`](Flow::poll_transmit) into
//! the socket and [`poll_event`](Flow::poll_event) into the file and the caller; report the
//! writer's backlog with [`handle_sink_backlog`](Flow::handle_sink_backlog) (a receiving
//! end); sleep until [`poll_timeout`](Flow::poll_timeout), call
//! [`handle_timeout`](Flow::handle_timeout), and start again. Nothing here touches a socket,
//! a file or the clock: every call takes `now`.

mod accept;
mod sendbuf;
mod timer;
mod transmit;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::packet::{Ack, MAX_DATAGRAM};
use super::path::PathValidator;
use super::receiver::{Receiver, ReceiverConfig};
use super::replay::ReplayWindow;
use super::seal::{FlowKeys, Sealer};
use super::sender::{self, Sender, SenderConfig};
pub use sendbuf::SendBuffer;
pub use timer::{Timer, TimerTable};
pub use transmit::{Transmit, CHALLENGE_LEN, MAX_GSO_BYTES};

/// The packet number of a `Hello` sent before its flow existed (UDP-CTRL-9).
pub const EARLY_HELLO_PN: u64 = 0;
/// A receiving end holds its acks while more than this waits for the disk (UDP-ACK-1).
pub const ACK_HOLD_BACKLOG: u64 = 16 << 20;
/// A receiving end drops data while more than this waits for the disk (the sender resends).
pub const MAX_SINK_BACKLOG: u64 = 64 << 20;
/// How often held acks are reconsidered.
const ACK_HOLD_RECHECK: Duration = Duration::from_millis(1);
/// Allocation unit for accepted payloads.
const ARENA: usize = 1 << 20;

/// Which end of the flow this is.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// The client: sends `Hello`s to `server` and takes datagrams only from it.
    Client { server: SocketAddr },
    /// The server: validates the client's address (UDP-VALID-*).
    Server,
}

/// What this end does with the file.
#[derive(Debug, Clone)]
pub enum Direction {
    Send(SenderConfig),
    Recv(ReceiverConfig),
}

/// Timing of a flow.
#[derive(Debug, Clone)]
pub struct FlowTiming {
    /// The flow fails when nothing authentic arrives for this long.
    pub idle: Duration,
    /// Client: fail with [`FlowFailure::NoPath`] if no `PathChallenge` arrives within this
    /// (UDP-FALLBACK-2).
    pub confirm_within: Duration,
    /// Client: `Hello` is repeated this often until confirmed; server: likewise its
    /// `PathChallenge` until validated (UDP-VALID-2, -3).
    pub hello_every: Duration,
    /// Largest datagram this end accepts (sent in `Hello`).
    pub max_datagram: u16,
}

impl Default for FlowTiming {
    fn default() -> Self {
        FlowTiming {
            idle: Duration::from_secs(15),
            confirm_within: Duration::from_secs(1),
            hello_every: Duration::from_millis(200),
            max_datagram: MAX_DATAGRAM as u16,
        }
    }
}

/// How long a client waits for the first `PathChallenge` (UDP-FALLBACK-2), given the round
/// trip of the control request that set the flow up: for `auto`, 4 round trips plus 500 ms
/// (about a dozen `Hello`s even at 600 ms), at most 10 s; when UDP is forced, 16 round trips
/// and at least 10 s, so that a link that carries UDP is never given up on.
pub fn first_reply_deadline(control_rtt: Duration, forced: bool) -> Duration {
    if forced {
        (control_rtt * 16).max(Duration::from_secs(10))
    } else {
        (control_rtt * 4 + Duration::from_millis(500)).min(Duration::from_secs(10))
    }
}

/// Everything a flow starts from.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub id: u64,
    pub side: Side,
    pub direction: Direction,
    pub timing: FlowTiming,
    /// Most datagrams one [`Transmit`] may carry (the socket's GSO limit; 1 without GSO).
    pub max_segments: usize,
    /// Seeds the generator of path challenges; must be secret and unpredictable (the
    /// caller draws it from a CSPRNG).
    pub seed: [u8; 32],
}

/// Why a flow failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowFailure {
    #[error("no UDP reply from the server within {0:?}")]
    NoPath(Duration),
    #[error("UDP peer silent for {0:?}")]
    Idle(Duration),
    #[error("UDP peer closed the flow (reason {0})")]
    PeerClosed(u16),
}

/// What a flow tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Receiving end: write `data` at `offset` of the file (UDP-DATA-4).
    Write { offset: u64, data: Bytes },
    /// Client: the server answered (first `PathChallenge`).
    Confirmed,
    /// Server: `addr` is validated and is now the peer (UDP-VALID-5, -7).
    Validated(SocketAddr),
    /// Sending end: every byte has been sent at least once (or was held) (UDP-END-8).
    AllSent,
    /// Receiving end: every byte is held (UDP-END-8).
    AllHeld,
    /// Sending end: the receiver holds every byte.
    Done,
    /// The flow is over.
    Failed(FlowFailure),
}

/// The client's path state.
#[derive(Debug)]
struct ClientPath {
    server: SocketAddr,
    confirmed: bool,
    /// A challenge to answer (the latest).
    response: Option<[u8; 8]>,
    hello_due: bool,
    /// A new upload's first flight may go before the server answers (UDP-CTRL-10).
    early_data: bool,
    /// When the first `Hello` went, while it is the only one (for a first RTT sample).
    first_hello: Option<Instant>,
    hellos: u32,
}

/// The server's path state.
#[derive(Debug)]
struct ServerPath {
    paths: PathValidator,
    /// Addresses a challenge is due to (bounded by the candidates).
    due: VecDeque<SocketAddr>,
    /// The first challenge to an address, while it was the only one sent there.
    first_challenge: Option<(SocketAddr, Instant)>,
    /// A receiving end, before any address is validated: the address the first authentic
    /// `Data` came from, which acks go to within its budget (UDP-CTRL-10).
    early_peer: Option<SocketAddr>,
}

#[derive(Debug)]
enum PathState {
    Client(ClientPath),
    Server(ServerPath),
}

/// The data side of a flow.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Data {
    Send { sender: Sender, buf: SendBuffer, pending: Option<sender::Transmit> },
    Recv { receiver: Receiver, arena: BytesMut, backlog: u64, acks_held: bool },
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Datagrams dropped by the acceptance checks.
    pub dropped: u64,
    /// `Data` datagrams whose crc32 did not match (UDP-DATA-2).
    pub corrupt: u64,
    /// `Data` datagrams refused by the range bound (UDP-DATA-5).
    pub refused: u64,
}

/// One end of a UDP flow (see the module docs).
#[derive(Debug)]
pub struct Flow {
    id: u64,
    path: PathState,
    data: Data,
    seal: Sealer,
    open: Sealer,
    replay: ReplayWindow,
    timers: TimerTable,
    timing: FlowTiming,
    max_segments: usize,
    events: VecDeque<Event>,
    /// Bytes of `Write` events not yet taken by the driver.
    queued_writes: u64,
    rng: StdRng,
    ack: Ack,
    counters: FlowCounters,
    failed: Option<FlowFailure>,
    done: bool,
    /// `AllSent` or `AllHeld` was told.
    all_told: bool,
}

impl Flow {
    pub fn new(cfg: FlowConfig, keys: FlowKeys, now: Instant) -> Flow {
        let (seal, open, path) = match cfg.side {
            Side::Client { server } => (
                keys.client,
                keys.server,
                PathState::Client(ClientPath {
                    server,
                    confirmed: false,
                    response: None,
                    hello_due: true,
                    early_data: false,
                    first_hello: None,
                    hellos: 0,
                }),
            ),
            Side::Server => (
                keys.server,
                keys.client,
                PathState::Server(ServerPath {
                    paths: PathValidator::new(),
                    due: VecDeque::new(),
                    first_challenge: None,
                    early_peer: None,
                }),
            ),
        };
        let data = match cfg.direction {
            Direction::Send(c) => Data::Send { sender: Sender::new(c, now), buf: SendBuffer::default(), pending: None },
            Direction::Recv(c) => {
                Data::Recv { receiver: Receiver::new(c, now), arena: BytesMut::new(), backlog: 0, acks_held: false }
            }
        };
        let mut timers = TimerTable::default();
        timers.set(Timer::Idle, now + cfg.timing.idle);
        if matches!(path, PathState::Client(_)) {
            timers.set(Timer::NoPath, now + cfg.timing.confirm_within);
        }
        let mut flow = Flow {
            id: cfg.id,
            path,
            data,
            seal,
            open,
            replay: ReplayWindow::new(),
            timers,
            timing: cfg.timing,
            max_segments: cfg.max_segments.max(1),
            events: VecDeque::new(),
            queued_writes: 0,
            rng: StdRng::from_seed(cfg.seed),
            ack: Ack::default(),
            counters: FlowCounters::default(),
            failed: None,
            done: false,
            all_told: false,
        };
        flow.check_done();
        flow
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where data and acks go: the server's validated address (or, before one, the address
    /// of the first flight's data, UDP-CTRL-10), or the server once it has answered (or at
    /// once, for a first flight, UDP-CTRL-10).
    pub fn peer(&self) -> Option<SocketAddr> {
        match &self.path {
            PathState::Client(c) => (c.confirmed || c.early_data).then_some(c.server),
            PathState::Server(s) => s.paths.validated().or(s.early_peer),
        }
    }

    /// Server: the path validator (for its budgets, in tests and diagnostics).
    pub fn paths(&self) -> Option<&PathValidator> {
        match &self.path {
            PathState::Server(s) => Some(&s.paths),
            PathState::Client(_) => None,
        }
    }

    pub fn sender(&self) -> Option<&Sender> {
        match &self.data {
            Data::Send { sender, .. } => Some(sender),
            Data::Recv { .. } => None,
        }
    }

    pub fn receiver(&self) -> Option<&Receiver> {
        match &self.data {
            Data::Recv { receiver, .. } => Some(receiver),
            Data::Send { .. } => None,
        }
    }

    pub fn counters(&self) -> FlowCounters {
        self.counters
    }

    /// The flow failed; it sends nothing more.
    pub fn failure(&self) -> Option<&FlowFailure> {
        self.failed.as_ref()
    }

    /// Sending end: the end offset of file bytes the next datagram needs and that are not
    /// loaded yet; hand them in with [`push_block`](Self::push_block).
    pub fn needs_data(&self) -> Option<u64> {
        match &self.data {
            Data::Send { buf, pending: Some(sender::Transmit::Data { offset, len, .. }), .. } => {
                let end = offset + u64::from(*len);
                (end > buf.loaded_end()).then_some(end)
            }
            _ => None,
        }
    }

    /// Sending end: the file block `[start, start + len)`, `None` when the receiver holds it
    /// all. Blocks come in ascending order.
    pub fn push_block(&mut self, start: u64, len: u64, data: Option<Bytes>) {
        if let Data::Send { buf, .. } = &mut self.data {
            buf.push(start, len, data);
        }
    }

    /// Receiving end: bytes written to the file's writer and not on disk yet. Above
    /// [`ACK_HOLD_BACKLOG`] acks are held (UDP-ACK-1), above [`MAX_SINK_BACKLOG`] data is
    /// dropped.
    pub fn handle_sink_backlog(&mut self, now: Instant, bytes: u64) {
        let queued = self.queued_writes;
        if let Data::Recv { backlog, acks_held, .. } = &mut self.data {
            *backlog = bytes;
            *acks_held = bytes + queued > ACK_HOLD_BACKLOG;
            if *acks_held {
                self.timers.set(Timer::AckHold, now + ACK_HOLD_RECHECK);
            }
        }
        self.refresh_machine_timer(now);
    }

    /// The next thing to tell the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::Write { data, .. } = &ev {
            self.queued_writes -= data.len() as u64;
        }
        Some(ev)
    }

    /// The earliest deadline, if any; call [`handle_timeout`](Self::handle_timeout) then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        self.timers.next()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        for t in self.timers.expired(now) {
            match t {
                Timer::Idle => self.fail(FlowFailure::Idle(self.timing.idle)),
                Timer::NoPath => self.fail(FlowFailure::NoPath(self.timing.confirm_within)),
                Timer::Hello => {
                    if let PathState::Client(c) = &mut self.path {
                        c.hello_due = !c.confirmed;
                    }
                }
                Timer::Challenge => self.retry_challenges(now),
                Timer::Machine => {
                    if let Data::Send { sender, .. } = &mut self.data {
                        sender.handle_timeout(now);
                    }
                }
                Timer::AckHold => {}
            }
        }
        self.refresh_machine_timer(now);
    }

    /// UDP-VALID-3: every address being validated gets its challenge again, within its
    /// budget (checked when it is sent).
    fn retry_challenges(&mut self, now: Instant) {
        let PathState::Server(s) = &mut self.path else { return };
        for addr in s.paths.candidates() {
            if !s.due.contains(&addr) {
                s.due.push_back(addr);
            }
            if s.first_challenge.is_some_and(|(a, _)| a == addr) {
                s.first_challenge = None; // a retry: the next reply no longer times one trip
            }
        }
        // Once every budget is spent, only a new datagram from that address re-arms it.
        if s.paths.can_challenge(transmit::CHALLENGE_LEN) {
            self.timers.set(Timer::Challenge, now + self.timing.hello_every);
        }
    }

    fn fail(&mut self, why: FlowFailure) {
        if self.failed.is_none() {
            self.failed = Some(why.clone());
            self.events.push_back(Event::Failed(why));
        }
    }

    fn check_done(&mut self) {
        match &self.data {
            Data::Send { sender, .. } => {
                if !self.all_told && sender.all_sent() {
                    self.all_told = true;
                    self.events.push_back(Event::AllSent);
                }
                if sender.is_done() && !self.done {
                    self.done = true;
                    self.events.push_back(Event::Done);
                }
            }
            Data::Recv { receiver, .. } => {
                if !self.all_told && receiver.is_complete() {
                    self.all_told = true;
                    self.events.push_back(Event::AllHeld);
                }
            }
        }
    }

    /// Client: the `Hello` that [`encode_early_hello`](Self::encode_early_hello) made for this
    /// flow went at `sent_at`, before the flow existed (UDP-CTRL-9). Its packet number is
    /// taken, and the next `Hello` is due a retry interval after it. The exchange gives no
    /// RTT sample: the server answers it only once the request that opens the flow is
    /// served. Call before anything else.
    pub fn note_early_hello(&mut self, sent_at: Instant) {
        let PathState::Client(c) = &mut self.path else { return };
        if c.hellos > 0 {
            return;
        }
        c.hellos = 1;
        c.hello_due = false;
        self.timers.set(Timer::Hello, sent_at + self.timing.hello_every);
        let pn = self.next_pn();
        debug_assert_eq!(pn, EARLY_HELLO_PN);
    }

    /// Client, sending end of a flow opened with `PutFlow`: a first flight of new data may go
    /// before the server answers, and no more until [`note_held`](Self::note_held) gives the
    /// server's answer (UDP-CTRL-10).
    pub fn allow_early_data(&mut self, now: Instant) {
        if let (PathState::Client(c), Data::Send { sender, .. }) = (&mut self.path, &mut self.data) {
            c.early_data = true;
            sender.limit_to_first_flight();
        }
        self.refresh_machine_timer(now);
    }

    /// While held datagrams are handed over (UDP-CTRL-10): true if what this end owes would
    /// have gone before the next held datagram arrived at `next` (`None`: that was the last),
    /// so that it is sent now. A receiving end's acks so keep the spacing and the count they
    /// would have had in real time (UDP-ACK-1), and their delays, counted from the arrivals,
    /// cover the hold (UDP-RATE-10).
    pub fn held_transmit_due(&self, next: Option<Instant>) -> bool {
        match (&self.data, next) {
            (_, None) | (Data::Send { .. }, _) => true,
            (Data::Recv { receiver, .. }, Some(next)) => receiver.poll_timeout().is_some_and(|t| t <= next),
        }
    }

    /// Sending end whose first flight went before the server answered (UDP-CTRL-10): the
    /// server holds `held` of the file, which is not sent again.
    pub fn note_held(&mut self, now: Instant, held: &super::ranges::RangeSet) {
        if let Data::Send { sender, .. } = &mut self.data {
            sender.absorb_held(held);
        }
        self.check_done();
        self.refresh_machine_timer(now);
    }

    /// Client: the first `PathChallenge` is now due within `within` of `now`, if it has not
    /// come (UDP-FALLBACK-2: the deadline counts from the reply to the request).
    pub fn set_confirm_deadline(&mut self, now: Instant, within: Duration) {
        let PathState::Client(c) = &self.path else { return };
        self.timing.confirm_within = within;
        if !c.confirmed && self.failed.is_none() {
            self.timers.set(Timer::NoPath, now + within);
        }
    }

    /// Copies the sender's or receiver's own deadline into the table.
    fn refresh_machine_timer(&mut self, now: Instant) {
        let at = match &self.data {
            Data::Send { sender, .. } => sender.poll_timeout(),
            Data::Recv { acks_held: true, .. } => None,
            Data::Recv { receiver, .. } => receiver.poll_timeout(),
        };
        // Nothing to send before the path is up, however the machine's clock runs.
        let at = if self.peer().is_some() { at } else { None };
        self.timers.set_opt(Timer::Machine, at.map(|t| t.max(now)));
    }

    fn next_pn(&mut self) -> u64 {
        match &mut self.data {
            Data::Send { sender, .. } => sender.next_pn(),
            Data::Recv { receiver, .. } => receiver.next_pn(),
        }
    }
}
