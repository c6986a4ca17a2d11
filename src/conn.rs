//! Framed reading and writing of control and data frames over any async byte stream
//! (the TLS control connection in practice).

use std::io;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::codec::{encode_control, FrameDecoder};
use crate::proto::{decode_preamble, encode_preamble, DataChunk, DecodeError, Frame, MAX_FRAME_LEN, PREAMBLE_LEN};

/// Failures of a framed connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Decode(#[from] DecodeError),
    #[error("connection closed by peer")]
    Closed,
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader { inner, decoder: FrameDecoder::new() }
    }

    /// Sets the largest frame accepted from now on (CTRL-FRAME-6).
    pub fn set_max_frame(&mut self, max_len: u32) {
        self.decoder.set_max_len(max_len);
    }

    /// Reads the next frame. A clean close between frames is `ConnError::Closed`.
    pub async fn read_frame(&mut self) -> Result<Frame, ConnError> {
        loop {
            if let Some(frame) = self.decoder.decode()? {
                return Ok(frame);
            }
            let n = self.inner.read_buf(self.decoder.buffer()).await?;
            if n == 0 {
                return Err(if self.decoder.pending() == 0 { ConnError::Closed } else { ConnError::Truncated });
            }
        }
    }

    /// Reads the peer's version preamble: exactly its 6 bytes, so frames the peer sent right
    /// behind it stay in the stream, in order, for `read_frame` (CTRL-HELLO-3).
    pub async fn read_preamble(&mut self) -> Result<u16, ConnError> {
        let mut buf = [0u8; PREAMBLE_LEN];
        match self.inner.read_exact(&mut buf).await {
            Ok(_) => Ok(decode_preamble(&buf)?),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ConnError::Closed),
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes frames to a byte stream.
pub struct FrameWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter { inner }
    }

    pub async fn write_preamble(&mut self, version: u16) -> io::Result<()> {
        self.inner.write_all(&encode_preamble(version)).await?;
        self.inner.flush().await
    }

    /// Writes and flushes one control message. A message over the frame limit is not sent
    /// and fails with `InvalidInput` (CTRL-FRAME-2).
    pub async fn write_control<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        let frame = encode_control(msg);
        if frame.len() - 4 > MAX_FRAME_LEN as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "control message exceeds the frame limit"));
        }
        self.inner.write_all(&frame).await?;
        self.inner.flush().await
    }

    /// Writes one data frame without flushing (the next control message flushes).
    pub async fn write_data(&mut self, chunk: &DataChunk) -> io::Result<()> {
        self.inner.write_all(&chunk.header()).await?;
        self.inner.write_all(&chunk.data).await
    }

    /// Writes frames queued without waiting for replies in one write, then flushes, so they
    /// leave in one TLS record and one TCP send (CTRL-AUTH-6, CTRL-PUT-7).
    pub async fn write_batch(&mut self, batch: Batch) -> io::Result<()> {
        self.inner.write_all(&batch.0).await?;
        self.inner.flush().await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }
}

/// Frames (and a preamble) to send back to back, without waiting for a reply in between.
#[derive(Debug, Default)]
pub struct Batch(Vec<u8>);

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn preamble(&mut self, version: u16) {
        self.0.extend_from_slice(&encode_preamble(version));
    }

    /// Queues one control message; one over the frame limit fails with `InvalidInput`
    /// (CTRL-FRAME-2).
    pub fn control<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        let frame = encode_control(msg);
        if frame.len() - 4 > MAX_FRAME_LEN as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "control message exceeds the frame limit"));
        }
        self.0.extend_from_slice(&frame);
        Ok(())
    }

    pub fn data(&mut self, chunk: &DataChunk) {
        self.0.extend_from_slice(&chunk.header());
        self.0.extend_from_slice(&chunk.data);
    }

    /// Queues everything `other` holds behind what this one holds.
    pub fn append(&mut self, other: Batch) {
        self.0.extend_from_slice(&other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Request, PROTOCOL_VERSION};

    #[test]
    fn batch_holds_preamble_and_frames_back_to_back_in_order() {
        let mut b = Batch::new();
        b.preamble(PROTOCOL_VERSION);
        b.control(&Request::Pwd).unwrap();
        let chunk = DataChunk::new(0, bytes::Bytes::from_static(b"abc"));
        b.data(&chunk);
        let mut want = encode_preamble(PROTOCOL_VERSION).to_vec();
        want.extend_from_slice(&encode_control(&Request::Pwd));
        want.extend_from_slice(&chunk.header());
        want.extend_from_slice(b"abc");
        assert_eq!(b.0, want);
    }

    #[test]
    fn rejects_a_batched_message_over_the_frame_limit() {
        let mut b = Batch::new();
        let huge = Request::Cd { path: "x".repeat(MAX_FRAME_LEN as usize) };
        assert_eq!(b.control(&huge).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(b.0.is_empty(), "nothing queued");
    }
}
