//! Replay window over packet numbers (UDP-REPLAY-1).

const WINDOW: u64 = 1024;

/// Remembers which of the last [`WINDOW`] packet numbers were seen.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    largest: Option<u64>,
    bits: [u64; (WINDOW / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow { largest: None, bits: [0; (WINDOW / 64) as usize] }
    }

    fn bit(pn: u64) -> (usize, u64) {
        let i = pn % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// False if `pn` was seen or is too old to tell.
    pub fn check(&self, pn: u64) -> bool {
        match self.largest {
            None => true,
            Some(l) if pn > l => true,
            Some(l) if l - pn >= WINDOW => false,
            Some(_) => {
                let (w, m) = Self::bit(pn);
                self.bits[w] & m == 0
            }
        }
    }

    /// Records `pn` as seen.
    pub fn commit(&mut self, pn: u64) {
        let l = self.largest.unwrap_or(0);
        if self.largest.is_none() || pn > l {
            let start = if self.largest.is_none() { pn } else { l + 1 };
            if pn - start >= WINDOW {
                self.bits = [0; (WINDOW / 64) as usize];
            } else {
                for p in start..=pn {
                    let (w, m) = Self::bit(p);
                    self.bits[w] &= !m;
                }
            }
            self.largest = Some(pn);
        }
        let (w, m) = Self::bit(pn);
        self.bits[w] |= m;
    }
}
