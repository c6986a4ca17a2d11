//! The integration tests: one binary (one link of xfer), one module per area, shared helpers in
//! `support/`. Everything runs for real: servers on loopback, TLS, SQLite, files on disk.

mod support;

/// The link model of the benchmark link emulator, shared by the virtual-time simulations.
#[path = "../../benches/linkem/src/model.rs"]
#[allow(dead_code)]
mod link_model;

mod audit;
mod auth;
mod cli;
#[cfg(feature = "cluster")]
mod cluster;
mod copy;
mod crash;
mod disk_full;
mod e2e;
mod integrity;
mod jail;
mod jail_races;
mod pacing;
mod parallel;
mod proto_props;
mod quota;
mod resume;
mod round_trips;
mod sessions;
mod sync;
mod udp_e2e;
mod udp_flow_sim;
mod udp_props;
mod udp_put_flow;
mod udp_vectors;
mod vectors;
