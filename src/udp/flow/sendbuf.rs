//! The sending side's loaded file bytes: blocks handed in by whoever reads the file, kept
//! until the receiver holds them, so retransmissions never touch the disk.

use std::collections::VecDeque;

use bytes::Bytes;

/// Loaded blocks of the file, ascending.
#[derive(Debug, Default)]
pub struct SendBuffer {
    blocks: VecDeque<(u64, Bytes)>,
    /// Every byte below this has been handed in (or was held by the receiver).
    loaded_end: u64,
}

impl SendBuffer {
    /// Takes the block `[start, start + len)`; `data` is `None` when the receiver holds all
    /// of it. Blocks come in ascending order.
    pub fn push(&mut self, start: u64, len: u64, data: Option<Bytes>) {
        if let Some(d) = data {
            self.blocks.push_back((start, d));
        }
        self.loaded_end = self.loaded_end.max(start + len);
    }

    pub fn loaded_end(&self) -> u64 {
        self.loaded_end
    }

    /// Copies `[offset, offset + out.len())` into `out`; false if some of it is not loaded
    /// (released because it was acked, or inside a block the receiver held).
    pub fn copy_to(&self, offset: u64, out: &mut [u8]) -> bool {
        let mut pos = offset;
        let mut filled = 0;
        let first = self.blocks.partition_point(|(s, d)| s + d.len() as u64 <= offset);
        for (start, data) in self.blocks.iter().skip(first) {
            if filled == out.len() || *start > pos {
                break;
            }
            let from = (pos - start) as usize;
            let n = (data.len() - from).min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&data[from..from + n]);
            filled += n;
            pos += n as u64;
        }
        filled == out.len()
    }

    /// Drops blocks entirely below `offset` (the receiver holds them).
    pub fn release_below(&mut self, offset: u64) {
        while self.blocks.front().is_some_and(|(s, d)| s + d.len() as u64 <= offset) {
            self.blocks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_across_blocks_and_forgets_released_ones() {
        let mut b = SendBuffer::default();
        b.push(0, 4, Some(Bytes::from_static(b"abcd")));
        b.push(4, 4, Some(Bytes::from_static(b"efgh")));
        let mut out = [0u8; 4];
        assert!(b.copy_to(2, &mut out));
        assert_eq!(&out, b"cdef");
        b.release_below(4);
        assert!(!b.copy_to(2, &mut out));
        assert!(b.copy_to(4, &mut out));
        assert_eq!(b.loaded_end(), 8);
    }
}
