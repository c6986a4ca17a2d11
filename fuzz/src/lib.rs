//! The decoder fuzz targets: pure functions of untrusted bytes, kept free of libFuzzer so that
//! the root crate's tests (`tests/it/udp_props.rs` includes this file) run the same code on stable.
//!
//! Each target panics only on a real bug: a decoder that panics, or a decoded value that does
//! not re-encode to its input where the format is canonical. The fuzz binary also caps what one
//! input may allocate ([`Target::alloc_limit`]), so a parser that allocates far beyond its input
//! aborts the run as a crash.
//!
//! Adding a target is one row in [`TARGETS`] (and, optionally, seeds in `fuzz/seeds/NAME/`).

mod control;
mod datagram;
mod flow;
mod seeds;
mod text;

pub use control::{control_frames, control_request, control_response};
pub use datagram::{body_by_kind, datagram, datagram_sealed, fixed_keys};
pub use flow::{flow_datagram, VECTOR_FLOW};
pub use seeds::{seeds_from_sources, vector_bytes, Seed};
pub use text::{client_config, client_range_map, known_hosts, server_config, store_range_map};

/// One fuzz target: a name (the `XFER_FUZZ_TARGET` value and the `seeds/`, `corpus/` folder
/// name) and the function that takes one input.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Bytes one input may allocate beyond [`ALLOC_PER_INPUT_BYTE`] per input byte: the
    /// fixed buffers of the decoder under test.
    pub fixed_alloc: usize,
}

/// What a decoder may allocate per byte of input, on top of [`Target::fixed_alloc`].
pub const ALLOC_PER_INPUT_BYTE: usize = 64;

/// Fixed allocation allowed to every target: serde's cautious pre-allocation of a sequence
/// (at most 1 MiB whatever length a peer claims) plus slack for the harness itself.
pub const DEFAULT_FIXED_ALLOC: usize = 2 << 20;

impl Target {
    pub const fn new(name: &'static str, run: fn(&[u8])) -> Target {
        Target { name, run, fixed_alloc: DEFAULT_FIXED_ALLOC }
    }

    /// The same target with `bytes` more of fixed allocation allowed.
    pub const fn with_fixed_alloc(self, bytes: usize) -> Target {
        Target { fixed_alloc: DEFAULT_FIXED_ALLOC + bytes, ..self }
    }

    /// Most bytes one input of `len` bytes may have allocated at once.
    pub fn alloc_limit(&self, len: usize) -> usize {
        self.fixed_alloc.saturating_add(len.saturating_mul(ALLOC_PER_INPUT_BYTE))
    }
}

/// Every target, in the order CI runs them.
pub const TARGETS: &[Target] = &[
    // FrameDecoder::new() holds a buffer of two chunks, and a second one once a decoded frame
    // (a `Bytes` slice of the first) is still alive when the decoder grows.
    Target::new("control_frames", control_frames).with_fixed_alloc(2 * (2 * xfer::proto::CHUNK_SIZE + 64)),
    Target::new("control_request", control_request),
    Target::new("control_response", control_response),
    Target::new("datagram", datagram),
    Target::new("datagram_sealed", datagram_sealed),
    Target::new("store_range_map", store_range_map),
    Target::new("client_range_map", client_range_map),
    Target::new("server_config", server_config),
    Target::new("client_config", client_config),
    Target::new("known_hosts", known_hosts),
    // Four flows, each with a 1 MiB block of file bytes and its send and receive state.
    Target::new("flow", flow_datagram).with_fixed_alloc(16 << 20),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
