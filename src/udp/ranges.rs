//! A set of byte ranges: what a receiver holds, what a sender knows delivered.

use std::collections::BTreeMap;

/// Most disjoint ranges a flow's receiver holds (UDP-DATA-5): a `Data` datagram that would
/// add a range beyond this is refused, and the sender resends it once the holes before it
/// have closed. A sender likewise ignores acked ranges beyond it. At 10 % loss this covers
/// the holes of about 160 000 datagrams in flight.
pub const MAX_HELD_RANGES: usize = 16_384;

/// Most ranges a range map saved for resume lists (UDP-RESUME-7): when more are held, the
/// lowest ones are saved, a subset of what is held and so always safe to resume from.
pub const MAX_RESUME_RANGES: usize = 4_096;

/// Disjoint, non-touching half-open ranges `[start, end)`, merged on insert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end
    map: BTreeMap<u64, u64>,
    covered: u64,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Builds a set from ranges in any order (empty ones are ignored).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> RangeSet {
        let mut set = RangeSet::new();
        for (s, e) in ranges {
            set.insert(s, e);
        }
        set
    }

    /// Adds `[start, end)`; returns how many bytes were not already in the set.
    pub fn insert(&mut self, start: u64, end: u64) -> u64 {
        if end <= start {
            return 0;
        }
        let total_before = self.covered;
        let (mut s, mut e) = (start, end);
        // Merge with a range that starts before `start` and reaches it.
        if let Some((&ps, &pe)) = self.map.range(..=start).next_back() {
            if pe >= start {
                if pe >= end {
                    return 0;
                }
                s = ps;
                e = e.max(pe);
                self.covered -= pe - ps;
                self.map.remove(&ps);
            }
        }
        // Swallow ranges starting inside `[s, e]`.
        while let Some((&ns, &ne)) = self.map.range(s..=e).next() {
            e = e.max(ne);
            self.covered -= ne - ns;
            self.map.remove(&ns);
        }
        self.map.insert(s, e);
        self.covered += e - s;
        self.covered - total_before
    }

    /// Takes `[start, end)` out of the set; returns how many bytes were in it.
    pub fn remove(&mut self, start: u64, end: u64) -> u64 {
        if end <= start {
            return 0;
        }
        let mut removed = 0;
        // A range starting before `start` that reaches into `[start, end)`: keep its head
        // (and its tail, if it also reaches past `end`).
        if let Some((&ps, &pe)) = self.map.range(..start).next_back() {
            if pe > start {
                self.map.insert(ps, start);
                if pe > end {
                    self.map.insert(end, pe);
                }
                removed += pe.min(end) - start;
            }
        }
        // Ranges starting inside `[start, end)`: drop them, keeping any tail past `end`.
        while let Some((&ns, &ne)) = self.map.range(start..end).next() {
            self.map.remove(&ns);
            if ne > end {
                self.map.insert(end, ne);
            }
            removed += ne.min(end) - ns;
        }
        self.covered -= removed;
        removed
    }

    /// True if `[start, end)` overlaps or touches a range of the set, so that inserting it
    /// adds no range.
    pub fn touches(&self, start: u64, end: u64) -> bool {
        if let Some((_, &pe)) = self.map.range(..=start).next_back() {
            if pe >= start {
                return true;
            }
        }
        self.map.range(start..=end).next().is_some()
    }

    /// Inserts `[start, end)` unless that would make the set hold more than `max` ranges;
    /// returns the bytes added, or `None` if refused.
    pub fn insert_bounded(&mut self, start: u64, end: u64, max: usize) -> Option<u64> {
        if end > start && self.map.len() >= max && !self.touches(start, end) {
            return None;
        }
        Some(self.insert(start, end))
    }

    /// The lowest `max` ranges: a subset of the set.
    pub fn lowest(&self, max: usize) -> RangeSet {
        RangeSet::from_ranges(self.iter().take(max))
    }

    /// The lowest range, if any.
    pub fn first(&self) -> Option<(u64, u64)> {
        self.map.iter().next().map(|(&s, &e)| (s, e))
    }

    /// The first stretch of `[from, limit)` that is not in the set, if any.
    pub fn first_gap(&self, from: u64, limit: u64) -> Option<(u64, u64)> {
        let start = self.contiguous_from(from);
        if start >= limit {
            return None;
        }
        let end = self.map.range(start..limit).next().map_or(limit, |(&s, _)| s);
        Some((start, end))
    }

    /// True if every byte of `[start, end)` is in the set.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        if end <= start {
            return true;
        }
        matches!(self.map.range(..=start).next_back(), Some((_, &pe)) if pe >= end)
    }

    /// Total bytes in the set.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// End of the range that starts at `from`, or `from` if `from` is not held.
    pub fn contiguous_from(&self, from: u64) -> u64 {
        match self.map.range(..=from).next_back() {
            Some((_, &pe)) if pe > from => pe,
            _ => from,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Ranges in ascending order starting at or after `from` (a range straddling `from` is
    /// not included).
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.range(from..).map(|(&s, &e)| (s, e))
    }

    /// The gaps of the set inside `[0, size)`, ascending.
    pub fn gaps(&self, size: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for (s, e) in self.iter() {
            if s >= size {
                break;
            }
            if s > pos {
                out.push((pos, s));
            }
            pos = pos.max(e);
        }
        if pos < size {
            out.push((pos, size));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_counts_new_bytes() {
        let mut r = RangeSet::new();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(30, 40), 10);
        assert_eq!(r.insert(15, 35), 10);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 40)]);
        assert_eq!(r.insert(12, 18), 0);
        assert_eq!(r.insert(40, 50), 10);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 50)]);
        assert_eq!(r.covered(), 40);
    }

    #[test]
    fn refuses_a_new_range_beyond_the_bound_but_accepts_what_touches() {
        let mut r = RangeSet::from_ranges([(0, 10), (20, 30)]);
        assert_eq!(r.insert_bounded(40, 50, 2), None, "a third range");
        assert_eq!(r.insert_bounded(30, 35, 2), Some(5), "extends one");
        assert_eq!(r.insert_bounded(12, 14, 3), Some(2));
        assert_eq!(r.insert_bounded(10, 12, 3), Some(2), "touches both neighbours");
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(0, 14), (20, 35)]);
        assert_eq!(r.lowest(1).iter().collect::<Vec<_>>(), vec![(0, 14)]);
    }

    #[test]
    fn answers_contains_contiguous_and_gaps() {
        let r = RangeSet::from_ranges([(0, 10), (20, 30)]);
        assert!(r.contains(0, 10) && r.contains(22, 25) && !r.contains(5, 15));
        assert_eq!(r.contiguous_from(0), 10);
        assert_eq!(r.contiguous_from(10), 10);
        assert_eq!(r.gaps(40), vec![(10, 20), (30, 40)]);
        assert_eq!(r.gaps(25), vec![(10, 20)]);
    }
}
