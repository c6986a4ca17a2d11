//! linkem: a userspace link emulator between two network namespaces.
//!
//! The link model ([`model`]) and the packet delay line ([`delayline`]) are
//! pure and unit-tested; `main.rs` is the thin TUN/netns forwarding loop.

pub mod delayline;
pub mod model;
pub mod parse;
