//! Datagram layout (UDP-PKT-*), no I/O. Every datagram is a fixed 18-byte clear header, which is
//! the AEAD's associated data, followed by the sealed body and a 16-byte tag (UDP-PKT-1):
//!
//! ```text
//! offset  size  field
//!  0      1     kind            (PacketKind)
//!  1      1     flags           (0; reserved, must be zero)
//!  2      8     flow id         big-endian u64, issued over the control channel
//! 10      8     packet number   big-endian u64, per direction, never reused; the AEAD nonce
//! 18      n     sealed body     (layout by kind, below)
//! 18+n   16     AEAD tag
//! ```
//!
//! Bodies (before sealing; all integers big-endian):
//!
//! - `Hello`, client to server: `u16` largest datagram the client accepts, then zero padding
//!   so the datagram is at least [`MIN_DATAGRAM`] bytes.
//! - `PathChallenge`, server to client: 8 random bytes.
//! - `PathResponse`, client to server: the 8 bytes of the challenge, echoed.
//! - `Data`: `u64` file offset, `u16` length, `u32` crc32 of the payload, then `length` bytes.
//! - `Ack`: `u64` largest packet number received, `u32` ack delay in microseconds, `u16` largest
//!   datagram received, `u64` cumulative offset (every byte below it is held), `u16` range
//!   count, then that many (`u64` start, `u64` end) ranges above the cumulative offset,
//!   ascending and disjoint.
//! - `Probe`: zero padding to the probed datagram size (path MTU discovery); there is nothing
//!   to decode (UDP-PKT-8).
//! - `Close`: `u16` reason code; the flow ends.
//!
//! Decoding is strict: a body must be exactly as long as its fields say (padding aside,
//! UDP-PKT-10). What needs the flow's state is left to the receiver: whether the peer sends this
//! kind (UDP-PKT-3), the size of a `Hello` datagram (UDP-PKT-4), the crc32 and the file size
//! (UDP-DATA-2, UDP-DATA-3).

use bytes::{Buf, BufMut};

/// Bytes of the clear header.
pub const HEADER_LEN: usize = 18;
/// Bytes of the AEAD tag after the body.
pub const TAG_LEN: usize = 16;
/// Fixed fields of a `Data` body before the payload.
pub const DATA_FIELDS_LEN: usize = 8 + 2 + 4;
/// Everything in a data datagram except its payload.
pub const DATA_OVERHEAD: usize = HEADER_LEN + DATA_FIELDS_LEN + TAG_LEN;
/// Smallest datagram size every path must carry, and the size `Hello` is padded to (UDP-PKT-4,
/// UDP-PMTU-2).
pub const MIN_DATAGRAM: usize = 1200;
/// Largest datagram xfer ever sends or accepts (the UDP limit over IPv4; UDP-PKT-2, UDP-PMTU-2).
pub const MAX_DATAGRAM: usize = 65_507;
/// Most ranges one `Ack` carries (UDP-PKT-7, UDP-ACK-2).
pub const MAX_ACK_RANGES: usize = 64;
/// Fixed fields of an `Ack` body before its ranges.
pub const ACK_FIELDS_LEN: usize = 8 + 4 + 2 + 8 + 2;

/// The kind byte (UDP-PKT-3). `Hello` and `PathResponse` come from the client, `PathChallenge`
/// from the server, `Data` and `Probe` from the data sender, `Ack` from the data receiver,
/// `Close` from either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketKind {
    Hello = 1,
    PathChallenge = 2,
    PathResponse = 3,
    Data = 4,
    Ack = 5,
    Probe = 6,
    Close = 7,
}

impl PacketKind {
    pub fn from_byte(b: u8) -> Option<PacketKind> {
        Some(match b {
            1 => PacketKind::Hello,
            2 => PacketKind::PathChallenge,
            3 => PacketKind::PathResponse,
            4 => PacketKind::Data,
            5 => PacketKind::Ack,
            6 => PacketKind::Probe,
            7 => PacketKind::Close,
            _ => return None,
        })
    }
}

/// The clear header of every datagram (UDP-PKT-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: PacketKind,
    pub flow: u64,
    pub pn: u64,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("datagram too short")]
    Short,
    #[error("datagram too long")]
    Long,
    #[error("unknown packet kind {0}")]
    UnknownKind(u8),
    #[error("reserved flags set")]
    Flags,
    #[error("malformed {0:?} body")]
    Body(PacketKind),
    #[error("authentication failed")]
    Auth,
}

impl Header {
    /// Writes the 18 header bytes.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(self.kind as u8);
        out.put_u8(0);
        out.put_u64(self.flow);
        out.put_u64(self.pn);
    }

    /// Parses the header of a whole datagram, checking only what needs no key: kind, flags
    /// and that a tag fits (UDP-PKT-2).
    pub fn decode(datagram: &[u8]) -> Result<Header, PacketError> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(PacketError::Short);
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(PacketError::Long);
        }
        let mut b = datagram;
        let kind_byte = b.get_u8();
        let kind = PacketKind::from_byte(kind_byte).ok_or(PacketError::UnknownKind(kind_byte))?;
        if b.get_u8() != 0 {
            return Err(PacketError::Flags);
        }
        Ok(Header { kind, flow: b.get_u64(), pn: b.get_u64() })
    }
}

/// Fixed fields of a `Data` body (UDP-PKT-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFields {
    pub offset: u64,
    pub len: u16,
    pub crc32: u32,
}

impl DataFields {
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(self.offset);
        out.put_u16(self.len);
        out.put_u32(self.crc32);
    }

    /// Splits an opened `Data` body into its fields and payload; the payload must be exactly
    /// `len` bytes and end at or before `u64::MAX`.
    pub fn decode(body: &[u8]) -> Result<(DataFields, &[u8]), PacketError> {
        if body.len() < DATA_FIELDS_LEN {
            return Err(PacketError::Body(PacketKind::Data));
        }
        let (mut fields, payload) = body.split_at(DATA_FIELDS_LEN);
        let f = DataFields { offset: fields.get_u64(), len: fields.get_u16(), crc32: fields.get_u32() };
        if payload.len() != usize::from(f.len) || f.offset.checked_add(u64::from(f.len)).is_none() {
            return Err(PacketError::Body(PacketKind::Data));
        }
        Ok((f, payload))
    }
}

/// An acknowledgement: what the receiver holds, plus what the sender needs for RTT and path
/// MTU estimates (UDP-PKT-7; meanings in UDP-ACK-2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// Largest packet number received so far.
    pub largest_pn: u64,
    /// Time between receiving `largest_pn` and sending this ack, in microseconds.
    pub ack_delay_us: u32,
    /// Largest datagram received so far, in bytes.
    pub max_datagram: u16,
    /// Every byte below this offset is held.
    pub cumulative: u64,
    /// Held ranges above `cumulative` as `(start, end)`, ascending, disjoint, non-empty, not
    /// touching `cumulative` or each other. At most [`MAX_ACK_RANGES`]; when the receiver holds
    /// more, it lists the lowest 32 and the highest 32 (UDP-ACK-2).
    pub ranges: Vec<(u64, u64)>,
}

impl Ack {
    /// Encoded body length.
    pub fn encoded_len(&self) -> usize {
        ACK_FIELDS_LEN + 16 * self.ranges.len()
    }

    /// Writes the body. The caller keeps `ranges` valid (UDP-PKT-7): at most
    /// [`MAX_ACK_RANGES`] (checked in debug builds only), ascending, disjoint, above
    /// `cumulative`.
    pub fn encode(&self, out: &mut impl BufMut) {
        debug_assert!(self.ranges.len() <= MAX_ACK_RANGES, "an Ack carries at most {MAX_ACK_RANGES} ranges");
        out.put_u64(self.largest_pn);
        out.put_u32(self.ack_delay_us);
        out.put_u16(self.max_datagram);
        out.put_u64(self.cumulative);
        out.put_u16(self.ranges.len() as u16);
        for &(s, e) in &self.ranges {
            out.put_u64(s);
            out.put_u64(e);
        }
    }

    /// Decodes into `self`, reusing its range buffer. Rejects ranges that are empty,
    /// overlapping, touching, unordered, at or below `cumulative`, or more than
    /// [`MAX_ACK_RANGES`] (UDP-PKT-7).
    pub fn decode_into(&mut self, body: &[u8]) -> Result<(), PacketError> {
        let bad = PacketError::Body(PacketKind::Ack);
        if body.len() < ACK_FIELDS_LEN {
            return Err(bad);
        }
        let mut b = body;
        self.largest_pn = b.get_u64();
        self.ack_delay_us = b.get_u32();
        self.max_datagram = b.get_u16();
        self.cumulative = b.get_u64();
        let count = usize::from(b.get_u16());
        if count > MAX_ACK_RANGES || b.len() != 16 * count {
            return Err(bad);
        }
        self.ranges.clear();
        let mut floor = self.cumulative;
        for _ in 0..count {
            let (s, e) = (b.get_u64(), b.get_u64());
            if s <= floor || e <= s {
                return Err(bad);
            }
            self.ranges.push((s, e));
            floor = e;
        }
        Ok(())
    }
}

/// Reads the `u16` of a `Hello` body (the padding after it is ignored). It does not check that
/// the datagram is at least [`MIN_DATAGRAM`] bytes or that the value is at least that: the
/// receiver has to (UDP-PKT-4).
pub fn decode_hello(body: &[u8]) -> Result<u16, PacketError> {
    let bad = PacketError::Body(PacketKind::Hello);
    if body.len() < 2 {
        return Err(bad);
    }
    Ok(u16::from_be_bytes([body[0], body[1]]))
}

/// Reads the 8 bytes of a `PathChallenge` or `PathResponse` body (UDP-PKT-5).
pub fn decode_challenge(kind: PacketKind, body: &[u8]) -> Result<[u8; 8], PacketError> {
    body.try_into().map_err(|_| PacketError::Body(kind))
}

/// Reads the reason code of a `Close` body (UDP-PKT-9).
pub fn decode_close(body: &[u8]) -> Result<u16, PacketError> {
    let b: [u8; 2] = body.try_into().map_err(|_| PacketError::Body(PacketKind::Close))?;
    Ok(u16::from_be_bytes(b))
}

/// `Close` reason codes (UDP-PKT-9). Advisory: a receiver accepts any value (UDP-END-5).
pub mod close_reason {
    /// The transfer finished or was abandoned over the control channel.
    pub const DONE: u16 = 0;
    /// The sender could not read its file.
    pub const SOURCE_ERROR: u16 = 1;
    /// The receiver could not write its file.
    pub const SINK_ERROR: u16 = 2;
}
