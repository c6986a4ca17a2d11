//! Rate control and pacing for the UDP sender (pure: no clock, no I/O; every call takes `now`).
//!
//! The model follows BBR and UDT: the sender paces at a gain times an estimate of the
//! bottleneck rate, and caps what is in flight at a multiple of the bandwidth-delay product.
//!
//! - **Bottleneck rate**: windowed maximum (10 round trips) of delivery-rate samples, taken
//!   as in BBR but counted by packet number: when the receiver reports a new largest packet,
//!   everything sent up to it has passed the far end of the path (arrived, or been lost on
//!   the way). Counting that, rather than acknowledged ranges, keeps samples honest when an
//!   ack cannot list every range held (bytes then become known held late, in bulks that
//!   would inflate range-based samples). The same count gives the sender its in-flight
//!   measure (bytes sent after the largest reported packet).
//! - **Minimum RTT**: windowed minimum over 10 s.
//! - **Window**: 2x BDP plus the largest bulk a single ack has acknowledged, and past Startup
//!   room for one lost ack (the 32 datagrams of `UDP-ACK-1`), so that a lost ack does not
//!   stall a short-RTT flow until a timer (`UDP-RATE-5`).
//! - **Phases**: `Startup` paces at 2.885x (window 2x BDP) until the estimate grows less than
//!   25% in three rounds, RTT samples show a queue building, or a round loses clearly more
//!   than Startup did so far (an overflowing queue); `Drain` empties the queue, then
//!   `Cruise` cycles pacing gains 1.25, 0.75 and six times 1.0, one minimum RTT each.
//! - **Random loss is not congestion.** Where loss happens on the wire after the bottleneck,
//!   a lost packet still used link time, so the plain delivery rate under a loss rate `p`
//!   reads `(1 - p)` of the link, and pacing at that reading spirals down. Samples here
//!   count lost bytes as having passed, then take out only the *excess* loss: with `f` the
//!   recent loss rate and `p` the random loss rate, a sample is scaled by `(1 - f) / (1 - p)`
//!   (at most 1). `p` starts as Startup's loss rate and follows the loss of packets sent
//!   while draining (gain 0.75) in rounds without a standing queue: random loss hits them as
//!   often as any, while a queue the flow overfills (the estimate above the link) drains
//!   then, so overflow drops do not feed `p` (which would lift the estimate further above
//!   the link). A loss rate far above `p` moves it only a little.
//! - **Queueing delay backs off.** When the smallest RTT of two consecutive rounds exceeds
//!   `1.25 * min_rtt + 3 ms`, a queue is standing (a competing flow, or an overestimate):
//!   the estimate is capped at 85% and the cap is raised again round by round once the
//!   queue is gone (additively, so competing flows converge to a fair share).
//! - **A queue that is not its own is competed with.** When more than 30% of recent rounds
//!   (EWMA over about 16) see a standing queue although the flow keeps backing off, gets
//!   through what it sends, and the queue does not shrink, the queue is another flow's (a
//!   loss-based or BBR TCP that fills whatever is given up). The flow then competes as BBR
//!   does, bounded by its delivery rate, its window (sized to the RTT with the standing
//!   queue) and its probing (gain 1.25 every fourth round, no draining), without delay
//!   back-off, until under 10% of rounds see a queue. It takes at least three back-offs in a
//!   row with no round free of the queue in between: on a short RTT with a deep buffer, noisy
//!   samples lift the estimate a little above the link, and the short queues that builds
//!   clear after each back-off, however often they come (taking them for another flow's kept
//!   the buffer full and overflowing: 5% of a loss-free 10 Mbit/s link resent).
//! - **Resumed start** (`UDP-RATE-7`, [`resume`]): a bottleneck rate remembered from an
//!   earlier flow to the same peer is used once an RTT measured now (the control connection's,
//!   or the first sample) agrees with the one it was measured at: Startup then paces at half of
//!   it for a round trip (at gain 1) and keeps what the path confirms, or retreats to Drain when
//!   that round builds a queue.
//! - **First-flight dispersion** (`UDP-RATE-10`, [`dispersion`]): with nothing remembered, the
//!   spacing at which the first flight arrived reads the bottleneck rate a round trip after
//!   the first ack, and Startup jumps to half of it in the same careful way, when that is
//!   faster than its own pacing (long round trips: on a LAN the initial window is enough).
//! - **Pacing** ([`Pacer`]): a token bucket of 1 ms at the pacing rate while the sender wakes
//!   on time, growing to cover its recent lateness (at most 4 ms and 64 datagrams unless
//!   1 ms holds more, at least 4 datagrams), so that timers of 1 ms granularity, and
//!   wake-ups later than that, cost no rate.

mod dispersion;
mod filter;
mod pacer;
pub mod resume;

use std::time::{Duration, Instant};

use dispersion::{Dispersion, FirstFlight};
use filter::{Better, WindowedFilter};
pub use pacer::Pacer;
use resume::Resume;

use super::receiver::ACK_EVERY;
pub use resume::{PathEstimate, StartHint};

/// Pacing and window gain in Startup (2 / ln 2).
const STARTUP_GAIN: f64 = 2.885;
/// In-flight cap as a multiple of the bandwidth-delay product.
const WINDOW_GAIN: f64 = 2.0;
/// Pacing gains of one Cruise cycle.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Pacing gains of one Cruise cycle while competing: probing twice as often, never draining
/// (the standing queue is another flow's, and draining would hand it the link).
const COMPETE_CYCLE: [f64; 4] = [1.25, 1.0, 1.0, 1.0];
/// The bottleneck-rate filter's window, in rounds.
const BW_WINDOW_ROUNDS: u64 = 10;
/// The minimum-RTT filter's window.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Datagrams in flight before anything is known, and the window's floor.
const MIN_WINDOW_DATAGRAMS: u64 = 32;
/// RTT assumed for pacing the initial window before any sample.
const INITIAL_RTT: Duration = Duration::from_millis(10);
/// Startup's pacing ceiling as a multiple of the bottleneck rate the first flight read
/// (`UDP-RATE-10`).
const STARTUP_CEILING: f64 = 1.25;
/// Delivery at this share of Startup's ceiling shows the bottleneck above it: a quarter above
/// the rate read is more than a bottleneck of that rate delivers.
const CEILING_REACHED: f64 = 0.95;
/// Growth below which Startup counts a round as "not growing".
const STARTUP_GROWTH: f64 = 1.25;
/// A standing queue: the round's smallest RTT above `min_rtt * QUEUE_FACTOR + QUEUE_SLACK`.
const QUEUE_FACTOR: f64 = 1.25;
const QUEUE_SLACK: Duration = Duration::from_millis(3);
/// Consecutive RTT samples showing a queue that end Startup.
const STARTUP_QUEUED_SAMPLES: u32 = 4;
/// Datagrams Startup must have seen resolved before a round's loss rate can end it.
const STARTUP_LOSS_BASE_DATAGRAMS: u64 = 200;
/// Datagrams a Startup round must lose before its loss rate can end Startup.
const STARTUP_LOSS_DATAGRAMS: u64 = 8;
/// Rounds with a standing queue before backing off.
const QUEUE_ROUNDS: u32 = 2;
/// The rate cap after a back-off, as a fraction of the estimate.
const BACKOFF: f64 = 0.85;
/// Weight of one Cruise round in the share of rounds with a standing queue.
const QUEUE_SHARE_WEIGHT: f64 = 1.0 / 16.0;
/// Share of rounds with a standing queue above which backing off is given up (the queue is
/// another flow's), and below which it resumes.
const COMPETE_ENTER: f64 = 0.3;
const COMPETE_EXIT: f64 = 0.1;
/// Back-offs in a row, with no round free of a standing queue in between, before a queue can
/// be taken for another flow's: a queue of the flow's own making (an estimate a little above
/// the link, which noisy samples on a short RTT give) clears after one or two.
const COMPETE_BACKOFFS: u32 = 3;
/// A standing queue whose delay falls below this fraction of the last round's is shrinking.
const QUEUE_SHRINK: f64 = 0.95;
/// The flow fills the queue itself while its delivery rate is below this fraction of its
/// estimate.
const SELF_FILLING: f64 = 0.9;
/// Largest random-loss rate compensated for.
const MAX_LOSS_COMPENSATION: f64 = 0.5;
/// Weight of one round in the random-loss estimate.
const LOSS_EWMA_WEIGHT: f64 = 1.0 / 4.0;
/// Weight of one round in the recent loss rate.
const RECENT_LOSS_WEIGHT: f64 = 1.0 / 4.0;
/// Datagrams a round must have learned the fate of before its loss rate counts.
const LOSS_MIN_DATAGRAMS: u64 = 16;
/// Clean datagrams whose fate is known before they update the random-loss estimate.
const CLEAN_MIN_DATAGRAMS: u64 = 64;

/// Delivery counters recorded when a packet is sent, for the rate sample its ack yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendState {
    /// Bytes known to have passed the receiver's end when this packet was sent.
    pub delivered: u64,
    /// When `delivered` last grew.
    pub delivered_time: Instant,
    /// Send time of the most recently acknowledged packet when this one was sent.
    pub first_sent_time: Instant,
    pub sent_time: Instant,
    /// Sent while the sender had nothing more to send (its rate sample says little).
    pub app_limited: bool,
    /// Sent at the draining gain (0.75) while cruising, when no queue of this flow's making
    /// can overflow: its loss says something about random loss.
    pub clean: bool,
    /// Bytes resolved (acknowledged or declared lost), and of those lost, when it was sent.
    pub resolved: u64,
    pub lost: u64,
}

/// The controller's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Startup,
    Drain,
    Cruise,
}

/// Bottleneck-rate and delay based rate control (see the module docs).
#[derive(Debug)]
pub struct RateControl {
    epoch: Instant,
    datagram: u64,
    rate_limit: Option<u64>,
    phase: Phase,
    cycle_index: usize,
    cycle_start: Instant,

    // Delivery-rate sampling.
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited_until: u64,
    /// The send state of the packet newly reported by the current ack.
    sample: Option<SendState>,
    /// Bytes newly reported passed by the current ack.
    ack_delivered: u64,
    resolved: u64,
    lost: u64,
    /// Recent loss rate of all packets (EWMA per round).
    recent_loss: f64,
    round_resolved: u64,
    round_lost: u64,

    // Rounds.
    round: u64,
    next_round_delivered: u64,
    round_min_rtt: Option<Duration>,
    clean_acked: u64,
    clean_lost: u64,

    // Model.
    bw: WindowedFilter,
    min_rtt: WindowedFilter,
    ack_aggregation: WindowedFilter,
    loss_rate: Option<f64>,
    bw_cap: Option<u64>,
    queue_rounds: u32,
    /// Back-offs since the last round without a standing queue.
    backoffs: u32,
    /// Recent share of Cruise rounds with a standing queue (EWMA).
    queue_share: f64,
    /// Competing with a flow that keeps the queue standing: no delay back-off.
    competing: bool,
    /// The smallest RTT of the last round with a standing queue.
    last_queue_rtt: Option<Duration>,
    /// The latest delivery-rate sample.
    last_rate_sample: u64,
    full_bw: u64,
    full_bw_rounds: u32,
    startup_queued: u32,
    startup_lost: u64,
    startup_resolved: u64,
    /// Careful resume from a remembered estimate.
    resume: Resume,
    /// Whether Startup jumped to a remembered rate (the path agreed with it).
    jumped: bool,
    /// The first flight, for its dispersion rate.
    first_flight: FirstFlight,
    /// The first flight's dispersion, read by the current ack.
    dispersion: Option<Dispersion>,
    /// Startup's pacing ceiling once the first flight read the bottleneck's rate.
    startup_ceiling: Option<u64>,
    /// The control connection's RTT, if known: the window's RTT until the flow has a sample.
    hint_rtt: Option<Duration>,
}

impl RateControl {
    /// A controller for datagrams of `datagram` bytes, optionally never pacing above
    /// `rate_limit` bytes per second.
    pub fn new(now: Instant, datagram: usize, rate_limit: Option<u64>) -> RateControl {
        RateControl::with_hint(now, datagram, rate_limit, &StartHint::default())
    }

    /// As [`new`](Self::new), starting from what is known about the path (`UDP-RATE-7`).
    pub fn with_hint(now: Instant, datagram: usize, rate_limit: Option<u64>, hint: &StartHint) -> RateControl {
        let resume = Resume::new(hint, 0);
        RateControl {
            epoch: now,
            datagram: datagram as u64,
            rate_limit: rate_limit.map(|r| r.max(1)),
            phase: Phase::Startup,
            cycle_index: 0,
            cycle_start: now,
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            app_limited_until: 0,
            sample: None,
            ack_delivered: 0,
            resolved: 0,
            lost: 0,
            recent_loss: 0.0,
            round_resolved: 0,
            round_lost: 0,
            round: 0,
            next_round_delivered: 0,
            round_min_rtt: None,
            clean_acked: 0,
            clean_lost: 0,
            bw: WindowedFilter::new(Better::Max, BW_WINDOW_ROUNDS),
            min_rtt: WindowedFilter::new(Better::Min, MIN_RTT_WINDOW.as_nanos() as u64),
            ack_aggregation: WindowedFilter::new(Better::Max, BW_WINDOW_ROUNDS),
            loss_rate: None,
            bw_cap: None,
            queue_rounds: 0,
            backoffs: 0,
            queue_share: 0.0,
            competing: false,
            last_queue_rtt: None,
            last_rate_sample: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            startup_queued: 0,
            startup_lost: 0,
            startup_resolved: 0,
            resume,
            jumped: resume.floor().is_some(),
            first_flight: FirstFlight::default(),
            dispersion: None,
            startup_ceiling: None,
            hint_rtt: hint.rtt,
        }
    }

    /// The datagram size changed (path MTU discovery).
    pub fn set_datagram(&mut self, datagram: usize) {
        self.datagram = datagram as u64;
    }

    /// A packet of `bytes` is being sent with `in_flight` bytes already in flight; returns what
    /// to keep with it for [`on_delivered`](Self::on_delivered) and
    /// [`on_resolved`](Self::on_resolved).
    pub fn on_send(&mut self, now: Instant, in_flight: u64, bytes: u64) -> SendState {
        self.first_flight.on_send(now, bytes);
        if in_flight == 0 {
            // Nothing in flight: the next sample's intervals start now, not at the last ack.
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        SendState {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            sent_time: now,
            app_limited: self.app_limited_until > self.delivered,
            clean: self.phase == Phase::Cruise && self.pacing_gain() < 1.0,
            resolved: self.resolved,
            lost: self.lost,
        }
    }

    /// The sender has nothing to send although the window would allow it: rate samples of
    /// what is in flight now are marked app-limited.
    pub fn on_app_limited(&mut self, in_flight: u64) {
        self.app_limited_until = (self.delivered + in_flight).max(1);
    }

    /// An RTT sample (ack delay already subtracted).
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        let rtt = rtt.max(Duration::from_micros(1));
        if self.min_rtt().is_none() {
            // This sample's ack ends the first round at once: the jump's packets go out in
            // the round after.
            self.resume.on_first_rtt(rtt, self.round + 1);
            self.jumped |= self.resume.floor().is_some();
        }
        self.min_rtt.update(rtt.as_nanos() as u64, self.nanos(now));
        self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
        if self.phase == Phase::Startup {
            // Leave Startup as soon as a queue builds, before it overflows.
            let queued = self.min_rtt().is_some_and(|m| rtt > queue_threshold(m));
            self.startup_queued = if queued { self.startup_queued + 1 } else { 0 };
            if self.startup_queued >= STARTUP_QUEUED_SAMPLES {
                self.enter_drain();
            }
        }
    }

    /// The receiver reported a new largest packet, sent with `state`: `delivered` bytes in
    /// all were sent up to and including it (and have now arrived or been lost). The receiver
    /// opened it `ack_delay` before sending the ack, as the ack says.
    pub fn on_delivered(&mut self, now: Instant, delivered: u64, state: &SendState, ack_delay: Duration) {
        if let Some(d) = self.first_flight.on_ack(now, ack_delay, delivered, self.datagram) {
            self.dispersion = Some(d);
        }
        if delivered <= self.delivered {
            return;
        }
        self.ack_delivered += delivered - self.delivered;
        self.delivered = delivered;
        self.delivered_time = now;
        self.sample = Some(*state);
        self.first_sent_time = state.sent_time;
    }

    /// The fate of a packet of `bytes` sent with `state` is known: acknowledged or lost.
    pub fn on_resolved(&mut self, bytes: u64, lost: bool, state: &SendState) {
        self.resolved += bytes;
        self.round_resolved += bytes;
        if lost {
            self.lost += bytes;
            self.round_lost += bytes;
        }
        if state.clean {
            if lost {
                self.clean_lost += bytes;
            } else {
                self.clean_acked += bytes;
            }
        }
    }

    /// The ack being processed is done and `in_flight` bytes remain in flight: takes the
    /// rate sample and moves the phases on.
    pub fn on_ack_end(&mut self, now: Instant, in_flight: u64) {
        let acked = std::mem::take(&mut self.ack_delivered);
        if let Some(state) = self.sample.take() {
            let round_start = state.delivered >= self.next_round_delivered;
            if round_start {
                self.next_round_delivered = self.delivered;
                self.round += 1;
            }
            self.take_rate_sample(&state);
            if acked > 0 {
                self.ack_aggregation.update(acked, self.round);
            }
            if round_start {
                self.on_round_end(now);
            }
        }
        if let Some(d) = self.dispersion.take() {
            self.jump_to_dispersion(d);
        }
        self.update_phase(now, in_flight);
    }

    /// The pacing rate in bytes per second.
    pub fn pacing_rate(&self) -> u64 {
        let rate = (self.bandwidth() as f64 * self.pacing_gain()) as u64;
        let rate = match self.startup_ceiling {
            Some(ceiling) if self.phase == Phase::Startup => rate.min(ceiling),
            _ => rate,
        };
        let rate = rate.max(self.datagram);
        self.rate_limit.map_or(rate, |l| rate.min(l))
    }

    /// The in-flight cap in bytes (`UDP-RATE-5`).
    pub fn window(&self) -> u64 {
        let floor = MIN_WINDOW_DATAGRAMS * self.datagram;
        // A jump validated by the control connection's RTT may fill the pipe before a sample.
        let Some(min_rtt) = self.min_rtt().or(self.resume.floor().and(self.hint_rtt)) else { return floor };
        // While competing, the pipe to keep full includes the other flow's standing queue.
        let rtt = if self.competing { self.last_queue_rtt.map_or(min_rtt, |q| q.max(min_rtt)) } else { min_rtt };
        let bdp = self.bandwidth() as f64 * rtt.as_secs_f64();
        // Past Startup, room for one lost ack on top: when an ack is lost, the next one comes
        // up to ACK_EVERY datagrams later, and on a short RTT 2 x BDP plus one bulk does not
        // cover that gap, so the sender would stall until a timer. Startup keeps one bulk: it
        // fills its window, and more on top would overflow a queue of one BDP.
        let bulk = self.ack_aggregation.get().unwrap_or(0);
        let lost_ack = match self.phase {
            Phase::Startup => 0,
            _ => bulk.min(u64::from(ACK_EVERY) * self.datagram),
        };
        let window = (WINDOW_GAIN * bdp) as u64 + bulk + lost_ack;
        window.max(floor)
    }

    /// The current bottleneck-rate estimate in bytes per second.
    pub fn bottleneck_rate(&self) -> u64 {
        self.bandwidth()
    }

    /// The windowed minimum RTT, once there is a sample.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.get().map(Duration::from_nanos)
    }

    /// The estimated random (non-congestion) loss rate, once measured.
    pub fn loss_rate(&self) -> Option<f64> {
        self.loss_rate
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// What to remember about the path for the next flow to the same peer: the bottleneck
    /// estimate once Startup is over (`UDP-RATE-7`).
    pub fn path_estimate(&self) -> Option<PathEstimate> {
        let min_rtt = self.min_rtt()?;
        let rate = self.bw.get()?;
        (self.phase != Phase::Startup && !self.competing).then_some(PathEstimate { rate, min_rtt })
    }

    /// Whether Startup paces at a remembered rate not yet validated by the path.
    pub fn resuming(&self) -> bool {
        self.phase == Phase::Startup && self.resume.floor().is_some()
    }

    /// Whether Startup jumped to a remembered rate, however the jump ended.
    pub fn jumped(&self) -> bool {
        self.jumped
    }

    /// Whether delay back-off is suspended because another flow keeps the queue standing.
    pub fn competing(&self) -> bool {
        self.competing
    }

    /// Round trips counted so far.
    pub fn round(&self) -> u64 {
        self.round
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn pacing_gain(&self) -> f64 {
        match self.phase {
            // A jump paces at the remembered share itself (careful resume's paced jump).
            Phase::Startup if self.resume.floor().is_some() => 1.0,
            Phase::Startup => STARTUP_GAIN,
            Phase::Drain => 1.0 / STARTUP_GAIN,
            Phase::Cruise => self.cycle()[self.cycle_index % self.cycle().len()],
        }
    }

    fn cycle(&self) -> &'static [f64] {
        if self.competing {
            &COMPETE_CYCLE
        } else {
            &CYCLE
        }
    }

    /// The estimate used for pacing and the window.
    fn bandwidth(&self) -> u64 {
        let rtt = self.min_rtt().unwrap_or(INITIAL_RTT).max(Duration::from_micros(10));
        let initial = (MIN_WINDOW_DATAGRAMS * self.datagram) as f64 / rtt.as_secs_f64();
        let measured = self.bw.get().unwrap_or(0);
        let bw = match self.phase {
            // Until the pipe is known to be full, never pace below the initial window per RTT.
            Phase::Startup => measured.max(initial as u64).max(self.resume.floor().unwrap_or(0)),
            _ => measured,
        };
        self.bw_cap.map_or(bw, |cap| bw.min(cap)).max(self.datagram)
    }

    fn take_rate_sample(&mut self, state: &SendState) {
        let send_elapsed = state.sent_time.saturating_duration_since(state.first_sent_time);
        let ack_elapsed = self.delivered_time.saturating_duration_since(state.delivered_time);
        let interval = send_elapsed.max(ack_elapsed);
        // Intervals shorter than the minimum RTT come from ack compression: no sample.
        if interval.is_zero() || self.min_rtt().is_some_and(|m| interval < m) {
            return;
        }
        let bytes = self.delivered - state.delivered;
        let rate = bytes as f64 / interval.as_secs_f64() * self.excess_loss_factor(state);
        let rate = rate as u64;
        self.last_rate_sample = rate;
        if !state.app_limited || self.bw.get().is_none_or(|max| rate >= max) {
            self.bw.update(rate, self.round);
        }
    }

    /// `(1 - f) / (1 - p)`, at most 1: the share of what passed that used the link, with `f`
    /// the loss rate of packets resolved while the sample's packet was out (or recently, if
    /// too few were), `p` the random loss rate.
    fn excess_loss_factor(&self, state: &SendState) -> f64 {
        let resolved = self.resolved - state.resolved;
        let f = if resolved >= LOSS_MIN_DATAGRAMS * self.datagram {
            // The worse of the two, so that a burst of congestion drops counts at once.
            ((self.lost - state.lost) as f64 / resolved as f64).max(self.recent_loss)
        } else {
            self.recent_loss
        };
        let p = self.loss_rate.unwrap_or(0.0).min(MAX_LOSS_COMPENSATION);
        ((1.0 - f) / (1.0 - p)).clamp(0.0, 1.0)
    }

    fn on_round_end(&mut self, now: Instant) {
        let queue = self.standing_queue();
        tracing::trace!(
            round = self.round,
            phase = ?self.phase,
            gain = self.pacing_gain(),
            bw = self.bw.get().unwrap_or(0),
            cap = ?self.bw_cap,
            estimate = self.bandwidth(),
            random_loss = ?self.loss_rate,
            recent_loss = self.recent_loss,
            round_lost = self.round_lost,
            round_resolved = self.round_resolved,
            min_rtt = ?self.min_rtt(),
            round_min_rtt = ?self.round_min_rtt,
            queue,
            competing = self.competing,
            "round end"
        );
        self.update_loss_rate(queue);
        match self.phase {
            Phase::Startup => {
                if self.resume.on_round_end(self.round, queue) {
                    // Safe retreat: the jump built a queue; drain it and go on from what the
                    // path delivered.
                    self.enter_drain();
                    self.finish_round();
                    return;
                }
                self.check_startup_loss();
                self.check_ceiling();
                self.check_full_pipe(queue);
            }
            Phase::Drain => {}
            Phase::Cruise => self.check_queue(now, queue),
        }
        self.finish_round();
    }

    /// Folds the round's loss into the recent loss rate and starts the next round's counts.
    fn finish_round(&mut self) {
        self.round_min_rtt = None;
        if self.round_resolved >= LOSS_MIN_DATAGRAMS * self.datagram {
            let f = self.round_lost as f64 / self.round_resolved as f64;
            self.recent_loss += (f - self.recent_loss) * RECENT_LOSS_WEIGHT;
        }
        self.round_resolved = 0;
        self.round_lost = 0;
    }

    /// Whether the round just ended saw only inflated RTTs.
    fn standing_queue(&self) -> bool {
        match (self.round_min_rtt, self.min_rtt()) {
            (Some(round), Some(min)) => round > queue_threshold(min),
            _ => false,
        }
    }

    /// Folds the loss rate of clean packets resolved since the last update into the
    /// random-loss estimate once there are enough of them, and forgets them on a round with a
    /// standing queue; a loss rate far above the estimate (congestion) counts only as a little
    /// more.
    fn update_loss_rate(&mut self, queue: bool) {
        let total = self.clean_acked + self.clean_lost;
        if queue {
            (self.clean_acked, self.clean_lost) = (0, 0);
            return;
        }
        if total < CLEAN_MIN_DATAGRAMS * self.datagram {
            return;
        }
        let f = self.clean_lost as f64 / total as f64;
        (self.clean_acked, self.clean_lost) = (0, 0);
        self.loss_rate = Some(match self.loss_rate {
            None => f,
            Some(p) => {
                // Far above the estimate is mostly congestion: it may pull the estimate up
                // only a little (so that a true rise is still followed).
                let n = total as f64 / self.datagram as f64;
                let sigma = (p.max(0.001) * (1.0 - p) / n).sqrt();
                let f = f.min(p + (3.0 * sigma).max(0.02));
                p + (f - p) * LOSS_EWMA_WEIGHT
            }
        });
    }

    /// Leaves Startup when a round loses clearly more than Startup did so far: the queue
    /// overflows (random loss stays at its rate, congestion loss jumps).
    fn check_startup_loss(&mut self) {
        let (lost, resolved) = (self.round_lost, self.round_resolved);
        if resolved < LOSS_MIN_DATAGRAMS * self.datagram {
            return;
        }
        if self.startup_resolved < STARTUP_LOSS_BASE_DATAGRAMS * self.datagram {
            // Too little seen for a base rate to compare with.
            self.startup_lost += lost;
            self.startup_resolved += resolved;
            return;
        }
        let base = self.startup_lost as f64 / self.startup_resolved as f64;
        let f = lost as f64 / resolved as f64;
        let n = resolved as f64 / self.datagram as f64;
        let sigma = (base.max(0.001) * (1.0 - base) / n).sqrt();
        if lost >= STARTUP_LOSS_DATAGRAMS * self.datagram && f > base + (3.0 * sigma).max(0.05) {
            self.enter_drain();
            return;
        }
        self.startup_lost += lost;
        self.startup_resolved += resolved;
    }

    /// Startup is over. Its loss rate (before any round that overflowed) is the first
    /// estimate of random loss: later rounds losing far more are congestion, not a new rate.
    fn enter_drain(&mut self) {
        if self.phase != Phase::Startup {
            return;
        }
        self.phase = Phase::Drain;
        self.resume = Resume::Off;
        if self.loss_rate.is_none() && self.startup_resolved >= LOSS_MIN_DATAGRAMS * self.datagram {
            self.loss_rate = Some(self.startup_lost as f64 / self.startup_resolved as f64);
        }
    }

    /// `UDP-RATE-10`: a cold Startup jumps to half the first flight's dispersion rate, as a
    /// resumed one does (validated the same way), when that is above its own pacing.
    /// When it read the bottleneck's rate, Startup paces at most a quarter above it from then
    /// on, so that the queue it builds on leaving grows slowly enough to be seen before it
    /// overflows, unless the path delivers at that ceiling ([`check_ceiling`](Self::check_ceiling)).
    /// (A remembered rate sets no ceiling: it may be another day's, and too low.)
    fn jump_to_dispersion(&mut self, d: Dispersion) {
        tracing::debug!(
            rate = d.rate,
            at_bottleneck = d.at_bottleneck,
            pacing = self.pacing_rate(),
            "first-flight dispersion"
        );
        if self.phase != Phase::Startup || self.resume != Resume::Off {
            return;
        }
        let jump = Resume::jump(d.rate, self.round);
        if jump.floor().is_some_and(|f| f > self.pacing_rate()) {
            self.resume = jump;
            if d.at_bottleneck {
                self.startup_ceiling = Some((d.rate as f64 * STARTUP_CEILING) as u64);
            }
        }
    }

    /// Lifts Startup's ceiling once the path delivers at it: the first flight read low (its
    /// arrivals spread by something other than the bottleneck), and the bottleneck is higher.
    fn check_ceiling(&mut self) {
        if let Some(ceiling) = self.startup_ceiling {
            if self.bw.get().unwrap_or(0) as f64 >= ceiling as f64 * CEILING_REACHED {
                self.startup_ceiling = None;
            }
        }
    }

    fn check_full_pipe(&mut self, queue: bool) {
        let bw = self.bw.get().unwrap_or(0);
        if bw as f64 >= self.full_bw as f64 * STARTUP_GROWTH && !queue {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        if self.full_bw_rounds >= 3 {
            self.enter_drain();
        }
    }

    /// Backs off on a standing queue; lifts the cap again while there is none. A queue that
    /// stands through round after round of backing off is not this flow's: it is given up
    /// (competing) until the queue clears again (`UDP-RATE-4`).
    fn check_queue(&mut self, now: Instant, queue: bool) {
        // A queue that shrinks as the flow backs off is its own.
        let round_rtt = self.round_min_rtt.filter(|_| queue);
        let shrinking = matches!((round_rtt, self.last_queue_rtt), (Some(r), Some(l)) if r < l.mul_f64(QUEUE_SHRINK));
        self.last_queue_rtt = round_rtt;
        // Sending clearly more than gets through fills the queue itself.
        let filling = self.last_rate_sample < (self.bandwidth() as f64 * SELF_FILLING) as u64;
        let foreign = queue && !shrinking && !filling;
        self.queue_share += (f64::from(u8::from(foreign)) - self.queue_share) * QUEUE_SHARE_WEIGHT;
        if self.competing {
            if self.queue_share >= COMPETE_EXIT {
                return;
            }
            self.competing = false;
            self.cycle_index = 2;
        } else if self.queue_share > COMPETE_ENTER && self.backoffs >= COMPETE_BACKOFFS {
            self.competing = true;
            self.bw_cap = None;
            self.queue_rounds = 0;
            self.cycle_index = 0;
            self.cycle_start = now;
            return;
        }
        if !queue {
            self.queue_rounds = 0;
            self.backoffs = 0;
            if let Some(cap) = self.bw_cap {
                let rtt = self.min_rtt().unwrap_or(INITIAL_RTT).as_secs_f64().max(1e-5);
                let step = (cap / 64).max((4.0 * self.datagram as f64 / rtt) as u64);
                let cap = cap + step;
                self.bw_cap = (cap < self.bw.get().unwrap_or(0)).then_some(cap);
            }
            return;
        }
        self.queue_rounds += 1;
        if self.queue_rounds >= QUEUE_ROUNDS {
            self.queue_rounds = 0;
            self.backoffs += 1;
            self.bw_cap = Some((self.bandwidth() as f64 * BACKOFF) as u64);
            self.cycle_index = 1;
            self.cycle_start = now;
        }
    }

    fn update_phase(&mut self, now: Instant, in_flight: u64) {
        let Some(min_rtt) = self.min_rtt() else { return };
        let bdp = (self.bandwidth() as f64 * min_rtt.as_secs_f64()) as u64;
        match self.phase {
            Phase::Startup => {}
            Phase::Drain => {
                if in_flight <= bdp {
                    self.phase = Phase::Cruise;
                    // Start in a steady phase; which one depends on the history so that
                    // flows starting together do not probe in lockstep.
                    self.cycle_index = 2 + (self.round % 6) as usize;
                    self.cycle_start = now;
                }
            }
            Phase::Cruise => {
                let elapsed = now.saturating_duration_since(self.cycle_start);
                let drained = self.pacing_gain() < 1.0 && in_flight <= bdp;
                if elapsed > min_rtt || drained {
                    self.cycle_index = (self.cycle_index + 1) % self.cycle().len();
                    self.cycle_start = now;
                }
            }
        }
    }
}

/// RTTs above this, for a minimum RTT of `min_rtt`, mean a queue is standing.
fn queue_threshold(min_rtt: Duration) -> Duration {
    min_rtt.mul_f64(QUEUE_FACTOR) + QUEUE_SLACK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_grows_then_settles_in_cruise() {
        // A 10 MB/s link with 20 ms RTT, fed with perfect samples.
        let t0 = Instant::now();
        let mut rc = RateControl::new(t0, 1200, None);
        let rtt = Duration::from_millis(20);
        let link = 10_000_000.0;
        let mut now = t0;
        let mut delivered = 0;
        for _ in 0..40 {
            let send_rate = (rc.pacing_rate() as f64).min(link);
            let bytes = (send_rate * rtt.as_secs_f64()) as u64;
            let st = rc.on_send(now, 0, 0);
            now += rtt;
            rc.on_rtt(now, rtt);
            delivered += bytes;
            rc.on_delivered(now, delivered, &st, Duration::ZERO);
            rc.on_resolved(bytes, false, &st);
            rc.on_ack_end(now, 0);
        }
        assert_eq!(rc.phase(), Phase::Cruise);
        let bw = rc.bottleneck_rate() as f64;
        assert!((bw - link).abs() < link * 0.05, "estimate {bw}");
    }

    /// A fluid bottleneck: `available` bytes/s are left to the flow, its own excess queues
    /// (`backlog`, seconds of delay), and another flow may keep `foreign` delay standing.
    struct Bottleneck {
        now: Instant,
        delivered: u64,
        base_rtt: Duration,
        backlog: f64,
    }

    impl Bottleneck {
        fn new(now: Instant) -> Bottleneck {
            Bottleneck { now, delivered: 0, base_rtt: Duration::from_millis(20), backlog: 0.0 }
        }

        /// One round trip of sending at the controller's rate; returns whether it competes.
        fn round(&mut self, rc: &mut RateControl, available: f64, foreign: Duration) -> bool {
            let rtt = self.base_rtt + foreign + Duration::from_secs_f64(self.backlog);
            let secs = rtt.as_secs_f64();
            let send = (rc.pacing_rate() as f64).min(rc.window() as f64 / secs);
            let drained = self.backlog * available;
            self.backlog = ((send - available) * secs / available + self.backlog).max(0.0);
            let rate = if self.backlog > 0.0 { available } else { (send + drained / secs).min(available) };
            let st = rc.on_send(self.now, 0, 0);
            self.now += rtt;
            rc.on_rtt(self.now, rtt);
            let bytes = (rate * secs) as u64;
            self.delivered += bytes;
            rc.on_delivered(self.now, self.delivered, &st, Duration::ZERO);
            rc.on_resolved(bytes, false, &st);
            rc.on_ack_end(self.now, 0);
            rc.competing()
        }
    }

    fn cruising(link: f64) -> (RateControl, Bottleneck) {
        let t0 = Instant::now();
        let mut rc = RateControl::new(t0, 1200, None);
        let mut b = Bottleneck::new(t0);
        for _ in 0..40 {
            b.round(&mut rc, link, Duration::ZERO);
        }
        assert_eq!(rc.phase(), Phase::Cruise);
        (rc, b)
    }

    /// Rounds until one delivers at least 90% of `link`, from a start with `hint`.
    fn rounds_to_90_percent(link: f64, rtt: Duration, hint: &StartHint) -> (usize, RateControl, Bottleneck) {
        let t0 = Instant::now();
        let mut rc = RateControl::with_hint(t0, 1200, None, hint);
        let mut b = Bottleneck::new(t0);
        b.base_rtt = rtt;
        let reached = forty_rounds(&mut rc, &mut b, link);
        (reached.expect("never reached 90% of the link"), rc, b)
    }

    /// Forty rounds on `link`; returns the first that delivered at least 90% of it.
    fn forty_rounds(rc: &mut RateControl, b: &mut Bottleneck, link: f64) -> Option<usize> {
        let mut reached = None;
        for i in 1..=40 {
            let before = (b.delivered, b.now);
            b.round(rc, link, Duration::ZERO);
            let rate = (b.delivered - before.0) as f64 / (b.now - before.1).as_secs_f64();
            if rate >= 0.9 * link && reached.is_none() {
                reached = Some(i);
            }
        }
        reached
    }

    /// A first flight of 32 datagrams sent 100 us apart whose two acks read `reading` bytes
    /// per second, `rtt` after it left; then rounds on a fluid link of `link`. Returns the
    /// round in which delivery first reached 90% of the link.
    fn after_a_first_flight_reading(reading: f64, link: f64, rtt: Duration) -> (Option<usize>, RateControl) {
        let t0 = Instant::now();
        let mut rc = RateControl::new(t0, 1200, None);
        let gap = Duration::from_micros(100);
        let states: Vec<_> = (0..32u32).map(|i| rc.on_send(t0 + gap * i, 1200 * u64::from(i), 1200)).collect();
        let first = t0 + rtt;
        rc.on_delivered(first, 1200, &states[0], Duration::ZERO);
        rc.on_rtt(first, rtt);
        rc.on_resolved(1200, false, &states[0]);
        rc.on_ack_end(first, 31 * 1200);
        let last = first + Duration::from_secs_f64(31.0 * 1200.0 / reading);
        rc.on_delivered(last, 32 * 1200, &states[31], Duration::ZERO);
        rc.on_resolved(31 * 1200, false, &states[31]);
        rc.on_ack_end(last, 0);
        assert!(rc.resuming(), "the reading is far above the initial window's rate: a jump");
        let mut b = Bottleneck::new(last);
        b.base_rtt = rtt;
        b.delivered = 32 * 1200;
        (forty_rounds(&mut rc, &mut b, link), rc)
    }

    #[test]
    fn a_first_flight_that_read_the_bottleneck_fills_it_in_a_few_rounds() {
        // UDP-RATE-10: the flight left at 12.4 MB/s and arrived at 5 MB/s, the link's rate.
        let (reached, rc) = after_a_first_flight_reading(5e6, 5e6, Duration::from_millis(100));
        assert!(reached.is_some_and(|r| r <= 4), "90% after {reached:?} rounds");
        let bw = rc.bottleneck_rate() as f64;
        assert!((bw - 5e6).abs() < 0.05 * 5e6, "estimate {bw}");
    }

    #[test]
    fn a_first_flight_that_read_low_does_not_hold_startup_below_the_link() {
        // The flight's arrivals spread to 10 MB/s on a 100 MB/s link (a receiver's timer, say):
        // Startup's ceiling of 12.5 MB/s is delivered in full, so it is lifted.
        let (reached, rc) = after_a_first_flight_reading(10e6, 100e6, Duration::from_millis(100));
        assert!(reached.is_some_and(|r| r <= 8), "90% after {reached:?} rounds");
        let bw = rc.bottleneck_rate() as f64;
        assert!((bw - 100e6).abs() < 0.05 * 100e6, "estimate {bw}");
    }

    fn remembered(rate: u64, rtt: Duration) -> StartHint {
        StartHint { rtt: Some(rtt), remembered: Some(PathEstimate { rate, min_rtt: rtt }) }
    }

    #[test]
    fn resumed_start_fills_a_long_fat_pipe_in_three_round_trips() {
        // UDP-RATE-7: 800 Mbit/s, 100 ms (a BDP of 8300 datagrams).
        let (link, rtt) = (100e6, Duration::from_millis(100));
        let (cold, ..) = rounds_to_90_percent(link, rtt, &StartHint::default());
        let (warm, rc, b) = rounds_to_90_percent(link, rtt, &remembered(100_000_000, rtt));
        assert!(warm <= 3, "resumed start took {warm} rounds");
        assert!(cold > warm + 2, "a cold start took {cold} rounds, resumed {warm}");
        assert_eq!(rc.phase(), Phase::Cruise);
        assert!(b.backlog < 0.01, "queue left {:.1} ms", b.backlog * 1e3);
        assert!(rc.path_estimate().is_some_and(|e| (e.rate as f64 - link).abs() < 0.05 * link));
    }

    #[test]
    fn resumed_start_retreats_when_the_path_got_slower() {
        // The remembered rate is 4x what the link carries now: the jump builds a queue.
        let (link, rtt) = (10e6, Duration::from_millis(50));
        let (_, rc, b) = rounds_to_90_percent(link, rtt, &remembered(40_000_000, rtt));
        assert_eq!(rc.phase(), Phase::Cruise);
        let bw = rc.bottleneck_rate() as f64;
        assert!((bw - link).abs() < 0.1 * link, "estimate {bw}");
        assert!(b.backlog < 0.01, "queue left {:.1} ms", b.backlog * 1e3);
    }

    #[test]
    fn rejects_a_remembered_rate_the_control_rtt_contradicts() {
        // Measured at 10 ms; the control connection now sees 100 ms: another path.
        let hint =
            StartHint { rtt: Some(Duration::from_millis(100)), ..remembered(100_000_000, Duration::from_millis(10)) };
        let rc = RateControl::with_hint(Instant::now(), 1200, None, &hint);
        assert!(!rc.resuming());
        assert_eq!(rc.window(), MIN_WINDOW_DATAGRAMS * 1200);
    }

    #[test]
    fn a_queue_of_its_own_is_backed_off_not_competed_with() {
        // The link halves: the flow overfills the queue, and backing off drains it.
        let (mut rc, mut b) = cruising(10e6);
        for i in 0..100 {
            assert!(!b.round(&mut rc, 5e6, Duration::ZERO), "competing in round {i}");
        }
        let bw = rc.bottleneck_rate() as f64;
        assert!((4e6..=5.5e6).contains(&bw), "estimate {bw}");
        assert!(b.backlog < 0.005, "queue left {:.1} ms", b.backlog * 1e3);
    }

    #[test]
    fn short_queue_episodes_that_clear_are_not_competed_with() {
        // Noisy samples on a short RTT put the estimate a little above the link: a queue builds
        // for a few rounds, the back-off clears it, and it builds again. Three rounds in eight
        // with a growing queue is more than the share that suggests another flow, but the
        // queue clears after every back-off: it is the flow's own (UDP-RATE-4).
        let link = 10e6;
        let (mut rc, mut b) = cruising(link);
        for i in 0..400 {
            let foreign = match i % 8 {
                0 => Duration::from_millis(8),
                1 => Duration::from_millis(12),
                2 => Duration::from_millis(16),
                _ => Duration::ZERO,
            };
            assert!(!b.round(&mut rc, link, foreign), "competing in round {i}");
        }
    }

    #[test]
    fn a_queue_another_flow_keeps_is_competed_with() {
        // Another flow keeps 20 ms of queue standing whatever this one does, and leaves it
        // half the link: backing off would only hand it the rest.
        let link = 10e6;
        let (mut rc, mut b) = cruising(link);
        let foreign = Duration::from_millis(20);
        let entered = (0..60).position(|_| b.round(&mut rc, link / 2.0, foreign));
        assert!(entered.is_some(), "never competed");
        for _ in 0..100 {
            assert!(b.round(&mut rc, link / 2.0, foreign), "stopped competing with the queue standing");
        }
        let bw = rc.bottleneck_rate() as f64;
        assert!(bw >= 0.4 * link, "estimate {bw} gave the link away");
        // The other flow leaves: the queue clears and delay back-off resumes.
        let left = (0..60).position(|_| !b.round(&mut rc, link, Duration::ZERO));
        assert!(left.is_some(), "still competing with no queue");
        for _ in 0..40 {
            b.round(&mut rc, link, Duration::ZERO);
        }
        let bw = rc.bottleneck_rate() as f64;
        assert!(bw >= 0.9 * link, "estimate {bw} after the other flow left");
    }
}
