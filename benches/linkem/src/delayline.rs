//! Preallocated packet buffers plus a min-heap of (due time, sequence, buffer
//! index). Nothing here allocates after construction: the heap's capacity is
//! the number of buffers, and every heap entry owns one buffer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub struct DelayLine {
    buf_size: usize,
    data: Vec<u8>,
    lens: Vec<u32>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    seq: u64,
}

impl DelayLine {
    /// `count` buffers of `buf_size` bytes. The backing memory is zeroed by
    /// the allocator (calloc), so untouched buffers cost no RSS.
    pub fn new(count: usize, buf_size: usize) -> Self {
        assert!(count > 0 && count <= u32::MAX as usize);
        DelayLine {
            buf_size,
            data: vec![0u8; count * buf_size],
            lens: vec![0; count],
            // pop() hands out low indices first: keeps the touched set small
            free: (0..count as u32).rev().collect(),
            heap: BinaryHeap::with_capacity(count),
            seq: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    pub fn in_flight(&self) -> usize {
        self.heap.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Take a free buffer.
    #[inline]
    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Return a buffer that was allocated but not scheduled.
    #[inline]
    pub fn release(&mut self, idx: u32) {
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(idx);
    }

    #[inline]
    pub fn buf_mut(&mut self, idx: u32) -> &mut [u8] {
        let s = idx as usize * self.buf_size;
        &mut self.data[s..s + self.buf_size]
    }

    #[inline]
    pub fn packet(&self, idx: u32) -> &[u8] {
        let s = idx as usize * self.buf_size;
        &self.data[s..s + self.lens[idx as usize] as usize]
    }

    /// Copy packet `src` into a fresh buffer; None if the pool is empty.
    #[inline]
    pub fn duplicate(&mut self, src: u32) -> Option<u32> {
        let dst = self.alloc()?;
        let len = self.lens[src as usize] as usize;
        let (s, d) = (src as usize * self.buf_size, dst as usize * self.buf_size);
        self.data.copy_within(s..s + len, d);
        self.lens[dst as usize] = len as u32;
        Some(dst)
    }

    #[inline]
    pub fn set_len(&mut self, idx: u32, len: usize) {
        debug_assert!(len <= self.buf_size);
        self.lens[idx as usize] = len as u32;
    }

    /// Schedule buffer `idx` (its length set) for `due`. Ties go out in
    /// scheduling order.
    #[inline]
    pub fn schedule(&mut self, idx: u32, due: u64) {
        self.seq += 1;
        debug_assert!(self.heap.len() < self.heap.capacity());
        self.heap.push(Reverse((due, self.seq, idx)));
    }

    #[inline]
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Pop the earliest packet if it is due at `now`; the caller must
    /// `release` the index after sending.
    #[inline]
    pub fn pop_due(&mut self, now: u64) -> Option<u32> {
        match self.heap.peek() {
            Some(Reverse((d, _, _))) if *d <= now => self.heap.pop().map(|Reverse((_, _, i))| i),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_in_due_order_fifo_ties() {
        let mut dl = DelayLine::new(8, 16);
        let dues = [50u64, 10, 30, 10, 40, 20];
        for (k, &d) in dues.iter().enumerate() {
            let i = dl.alloc().unwrap();
            dl.buf_mut(i)[0] = k as u8;
            dl.set_len(i, 1);
            dl.schedule(i, d);
        }
        assert_eq!(dl.next_due(), Some(10));
        assert_eq!(dl.pop_due(9), None);
        let mut out = Vec::new();
        while let Some(i) = dl.pop_due(100) {
            out.push(dl.packet(i)[0]);
            dl.release(i);
        }
        assert_eq!(out, vec![1, 3, 5, 2, 4, 0]);
        assert_eq!(dl.free_count(), 8);
    }

    #[test]
    fn pool_exhaustion_and_no_growth() {
        let mut dl = DelayLine::new(4, 8);
        let heap_cap = dl.heap.capacity();
        let free_cap = dl.free.capacity();
        let mut got = Vec::new();
        while let Some(i) = dl.alloc() {
            got.push(i);
        }
        assert_eq!(got.len(), 4);
        for (n, i) in got.into_iter().enumerate() {
            dl.set_len(i, 8);
            dl.schedule(i, n as u64);
        }
        assert!(dl.duplicate(0).is_none());
        for round in 0..1000u64 {
            let i = dl.pop_due(u64::MAX).unwrap();
            dl.schedule(i, 10 + round);
        }
        assert_eq!(dl.heap.capacity(), heap_cap);
        assert_eq!(dl.free.capacity(), free_cap);
    }

    #[test]
    fn duplicate_copies_bytes() {
        let mut dl = DelayLine::new(2, 8);
        let a = dl.alloc().unwrap();
        dl.buf_mut(a)[..3].copy_from_slice(b"abc");
        dl.set_len(a, 3);
        let b = dl.duplicate(a).unwrap();
        assert_ne!(a, b);
        assert_eq!(dl.packet(b), b"abc");
    }
}
