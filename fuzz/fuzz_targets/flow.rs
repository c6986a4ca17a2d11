//! `cargo +nightly fuzz run flow`: arbitrary bytes as a sequence of datagrams received by the
//! real flow machine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xfer_fuzz::flow_datagram(data));
