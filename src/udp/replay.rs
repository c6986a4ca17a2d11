//! Replay protection (UDP-REPLAY-1): a sliding window over the packet numbers received on one
//! flow direction, as in IPsec (RFC 4303, section 3.4.3) and WireGuard.
//!
//! The window covers the [`WINDOW`] packet numbers ending at the largest one committed so far.
//! Anything above it is new; anything below it is too old to tell apart from a replay and is
//! refused; inside it, one bit per packet number says whether it was seen. The bits live in a
//! fixed ring indexed by `pn % WINDOW`, so sliding forward clears bits and never allocates.
//!
//! Use: [`ReplayWindow::check`] before opening a datagram (cheap, and a replay costs no AEAD
//! work), [`ReplayWindow::commit`] only after the AEAD opened it, so a forged datagram cannot
//! move the window.

/// Packet numbers tracked below and including the largest one seen.
pub const WINDOW: u64 = 1024;

const WORDS: usize = (WINDOW / 64) as usize;

/// Which packet numbers of one direction of a flow were already accepted.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Largest committed packet number, or `None` before the first commit.
    largest: Option<u64>,
    /// Bit `pn % WINDOW` is set if `pn` is inside the window and was committed.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// True if `pn` may be new: not committed before, and not older than the window.
    pub fn check(&self, pn: u64) -> bool {
        let Some(largest) = self.largest else { return true };
        if pn > largest {
            return true;
        }
        largest - pn < WINDOW && !self.bit(pn)
    }

    /// Records `pn` as received. Call it only for a datagram that passed [`check`](Self::check)
    /// and opened; a `pn` that is too old is ignored.
    pub fn commit(&mut self, pn: u64) {
        match self.largest {
            None => {
                self.largest = Some(pn);
            }
            Some(largest) if pn > largest => {
                self.clear_after(largest, pn);
                self.largest = Some(pn);
            }
            Some(largest) if largest - pn >= WINDOW => return,
            Some(_) => {}
        }
        let (word, mask) = Self::slot(pn);
        self.bits[word] |= mask;
    }

    /// Largest committed packet number, if any.
    pub fn largest(&self) -> Option<u64> {
        self.largest
    }

    fn slot(pn: u64) -> (usize, u64) {
        let i = pn % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn bit(&self, pn: u64) -> bool {
        let (word, mask) = Self::slot(pn);
        self.bits[word] & mask != 0
    }

    /// Clears the bits of `(from, to]`, the packet numbers the window slides over.
    fn clear_after(&mut self, from: u64, to: u64) {
        if to - from >= WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        // `from < to`, so this cannot overflow; the loop stops before stepping past `to`, which
        // may be `u64::MAX`.
        let mut pn = from + 1;
        loop {
            let (word, mask) = Self::slot(pn);
            let step = if mask == 1 && to - pn >= 63 {
                // A whole word lies inside the range.
                self.bits[word] = 0;
                64
            } else {
                self.bits[word] &= !mask;
                1
            };
            match pn.checked_add(step) {
                Some(next) if next <= to => pn = next,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_anything_before_the_first_commit() {
        let w = ReplayWindow::new();
        assert!(w.check(0) && w.check(1) && w.check(u64::MAX));
        assert_eq!(w.largest(), None);
    }

    #[test]
    fn rejects_a_committed_packet_number() {
        let mut w = ReplayWindow::new();
        w.commit(0);
        assert!(!w.check(0));
        assert!(w.check(1));
        w.commit(5);
        assert!(!w.check(5) && !w.check(0));
        assert!(w.check(1) && w.check(4) && w.check(6));
        w.commit(3);
        assert!(!w.check(3));
        assert_eq!(w.largest(), Some(5));
    }

    #[test]
    fn accepts_reordered_packets_inside_the_window_and_rejects_older_ones() {
        let mut w = ReplayWindow::new();
        w.commit(2000);
        // The window is [2000 - 1023, 2000].
        assert!(w.check(2000 - (WINDOW - 1)));
        assert!(!w.check(2000 - WINDOW));
        assert!(!w.check(0));
        w.commit(2000 - (WINDOW - 1));
        assert!(!w.check(2000 - (WINDOW - 1)));
        // Committing a too-old number is ignored, not a panic or a slide.
        w.commit(5);
        assert_eq!(w.largest(), Some(2000));
    }

    #[test]
    fn forgets_bits_the_window_slides_over() {
        let mut w = ReplayWindow::new();
        for pn in 0..WINDOW {
            w.commit(pn);
        }
        // pn WINDOW reuses the ring slot of pn 0, which must now read as unseen, then seen.
        assert!(w.check(WINDOW));
        w.commit(WINDOW);
        assert!(!w.check(WINDOW));
        assert!(!w.check(0), "0 fell out of the window");
        assert!(!w.check(1), "1 is still in the window and was seen");
        // A jump of exactly one word-aligned stretch and of more than a window.
        w.commit(WINDOW + 64);
        assert!((WINDOW + 1..WINDOW + 64).all(|pn| w.check(pn)));
        w.commit(10 * WINDOW);
        assert!((9 * WINDOW + 1..10 * WINDOW).all(|pn| w.check(pn)));
        assert!(!w.check(10 * WINDOW));
    }

    #[test]
    fn handles_packet_numbers_near_u64_max() {
        let mut w = ReplayWindow::new();
        w.commit(u64::MAX - 1);
        assert!(w.check(u64::MAX));
        w.commit(u64::MAX);
        assert!(!w.check(u64::MAX) && !w.check(u64::MAX - 1));
        assert!(w.check(u64::MAX - 2));
        assert!(!w.check(u64::MAX - WINDOW));
    }

    /// The model: a set of everything committed, and the window rule written out plainly.
    #[derive(Default)]
    struct Model {
        seen: HashSet<u64>,
        largest: Option<u64>,
    }

    impl Model {
        fn check(&self, pn: u64) -> bool {
            let fresh = self.largest.is_none_or(|l| pn > l || l - pn < WINDOW);
            fresh && !self.seen.contains(&pn)
        }

        fn commit(&mut self, pn: u64) {
            if self.check(pn) {
                self.seen.insert(pn);
                self.largest = Some(self.largest.map_or(pn, |l| l.max(pn)));
            }
        }
    }

    /// Walks of packet numbers: each step moves forward a little or back by up to a bit more
    /// than the window (reordering, duplicates and too-old numbers), starting at 0 or near
    /// `u64::MAX`; the flag says whether the receiver commits it (the AEAD opened it).
    fn walks() -> impl Strategy<Value = Vec<(u64, bool)>> {
        let start = prop_oneof![Just(0u64), Just(u64::MAX - 400 * 256)];
        let step = prop_oneof![4 => -8i64..=8, 2 => -(WINDOW as i64 + 64)..=-8, 3 => 8i64..=256];
        (start, prop::collection::vec((step, any::<bool>()), 1..400)).prop_map(|(start, steps)| {
            let mut pn = start;
            steps
                .into_iter()
                .map(|(d, commit)| {
                    pn = pn.saturating_add_signed(d);
                    (pn, commit)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn agrees_with_a_set_model(walk in walks()) {
            let mut w = ReplayWindow::new();
            let mut m = Model::default();
            for (pn, commit) in walk {
                prop_assert_eq!(w.check(pn), m.check(pn), "check({})", pn);
                // A receiver commits only what passed the check and opened.
                if commit && w.check(pn) {
                    w.commit(pn);
                    m.commit(pn);
                }
                prop_assert_eq!(w.largest(), m.largest);
            }
        }

        #[test]
        fn agrees_with_a_set_model_on_monotone_streams_with_gaps(gaps in prop::collection::vec(1u64..200, 1..300)) {
            let mut w = ReplayWindow::new();
            let mut m = Model::default();
            let mut pn = 0u64;
            for g in gaps {
                pn += g;
                prop_assert!(w.check(pn));
                w.commit(pn);
                m.commit(pn);
                // Every packet number within reach of the window answers like the model.
                for back in [0, 1, g, 63, 64, 65, WINDOW - 1, WINDOW, WINDOW + 1] {
                    let q = pn.saturating_sub(back);
                    prop_assert_eq!(w.check(q), m.check(q), "check({}) after {}", q, pn);
                }
            }
        }
    }
}
