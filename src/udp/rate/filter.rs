//! A windowed maximum or minimum that needs no sample history.

#[derive(Debug, Clone, Copy)]
pub(super) enum Better {
    Max,
    Min,
}

/// Windowed maximum or minimum (Kathleen Nichols' algorithm, as in Linux `win_minmax`):
/// keeps the best, second best and third best samples of sub-windows, so the estimate ages
/// out gradually without storing every sample.
#[derive(Debug, Clone)]
pub(super) struct WindowedFilter {
    better: Better,
    window: u64,
    /// (value, time) of the best, second and third best samples.
    s: Option<[(u64, u64); 3]>,
}

impl WindowedFilter {
    pub(super) fn new(better: Better, window: u64) -> WindowedFilter {
        WindowedFilter { better, window, s: None }
    }

    pub(super) fn get(&self) -> Option<u64> {
        self.s.map(|s| s[0].0)
    }

    fn beats(&self, a: u64, b: u64) -> bool {
        match self.better {
            Better::Max => a >= b,
            Better::Min => a <= b,
        }
    }

    pub(super) fn update(&mut self, value: u64, at: u64) {
        let sample = (value, at);
        let Some(mut s) = self.s else {
            self.s = Some([sample; 3]);
            return;
        };
        if self.beats(value, s[0].0) || at.saturating_sub(s[2].1) > self.window {
            self.s = Some([sample; 3]);
            return;
        }
        if self.beats(value, s[1].0) {
            s[1] = sample;
            s[2] = sample;
        } else if self.beats(value, s[2].0) {
            s[2] = sample;
        }
        // Age the sub-windows.
        let dt = at.saturating_sub(s[0].1);
        if dt > self.window {
            s = [s[1], s[2], sample];
            if at.saturating_sub(s[0].1) > self.window {
                s = [s[1], s[2], sample];
            }
        } else if s[1].1 == s[0].1 && dt > self.window / 4 {
            s[1] = sample;
            s[2] = sample;
        } else if s[2].1 == s[1].1 && dt > self.window / 2 {
            s[2] = sample;
        }
        self.s = Some(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_max_forgets_old_samples() {
        let mut f = WindowedFilter::new(Better::Max, 10);
        f.update(100, 0);
        f.update(50, 5);
        assert_eq!(f.get(), Some(100));
        f.update(40, 11);
        assert_eq!(f.get(), Some(50));
        f.update(30, 30);
        assert_eq!(f.get(), Some(30));
    }

    #[test]
    fn windowed_min_keeps_the_smallest() {
        let mut f = WindowedFilter::new(Better::Min, 100);
        f.update(10, 0);
        f.update(20, 10);
        f.update(5, 20);
        f.update(8, 30);
        assert_eq!(f.get(), Some(5));
    }
}
