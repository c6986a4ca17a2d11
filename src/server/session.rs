//! One control session: TLS, version preamble, login, then requests until goodbye, idle
//! timeout, shutdown or disconnect.
//!
//! States: `AwaitAuth` (only `Auth` and `Bye` are served) then `Authed` (a [`Session`] holding
//! the user, the home capability and the working directory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::errors::{blocking, Reply};
use super::ServerState;
use crate::conn::{ConnError, FrameReader, FrameWriter};
use crate::home::{Home, HomePath};
use crate::proto::{ErrorCode, Frame, Request, Response, Transport, PROTOCOL_VERSION};

type Tls = TlsStream<TcpStream>;

/// The framed connection plus what ends a wait on it.
pub(crate) struct Conn {
    pub reader: FrameReader<ReadHalf<Tls>>,
    pub writer: FrameWriter<WriteHalf<Tls>>,
    stop: watch::Receiver<bool>,
    idle: Duration,
}

/// What ended a wait for the next frame.
pub(crate) enum Next {
    Frame(Frame),
    Idle,
    Stop,
}

impl Conn {
    /// Waits for the next frame, the idle timeout, or server shutdown.
    pub async fn next(&mut self) -> Result<Next, ConnError> {
        let idle = self.idle;
        tokio::select! {
            r = tokio::time::timeout(idle, self.reader.read_frame()) => match r {
                Ok(frame) => frame.map(Next::Frame),
                Err(_) => Ok(Next::Idle),
            },
            _ = self.stop.wait_for(|stop| *stop) => Ok(Next::Stop),
        }
    }

    /// Sends one reply. A reply too large for a frame is replaced by an error reply.
    pub async fn reply(&mut self, resp: &Response) -> Result<(), ConnError> {
        match self.writer.write_control(resp).await {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                let msg = "reply too large for one frame (too many directory entries?)".to_string();
                Ok(self.writer.write_control(&Response::Error { code: ErrorCode::Internal, message: msg }).await?)
            }
            other => Ok(other?),
        }
    }

    /// Sends one data frame, giving up if the peer stops reading for the idle timeout.
    /// `Ok(false)` means the session must end. Shutdown is not raced here: a frame once started
    /// is finished, so the caller can still send `ShuttingDown` between frames (CTRL-SESS-3).
    pub async fn send_data(&mut self, chunk: &crate::proto::DataChunk) -> Result<bool, ConnError> {
        match tokio::time::timeout(self.idle, self.writer.write_data(chunk)).await {
            Ok(r) => r.map(|_| true).map_err(ConnError::from),
            Err(_) => Ok(false),
        }
    }

    pub async fn reply_error(&mut self, code: ErrorCode, message: impl Into<String>) -> Result<(), ConnError> {
        self.reply(&Response::Error { code, message: message.into() }).await
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// An authenticated session.
pub(crate) struct Session {
    pub state: Arc<ServerState>,
    pub user: String,
    pub home: Arc<Home>,
    pub cwd: HomePath,
    /// Exported from this session's TLS connection; keys its UDP flows (UDP-SEAL-1).
    pub secret: crate::udp::seal::SessionSecret,
    /// Every flow id issued on this connection (UDP-CTRL-1).
    pub flow_ids: std::collections::HashSet<u64>,
}

/// Serves one TCP connection to completion. Never panics on peer input; errors end the
/// session and are logged at debug level (a vanished client is routine).
pub(crate) async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
    stop: watch::Receiver<bool>,
) {
    match run(tcp, peer, state, stop).await {
        Ok(()) | Err(ConnError::Closed) => tracing::debug!(%peer, "session ended"),
        Err(e) => tracing::debug!(%peer, "session ended: {e}"),
    }
}

async fn run(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
    stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let handshake = state.config.server.handshake_timeout();
    let tls = tokio::time::timeout(handshake, state.tls.accept(tcp))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let mut secret = [0u8; crate::udp::seal::SECRET_LEN];
    tls.get_ref()
        .1
        .export_keying_material(&mut secret, crate::udp::seal::EXPORTER_LABEL, None)
        .map_err(std::io::Error::other)?;
    let (r, w) = tokio::io::split(tls);
    let mut conn = Conn { reader: FrameReader::new(r), writer: FrameWriter::new(w), stop, idle: handshake };
    let version = tokio::time::timeout(handshake, conn.reader.read_preamble())
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
    // CTRL-HELLO-2: answer a wrong magic or version with our preamble and a clear error.
    let refusal = match version {
        Ok(PROTOCOL_VERSION) => None,
        Ok(v) => Some(format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}")),
        Err(ConnError::Decode(e)) => Some(format!("{e}; this server speaks xfer protocol {PROTOCOL_VERSION}")),
        Err(e) => return Err(e),
    };
    conn.writer.write_preamble(PROTOCOL_VERSION).await?;
    if let Some(msg) = refusal {
        conn.reply_error(ErrorCode::UnsupportedVersion, msg).await?;
        return Ok(());
    }
    // The whole login, not each attempt, must finish within the handshake timeout.
    let login = tokio::time::timeout(handshake, authenticate(&mut conn, &state, peer, secret)).await;
    let mut session = match login {
        Ok(Ok(Some(session))) => session,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return conn.reply_error(ErrorCode::IdleTimeout, "login timed out").await,
    };
    tracing::info!(%peer, user = %session.user, "logged in");
    conn.idle = state.config.server.idle_timeout();
    let result = session.serve(&mut conn).await;
    tracing::info!(%peer, user = %session.user, "logged out");
    result
}

/// The `AwaitAuth` state: serves `Auth` until one succeeds (CTRL-AUTH-*).
async fn authenticate(
    conn: &mut Conn,
    state: &Arc<ServerState>,
    peer: SocketAddr,
    secret: crate::udp::seal::SessionSecret,
) -> Result<Option<Session>, ConnError> {
    loop {
        let payload = match conn.next().await? {
            Next::Frame(Frame::Control(p)) => p,
            Next::Frame(Frame::Data(_)) => {
                conn.reply_error(ErrorCode::NotAuthenticated, "log in first").await?;
                continue;
            }
            Next::Idle => {
                conn.reply_error(ErrorCode::IdleTimeout, "login timed out").await?;
                return Ok(None);
            }
            Next::Stop => {
                conn.reply_error(ErrorCode::ShuttingDown, "server is shutting down").await?;
                return Ok(None);
            }
        };
        match Frame::decode_control::<Request>(&payload) {
            Ok(Request::Auth { user, password }) => match login(state, peer, user, password, secret).await {
                Ok(session) => {
                    conn.reply(&Response::Authed { cwd: session.cwd.to_string() }).await?;
                    return Ok(Some(session));
                }
                Err(reply) => conn.reply(&reply.into_response()).await?,
            },
            Ok(Request::Bye) => return Ok(None),
            Ok(_) => conn.reply_error(ErrorCode::NotAuthenticated, "log in first").await?,
            Err(e) => conn.reply_error(ErrorCode::BadRequest, e.to_string()).await?,
        }
    }
}

/// Checks throttling, then the password; opens the home on success. Unknown users and wrong
/// passwords get the same answer after the same work (CTRL-AUTH-3).
async fn login(
    state: &Arc<ServerState>,
    peer: SocketAddr,
    user: String,
    password: String,
    secret: crate::udp::seal::SessionSecret,
) -> Result<Session, Reply> {
    let ip = peer.ip();
    let now = std::time::Instant::now();
    if let Err(wait) = lock(&state.throttle).check(&user, ip, now) {
        tracing::warn!(%peer, %user, "login throttled");
        let secs = wait.as_secs_f64().ceil() as u64;
        return Err(Reply::new(ErrorCode::Throttled, format!("too many failed logins; try again in {secs} s")));
    }
    let st = state.clone();
    let name = user.clone();
    let ok = blocking(move || st.store.verify_password(&name, &password).map_err(Reply::internal)).await?;
    if !ok {
        lock(&state.throttle).record_failure(&user, ip, std::time::Instant::now());
        tracing::warn!(%peer, %user, "login failed");
        return Err(Reply::new(ErrorCode::AuthFailed, "login failed: wrong user name or password"));
    }
    lock(&state.throttle).record_success(&user, ip);
    let dir = state.layout.home_of(&user);
    let home = blocking(move || Home::open(&dir).map_err(Reply::from)).await?;
    Ok(Session {
        state: state.clone(),
        user,
        home: Arc::new(home),
        cwd: HomePath::root(),
        secret,
        flow_ids: Default::default(),
    })
}

/// Locks a std mutex, recovering from poisoning (the guarded data stays consistent because
/// no code panics while holding these locks).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// The `Authed` state: serves requests until goodbye, timeout or shutdown.
    async fn serve(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        loop {
            let payload = match conn.next().await? {
                Next::Frame(Frame::Control(p)) => p,
                Next::Frame(Frame::Data(_)) => {
                    conn.reply_error(ErrorCode::BadRequest, "data frame outside a transfer").await?;
                    continue;
                }
                Next::Idle => return conn.reply_error(ErrorCode::IdleTimeout, "session idle too long").await,
                Next::Stop => return conn.reply_error(ErrorCode::ShuttingDown, "server is shutting down").await,
            };
            let request = match Frame::decode_control::<Request>(&payload) {
                Ok(r) => r,
                Err(e) => {
                    conn.reply_error(ErrorCode::BadRequest, e.to_string()).await?;
                    continue;
                }
            };
            match request {
                Request::Bye => return Ok(()),
                Request::Put { path, size, resume, transport } => {
                    let go_on = match transport {
                        Transport::Tcp => self.put(conn, path, size, resume).await?,
                        Transport::Udp => self.put_udp(conn, path, size, resume).await?,
                    };
                    if !go_on {
                        return Ok(());
                    }
                }
                Request::Get { path, offset, prefix_md5, transport: Transport::Tcp } => {
                    if !self.get(conn, path, offset, prefix_md5).await? {
                        return Ok(());
                    }
                }
                Request::Get { transport: Transport::Udp, .. } => {
                    conn.reply_error(ErrorCode::UnsupportedTransport, "downloads over UDP start with GetUdp").await?;
                }
                Request::GetUdp { path, held, held_md5, rate_limit } => {
                    if !self.get_udp(conn, path, held, held_md5, rate_limit).await? {
                        return Ok(());
                    }
                }
                other => {
                    let resp = self.file_op(other).await.unwrap_or_else(Reply::into_response);
                    conn.reply(&resp).await?;
                }
            }
        }
    }

    /// Resolves a client path against the working directory.
    pub fn resolve(&self, path: &str) -> Result<HomePath, Reply> {
        Ok(HomePath::resolve(&self.cwd, path)?)
    }
}
