//! Every decoder fuzz target in one libFuzzer binary; `XFER_FUZZ_TARGET=NAME` picks the target
//! (`list` prints the names). Built and run by `fuzz/run.sh` on the stable toolchain.
#![no_main]

use std::alloc::System;
use std::sync::OnceLock;

use cap::Cap;
use libfuzzer_sys::fuzz_target;
use xfer_fuzz::{Target, TARGETS};

/// Counts live heap bytes, so that each input can be held to its target's allocation limit: an
/// allocation past it fails, which aborts the process, which libFuzzer reports as a crash.
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

static TARGET: OnceLock<&'static Target> = OnceLock::new();

fn chosen() -> &'static Target {
    let name = std::env::var("XFER_FUZZ_TARGET").unwrap_or_default();
    if name == "list" {
        TARGETS.iter().for_each(|t| println!("{}", t.name));
        std::process::exit(0);
    }
    xfer_fuzz::target(&name).unwrap_or_else(|| {
        let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!("set XFER_FUZZ_TARGET to one of: list {}", names.join(" "));
        std::process::exit(2)
    })
}

fuzz_target!(
    init: {
        TARGET.get_or_init(chosen);
    },
    |data: &[u8]| {
        let target = TARGET.get_or_init(chosen);
        let limit = ALLOC.allocated().saturating_add(target.alloc_limit(data.len()));
        let _ = ALLOC.set_limit(limit);
        (target.run)(data);
        let _ = ALLOC.set_limit(usize::MAX);
    }
);
