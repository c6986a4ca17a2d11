//! Wire format of the control protocol, with no I/O.
//!
//! The normative text is `proto-spec/control.md`; requirement IDs (e.g. `CTRL-FRAME-2`) cited
//! in comments point there.

pub mod codec;
pub mod control;
pub mod error;

pub use codec::{DataChunk, Frame, FrameDecoder, MAX_FRAME_LEN, MAX_PRELOGIN_FRAME_LEN};
pub use control::{Entry, EntryKind, ErrorCode, Request, Response, Transport, TreeEntry};
pub use error::DecodeError;

/// Protocol version spoken by this build (CTRL-HELLO-1).
pub const PROTOCOL_VERSION: u16 = 1;

/// First four bytes each side sends after the TLS handshake (CTRL-HELLO-1).
pub const MAGIC: [u8; 4] = *b"XFER";

/// Length of the version preamble: magic + big-endian u16 version.
pub const PREAMBLE_LEN: usize = 6;

/// Size of a data chunk's payload, except the last chunk of a file (CTRL-XFER-1).
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// Encodes the version preamble (CTRL-HELLO-1).
pub fn encode_preamble(version: u16) -> [u8; PREAMBLE_LEN] {
    let v = version.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

/// Decodes a version preamble; `Err` if the magic is wrong (CTRL-HELLO-2).
pub fn decode_preamble(bytes: &[u8; PREAMBLE_LEN]) -> Result<u16, DecodeError> {
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    Ok(u16::from_be_bytes([bytes[4], bytes[5]]))
}
