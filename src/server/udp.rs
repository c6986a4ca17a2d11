//! Transfers over a UDP flow (UDP-CTRL-*): the control connection accepts the transfer and
//! names the flow; datagrams carry the data; the control connection ends it. Quotas, the jail,
//! partial files and verification are the same as over TCP, in both storage profiles: on
//! local disk a flow writes the partial file, in object storage the upload's staging, and a
//! download reads the file through the storage's reader (STORE-OBJ-9).

use std::sync::Arc;
use std::time::Instant;

use md5::Digest;
use tokio::sync::watch;

use super::errors::{blocking, Reply};
use super::session::{Conn, Next, Session};
use super::upload::Outcome;
use crate::conn::ConnError;
use crate::flow::sink::{spawn_sink, spawn_sink_to, PersistFn, SinkHandle, SinkTarget, StagingTarget};
use crate::flow::source::BlockSource;
use crate::flow::{drive, FileEnd, FlowEnd, FlowError, FlowShared, UdpIo};
use crate::proto::control::{ByteRange, Md5Digest};
use crate::proto::{ErrorCode, Frame, Request, Response, Transport};
use crate::transfer::source::ReadAt;
use crate::transfer::{self, TransferError};
use crate::udp::flow::{Direction, Flow, FlowConfig, FlowTiming, Side};
use crate::udp::ranges::{RangeSet, MAX_RESUME_RANGES};
use crate::udp::receiver::ReceiverConfig;
use crate::udp::seal::FlowKeys;
use crate::udp::sender::SenderConfig;

/// A flow's task, and how it ended.
type FlowTask = tokio::task::JoinHandle<Result<FlowEnd, FlowError>>;

/// A registered flow: removed from the table and stopped on drop.
struct FlowGuard {
    state: Arc<super::ServerState>,
    id: u64,
    stop: watch::Sender<bool>,
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.state.flows.remove(self.id);
    }
}

/// The largest `tcp_max` of a `GetAuto` this server honours (UDP-CTRL-7): a larger one is
/// read as this. A TCP download streams through a bounded queue whatever its size; the cap
/// keeps the choice of transport with the server for anything but small files.
pub const AUTO_TCP_MAX: u64 = 4 * crate::proto::CHUNK_SIZE as u64;

/// What a download request asks beside its path (UDP-CTRL-3, -7, -11): what the client holds,
/// the rate cap, and the flow id it chose, if it did.
pub(crate) struct GetAsk {
    pub held: Vec<ByteRange>,
    pub held_md5: Option<Md5Digest>,
    pub rate_limit: Option<u64>,
    pub chosen: Option<u64>,
}

/// A UDP download ready to start: the opened file, its size at opening, what the client holds.
struct UdpSend {
    file: Box<dyn crate::storage::BlobReader>,
    size: u64,
    held: RangeSet,
    rate_limit: Option<u64>,
    /// Whether one `Walk` may ride behind the request (UDP-CTRL-8).
    walk_behind: bool,
    /// The flow id the client chose (UDP-CTRL-11).
    chosen: Option<u64>,
}

fn no_udp() -> Reply {
    Reply::new(ErrorCode::UnsupportedTransport, "this server has no UDP socket; use the TCP transport")
}

fn zero_rate() -> Reply {
    Reply::new(ErrorCode::BadRequest, "a rate limit must be above zero")
}

impl Session {
    fn udp_socket(&self) -> Result<Arc<UdpIo>, Reply> {
        self.state.udp.get().cloned().ok_or_else(no_udp)
    }

    /// UDP-CTRL-9: an id the client chose must be new on this connection (the keys derive
    /// from it) and no live flow's.
    fn check_chosen_id(&self, id: u64) -> Result<(), Reply> {
        if id == 0 || self.flow_ids.contains(&id) {
            return Err(Reply::new(ErrorCode::BadRequest, "flow id already used on this connection"));
        }
        if self.state.flows.contains(id) {
            return Err(Reply::new(ErrorCode::BadRequest, "flow id in use"));
        }
        Ok(())
    }

    /// Registers a flow, under the id the client chose if any, and starts its task.
    fn start_flow(
        &mut self,
        direction: Direction,
        file: FileEnd,
        io: Arc<UdpIo>,
        chosen: Option<u64>,
    ) -> Result<(FlowGuard, FlowTask, Arc<FlowShared>), Reply> {
        let id = match chosen {
            Some(id) => {
                self.check_chosen_id(id)?;
                id
            }
            // UDP-CTRL-1: never reuse an id on this connection, since the keys derive from it.
            None => loop {
                let id = self.state.flows.new_id();
                if !self.flow_ids.contains(&id) {
                    break id;
                }
            },
        };
        let cfg = FlowConfig {
            id,
            side: Side::Server,
            direction,
            timing: FlowTiming { idle: self.state.config.server.handshake_timeout(), ..FlowTiming::default() },
            max_segments: io.max_segments(),
            seed: rand::random(),
        };
        let flow = Flow::new(cfg, FlowKeys::derive(&self.secret, id), std::time::Instant::now());
        let shared = FlowShared::new(flow);
        let held = if chosen.is_some() {
            // Atomic with the check of the table; the datagrams that came first go to the task.
            self.state
                .flows
                .insert_chosen(Instant::now(), id, shared.clone())
                .map_err(|e| Reply::new(ErrorCode::BadRequest, e.to_string()))?
        } else {
            self.state.flows.insert(id, shared.clone());
            Vec::new()
        };
        self.flow_ids.insert(id);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(drive(shared.clone(), io, file, stop_rx, held));
        Ok((FlowGuard { state: self.state.clone(), id, stop }, task, shared))
    }

    /// Serves `Put` over UDP (UDP-CTRL-2), or `PutFlow` with the flow id the client chose
    /// (UDP-CTRL-9). Returns `Ok(false)` when the session must end.
    pub(crate) async fn put_udp(
        &mut self,
        conn: &mut Conn,
        path: String,
        size: u64,
        resume: bool,
        chosen: Option<u64>,
    ) -> Result<bool, ConnError> {
        let io = match self.udp_socket().and_then(|io| chosen.map_or(Ok(()), |id| self.check_chosen_id(id)).map(|_| io))
        {
            Ok(io) => io,
            Err(reply) => return conn.reply(&reply.into_response()).await.map(|_| true),
        };
        let (upload, body, hasher, held) = match self.prepare_put(&path, size, resume, Transport::Udp).await {
            Ok(opened) => opened,
            Err(reply) => return conn.reply(&reply.into_response()).await.map(|_| true),
        };
        let persist = self.persist_fn(&upload.target.to_string(), size);
        match body {
            super::upload::Body::File(file) => {
                let held_md5 = match hash_held(&file, &held).await {
                    Ok(m) => m,
                    Err(e) => return self.finish_put(conn, upload, None, Outcome::Failed(e, false)).await,
                };
                let sink = spawn_sink(file, size, held.clone(), persist);
                // The partial settles through the home; the writer's handle closes here.
                let (end, _file) = self.put_flow(conn, io, sink, (size, held, held_md5), chosen).await;
                self.finish_put(conn, upload, None, end).await
            }
            super::upload::Body::Staging(staging) => {
                // STORE-OBJ-9: what is held is the staging's durable prefix, hashed when it
                // was opened; the flow's bytes go to the staging in order from there.
                let held_md5 = (upload.offset > 0).then(|| hasher.clone().finalize().into());
                let prefix = (hasher, upload.offset);
                let sink = spawn_sink_to(StagingTarget(staging), size, held.clone(), prefix, persist);
                let (end, target) = self.put_flow(conn, io, sink, (size, held, held_md5), chosen).await;
                self.finish_put(conn, upload, target.map(|t| t.0), end).await
            }
        }
    }

    /// The data phase of a UDP upload: the flow, until `PutEnd` or `Abort` and the writer has
    /// finished. Returns how it ended and the writer's target. A flow the client opened
    /// (`chosen`) may end with an early `PutEnd` (UDP-END-8).
    async fn put_flow<T: SinkTarget>(
        &mut self,
        conn: &mut Conn,
        io: Arc<UdpIo>,
        sink: SinkHandle<T>,
        (size, held, held_md5): (u64, RangeSet, Option<Md5Digest>),
        chosen: Option<u64>,
    ) -> (Outcome, Option<T>) {
        let direction = Direction::Recv(ReceiverConfig::new(size, held.clone()));
        let (guard, task, shared) = match self.start_flow(direction, FileEnd::Sink(sink.queue()), io, chosen) {
            Ok(started) => started,
            Err(reply) => {
                // Only a race for the id with another connection gets here: say so, and
                // settle the upload as failed and already reported.
                let end = match conn.reply(&reply.into_response()).await {
                    Ok(()) => Outcome::Failed(TransferError::Io(std::io::Error::other("flow id in use")), true),
                    Err(e) => Outcome::Lost(e),
                };
                return settle_sink(end, sink, size).await;
            }
        };
        let early_end = chosen.map(|_| shared.all_held());
        let ready = Response::UdpPutReady { flow: guard.id, held: held.iter().collect(), held_md5 };
        let end = match conn.reply(&ready).await {
            Ok(()) => receive(conn, task, early_end).await,
            Err(e) => Outcome::Lost(e),
        };
        drop(guard);
        drop(shared);
        settle_sink(end, sink, size).await
    }

    fn persist_fn(&self, path: &str, size: u64) -> PersistFn {
        let (store, user, path) = (self.state.store.clone(), self.user.clone(), path.to_string());
        Box::new(move |held: &RangeSet| {
            // UDP-RESUME-7: a bounded subset of what is held, which is always safe.
            let ranges: Vec<ByteRange> = held.lowest(MAX_RESUME_RANGES).iter().collect();
            store.save_ranges(&user, &path, size, &ranges).map_err(std::io::Error::other)
        })
    }

    /// Serves `GetUdp` (UDP-CTRL-3), or `GetFlow` without `tcp_max` (UDP-CTRL-11). Returns
    /// `Ok(false)` when the session must end.
    pub(crate) async fn get_udp(&mut self, conn: &mut Conn, path: String, ask: GetAsk) -> Result<bool, ConnError> {
        let GetAsk { held, held_md5, rate_limit, chosen } = ask;
        let prepared = match (self.udp_socket(), rate_limit) {
            (Err(e), _) => Err(e),
            (_, Some(0)) => Err(zero_rate()),
            (Ok(io), _) => match chosen.map_or(Ok(()), |id| self.check_chosen_id(id)) {
                Ok(()) => self.prepare_get_udp(&path, held, held_md5).await.map(|x| (io, x)),
                Err(e) => Err(e),
            },
        };
        match prepared {
            Ok((io, (file, size, held))) => {
                let send = UdpSend { file, size, held, rate_limit, walk_behind: false, chosen };
                self.send_udp(conn, io, &path, send).await
            }
            Err(reply) => conn.reply(&reply.into_response()).await.map(|_| true),
        }
    }

    /// Serves `GetAuto` (UDP-CTRL-7): a file of at most `tcp_max` bytes (at most
    /// [`AUTO_TCP_MAX`]) of which the client holds nothing goes over TCP exactly as `Get`
    /// would send it, anything else over UDP exactly as `GetUdp` would; without a UDP socket,
    /// over TCP whatever its size (UDP-FALLBACK-5). `GetFlow` with `tcp_max` is served so too,
    /// over the flow the client chose if over UDP (UDP-CTRL-11). Returns `Ok(false)` when the
    /// session must end.
    pub(crate) async fn get_auto(
        &mut self,
        conn: &mut Conn,
        path: String,
        ask: GetAsk,
        tcp_max: u64,
    ) -> Result<bool, ConnError> {
        let GetAsk { held, held_md5, rate_limit, chosen } = ask;
        let io = self.udp_socket().ok();
        // UDP-CTRL-11: the id is checked before any other work, whatever the transport.
        let chosen_ok = chosen.map_or(Ok(()), |id| self.check_chosen_id(id));
        let opened = match (chosen_ok, rate_limit) {
            (Err(e), _) => Err(e),
            (_, Some(0)) => Err(zero_rate()),
            // UDP-FALLBACK-5: resuming from held ranges takes UDP.
            _ if io.is_none() && !held.is_empty() => Err(no_udp()),
            _ => self.prepare_get_udp(&path, held, held_md5).await,
        };
        let (file, size, held) = match opened {
            Ok(x) => x,
            Err(reply) => return conn.reply(&reply.into_response()).await.map(|_| true),
        };
        match io {
            Some(io) if !held.is_empty() || size > tcp_max.min(AUTO_TCP_MAX) => {
                let send = UdpSend { file, size, held, rate_limit, walk_behind: true, chosen };
                self.send_udp(conn, io, &path, send).await
            }
            _ => self.send_get(conn, &path, file, size, 0, md5::Md5::new()).await,
        }
    }

    /// The data phase of a UDP download: `UdpGetReady`, the flow, then `GetEnd` or an error;
    /// or `Ok` after the client's `Abort` (UDP-CTRL-3, UDP-END-*).
    async fn send_udp(
        &mut self,
        conn: &mut Conn,
        io: Arc<UdpIo>,
        path: &str,
        send: UdpSend,
    ) -> Result<bool, ConnError> {
        let UdpSend { file, size, held, rate_limit, walk_behind, chosen } = send;
        let mut cfg = SenderConfig::new(size, held.clone());
        cfg.rate_limit = rate_limit;
        cfg.max_datagram = crate::udp::packet::MAX_DATAGRAM;
        // UDP-RATE-9: start from what the last download to this user at this address learnt;
        // the sender uses it only once the flow's first RTT agrees (UDP-RATE-7).
        let state = self.state.clone();
        cfg.start_hint.remembered = state.download_paths.recall(Instant::now(), &self.user, self.peer.ip());
        let source = BlockSource::spawn(file, size, held);
        let started = self.start_flow(Direction::Send(cfg), FileEnd::Source(source), io, chosen);
        let (guard, mut task, shared) = match started {
            Ok(started) => started,
            Err(reply) => return conn.reply(&reply.into_response()).await.map(|_| true),
        };
        conn.reply(&Response::UdpGetReady { flow: guard.id, size }).await?;
        // UDP-CTRL-8: one `Walk` sent behind `GetAuto`, answered after the download's end.
        let mut walk: Option<String> = None;
        let mut walk_allowed = walk_behind;
        loop {
            tokio::select! {
                r = &mut task => {
                    let reply = match r {
                        Ok(Ok(FlowEnd::Sent { md5 })) => {
                            if let Some(s) = shared.lock().sender() {
                                let st = s.stats();
                                tracing::info!(
                                    user = %self.user, %path, size, sent = st.sent_bytes,
                                    retransmitted = st.retransmitted_bytes, datagram = st.datagram_size,
                                    resumed_start = st.resumed_start, "download over UDP complete"
                                );
                                if let Some(e) = s.path_estimate() {
                                    state.download_paths.remember(Instant::now(), &self.user, self.peer.ip(), e);
                                }
                            }
                            Response::GetEnd { md5 }
                        }
                        Ok(Ok(FlowEnd::Stopped)) => return Ok(false),
                        Ok(Err(FlowError::Source(e))) => Reply::from(e).into_response(),
                        Ok(Err(e)) => Reply::new(ErrorCode::IdleTimeout, format!("UDP transfer failed: {e}")).into_response(),
                        Err(e) => Reply::internal(e).into_response(),
                    };
                    conn.reply(&reply).await?;
                    self.answer_walk(conn, walk).await?;
                    return Ok(true);
                }
                next = conn.next() => match next? {
                    Next::Frame(Frame::Control(p)) => match Frame::decode_control::<Request>(&p) {
                        Ok(Request::Abort) => {
                            drop(guard);
                            self.answer_walk(conn, walk).await?;
                            conn.reply(&Response::Ok).await?;
                            return Ok(true);
                        }
                        Ok(Request::Walk { path }) if walk_allowed => {
                            walk = Some(path);
                            walk_allowed = false;
                        }
                        _ => {
                            walk_allowed = false;
                            conn.reply_error(ErrorCode::BadRequest, "only Abort is allowed during a download").await?;
                        }
                    },
                    Next::Frame(Frame::Data(_)) => {
                        walk_allowed = false;
                        conn.reply_error(ErrorCode::BadRequest, "data frame during a UDP download").await?;
                    }
                    Next::Idle => {
                        conn.reply_error(ErrorCode::IdleTimeout, "download idle too long").await?;
                        return Ok(false);
                    }
                    Next::Stop => {
                        // CTRL-SESS-3 or CTRL-SESS-7.
                        let (code, message) = conn.stop_error(true);
                        conn.reply_error(code, message).await?;
                        return Ok(false);
                    }
                },
            }
        }
    }

    /// Answers a `Walk` held back during a UDP download (UDP-CTRL-8, CTRL-ATTR-3).
    async fn answer_walk(&mut self, conn: &mut Conn, walk: Option<String>) -> Result<(), ConnError> {
        let Some(path) = walk else { return Ok(()) };
        let resp = self.file_op(Request::Walk { path }).await.unwrap_or_else(Reply::into_response);
        conn.reply_beside(&resp).await
    }

    /// Opens the file through the storage (a local file, or a blob whose reader fails with
    /// `SourceChanged` if it is replaced, STORE-OBJ-9) and checks the client's held ranges
    /// against it (UDP-RESUME-2).
    async fn prepare_get_udp(
        &self,
        path: &str,
        held: Vec<ByteRange>,
        held_md5: Option<Md5Digest>,
    ) -> Result<(Box<dyn crate::storage::BlobReader>, u64, RangeSet), Reply> {
        let target = self.resolve(path)?;
        let storage = self.storage.clone();
        let path = path.to_string();
        blocking(move || {
            let reader = storage.open_reader(&target)?;
            let size = reader.size();
            let held = check_ranges(&held, size)?;
            if held.is_empty() {
                return Ok((reader, size, held));
            }
            let Some(expected) = held_md5 else {
                return Err(Reply::new(ErrorCode::BadRequest, "held ranges given without their digest"));
            };
            if hash_ranges_at(&reader, &held, size)? != expected {
                return Err(Reply::new(
                    ErrorCode::SourceChanged,
                    format!("cannot resume: the bytes of {path} differ from the local partial file; download again without resuming"),
                ));
            }
            Ok((reader, size, held))
        })
        .await
    }
}

/// Held ranges must be ascending, disjoint, non-empty and inside the file, and no more than
/// a range map lists (UDP-CTRL-5, UDP-RESUME-7).
fn check_ranges(held: &[ByteRange], size: u64) -> Result<RangeSet, Reply> {
    if held.len() > MAX_RESUME_RANGES {
        return Err(Reply::new(ErrorCode::BadRequest, format!("more than {MAX_RESUME_RANGES} held ranges")));
    }
    let mut floor = 0;
    for (i, &(s, e)) in held.iter().enumerate() {
        if e <= s || e > size || (i > 0 && s <= floor) {
            return Err(Reply::new(
                ErrorCode::SourceChanged,
                format!("cannot resume: held range {s}..{e} does not fit the file of {size} bytes"),
            ));
        }
        floor = e;
    }
    Ok(RangeSet::from_ranges(held.iter().copied()))
}

/// md5 of the held ranges' bytes in order, `None` when nothing is held (UDP-CTRL-2).
async fn hash_held(file: &std::fs::File, held: &RangeSet) -> Result<Option<Md5Digest>, TransferError> {
    if held.is_empty() {
        return Ok(None);
    }
    let file = file.try_clone()?;
    let held = held.clone();
    tokio::task::spawn_blocking(move || transfer::hash_ranges(&file, held.iter()).map(|h| Some(h.finalize().into())))
        .await
        .map_err(|e| TransferError::Io(std::io::Error::other(e)))?
}

/// md5 of the held ranges' bytes of a download's source, in order (UDP-RESUME-2).
fn hash_ranges_at<R: ReadAt>(source: &R, held: &RangeSet, size: u64) -> Result<Md5Digest, TransferError> {
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in held.iter() {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            source.fill_at(&mut buf[..n], pos, size)?;
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(hasher.finalize().into())
}

/// The data phase of an upload: waits for `PutEnd` or `Abort` on the control connection while
/// the flow task receives. With `early_end` (a flow the client opened, UDP-END-8) a `PutEnd`
/// may come before every byte is held: the flow then goes on until it holds them all.
async fn receive(conn: &mut Conn, mut task: FlowTask, early_end: Option<watch::Receiver<bool>>) -> Outcome {
    let end = receive_until_put_end(conn, &mut task).await;
    match (end, early_end) {
        (Outcome::PutEnd(md5), Some(held)) => hold_all_then(conn, &mut task, held, Outcome::PutEnd(md5)).await,
        (end, _) => end,
    }
}

/// UDP-END-8: after an early `PutEnd`, the flow runs until every byte is held, the flow
/// fails (it idles out when the client stops sending), or the client's `Abort`.
async fn hold_all_then(conn: &mut Conn, task: &mut FlowTask, mut held: watch::Receiver<bool>, end: Outcome) -> Outcome {
    tokio::select! {
        r = held.wait_for(|all| *all) => match r {
            Ok(_) => end,
            Err(_) => Outcome::Failed(TransferError::Io(std::io::Error::other("the flow stopped")), false),
        },
        r = &mut *task => match r {
            Ok(Err(FlowError::Source(e))) => Outcome::Failed(e, false),
            Ok(Err(e)) => {
                Outcome::Failed(TransferError::Io(std::io::Error::other(format!("UDP upload did not finish: {e}"))), false)
            }
            Ok(Ok(_)) => Outcome::Failed(TransferError::Io(std::io::Error::other("the flow stopped")), false),
            Err(e) => Outcome::Failed(TransferError::Io(std::io::Error::other(e)), false),
        },
        r = next_request(conn) => match r {
            Ok(Request::Abort) => Outcome::Abort,
            Ok(_) => Outcome::Lost(ConnError::Decode(crate::proto::DecodeError::Malformed(
                "expected Abort after PutEnd during a UDP upload".into(),
            ))),
            Err(o) => o,
        },
    }
}

async fn receive_until_put_end(conn: &mut Conn, mut task: &mut FlowTask) -> Outcome {
    loop {
        tokio::select! {
            r = &mut task => {
                // An upload's flow has no file source: `Source` is its writer failing.
                let (e, write_failed) = match r {
                    Ok(Err(FlowError::Source(e))) => (e, true),
                    Ok(Err(e)) => (TransferError::Io(std::io::Error::other(e.to_string())), false),
                    Ok(Ok(_)) => continue,
                    Err(e) => (TransferError::Io(std::io::Error::other(e)), false),
                };
                tracing::debug!("UDP upload flow ended: {e}");
                if write_failed {
                    // UDP-END-7, UDP-END-4, CTRL-PUT-3: the file cannot be written (a full disk,
                    // say). Say so now, so the client stops sending; its PutEnd or Abort gets
                    // no reply.
                    tracing::warn!("UDP upload failed: {e}");
                    if let Err(ce) = conn.reply(&Reply::from(&e).into_response()).await {
                        return Outcome::Lost(ce);
                    }
                    return match next_request(conn).await {
                        Ok(Request::PutEnd { .. } | Request::Abort) => Outcome::Failed(e, true),
                        Ok(_) => Outcome::FailedThenClosed(e),
                        Err(_) => Outcome::FailedThenClosed(e),
                    };
                }
                // The client may still end the upload; wait for the control connection.
                return match next_request(conn).await {
                    Ok(Request::PutEnd { md5 }) => Outcome::PutEnd(md5),
                    Ok(Request::Abort) => Outcome::Abort,
                    Ok(_) => Outcome::Failed(e, false),
                    Err(o) => o,
                };
            }
            r = next_request(conn) => return match r {
                Ok(Request::PutEnd { md5 }) => Outcome::PutEnd(md5),
                Ok(Request::Abort) => Outcome::Abort,
                Ok(_) => Outcome::Lost(ConnError::Decode(crate::proto::DecodeError::Malformed(
                    "expected PutEnd or Abort during a UDP upload".into(),
                ))),
                Err(o) => o,
            },
        }
    }
}

async fn next_request(conn: &mut Conn) -> Result<Request, Outcome> {
    match conn.next().await {
        Ok(Next::Frame(Frame::Control(p))) => Frame::decode_control::<Request>(&p).map_err(|e| Outcome::Lost(e.into())),
        Ok(Next::Frame(Frame::Data(_))) => Err(Outcome::Lost(ConnError::Decode(crate::proto::DecodeError::Malformed(
            "data frame during a UDP upload".into(),
        )))),
        Ok(Next::Idle) => Err(Outcome::Idle),
        Ok(Next::Stop) => Err(Outcome::Stop),
        Err(e) => Err(Outcome::Lost(e)),
    }
}

/// Finishes the writer and checks a `PutEnd` against what was written (UDP-END-1). Returns
/// the writer's target also when writing failed.
async fn settle_sink<T>(end: Outcome, sink: SinkHandle<T>, size: u64) -> (Outcome, Option<T>) {
    let (target, done) = sink.finish_parts().await;
    let end = match (end, done) {
        (Outcome::PutEnd(md5), Ok(d)) => match d.md5 {
            Some(ours) => match transfer::check_digest(&md5, &ours) {
                Ok(()) => Outcome::PutEnd(md5),
                Err(e) => Outcome::Failed(e, false),
            },
            None => {
                Outcome::Failed(TransferError::Incomplete { expected: size, got: d.written.contiguous_from(0) }, false)
            }
        },
        (Outcome::PutEnd(_), Err(e)) => Outcome::Failed(e, false),
        (other, _) => other,
    };
    (end, target)
}
