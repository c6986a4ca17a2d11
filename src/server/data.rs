//! The data runtime: where transfers run, apart from the runtime of control commands.
//!
//! A transfer's data phase is CPU work on an async worker for every chunk (TLS decryption and
//! crc32 of TCP data frames; sealing, opening and acking UDP datagrams). With many transfers
//! those workers never idle, and a control command that shares their run queue waits behind all
//! of them; on a machine whose cores are busy as well, the kernel gives the always-runnable
//! workers only their fair share, so the wait grows to hundreds of milliseconds. Moving the
//! transfers onto a runtime of their own leaves the control runtime's workers asleep between
//! commands, and a sleeping thread that wakes is scheduled promptly.
//!
//! Readiness of a socket is reported by the reactor of the runtime it is registered with, so
//! the sockets move too: the UDP socket is registered with the data runtime, and a session's
//! TCP stream ([`Rebinding`]) re-registers with the reactor of whichever runtime polls it, at
//! the start and end of each transfer. Otherwise the control runtime would still wake for
//! every data frame's readiness.

thread_local! {
    /// True on the data runtime's threads.
    static ON_DATA: Cell<bool> = const { Cell::new(false) };
}

fn on_data_runtime() -> bool {
    ON_DATA.with(Cell::get)
}

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::session::lock;
use super::ServerState;

/// The data runtime of one `run`. Shut down (without waiting) when dropped; its handle is
/// removed from the state first, so later transfers run on the control runtime.
pub(super) struct DataRuntime {
    state: Arc<ServerState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DataRuntime {
    /// Starts the data runtime with one worker per core. Its threads are named `xfer-data`,
    /// or after the calling runtime's threads if those have a name of their own (so that a
    /// harness watching a server's threads sees these as the server's too). If it cannot
    /// start, transfers run on the control runtime (slower commands, nothing else).
    pub fn start(state: &Arc<ServerState>) -> DataRuntime {
        let name = match std::thread::current().name() {
            Some(n) if n != "main" && !n.starts_with("tokio-") => n.to_string(),
            _ => "xfer-data".to_string(),
        };
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .on_thread_start(|| ON_DATA.with(|d| d.set(true)))
            .enable_all()
            .build();
        let runtime = match built {
            Ok(rt) => {
                *lock(&state.data) = Some(rt.handle().clone());
                Some(rt)
            }
            Err(e) => {
                tracing::warn!("cannot start the data runtime: {e}; transfers share the control runtime");
                None
            }
        };
        DataRuntime { state: state.clone(), runtime }
    }
}

impl Drop for DataRuntime {
    fn drop(&mut self) {
        lock(&self.state.data).take();
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so this is allowed inside the control runtime.
            rt.shutdown_background();
        }
    }
}

/// Spawns `task` on the data runtime, or on the current one if there is none.
pub(super) fn spawn<F>(state: &ServerState, task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match lock(&state.data).clone() {
        Some(handle) => handle.spawn(task),
        None => tokio::spawn(task),
    }
}

/// Runs `f` with the data runtime (if any) as the current one, so that sockets it creates
/// register with the data runtime's reactor.
pub(super) fn enter<T>(state: &ServerState, f: impl FnOnce() -> T) -> T {
    let handle = lock(&state.data).clone();
    let _guard = handle.as_ref().map(tokio::runtime::Handle::enter);
    f()
}

/// A TCP stream that moves its registration to the reactor of the runtime polling it: the
/// control runtime's, or the data runtime's during a transfer. Moving costs two `epoll_ctl`
/// calls; a socket with data waiting is reported ready at once on the new reactor.
pub(crate) struct Rebinding {
    stream: Option<TcpStream>,
    on_data: bool,
}

impl Rebinding {
    pub fn new(stream: TcpStream) -> Rebinding {
        Rebinding { stream: Some(stream), on_data: on_data_runtime() }
    }

    /// The stream, registered with the current runtime's reactor.
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        let here = on_data_runtime();
        if here != self.on_data {
            let std = self.stream.take().ok_or_else(gone)?.into_std()?;
            self.stream = Some(TcpStream::from_std(std)?);
            self.on_data = here;
        }
        self.stream.as_mut().ok_or_else(gone)
    }

    fn poll_with<T>(
        self: Pin<&mut Self>,
        f: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.get_mut().stream() {
            Ok(s) => f(Pin::new(s)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Only after a failed re-registration, which leaves the connection unusable.
fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection lost while moving between runtimes")
}

impl AsyncRead for Rebinding {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.poll_with(|s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Rebinding {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_with(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(|s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(|s| s.poll_shutdown(cx))
    }
}
