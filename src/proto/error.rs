//! Decoding failures. Every one of them is the peer's fault, never a reason to panic.

/// Why bytes received from a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not an xfer peer (bad magic)")]
    BadMagic,
    #[error("frame of {0} bytes exceeds the frame size limit")]
    FrameTooLarge(u32),
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    #[error("data frame shorter than its header")]
    ShortDataHeader,
    #[error("data chunk of {0} bytes exceeds the chunk size")]
    ChunkTooLarge(usize),
    #[error("data chunk at offset {0} ends past 2^64 - 1")]
    ChunkPastEnd(u64),
    #[error("malformed control message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after control message")]
    TrailingBytes(usize),
}
