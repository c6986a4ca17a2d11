//! xfer: a multi-user file transfer service.
//!
//! # Architecture
//!
//! ```text
//! bin/xfer.rs      clap wiring only: parses arguments, renders progress, prints one-line errors
//! proto/           wire format, no I/O: control messages (serde + bincode), frame codec,
//!                  data-chunk header; normative text in proto-spec/
//! store/           SQLite user store: argon2id hashes, quotas, usage, reservations
//! storage/         where files live, behind one trait: the local home, or a PostgreSQL
//!                  namespace over immutable S3 objects (OpenDAL)
//! pg               the PostgreSQL pool of a server process
//! auth/            password hashing and brute-force throttling (pure, clock injected)
//! home/            per-user home jail on capability handles (cap-std): path rules and file ops
//! transfer/        chunking, crc32/md5 pipelines, partial files and resume; transport-agnostic
//! udp/             UDP data path, no I/O: datagram layout and sealing, replay window, address
//!                  validation, sender/receiver state machines, rate control, byte range sets
//! flow/            UDP flows at run time: batched socket I/O, demultiplexer, the task that
//!                  drives a state machine, file source and sink with range maps
//! server/          TLS listener, sessions, command handlers, UDP socket, graceful shutdown
//! client/          async client API, known-hosts pinning, transport choice and fallback
//! config           server/client configuration (embedded defaults in config/)
//! ```
//!
//! The control connection is TLS 1.3 over TCP. File data moves either as chunk frames on that
//! connection (the TCP data path, `proto-spec/control.md`) or in sealed datagrams of a UDP flow
//! bound to it (`proto-spec/udp.md`), chosen per transfer.

pub mod auth;
pub mod client;
pub mod config;
pub mod conn;
pub mod flow;
pub mod home;
#[cfg(feature = "cluster")]
pub mod pg;
pub mod proto;
pub mod server;
pub mod size;
pub mod storage;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod udp;
