//! One control session: TLS, version preamble, login, then requests until goodbye, idle
//! timeout, shutdown, revocation or disconnect.
//!
//! States: `AwaitAuth` (only `Auth` and `Bye` are served; see `login.rs`) then `Authed` (a
//! [`Session`] holding the user, the home capability and the working directory). The whole
//! `AwaitAuth` state, TLS handshake included, runs against one deadline (CTRL-SESS-2) with a
//! small frame limit (CTRL-FRAME-6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::audit::{Audit, Clean};
use super::data::Rebinding;
use super::errors::Reply;
use super::limits::PendingPermit;
use super::udp::GetAsk;
use super::ServerState;
use crate::conn::{ConnError, FrameReader, FrameWriter};
use crate::home::{Home, HomePath};
use crate::proto::{ErrorCode, Frame, Request, Response, Transport, PROTOCOL_VERSION};

type Tls = TlsStream<Rebinding>;

/// CTRL-SESS-7's reply text.
const REVOKED: &str = "session ended: the account was changed or deleted";

/// Time allowed for the last error reply to a client that may not be reading.
const FAREWELL: Duration = Duration::from_secs(1);

/// The framed connection plus what ends a wait on it.
pub(crate) struct Conn {
    pub reader: FrameReader<ReadHalf<Tls>>,
    pub writer: FrameWriter<WriteHalf<Tls>>,
    stop: watch::Receiver<bool>,
    revoked: watch::Receiver<bool>,
    idle: Duration,
    /// What the transfer replies and data frames said, for the audit line of a transfer.
    pub(crate) tally: super::dispatch::Tally,
}

/// What ended a wait for the next frame.
pub(crate) enum Next {
    Frame(Frame),
    Idle,
    /// Server shutdown, or the session was revoked (see [`Conn::revoked`]).
    Stop,
}

impl Conn {
    /// Waits for the next frame, the idle timeout, server shutdown or revocation.
    pub async fn next(&mut self) -> Result<Next, ConnError> {
        let idle = self.idle;
        let next = tokio::select! {
            r = tokio::time::timeout(idle, self.reader.read_frame()) => match r {
                Ok(frame) => frame.map(Next::Frame),
                Err(_) => Ok(Next::Idle),
            },
            _ = fired(&mut self.stop) => Ok(Next::Stop),
            _ = fired(&mut self.revoked) => Ok(Next::Stop),
        };
        if let Ok(Next::Frame(Frame::Data(chunk))) = &next {
            self.tally.received(chunk.data.len());
        }
        next
    }

    /// Sends one reply. A reply too large for a frame is replaced by an error reply. Every
    /// error reply is counted here, by code (OPS-METRICS-1).
    pub async fn reply(&mut self, resp: &Response) -> Result<(), ConnError> {
        self.tally.replied(resp);
        if let Response::Error { code, .. } = resp {
            super::metrics::error_reply(*code);
        }
        match self.writer.write_control(resp).await {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                let msg = "reply too large for one frame (too many directory entries?)".to_string();
                super::metrics::error_reply(ErrorCode::Internal);
                Ok(self.writer.write_control(&Response::Error { code: ErrorCode::Internal, message: msg }).await?)
            }
            other => Ok(other?),
        }
    }

    /// Sends the reply to a request that rode behind a transfer (UDP-CTRL-8): it does not
    /// change what the transfer's audit line and metrics say.
    pub async fn reply_beside(&mut self, resp: &Response) -> Result<(), ConnError> {
        let recorded = self.tally.recorded();
        let sent = self.reply(resp).await;
        self.tally.restore(recorded);
        sent
    }

    /// Sends one data frame, giving up if the peer stops reading for the idle timeout.
    /// `Ok(false)` means the session must end. Shutdown is not raced here: a frame once started
    /// is finished, so the caller can still send `ShuttingDown` between frames (CTRL-SESS-3).
    pub async fn send_data(&mut self, chunk: &crate::proto::DataChunk) -> Result<bool, ConnError> {
        match tokio::time::timeout(self.idle, self.writer.write_data(chunk)).await {
            Ok(r) => {
                r?;
                self.tally.sent(chunk.data.len());
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    pub async fn reply_error(&mut self, code: ErrorCode, message: impl Into<String>) -> Result<(), ConnError> {
        self.reply(&Response::Error { code, message: message.into() }).await
    }

    /// A last error reply, bounded in time: the client may have stopped reading.
    async fn farewell(&mut self, code: ErrorCode, message: &str) -> Result<(), ConnError> {
        match tokio::time::timeout(FAREWELL, self.reply_error(code, message)).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    /// True once the server shuts down or the session is revoked.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow() || *self.revoked.borrow()
    }

    /// True once the session's user was changed or deleted (CTRL-SESS-7).
    pub fn revoked(&self) -> bool {
        *self.revoked.borrow()
    }

    /// The error that ends whatever the session was doing when [`Next::Stop`] came: a revoked
    /// session is no longer authenticated (CTRL-SESS-7), anything else is shutdown
    /// (CTRL-SESS-3). `transfer`: the reply ends a transfer, which can be resumed later.
    /// The wording of the revocation is the one CTRL-SESS-7 gives.
    pub fn stop_error(&self, transfer: bool) -> (ErrorCode, &'static str) {
        match (self.revoked(), transfer) {
            (true, _) => (ErrorCode::NotAuthenticated, REVOKED),
            (false, false) => (ErrorCode::ShuttingDown, "server is shutting down"),
            (false, true) => (ErrorCode::ShuttingDown, "server is shutting down; the transfer can be resumed"),
        }
    }
}

/// Resolves once `flag` turns true; never, if its sender is gone without doing so.
async fn fired(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// An authenticated session.
pub(crate) struct Session {
    pub state: Arc<ServerState>,
    pub user: String,
    pub peer: SocketAddr,
    pub home: Arc<Home>,
    /// The namespace of the home, for the file operations.
    pub storage: Arc<dyn crate::storage::Storage>,
    pub cwd: HomePath,
    /// Exported from this session's TLS connection; keys its UDP flows (UDP-SEAL-1).
    pub secret: crate::udp::seal::SessionSecret,
    /// Every flow id issued on this connection (UDP-CTRL-1).
    pub flow_ids: std::collections::HashSet<u64>,
    /// The session's slot and revocation handle; released when the session ends.
    pub(crate) _slot: super::login::SessionSlot,
}

/// Serves one TCP connection to completion. Never panics on peer input; errors end the
/// session and are logged at debug level (a vanished client is routine).
pub(crate) async fn serve_connection(
    tcp: Rebinding,
    peer: SocketAddr,
    state: Arc<ServerState>,
    stop: watch::Receiver<bool>,
    pending: PendingPermit,
) {
    match run(tcp, peer, state, stop, pending).await {
        Ok(()) | Err(ConnError::Closed) => tracing::debug!(%peer, "session ended"),
        Err(e) => tracing::debug!(%peer, "session ended: {e}"),
    }
}

async fn run(
    tcp: Rebinding,
    peer: SocketAddr,
    state: Arc<ServerState>,
    stop: watch::Receiver<bool>,
    pending: PendingPermit,
) -> Result<(), ConnError> {
    // CTRL-SESS-2: one deadline from accept to login, TLS handshake included.
    let deadline = Instant::now() + state.config.server.handshake_timeout();
    let timed_out = || ConnError::Io(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let opened = tokio::time::timeout_at(deadline, open(tcp, &state, stop)).await.map_err(|_| timed_out())?;
    let (mut conn, secret) = match opened? {
        Some(x) => x,
        None => return Ok(()),
    };
    let login = tokio::time::timeout_at(deadline, super::login::authenticate(&mut conn, &state, peer, secret)).await;
    let session = match login {
        Ok(Ok(Some(session))) => session,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return conn.farewell(ErrorCode::IdleTimeout, "login timed out").await,
    };
    drop(pending);
    let (user, peer) = (session.user.clone(), session.peer);
    conn.idle = state.config.server.idle_timeout();
    conn.revoked = session._slot.revoked();
    conn.reader.set_max_frame(crate::proto::MAX_FRAME_LEN);
    let _gauge = super::metrics::GaugeGuard::new(metrics::gauge!(super::metrics::SESSIONS));
    let result = session.serve(conn).await;
    tracing::info!(%peer, user = %Clean(&user), "logged out");
    result
}

/// TLS handshake and preambles (CTRL-HELLO-1, CTRL-HELLO-2). `None`: the version was refused.
async fn open(
    tcp: Rebinding,
    state: &ServerState,
    stop: watch::Receiver<bool>,
) -> Result<Option<(Conn, crate::udp::seal::SessionSecret)>, ConnError> {
    let tls = state.tls.accept(tcp).await?;
    let mut secret = [0u8; crate::udp::seal::SECRET_LEN];
    tls.get_ref()
        .1
        .export_keying_material(&mut secret, crate::udp::seal::EXPORTER_LABEL, None)
        .map_err(std::io::Error::other)?;
    let (r, w) = tokio::io::split(tls);
    let mut reader = FrameReader::new(r);
    reader.set_max_frame(crate::proto::MAX_PRELOGIN_FRAME_LEN);
    let idle = state.config.server.handshake_timeout();
    let (_, revoked) = watch::channel(false);
    let mut conn =
        Conn { reader, writer: FrameWriter::new(w), stop, revoked, idle, tally: super::dispatch::Tally::default() };
    let version = conn.reader.read_preamble().await;
    let refusal = match version {
        Ok(PROTOCOL_VERSION) => None,
        Ok(v) => Some(format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}")),
        Err(ConnError::Decode(e)) => Some(format!("{e}; this server speaks xfer protocol {PROTOCOL_VERSION}")),
        Err(e) => return Err(e),
    };
    conn.writer.write_preamble(PROTOCOL_VERSION).await?;
    if let Some(msg) = refusal {
        conn.reply_error(ErrorCode::UnsupportedVersion, msg).await?;
        return Ok(None);
    }
    Ok(Some((conn, secret)))
}

/// Requests whose data phase runs on the data runtime.
fn is_transfer(request: &Request) -> bool {
    matches!(
        request,
        Request::Put { .. }
            | Request::PutFlow { .. }
            | Request::Get { .. }
            | Request::GetUdp { .. }
            | Request::GetAuto { .. }
            | Request::GetFlow { .. }
    )
}

/// Locks a std mutex, recovering from poisoning (the guarded data stays consistent because
/// no code panics while holding these locks).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// The `Authed` state: serves requests until goodbye, timeout, shutdown or revocation.
    async fn serve(mut self, mut conn: Conn) -> Result<(), ConnError> {
        loop {
            let payload = match conn.next().await? {
                Next::Frame(Frame::Control(p)) => p,
                Next::Frame(Frame::Data(_)) => {
                    conn.reply_error(ErrorCode::BadRequest, "data frame outside a transfer").await?;
                    continue;
                }
                Next::Idle => return conn.farewell(ErrorCode::IdleTimeout, "session idle too long").await,
                Next::Stop => return self.stopped(&mut conn).await,
            };
            let request = match Frame::decode_control::<Request>(&payload) {
                Ok(r) => r,
                Err(e) => {
                    conn.reply_error(ErrorCode::BadRequest, e.to_string()).await?;
                    continue;
                }
            };
            let go_on = if is_transfer(&request) {
                let (session, back, go_on) = self.transfer(conn, request).await?;
                (self, conn) = (session, back);
                go_on
            } else {
                self.dispatch(&mut conn, request).await?
            };
            if !go_on {
                // A transfer cut by revocation has sent its final error (`Conn::stop_error`).
                if conn.revoked() {
                    self.count_revoked();
                }
                return Ok(());
            }
        }
    }

    /// Serves a transfer request on the data runtime (`server::data`): the session and its
    /// connection move there for the transfer and come back with its outcome.
    async fn transfer(self, conn: Conn, request: Request) -> Result<(Session, Conn, bool), ConnError> {
        let state = self.state.clone();
        let job = super::data::spawn(&state, async move {
            let (mut session, mut conn) = (self, conn);
            let go_on = session.dispatch(&mut conn, request).await;
            (session, conn, go_on)
        });
        match job.await {
            Ok((session, conn, go_on)) => Ok((session, conn, go_on?)),
            // Only a shutdown of the data runtime (the server is exiting) ends the job early.
            Err(e) => Err(ConnError::Io(std::io::Error::other(format!("transfer ended: {e}")))),
        }
    }

    /// Ends the session for shutdown (CTRL-SESS-3) or revocation (CTRL-SESS-7).
    async fn stopped(&self, conn: &mut Conn) -> Result<(), ConnError> {
        if conn.revoked() {
            self.count_revoked();
        }
        let (code, message) = conn.stop_error(false);
        conn.farewell(code, message).await
    }

    fn count_revoked(&self) {
        metrics::counter!(super::metrics::SESSIONS_REVOKED).increment(1);
        Audit::new("session_revoked", &self.user, self.peer, "").emit();
    }

    /// Serves one request. `Ok(false)`: the session must end.
    async fn dispatch(&mut self, conn: &mut Conn, request: Request) -> Result<bool, ConnError> {
        match request {
            Request::Bye => Ok(false),
            Request::Put { path, size, resume, transport } => {
                let watch = super::dispatch::TransferWatch::start(conn, "put", transport);
                let go_on = match transport {
                    Transport::Tcp => self.put(conn, path.clone(), size, resume).await,
                    Transport::Udp => self.put_udp(conn, path.clone(), size, resume, None).await,
                };
                watch.finish(conn, self, &path);
                go_on
            }
            Request::PutFlow { path, size, resume, flow } => {
                let watch = super::dispatch::TransferWatch::start(conn, "put", Transport::Udp);
                let go_on = self.put_udp(conn, path.clone(), size, resume, Some(flow)).await;
                watch.finish(conn, self, &path);
                go_on
            }
            Request::Get { path, offset, prefix_md5, transport: Transport::Tcp } => {
                let watch = super::dispatch::TransferWatch::start(conn, "get", Transport::Tcp);
                let go_on = self.get(conn, path.clone(), offset, prefix_md5).await;
                watch.finish(conn, self, &path);
                go_on
            }
            Request::Get { transport: Transport::Udp, .. } => {
                conn.reply_error(ErrorCode::UnsupportedTransport, "downloads over UDP start with GetUdp").await?;
                Ok(true)
            }
            Request::GetUdp { path, held, held_md5, rate_limit } => {
                let held_bytes = held.iter().map(|r| r.1.saturating_sub(r.0)).sum();
                let watch = super::dispatch::TransferWatch::start_holding(conn, "get", Transport::Udp, held_bytes);
                let go_on = self.get_udp(conn, path.clone(), GetAsk { held, held_md5, rate_limit, chosen: None }).await;
                watch.finish(conn, self, &path);
                go_on
            }
            Request::GetAuto { path, held, held_md5, rate_limit, tcp_max } => {
                // The watch reports the transport the server picked (its ready reply).
                let held_bytes = held.iter().map(|r| r.1.saturating_sub(r.0)).sum();
                let watch = super::dispatch::TransferWatch::start_holding(conn, "get", Transport::Udp, held_bytes);
                let ask = GetAsk { held, held_md5, rate_limit, chosen: None };
                let go_on = self.get_auto(conn, path.clone(), ask, tcp_max).await;
                watch.finish(conn, self, &path);
                go_on
            }
            Request::GetFlow { path, held, held_md5, rate_limit, tcp_max, flow } => {
                // UDP-CTRL-11: as GetAuto or GetUdp, over the flow the client chose.
                let held_bytes = held.iter().map(|r| r.1.saturating_sub(r.0)).sum();
                let watch = super::dispatch::TransferWatch::start_holding(conn, "get", Transport::Udp, held_bytes);
                let ask = GetAsk { held, held_md5, rate_limit, chosen: Some(flow) };
                let go_on = match tcp_max {
                    Some(tcp_max) => self.get_auto(conn, path.clone(), ask, tcp_max).await,
                    None => self.get_udp(conn, path.clone(), ask).await,
                };
                // Served over TCP, refused, or ended: what was held for the id is not needed,
                // and the id is not used again on this connection (UDP-CTRL-1).
                self.state.flows.discard_early(flow);
                self.flow_ids.insert(flow);
                watch.finish(conn, self, &path);
                go_on
            }
            Request::SetAttrs { ref path, upload_md5: Some(md5), .. } if !self.committed(conn, path, md5) => {
                let msg = "no committed upload of this file in this session to give these attributes to";
                conn.reply_error(ErrorCode::SourceChanged, msg).await?;
                Ok(true)
            }
            other => {
                let change = super::dispatch::Change::of(&other, self);
                let resp = self.file_op(other).await.unwrap_or_else(Reply::into_response);
                if let Some(change) = change {
                    change.emit(self, &resp);
                }
                conn.reply(&resp).await?;
                Ok(true)
            }
        }
    }

    /// True if this session's latest upload committed `path` with digest `md5` (CTRL-ATTR-2).
    fn committed(&self, conn: &Conn, path: &str, md5: crate::proto::control::Md5Digest) -> bool {
        let target = self.resolve(path).ok();
        conn.tally.last_upload.as_ref().is_some_and(|(p, m)| Some(p) == target.as_ref() && *m == md5)
    }

    /// Resolves a client path against the working directory.
    pub fn resolve(&self, path: &str) -> Result<HomePath, Reply> {
        Ok(HomePath::resolve(&self.cwd, path)?)
    }
}
