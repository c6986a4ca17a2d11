//! The data runtime: where transfers run, apart from the runtime of control commands.
//!
//! A transfer's data phase is CPU work on an async worker for every chunk (TLS decryption and
//! crc32 of TCP data frames; sealing, opening and acking UDP datagrams). With many transfers
//! those workers never idle, and a control command that shares their run queue waits behind all
//! of them; on a machine whose cores are busy as well, the kernel gives the always-runnable
//! workers only their fair share, so the wait grows to hundreds of milliseconds. Moving the
//! transfers onto a runtime of their own leaves the control runtime's workers asleep between
//! commands, and a sleeping thread that wakes is scheduled promptly.

use std::future::Future;
use std::sync::Arc;

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
        let built =
            tokio::runtime::Builder::new_multi_thread().worker_threads(workers).thread_name(name).enable_all().build();
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
