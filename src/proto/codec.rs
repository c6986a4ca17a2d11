//! Framing (CTRL-FRAME-*): `u32` big-endian length, then a one-byte frame type, then the body.
//!
//! - type `0x01`: a control message, bincode-encoded with [`bincode_config`];
//! - type `0x02`: a data chunk, `u64` offset, `u32` crc32, then the chunk bytes.
//!
//! This module is the only place that knows the bincode configuration.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use super::error::DecodeError;
use super::CHUNK_SIZE;

/// Largest accepted value of the length field (CTRL-FRAME-2).
pub const MAX_FRAME_LEN: u32 = 8 * 1024 * 1024;

/// Largest `len` a server accepts before login (CTRL-FRAME-6): room for an `Auth` with a
/// long password, nowhere near a data chunk.
pub const MAX_PRELOGIN_FRAME_LEN: u32 = 16 * 1024;

/// Frame type byte of a control message.
pub const FRAME_CONTROL: u8 = 0x01;
/// Frame type byte of a data chunk.
pub const FRAME_DATA: u8 = 0x02;
/// Bytes before a data chunk's payload: length, type, offset, crc32.
pub const DATA_HEADER_LEN: usize = 4 + 1 + 8 + 4;

type Config = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
    bincode::config::Limit<{ MAX_FRAME_LEN as usize }>,
>;

/// The one bincode configuration of the protocol (CTRL-FRAME-4): big-endian fixed-width
/// integers, u64 lengths, u32 enum variant indices.
pub fn bincode_config() -> Config {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<{ MAX_FRAME_LEN as usize }>()
}

/// A chunk of file data with its checksum (CTRL-XFER-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChunk {
    pub offset: u64,
    pub crc32: u32,
    pub data: Bytes,
}

impl DataChunk {
    /// Builds a chunk, computing its crc32.
    pub fn new(offset: u64, data: Bytes) -> DataChunk {
        DataChunk { offset, crc32: crc32fast::hash(&data), data }
    }

    /// True if the payload matches its checksum.
    pub fn verify(&self) -> bool {
        crc32fast::hash(&self.data) == self.crc32
    }

    /// Offset just past this chunk.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// The header bytes to write before `self.data`.
    pub fn header(&self) -> [u8; DATA_HEADER_LEN] {
        let mut h = [0u8; DATA_HEADER_LEN];
        let len = (1 + 8 + 4 + self.data.len()) as u32;
        h[0..4].copy_from_slice(&len.to_be_bytes());
        h[4] = FRAME_DATA;
        h[5..13].copy_from_slice(&self.offset.to_be_bytes());
        h[13..17].copy_from_slice(&self.crc32.to_be_bytes());
        h
    }
}

/// One decoded frame. Control payloads stay raw until the caller knows which side it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Control(Bytes),
    Data(DataChunk),
}

impl Frame {
    /// Decodes a control payload as `T`, rejecting trailing bytes (CTRL-FRAME-5). The decode
    /// limit is the smallest of a few sizes that holds the payload, so a declared string length
    /// longer than the payload fails before bincode allocates for it (CTRL-FRAME-7): at most 16
    /// times the payload, or 4 KiB.
    pub fn decode_control<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
        let decoded = match payload.len() {
            0..=4096 => decode_within::<T, 4096>(payload),
            4097..=65_536 => decode_within::<T, 65_536>(payload),
            65_537..=1_048_576 => decode_within::<T, 1_048_576>(payload),
            _ => decode_within::<T, { MAX_FRAME_LEN as usize }>(payload),
        };
        let (msg, used) = decoded.map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if used != payload.len() {
            return Err(DecodeError::TrailingBytes(payload.len() - used));
        }
        Ok(msg)
    }
}

/// Decodes with the protocol's configuration under a limit of `LIMIT` bytes.
fn decode_within<T: DeserializeOwned, const LIMIT: usize>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(payload, bincode_config().with_limit::<LIMIT>())
}

/// Encodes a control message as a whole frame.
pub fn encode_control<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; 5];
    // Encoding serde types into a Vec cannot fail (bincode checks its limit only when
    // decoding); callers check the finished frame against MAX_FRAME_LEN before sending.
    if let Err(e) = bincode::serde::encode_into_std_write(msg, &mut out, bincode_config()) {
        tracing::error!("control message not encodable: {e}");
    }
    let len = (out.len() - 4) as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out[4] = FRAME_CONTROL;
    out
}

/// Incremental frame decoder over a byte buffer (no I/O).
///
/// Feed bytes with [`FrameDecoder::buffer`]; call [`FrameDecoder::decode`] until it returns
/// `Ok(None)` ("need more bytes", which is not an error).
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Buffer a decoder starts with; it grows to the frames actually received.
const INITIAL_CAPACITY: usize = 4 * 1024;

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> FrameDecoder {
        FrameDecoder { buf: BytesMut::with_capacity(INITIAL_CAPACITY), max_len: MAX_FRAME_LEN }
    }

    /// Lowers (or restores) the largest accepted `len`, at most [`MAX_FRAME_LEN`]
    /// (CTRL-FRAME-2, CTRL-FRAME-6).
    pub fn set_max_len(&mut self, max_len: u32) {
        self.max_len = max_len.min(MAX_FRAME_LEN);
    }

    /// The buffer to append received bytes to.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Decodes the next complete frame, if one is buffered.
    pub fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        let Some(total) = check_frame_within(&self.buf, self.max_len)? else {
            self.buf.reserve(frame_hint(&self.buf));
            return Ok(None);
        };
        let mut frame = self.buf.split_to(total);
        frame.advance(4);
        let kind = frame.get_u8();
        match kind {
            FRAME_CONTROL => Ok(Some(Frame::Control(frame.freeze()))),
            FRAME_DATA => decode_data(frame.freeze()).map(|c| Some(Frame::Data(c))),
            other => Err(DecodeError::UnknownFrameType(other)),
        }
    }
}

/// Cheap check that a whole frame is buffered; returns its total length including the
/// length field (CTRL-FRAME-1, CTRL-FRAME-2, CTRL-FRAME-3).
pub fn check_frame(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    check_frame_within(buf, MAX_FRAME_LEN)
}

/// [`check_frame`] with a lower limit on `len`.
pub fn check_frame_within(buf: &[u8], max_len: u32) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    if len > max_len {
        return Err(DecodeError::FrameTooLarge(len));
    }
    let total = 4 + len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// Most bytes reserved ahead of what has arrived (CTRL-FRAME-7): the buffer grows with the
/// bytes a peer actually sends, never with the length it declares.
pub const READ_AHEAD: usize = 64 * 1024;

/// How many more bytes to reserve so a partially buffered frame fits, at most [`READ_AHEAD`].
fn frame_hint(buf: &[u8]) -> usize {
    if buf.len() < 4 {
        return 64;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    (4 + len).saturating_sub(buf.len()).min(READ_AHEAD)
}

fn decode_data(mut body: Bytes) -> Result<DataChunk, DecodeError> {
    if body.len() < 12 {
        return Err(DecodeError::ShortDataHeader);
    }
    let offset = body.get_u64();
    let crc32 = body.get_u32();
    if body.len() > CHUNK_SIZE {
        return Err(DecodeError::ChunkTooLarge(body.len()));
    }
    // CTRL-FRAME-8: a chunk ends within u64, so `DataChunk::end` cannot overflow.
    if offset.checked_add(body.len() as u64).is_none() {
        return Err(DecodeError::ChunkPastEnd(offset));
    }
    Ok(DataChunk { offset, crc32, data: body })
}

/// Appends a whole data frame (header and payload) to `out`.
pub fn encode_data(chunk: &DataChunk, out: &mut BytesMut) {
    out.put_slice(&chunk.header());
    out.put_slice(&chunk.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_length_over_the_lowered_limit_before_its_body_arrives() {
        // CTRL-FRAME-6
        let mut d = FrameDecoder::new();
        d.set_max_len(MAX_PRELOGIN_FRAME_LEN);
        d.buffer().extend_from_slice(&(MAX_PRELOGIN_FRAME_LEN + 1).to_be_bytes());
        assert_eq!(d.decode(), Err(DecodeError::FrameTooLarge(MAX_PRELOGIN_FRAME_LEN + 1)));
        let mut d = FrameDecoder::new();
        d.set_max_len(MAX_PRELOGIN_FRAME_LEN);
        d.buffer().extend_from_slice(&encode_control(&"x".repeat(100)));
        assert!(matches!(d.decode(), Ok(Some(Frame::Control(_)))));
        d.set_max_len(u32::MAX);
        d.buffer().extend_from_slice(&(MAX_FRAME_LEN + 1).to_be_bytes());
        assert_eq!(d.decode(), Err(DecodeError::FrameTooLarge(MAX_FRAME_LEN + 1)), "never above MAX_FRAME_LEN");
    }
}
