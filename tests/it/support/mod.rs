//! Shared test harness: an in-process server on its own runtime, a process-based server for
//! CLI and restart tests, a raw protocol client, the CLI runner, and file helpers.
//!
//! Everything runs for real: TLS on 127.0.0.1, SQLite in a temp root, files on disk.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use xfer::client::{Client, ClientError, ConnectOptions};
use xfer::conn::{ConnError, FrameReader, FrameWriter};
use xfer::proto::{DataChunk, ErrorCode, Frame, Request, Response, Transport, CHUNK_SIZE, PROTOCOL_VERSION};
use xfer::server::{self, Server, ServerState};
use xfer::tls::{client_config, PinnedVerifier, SERVER_NAME};

#[cfg(feature = "cluster")]
pub mod cluster;
mod files;
pub mod flights;
mod in_process;
mod process;
pub mod proxy;
mod raw;

pub use files::*;
pub use in_process::*;
pub use process::*;
pub use raw::*;
// The store methods tests call on `state.store` (a `dyn UserStore`).
pub use xfer::store::UserStore;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
/// Hang guard for whole async tests.
pub const HANG: Duration = Duration::from_secs(60);
/// Hang guard for one step (a CLI run, a wait for a condition).
pub const STEP: Duration = Duration::from_secs(30);

/// Runs `f` with the global hang guard.
pub async fn guard<F: std::future::Future>(f: F) -> F::Output {
    match tokio::time::timeout(HANG, f).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {HANG:?} (hang guard)"),
    }
}
