//! Pure, I/O-free model of one direction of an emulated link.
//!
//! A packet offered to [`LinkModel::on_packet`] at time `now` (nanoseconds on
//! any monotonic clock) goes through, in order:
//!
//! 1. the drop-tail queue in front of the rate limiter (`queue_pkts` packets,
//!    counting the packet being serialised); a full queue drops it
//!    ([`Verdict::DropQueue`]);
//! 2. the serialiser at `rate_bps` (0 = unlimited); the packet leaves the
//!    serialiser at `tx_end`;
//! 3. the wire, where it may be lost: independent random loss and/or the
//!    Gilbert-Elliott two-state burst model ([`Verdict::DropLoss`]). A lost
//!    packet has still used link time, as on a real lossy wire;
//! 4. the propagation delay: it is due at the far end at `tx_end + delay`;
//!    with probability `reorder` it is held back `reorder_extra_ns` longer,
//!    so that packets behind it overtake it;
//! 5. with probability `dup` a copy is queued right behind it (it uses its
//!    own queue slot and link time, and is due one serialisation later).
//!
//! Two impairments serve the virtual-time tests of the xfer library, which
//! include this file: packets larger than `mtu` are lost before the queue,
//! and everything leaving the serialiser inside the `outage` window is lost.
//!
//! This one file is the link model of both linkem and the xfer simulation
//! (`tests/it/udp_flow_sim.rs` includes it by path), so it
//! uses nothing but `core`/`std`.
//!
//! No allocation happens after construction.

/// Small, fast, seedable PRNG (xorshift64*), good enough for loss decisions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed so that small seeds give unrelated streams
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (p <= 0 never draws a number).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// Gilbert-Elliott parameters: per-packet transition probabilities and the
/// loss probability in each state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeParams {
    /// P(good -> bad) per packet.
    pub p: f64,
    /// P(bad -> good) per packet.
    pub r: f64,
    /// Loss probability while bad (1 - h in the usual notation).
    pub loss_bad: f64,
    /// Loss probability while good (1 - k).
    pub loss_good: f64,
}

impl GeParams {
    /// Bursts that drop every packet while bad, averaging `avg_loss` overall,
    /// with a mean burst (bad-state sojourn) of `mean_burst` packets.
    pub fn from_burst(avg_loss: f64, mean_burst: f64) -> Self {
        assert!(avg_loss > 0.0 && avg_loss < 1.0, "average loss must be in (0,1)");
        assert!(mean_burst >= 1.0, "mean burst must be >= 1 packet");
        let r = 1.0 / mean_burst;
        // stationary P(bad) = p / (p + r) = avg_loss
        let p = avg_loss * r / (1.0 - avg_loss);
        GeParams { p, r, loss_bad: 1.0, loss_good: 0.0 }
    }

    /// Long-run loss rate of the chain.
    pub fn average_loss(&self) -> f64 {
        let pb = self.p / (self.p + self.r);
        pb * self.loss_bad + (1.0 - pb) * self.loss_good
    }
}

/// Configuration of one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct DirConfig {
    /// One-way propagation delay.
    pub delay_ns: u64,
    /// Bits per second; 0 = unlimited (no serialisation, no queue limit).
    pub rate_bps: u64,
    /// Drop-tail capacity in packets, counting the one being serialised.
    pub queue_pkts: usize,
    /// Independent random loss probability.
    pub loss: f64,
    /// Optional Gilbert-Elliott burst loss (applied in addition to `loss`).
    pub ge: Option<GeParams>,
    /// Probability that a packet is held back `reorder_extra_ns`.
    pub reorder: f64,
    pub reorder_extra_ns: u64,
    /// Probability that a packet is duplicated.
    pub dup: f64,
    /// Larger packets are lost (a path MTU); 0 = no limit.
    pub mtu: usize,
    /// Window `[start, end)` of time in which every packet on the wire is lost.
    pub outage: Option<(u64, u64)>,
}

impl Default for DirConfig {
    fn default() -> Self {
        DirConfig {
            delay_ns: 0,
            rate_bps: 0,
            queue_pkts: 1000,
            loss: 0.0,
            ge: None,
            reorder: 0.0,
            reorder_extra_ns: 1_000_000,
            dup: 0.0,
            mtu: 0,
            outage: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    DropLoss,
    DropQueue,
    Deliver {
        /// When the packet is due at the far end.
        due: u64,
        /// When the duplicate, if any, is due.
        dup_due: Option<u64>,
        reordered: bool,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    pub offered: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// Fixed-capacity FIFO of u64 (departure times of queued packets).
#[derive(Debug)]
struct Ring {
    buf: Vec<u64>,
    head: usize,
    len: usize,
}

impl Ring {
    fn with_capacity(n: usize) -> Self {
        Ring { buf: vec![0; n.max(1)], head: 0, len: 0 }
    }
    #[inline]
    fn front(&self) -> Option<u64> {
        (self.len > 0).then(|| self.buf[self.head])
    }
    #[inline]
    fn pop(&mut self) {
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
    }
    #[inline]
    fn push(&mut self, v: u64) {
        debug_assert!(self.len < self.buf.len());
        let i = (self.head + self.len) % self.buf.len();
        self.buf[i] = v;
        self.len += 1;
    }
}

pub struct LinkModel {
    cfg: DirConfig,
    rng: Rng,
    ge_bad: bool,
    /// When the serialiser becomes free.
    busy_until: u64,
    /// Remainder of bit-nanoseconds not yet turned into a whole nanosecond,
    /// so that rate accounting is exact over any number of packets.
    frac: u64,
    /// Departure times of packets admitted and not yet fully serialised.
    backlog: Ring,
    pub stats: ModelStats,
}

impl LinkModel {
    pub fn new(cfg: DirConfig, seed: u64) -> Self {
        let cap = if cfg.rate_bps == 0 { 1 } else { cfg.queue_pkts.max(1) };
        LinkModel {
            backlog: Ring::with_capacity(cap),
            cfg,
            rng: Rng::new(seed),
            ge_bad: false,
            busy_until: 0,
            frac: 0,
            stats: ModelStats::default(),
        }
    }

    pub fn config(&self) -> &DirConfig {
        &self.cfg
    }

    /// Packets admitted whose serialisation has not finished at `now`.
    pub fn backlog_at(&mut self, now: u64) -> usize {
        while let Some(t) = self.backlog.front() {
            if t <= now {
                self.backlog.pop();
            } else {
                break;
            }
        }
        self.backlog.len
    }

    /// Admit a packet of `len` bytes to the serialiser; returns its departure
    /// time, or None if the drop-tail queue is full.
    #[inline]
    fn admit(&mut self, now: u64, len: usize) -> Option<u64> {
        if self.cfg.rate_bps == 0 {
            return Some(now);
        }
        if self.backlog_at(now) >= self.cfg.queue_pkts.max(1) {
            return None;
        }
        let start = self.busy_until.max(now);
        let bitns = (len as u64) * 8 * 1_000_000_000 + self.frac;
        let ser = bitns / self.cfg.rate_bps;
        self.frac = bitns % self.cfg.rate_bps;
        let end = start + ser;
        self.busy_until = end;
        self.backlog.push(end);
        Some(end)
    }

    #[inline]
    fn lost_on_wire(&mut self, at: u64) -> bool {
        let mut lost = false;
        if let Some(ge) = self.cfg.ge {
            if self.ge_bad {
                if self.rng.chance(ge.r) {
                    self.ge_bad = false;
                }
            } else if self.rng.chance(ge.p) {
                self.ge_bad = true;
            }
            let pl = if self.ge_bad { ge.loss_bad } else { ge.loss_good };
            lost = self.rng.chance(pl);
        }
        // draw even when already lost so that the random stream does not
        // depend on the GE outcome
        let indep = self.rng.chance(self.cfg.loss);
        let dark = self.cfg.outage.is_some_and(|(s, e)| s <= at && at < e);
        lost || indep || dark
    }

    /// Decide the fate of a packet of `len` bytes arriving at `now`.
    #[inline]
    pub fn on_packet(&mut self, now: u64, len: usize) -> Verdict {
        self.stats.offered += 1;
        if self.cfg.mtu > 0 && len > self.cfg.mtu {
            self.stats.dropped_loss += 1;
            return Verdict::DropLoss;
        }
        let Some(tx_end) = self.admit(now, len) else {
            self.stats.dropped_queue += 1;
            return Verdict::DropQueue;
        };
        if self.lost_on_wire(tx_end) {
            self.stats.dropped_loss += 1;
            return Verdict::DropLoss;
        }
        let mut due = tx_end + self.cfg.delay_ns;
        let reordered = self.rng.chance(self.cfg.reorder);
        if reordered {
            due += self.cfg.reorder_extra_ns;
            self.stats.reordered += 1;
        }
        let mut dup_due = None;
        if self.rng.chance(self.cfg.dup) {
            if let Some(end2) = self.admit(now, len) {
                dup_due = Some(end2 + self.cfg.delay_ns);
                self.stats.duplicated += 1;
            }
        }
        self.stats.delivered += 1;
        Verdict::Deliver { due, dup_due, reordered }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg() -> DirConfig {
        DirConfig::default()
    }

    #[test]
    fn unlimited_zero_delay_is_immediate() {
        let mut m = LinkModel::new(cfg(), 1);
        for t in 0..1000 {
            assert_eq!(m.on_packet(t, 1500), Verdict::Deliver { due: t, dup_due: None, reordered: false });
        }
    }

    #[test]
    fn loses_oversize_packets_and_everything_in_an_outage() {
        let mut m = LinkModel::new(DirConfig { mtu: 1500, outage: Some((10, 20)), ..cfg() }, 1);
        assert_eq!(m.on_packet(0, 1501), Verdict::DropLoss);
        assert!(matches!(m.on_packet(0, 1500), Verdict::Deliver { .. }));
        assert_eq!(m.on_packet(10, 100), Verdict::DropLoss);
        assert_eq!(m.on_packet(19, 100), Verdict::DropLoss);
        assert!(matches!(m.on_packet(20, 100), Verdict::Deliver { .. }));
    }

    #[test]
    fn rate_accounting_is_exact() {
        // 10 Mbit/s, 1250-byte packets = 1 ms each; 1000 back to back = 1 s.
        let mut m = LinkModel::new(DirConfig { rate_bps: 10_000_000, queue_pkts: 2000, ..cfg() }, 1);
        let mut last = 0;
        for i in 0..1000u64 {
            match m.on_packet(0, 1250) {
                Verdict::Deliver { due, .. } => {
                    assert_eq!(due, (i + 1) * MS);
                    last = due;
                }
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(last, 1000 * MS);
        // Odd rate: 3 bits/ns-fraction remainders must add up exactly.
        let mut m = LinkModel::new(DirConfig { rate_bps: 7_000_001, queue_pkts: 100_000, ..cfg() }, 1);
        let mut due = 0;
        for _ in 0..10_000 {
            if let Verdict::Deliver { due: d, .. } = m.on_packet(0, 1499) {
                due = d;
            }
        }
        let exact = (10_000u128 * 1499 * 8 * 1_000_000_000) / 7_000_001;
        assert_eq!(due as u128, exact);
    }

    #[test]
    fn rate_idle_link_restarts_at_now() {
        let mut m = LinkModel::new(DirConfig { rate_bps: 8_000_000, delay_ns: 5 * MS, ..cfg() }, 1);
        // 1000 bytes at 8 Mbit = 1 ms
        assert!(matches!(m.on_packet(0, 1000), Verdict::Deliver { due, .. } if due == 6 * MS));
        assert!(matches!(m.on_packet(10 * MS, 1000), Verdict::Deliver { due, .. } if due == 16 * MS));
    }

    #[test]
    fn queue_drops_tail() {
        // 8 Mbit, 1000 B = 1 ms each, queue 10 packets.
        let mut m = LinkModel::new(DirConfig { rate_bps: 8_000_000, queue_pkts: 10, ..cfg() }, 1);
        let mut ok = 0;
        let mut dropped = 0;
        for _ in 0..50 {
            match m.on_packet(0, 1000) {
                Verdict::Deliver { .. } => ok += 1,
                Verdict::DropQueue => dropped += 1,
                v => panic!("{v:?}"),
            }
        }
        assert_eq!((ok, dropped), (10, 40));
        assert_eq!(m.stats.dropped_queue, 40);
        // After 2.5 ms, two packets have left: exactly two more fit.
        let mut ok2 = 0;
        for _ in 0..5 {
            if matches!(m.on_packet(2 * MS + MS / 2, 1000), Verdict::Deliver { .. }) {
                ok2 += 1;
            }
        }
        assert_eq!(ok2, 2);
        assert_eq!(m.backlog_at(2 * MS + MS / 2), 10);
        assert_eq!(m.backlog_at(12 * MS), 0);
    }

    #[test]
    fn queue_sustains_exact_rate() {
        // Offer 2x the link rate for 1 s: delivered ~= rate, rest queue-dropped.
        let mut m = LinkModel::new(DirConfig { rate_bps: 8_000_000, queue_pkts: 20, ..cfg() }, 1);
        let mut delivered = 0u64;
        for i in 0..2000u64 {
            if let Verdict::Deliver { due, .. } = m.on_packet(i * MS / 2, 1000) {
                assert!(due <= 1_021 * MS);
                delivered += 1;
            }
        }
        // 1000 packets/s capacity plus the queue's worth at the end
        assert!((1000..=1021).contains(&delivered), "{delivered}");
    }

    #[test]
    fn loss_statistics_fixed_seed() {
        let mut m = LinkModel::new(DirConfig { loss: 0.01, ..cfg() }, 42);
        let n = 1_000_000;
        for t in 0..n {
            m.on_packet(t, 100);
        }
        let rate = m.stats.dropped_loss as f64 / n as f64;
        assert!((rate - 0.01).abs() < 0.0005, "{rate}");
        assert_eq!(m.stats.dropped_loss + m.stats.delivered, n);
        // determinism: same seed, same outcome
        let mut m2 = LinkModel::new(DirConfig { loss: 0.01, ..cfg() }, 42);
        for t in 0..n {
            m2.on_packet(t, 100);
        }
        assert_eq!(m.stats, m2.stats);
        // a different seed gives a different stream
        let mut m3 = LinkModel::new(DirConfig { loss: 0.01, ..cfg() }, 43);
        for t in 0..n {
            m3.on_packet(t, 100);
        }
        assert_ne!(m.stats.dropped_loss, m3.stats.dropped_loss);
    }

    #[test]
    fn loss_is_independent() {
        // With 10% independent loss, P(loss | previous lost) ~= 10%.
        let mut m = LinkModel::new(DirConfig { loss: 0.1, ..cfg() }, 7);
        let (mut prev, mut both, mut lost) = (false, 0u64, 0u64);
        for t in 0..500_000 {
            let l = m.on_packet(t, 100) == Verdict::DropLoss;
            if l && prev {
                both += 1;
            }
            if l {
                lost += 1;
            }
            prev = l;
        }
        let cond = both as f64 / lost as f64;
        assert!((cond - 0.1).abs() < 0.01, "{cond}");
    }

    #[test]
    fn gilbert_elliott_burst_average() {
        let ge = GeParams::from_burst(0.01, 5.0);
        assert!((ge.average_loss() - 0.01).abs() < 1e-12);
        let mut m = LinkModel::new(DirConfig { ge: Some(ge), ..cfg() }, 9);
        let n = 2_000_000u64;
        let (mut bursts, mut run, mut lost) = (0u64, 0u64, 0u64);
        let mut runs_total = 0u64;
        for t in 0..n {
            if m.on_packet(t, 100) == Verdict::DropLoss {
                lost += 1;
                run += 1;
            } else if run > 0 {
                bursts += 1;
                runs_total += run;
                run = 0;
            }
        }
        let avg = lost as f64 / n as f64;
        assert!((avg - 0.01).abs() < 0.001, "average loss {avg}");
        let mean_burst = runs_total as f64 / bursts as f64;
        assert!((mean_burst - 5.0).abs() < 0.3, "mean burst {mean_burst}");
        // bursty: conditional loss probability far above the average
        assert!(mean_burst > 3.0);
    }

    #[test]
    fn delay_preserves_order() {
        let mut m =
            LinkModel::new(DirConfig { delay_ns: 25 * MS, rate_bps: 100_000_000, queue_pkts: 1000, ..cfg() }, 3);
        let mut last = 0;
        let mut t = 0;
        for i in 0..10_000u64 {
            t += (i * 7919) % 200_000; // irregular arrivals
            match m.on_packet(t, 64 + (i as usize * 13) % 1400) {
                Verdict::Deliver { due, reordered, dup_due } => {
                    assert!(!reordered && dup_due.is_none());
                    assert!(due >= t + 25 * MS);
                    assert!(due > last, "FIFO order");
                    last = due;
                }
                Verdict::DropQueue => {}
                v => panic!("{v:?}"),
            }
        }
    }

    #[test]
    fn reorder_and_dup() {
        let mut m = LinkModel::new(
            DirConfig { delay_ns: 10 * MS, reorder: 0.05, reorder_extra_ns: 2 * MS, dup: 0.02, ..cfg() },
            11,
        );
        let n = 200_000u64;
        let mut dues = Vec::new();
        let mut dups = 0;
        for i in 0..n {
            let now = i * 10_000; // 10 us apart: 200 packets within the extra hold
            match m.on_packet(now, 1000) {
                Verdict::Deliver { due, dup_due, reordered } => {
                    if reordered {
                        assert_eq!(due, now + 12 * MS);
                    } else {
                        assert_eq!(due, now + 10 * MS);
                    }
                    if let Some(d) = dup_due {
                        assert_eq!(d, now + 10 * MS);
                        dups += 1;
                    }
                    dues.push((due, i));
                }
                v => panic!("{v:?}"),
            }
        }
        let r = m.stats.reordered as f64 / n as f64;
        let d = dups as f64 / n as f64;
        assert!((r - 0.05).abs() < 0.003, "reorder {r}");
        assert!((d - 0.02).abs() < 0.002, "dup {d}");
        // in delivery order, sequence numbers go backwards now and then
        dues.sort();
        let inversions = dues.windows(2).filter(|w| w[1].1 < w[0].1).count();
        assert!(inversions > 0);
    }

    #[test]
    fn dup_uses_link_time() {
        // 8 Mbit, 1000 B = 1 ms; always duplicate: copy departs 1 ms later.
        let mut m = LinkModel::new(DirConfig { rate_bps: 8_000_000, queue_pkts: 100, dup: 1.0, ..cfg() }, 1);
        assert_eq!(m.on_packet(0, 1000), Verdict::Deliver { due: MS, dup_due: Some(2 * MS), reordered: false });
        assert_eq!(m.stats.duplicated, 1);
    }

    #[test]
    fn lost_packets_use_link_time() {
        let mut m = LinkModel::new(DirConfig { rate_bps: 8_000_000, loss: 1.0, ..cfg() }, 1);
        assert_eq!(m.on_packet(0, 1000), Verdict::DropLoss);
        let mut m2 = LinkModel::new(DirConfig { rate_bps: 8_000_000, ..cfg() }, 1);
        m2.on_packet(0, 1000);
        // the second model's serialiser is busy until 1 ms, same as the first's
        assert_eq!(m.busy_until, m2.busy_until);
    }
}
