//! The async client: connects over TLS with a pinned certificate, logs in, and runs commands.
//! It reports transfer progress through [`crate::transfer::Progress`] events and never
//! renders anything itself.

mod ahead;
pub mod fallback;
mod files;
mod get_end;
mod get_request;
mod greeting;
pub mod known_hosts;
pub mod local;
mod pace;
mod partial;
pub mod path_memory;
mod transfer;
mod udp;

pub use partial::{format_range_map, parse_range_map, partial_path};

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::conn::{Batch, ConnError, FrameReader, FrameWriter};
use crate::proto::{Entry, ErrorCode, Frame, Request, Response, TreeEntry, PROTOCOL_VERSION};
use crate::tls::{client_config, format_fingerprint, Fingerprint, PinnedVerifier, SERVER_NAME};
use crate::transfer::TransferError;
use greeting::{Expect, Greeting};
use known_hosts::KnownHosts;

pub use ahead::AHEAD_MAX;
pub use files::SMALL_TRANSFER_MAX;
pub use transfer::TransferSummary;

/// Client failures, each rendered as one line by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: std::io::Error },
    #[error(
        "SERVER CERTIFICATE CHANGED for {host}: pinned {expected}, server presented {got}. \
         This may be an attack. If the server was legitimately re-keyed, remove its line from {known_hosts}"
    )]
    HostKeyChanged { host: String, expected: String, got: String, known_hosts: PathBuf },
    #[error("unknown server {host} with certificate {fingerprint}; it is not trusted yet")]
    UnknownHost { host: String, fingerprint: String },
    #[error("server certificate for {0} was not accepted")]
    HostRejected(String),
    #[error("server speaks protocol version {0}; this client speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion(u16),
    #[error("{message}")]
    Server { code: ErrorCode, message: String },
    #[error("unexpected reply from server: {0}")]
    Protocol(String),
    #[error("{path}: {source}")]
    Local { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Transfer(#[from] TransferError),
    #[error("{0}")]
    Conn(#[from] ConnError),
    #[error("known-hosts file {path}: {source}")]
    KnownHosts { path: PathBuf, source: std::io::Error },
    #[error("connection is no longer usable after an interrupted transfer")]
    Broken,
    #[error("UDP transfer failed: {0}; the TCP transport may work")]
    Udp(String),
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Asks a person whether to trust a first-seen server: `(host, fingerprint) -> accept`.
pub type ConfirmHost = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// How to reach and trust a server.
pub struct ConnectOptions {
    /// `HOST:PORT`.
    pub server: String,
    /// Directory holding `known_hosts`.
    pub config_dir: PathBuf,
    /// Trust a first-seen certificate without asking.
    pub accept_new_host: bool,
    /// Asked on first contact when `accept_new_host` is false; `None` refuses.
    pub confirm_new_host: Option<ConfirmHost>,
}

type Tls = TlsStream<TcpStream>;

/// A connected, possibly logged-in client.
pub struct Client {
    reader: FrameReader<ReadHalf<Tls>>,
    writer: FrameWriter<WriteHalf<Tls>>,
    broken: bool,
    /// What the server sends before the replies to our requests, still to be read.
    greeting: Greeting,
    /// The server's address; its UDP flows use the same port (UDP-CTRL-1).
    peer: std::net::SocketAddr,
    /// Exported from the TLS session; keys UDP flows (UDP-SEAL-1).
    secret: crate::udp::seal::SessionSecret,
    /// The server as connected to (`HOST:PORT`), and what its last upload learnt of the
    /// path (UDP-RATE-8).
    server: String,
    paths: path_memory::PathMemory,
    /// Attributes the upload in progress gives its file (CTRL-ATTR-2), until sent.
    attrs_pending: Option<FileAttrs>,
    /// Ask for the file's entry behind the next TCP `Get` (CTRL-ATTR-3), and what came back.
    walk_behind_get: bool,
    walked: Option<TreeEntry>,
    /// The server answered `GetAuto` with `BadRequest` (it predates it): downloads under
    /// `auto` ask with `GetUdp` on this connection (UDP-FALLBACK-5).
    get_auto_refused: bool,
    /// The server answered `PutFlow` with `BadRequest` (it predates it, or refused the id):
    /// uploads ask with `Put { transport: Udp }` on this connection (UDP-CTRL-9).
    put_flow_refused: bool,
    /// The server answered `GetFlow` with `BadRequest` (it predates it, or refused the id):
    /// downloads ask with `GetAuto` or `GetUdp` on this connection (UDP-CTRL-11).
    get_flow_refused: bool,
    /// The rate limit of the transfer in progress, for TCP pacing (CTRL-XFER-9).
    tcp_rate: Option<u64>,
    /// Small transfers sent ahead whose replies are unread (CTRL-PUT-8, CTRL-GET-6).
    ahead: ahead::AheadQueue,
}

/// What `SetAttrs` writes: the source's mtime, and its permission bits when kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttrs {
    pub mtime: i64,
    pub mode: Option<u32>,
}

/// Which transport carries a transfer's data, as chosen by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// UDP, falling back to TCP when UDP is blocked or does clearly worse (UDP-FALLBACK-*).
    #[default]
    Auto,
    Udp,
    Tcp,
}

/// How to run one transfer.
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    pub resume: bool,
    pub transport: TransportChoice,
    /// Cap on the rate in bytes per second, on every transport (UDP-CTRL-3, CTRL-XFER-9).
    pub rate_limit: Option<u64>,
}

impl Client {
    /// Connects, verifies or pins the server certificate, and sends our version preamble. The
    /// server's preamble is read (and checked) before the first reply.
    pub async fn connect(opts: &ConnectOptions) -> Result<Client, ClientError> {
        let mut client = Client::open(opts).await?;
        let mut hello = Batch::new();
        hello.preamble(PROTOCOL_VERSION);
        client.writer.write_batch(hello).await.map_err(ConnError::from)?;
        Ok(client)
    }

    /// Connects and logs in without waiting: the preamble and `Auth` leave together, and the
    /// first request follows them at once (CTRL-AUTH-6). The server's preamble and its reply to
    /// the login are read before the first request's reply; a refused login is what that
    /// request then fails with, and the client is of no further use.
    pub async fn connect_and_login(opts: &ConnectOptions, user: &str, password: &str) -> Result<Client, ClientError> {
        let mut client = Client::open(opts).await?;
        let mut hello = Batch::new();
        hello.preamble(PROTOCOL_VERSION);
        hello
            .control(&Request::Auth { user: user.to_string(), password: password.to_string() })
            .map_err(ConnError::from)?;
        client.writer.write_batch(hello).await.map_err(ConnError::from)?;
        client.greeting.login_sent();
        Ok(client)
    }

    /// Sends the login of a client made by [`Client::connect`] without waiting for its reply,
    /// so the next request goes out right behind it (CTRL-AUTH-6) and reports a refusal.
    pub async fn send_login(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        let auth = Request::Auth { user: user.to_string(), password: password.to_string() };
        if let Err(e) = self.writer.write_control(&auth).await {
            self.broken = true;
            return Err(ConnError::from(e).into());
        }
        self.greeting.login_sent();
        Ok(())
    }

    /// TCP and TLS: verifies or pins the server certificate and keys the UDP flows.
    async fn open(opts: &ConnectOptions) -> Result<Client, ClientError> {
        let kh_path = opts.config_dir.join("known_hosts");
        let kh_err = |source| ClientError::KnownHosts { path: kh_path.clone(), source };
        let mut known = KnownHosts::load(&kh_path).map_err(kh_err)?;
        let expected = known.get(&opts.server);
        let verifier = Arc::new(PinnedVerifier::new(expected));
        let config = client_config(verifier.clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let addr = opts.server.clone();
        let tcp =
            TcpStream::connect(&addr).await.map_err(|source| ClientError::Connect { addr: addr.clone(), source })?;
        // Requests are small and answered at once: never hold one back for Nagle.
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr().map_err(|source| ClientError::Connect { addr: addr.clone(), source })?;
        let name =
            rustls::pki_types::ServerName::try_from(SERVER_NAME).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let tls = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
            Ok(tls) => tls,
            Err(source) => return Err(handshake_error(opts, &known, expected, verifier.seen(), source)),
        };
        if expected.is_none() {
            let seen = verifier.seen().ok_or_else(|| ClientError::Protocol("no server certificate".into()))?;
            trust_new_host(opts, &mut known, seen).map_err(|e| match e {
                ClientError::KnownHosts { source, .. } => kh_err(source),
                other => other,
            })?;
        }
        let mut secret = [0u8; crate::udp::seal::SECRET_LEN];
        tls.get_ref()
            .1
            .export_keying_material(&mut secret, crate::udp::seal::EXPORTER_LABEL, None)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (r, w) = tokio::io::split(tls);
        Ok(Client {
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
            broken: false,
            greeting: Greeting::new(),
            peer,
            secret,
            server: opts.server.clone(),
            paths: path_memory::PathMemory::new(&opts.config_dir),
            attrs_pending: None,
            walk_behind_get: false,
            walked: None,
            get_auto_refused: false,
            put_flow_refused: false,
            get_flow_refused: false,
            tcp_rate: None,
            ahead: ahead::AheadQueue::default(),
        })
    }

    /// Logs in and waits for the answer; returns the working directory.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<String, ClientError> {
        let req = Request::Auth { user: user.to_string(), password: password.to_string() };
        match self.call(&req).await? {
            Response::Authed { cwd } => Ok(cwd),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request and reads its reply; an error reply becomes `ClientError::Server`.
    async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        if self.ahead_in_flight() > 0 {
            // Its reply would be read as theirs (CTRL-SESS-1).
            return Err(ClientError::Protocol("a request is sent while small transfers are unanswered".into()));
        }
        self.writer.write_control(req).await.map_err(ConnError::from)?;
        self.read_response().await
    }

    /// Reads the reply to our oldest unanswered request, after what the server sent first.
    async fn read_response(&mut self) -> Result<Response, ClientError> {
        self.settle_greeting().await?;
        self.read_reply().await
    }

    /// Reads the server's preamble and the reply to a pipelined login, if still unread. A
    /// failure leaves the connection unusable: what follows is out of step (CTRL-AUTH-6).
    async fn settle_greeting(&mut self) -> Result<(), ClientError> {
        loop {
            let step = match self.greeting.expect() {
                Expect::Nothing => return Ok(()),
                Expect::Preamble => match self.reader.read_preamble().await {
                    Ok(version) => self.greeting.handle_preamble(version),
                    Err(e) => Err(e.into()),
                },
                Expect::LoginReply => {
                    let reply = self.read_reply().await;
                    self.greeting.handle_login_reply(reply)
                }
            };
            if let Err(e) = step {
                self.broken = true;
                return Err(e);
            }
        }
    }

    /// Reads one reply frame; an error reply becomes `ClientError::Server`.
    async fn read_reply(&mut self) -> Result<Response, ClientError> {
        reply_of(self.reader.read_frame().await)
    }

    async fn call_ok(&mut self, req: Request) -> Result<(), ClientError> {
        match self.call(&req).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn pwd(&mut self) -> Result<String, ClientError> {
        match self.call(&Request::Pwd).await? {
            Response::Pwd { path } => Ok(path),
            other => Err(unexpected(other)),
        }
    }

    /// Changes the working directory; returns the new one.
    pub async fn cd(&mut self, path: &str) -> Result<String, ClientError> {
        match self.call(&Request::Cd { path: path.to_string() }).await? {
            Response::Pwd { path } => Ok(path),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list(&mut self, path: &str) -> Result<Vec<Entry>, ClientError> {
        match self.call(&Request::List { path: path.to_string() }).await? {
            Response::Listing { entries } => Ok(entries),
            other => Err(unexpected(other)),
        }
    }

    pub async fn stat(&mut self, path: &str) -> Result<Entry, ClientError> {
        match self.call(&Request::Stat { path: path.to_string() }).await? {
            Response::Stat { entry } => Ok(entry),
            other => Err(unexpected(other)),
        }
    }

    pub async fn mkdir(&mut self, path: &str) -> Result<(), ClientError> {
        self.call_ok(Request::Mkdir { path: path.to_string() }).await
    }

    pub async fn remove(&mut self, path: &str) -> Result<(), ClientError> {
        self.call_ok(Request::Remove { path: path.to_string() }).await
    }

    pub async fn rmdir(&mut self, path: &str) -> Result<(), ClientError> {
        self.call_ok(Request::Rmdir { path: path.to_string() }).await
    }

    pub async fn rename(&mut self, from: &str, to: &str) -> Result<(), ClientError> {
        self.call_ok(Request::Rename { from: from.to_string(), to: to.to_string() }).await
    }

    /// Copies a remote file inside the home (CTRL-COPY-1).
    pub async fn copy(&mut self, from: &str, to: &str) -> Result<(), ClientError> {
        self.call_ok(Request::Copy { from: from.to_string(), to: to.to_string() }).await
    }

    /// Usage and quota as the server's `Df` reply.
    pub async fn df(&mut self) -> Result<Response, ClientError> {
        match self.call(&Request::Df).await? {
            r @ Response::Df { .. } => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// md5 and size of a remote file.
    pub async fn sum(&mut self, path: &str) -> Result<([u8; 16], u64), ClientError> {
        match self.call(&Request::Sum { path: path.to_string() }).await? {
            Response::Sum { md5, size } => Ok((md5, size)),
            other => Err(unexpected(other)),
        }
    }

    /// Sets a remote file's mtime and, with `mode`, its permission bits (CTRL-ATTR-1).
    pub async fn set_attrs(&mut self, path: &str, mtime: i64, mode: Option<u32>) -> Result<(), ClientError> {
        self.call_ok(Request::SetAttrs { path: path.to_string(), mtime, mode, upload_md5: None }).await
    }

    /// Uploads like [`Client::put_with`] and gives the new file `attrs` (CTRL-ATTR-2): a small
    /// upload carries its `SetAttrs` in the same flight, a larger one sends it after `PutDone`.
    /// A server that predates `SetAttrs` answers `BadRequest`; the file is then kept as uploaded.
    pub async fn put_keeping(
        &mut self,
        local: &std::path::Path,
        remote: &str,
        opts: &TransferOptions,
        attrs: FileAttrs,
        progress: crate::transfer::ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        self.attrs_pending = Some(attrs);
        let result = self.put_with(local, remote, opts, progress).await;
        let pending = self.attrs_pending.take();
        let summary = result?;
        if let Some(a) = pending {
            let req = Request::SetAttrs {
                path: remote.to_string(),
                mtime: a.mtime,
                mode: a.mode,
                upload_md5: Some(summary.md5),
            };
            match self.call_ok(req).await {
                Err(e) if e.code() == Some(ErrorCode::BadRequest) => {}
                other => other?,
            }
        }
        Ok(summary)
    }

    /// Downloads like [`Client::get_with`] and also returns the remote file's entry, with its
    /// mtime and mode (CTRL-ATTR-3): the `Walk` rides in the same flight as the `Get` or, under
    /// `auto`, the `GetAuto` (UDP-CTRL-8); a download asked for with `GetUdp` sends it
    /// afterwards. `None` from a server that predates `Walk`.
    pub async fn get_keeping(
        &mut self,
        remote: &str,
        local: &std::path::Path,
        opts: &TransferOptions,
        progress: crate::transfer::ProgressFn,
    ) -> Result<(TransferSummary, Option<TreeEntry>), ClientError> {
        self.walk_behind_get = true;
        self.walked = None;
        let result = self.get_with(remote, local, opts, progress).await;
        self.walk_behind_get = false;
        let walked = self.walked.take();
        let summary = result?;
        let entry = match walked {
            Some(e) => Some(e),
            None => match self.walk(remote).await {
                Ok(mut entries) if entries.len() == 1 => entries.pop(),
                Ok(_) => None,
                Err(e) if e.code() == Some(ErrorCode::BadRequest) => None,
                Err(e) => return Err(e),
            },
        };
        Ok((summary, entry))
    }

    /// Every entry beneath a remote directory in one request (CTRL-TREE-1); a path that is not
    /// a directory gives one entry under its own name.
    pub async fn walk(&mut self, path: &str) -> Result<Vec<TreeEntry>, ClientError> {
        match self.call(&Request::Walk { path: path.to_string() }).await? {
            Response::Tree { entries } => Ok(entries),
            other => Err(unexpected(other)),
        }
    }

    /// `Stat` and `Walk` of one path sent back to back and answered in order (CTRL-TREE-1):
    /// what the path is and, if it is a directory, everything beneath it, in one round trip.
    /// A failed `Stat` (a missing path, say) still reads the `Walk`'s reply, so the
    /// connection stays in step.
    pub async fn stat_and_walk(&mut self, path: &str) -> Result<(Entry, Vec<TreeEntry>), ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        for req in [Request::Stat { path: path.to_string() }, Request::Walk { path: path.to_string() }] {
            self.writer.write_control(&req).await.map_err(ConnError::from)?;
        }
        let stat = match self.read_response().await {
            Ok(r) => Ok(r),
            Err(e @ ClientError::Server { .. }) => Err(e),
            // The connection itself failed: nothing more can be read.
            Err(e) => return Err(e),
        };
        let walk = self.read_response().await;
        let entry = match stat? {
            Response::Stat { entry } => entry,
            other => return Err(unexpected(other)),
        };
        match walk? {
            Response::Tree { entries } => Ok((entry, entries)),
            other => Err(unexpected(other)),
        }
    }

    /// Requests that are not transfers, sent back to back in one write each [`MANY_MAX`] and
    /// answered in order (CTRL-SESS-8): a tree's directories, say, in one round trip rather
    /// than one each. Returns each request's reply or refusal; the error outside is the
    /// connection's, after which nothing more can be read.
    pub async fn call_many(&mut self, reqs: &[Request]) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        if self.ahead_in_flight() > 0 || reqs.iter().any(|r| !answered_alone(r)) {
            return Err(ClientError::Protocol("only requests answered by one reply go in a row".into()));
        }
        let mut replies = Vec::with_capacity(reqs.len());
        for part in reqs.chunks(MANY_MAX) {
            let mut batch = Batch::new();
            for req in part {
                batch.control(req).map_err(ConnError::from)?;
            }
            self.writer.write_batch(batch).await.map_err(ConnError::from)?;
            for _ in part {
                match self.read_response().await {
                    Ok(r) => replies.push(Ok(r)),
                    Err(e @ ClientError::Server { .. }) => replies.push(Err(e)),
                    Err(e) => {
                        self.broken = true;
                        return Err(e);
                    }
                }
            }
        }
        Ok(replies)
    }

    /// The remote entries matching a glob pattern, expanded by the server (CTRL-GLOB-1).
    pub async fn glob(&mut self, pattern: &str) -> Result<Vec<TreeEntry>, ClientError> {
        match self.call(&Request::Glob { pattern: pattern.to_string() }).await? {
            Response::Tree { entries } => Ok(entries),
            other => Err(unexpected(other)),
        }
    }

    /// Says goodbye and closes the connection.
    pub async fn bye(mut self) {
        if !self.broken {
            let _ = self.writer.write_control(&Request::Bye).await;
            let _ = self.writer.shutdown().await;
        }
    }

    /// False once an interrupted transfer left the connection out of step.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }
}

/// At most this many requests go in a row before their replies are read (CTRL-SESS-8): their
/// replies, short and one each, then fit in the socket buffers while the client still writes.
pub const MANY_MAX: usize = 128;

/// Whether `req` is answered by exactly one reply and starts nothing (CTRL-SESS-8).
fn answered_alone(req: &Request) -> bool {
    match req {
        Request::Pwd
        | Request::Cd { .. }
        | Request::List { .. }
        | Request::Stat { .. }
        | Request::Mkdir { .. }
        | Request::Remove { .. }
        | Request::Rmdir { .. }
        | Request::Rename { .. }
        | Request::Df
        | Request::Sum { .. }
        | Request::SetAttrs { .. }
        | Request::Walk { .. }
        | Request::Glob { .. }
        | Request::Copy { .. } => true,
        Request::Auth { .. }
        | Request::Bye
        | Request::Put { .. }
        | Request::PutEnd { .. }
        | Request::Abort
        | Request::Get { .. }
        | Request::GetUdp { .. }
        | Request::GetAuto { .. }
        | Request::PutFlow { .. }
        | Request::GetFlow { .. } => false,
    }
}

/// A frame read where a reply was expected.
fn reply_of(frame: Result<Frame, ConnError>) -> Result<Response, ClientError> {
    match frame? {
        Frame::Control(p) => match Frame::decode_control::<Response>(&p) {
            Ok(Response::Error { code, message }) => Err(ClientError::Server { code, message }),
            Ok(r) => Ok(r),
            Err(e) => Err(ClientError::Conn(ConnError::Decode(e))),
        },
        Frame::Data(_) => Err(ClientError::Protocol("data frame where a reply was expected".into())),
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("{r:?}"))
}

/// Explains a failed handshake, singling out a changed certificate.
fn handshake_error(
    opts: &ConnectOptions,
    known: &KnownHosts,
    expected: Option<Fingerprint>,
    seen: Option<Fingerprint>,
    source: std::io::Error,
) -> ClientError {
    match (expected, seen) {
        (Some(e), Some(s)) if e != s => ClientError::HostKeyChanged {
            host: opts.server.clone(),
            expected: format_fingerprint(&e),
            got: format_fingerprint(&s),
            known_hosts: known.path().to_path_buf(),
        },
        _ => ClientError::Tls { addr: opts.server.clone(), source },
    }
}

/// First contact: pin the certificate if allowed, else refuse before any credential is sent.
fn trust_new_host(opts: &ConnectOptions, known: &mut KnownHosts, seen: Fingerprint) -> Result<(), ClientError> {
    let fp = format_fingerprint(&seen);
    let accepted = opts.accept_new_host || opts.confirm_new_host.as_ref().is_some_and(|ask| ask(&opts.server, &fp));
    if !accepted {
        return Err(match opts.confirm_new_host {
            Some(_) => ClientError::HostRejected(opts.server.clone()),
            None => ClientError::UnknownHost { host: opts.server.clone(), fingerprint: fp },
        });
    }
    known.add(&opts.server, seen).map_err(|source| ClientError::KnownHosts { path: known.path().to_path_buf(), source })
}
