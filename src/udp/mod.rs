//! The UDP data path: file chunks in sealed datagrams with packet numbers, selective acks of
//! byte ranges, paced sending with a delivery-rate controller, path MTU probing and resumable
//! range maps. Normative text: `proto-spec/udp.md` (requirement IDs `UDP-*`).
//!
//! ```text
//! flow       one end of a flow as one machine: acceptance, path validation, timers,
//!            encoding, around the sender or receiver
//! packet     datagram layout: clear header, data and ack bodies (no I/O)
//! seal       AES-128-GCM per flow and direction, keyed from the TLS session
//! path       address validation per address and the amplification limit
//! replay     sliding replay window over packet numbers
//! ranges     byte range sets (held data, acked data, resume maps)
//! sender     sans-I/O sender: what to send when, loss detection, retransmission
//! receiver   sans-I/O receiver: what is held, when to ack
//! rate       bottleneck-rate and delay based rate control and pacing (used by sender)
//! ```
//!
//! The state machines never touch a socket, a file or the clock: every call takes `now`.
//! Drivers (server and client) move datagrams and file bytes around them.

pub mod flow;
pub mod packet;
pub mod path;
pub mod ranges;
pub mod rate;
pub mod receiver;
pub mod replay;
pub mod seal;
pub mod sender;
