//! Progress reporting from the transfer engine to whatever renders it.

use std::sync::Arc;

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The data goes over this transport (sent again if a transfer falls back to TCP).
    Via(crate::proto::Transport),
    /// The transfer starts: `total` bytes, of which the first `offset` are already in place.
    Start { total: u64, offset: u64 },
    /// `done` bytes (counting the resumed prefix) are transferred.
    Advance { done: u64 },
    /// The data has arrived; final verification is under way.
    Verifying,
    /// The file is verified and in place.
    Finish,
}

/// A progress callback. Cheap to clone.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A callback that ignores every event.
pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}
