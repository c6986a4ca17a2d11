//! xfer: a multi-user file transfer service.
//!
//! # Architecture
//!
//! ```text
//! bin/xfer.rs      clap wiring only: parses arguments, renders progress, prints one-line errors
//! proto/           wire format, no I/O: control messages (serde + bincode), frame codec,
//!                  data-chunk header; normative text in proto-spec/
//! store/           SQLite user store: argon2id hashes, quotas, usage, reservations
//! auth/            password hashing and brute-force throttling (pure, clock injected)
//! home/            per-user home jail on capability handles (cap-std): path rules and file ops
//! transfer/        chunking, crc32/md5 pipelines, partial files and resume; transport-agnostic
//! server/          TLS listener, sessions, command handlers, graceful shutdown
//! client/          async client API, known-hosts pinning, progress events
//! config           server/client configuration (embedded defaults in config/)
//! ```
//!
//! The control connection is TLS 1.3 over TCP. File data moves as chunk frames either on that
//! connection (the TCP data path) or on a separate transport selected per transfer.

pub mod auth;
pub mod client;
pub mod config;
pub mod conn;
pub mod flow;
pub mod home;
pub mod proto;
pub mod server;
pub mod size;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod udp;
