//! `cargo +nightly fuzz run datagram`: arbitrary bytes as a received datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xfer_fuzz::datagram(data));
