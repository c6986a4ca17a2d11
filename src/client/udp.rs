//! Client side of transfers over a UDP flow, and the choice between UDP and TCP
//! (UDP-FALLBACK-*). The control connection asks for the transfer and ends it; a flow of our
//! own carries the data; `auto` falls back to TCP when no UDP reply comes within a deadline
//! that follows the control connection's round trip, or when the flow stalls or collapses
//! mid-transfer, resuming from what already arrived.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::Digest;
use tokio::sync::watch;

use super::fallback::{first_reply_deadline, DegradeMonitor};
use super::files::{local_err, open_source, small_goes_over_tcp, small_upload};
use super::get_request::{ends_session, GetStart};
use super::partial::{self, map_writer, open_partial_with_map, partial_path, ranges_path};
use super::{unexpected, Client, ClientError, TransferOptions, TransferSummary, TransportChoice};
use crate::flow::sink::spawn_sink;
use crate::flow::source::BlockSource;
use crate::flow::{demux, UdpIo};
use crate::flow::{drive, FileEnd, FlowEnd, FlowError, FlowShared, FlowTable};
use crate::proto::control::Md5Digest;
use crate::proto::{Request, Response, Transport};
use crate::transfer::{self, Progress, ProgressFn, TransferError};
use crate::udp::flow::{Direction, Flow, FlowConfig, FlowTiming, Side};
use crate::udp::ranges::RangeSet;
use crate::udp::rate::StartHint;
use crate::udp::receiver::ReceiverConfig;
use crate::udp::seal::FlowKeys;
use crate::udp::sender::SenderConfig;

/// How often progress is reported and the flow's health is checked.
const TICK: Duration = Duration::from_millis(100);
/// A flow whose first flight went beside its request waits this long for the server's
/// answer before the first-reply deadline (UDP-FALLBACK-2) takes over.
const REPLY_WITHIN: Duration = Duration::from_secs(30);

/// The local file of an upload, and how to send it.
struct UploadSource<'a> {
    file: &'a std::fs::File,
    size: u64,
    local: &'a Path,
    opts: &'a TransferOptions,
}

/// How a UDP attempt ended: done, or handed over to TCP.
enum Attempt {
    Done(TransferSummary),
    FallBack(Fallback),
}

/// How the data phase of a UDP download ended.
enum DataEnd {
    /// `GetEnd` with the server's md5.
    Finished(Md5Digest),
    FallBack(Fallback),
    Failed(ClientError),
}

/// The server's answer to an upload request over UDP.
struct PutReady {
    flow: u64,
    held: Vec<crate::proto::control::ByteRange>,
    held_md5: Option<Md5Digest>,
    /// The flow was opened with `PutFlow`: `PutEnd` may go early (UDP-END-8).
    early_end: bool,
}

/// How the data phase of a UDP upload ended.
enum UploadEnd {
    /// Every byte acked; the file's md5.
    Acked(Md5Digest),
    /// The server's reply to an early `PutEnd` (UDP-END-8).
    Replied(Result<Response, ClientError>),
}

/// Why a UDP attempt handed over to TCP.
struct Fallback {
    reason: String,
    /// Data moved before giving up, so the TCP attempt should resume.
    progressed: bool,
}

/// A client-side flow: its socket's demultiplexer and its task, stopped on drop.
struct ClientFlow {
    shared: Arc<FlowShared>,
    task: tokio::task::JoinHandle<Result<FlowEnd, FlowError>>,
    demux: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Drop for ClientFlow {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.demux.abort();
    }
}

/// A client's UDP socket for one flow, bound before the request when the client chooses the
/// flow id and sends the first `Hello` beside it (UDP-CTRL-9).
pub(super) struct FlowSocket {
    io: Arc<UdpIo>,
    /// When the `Hello` that went beside the request was sent.
    pub(super) early_hello: Option<Instant>,
    /// The flow's first flight goes beside the request too (UDP-CTRL-10).
    early_data: bool,
}

/// How an upload's flow starts: once the server has answered, or already running, its first
/// flight sent beside the request (UDP-CTRL-10).
enum PutStart {
    Socket(FlowSocket),
    Running(ClientFlow),
}

impl FlowSocket {
    pub(super) fn bind(client: &Client) -> std::io::Result<FlowSocket> {
        let any: SocketAddr =
            if client.peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        Ok(FlowSocket { io: Arc::new(UdpIo::bind(any)?), early_hello: None, early_data: false })
    }

    /// Sends flow `id`'s first `Hello`. A failed send is a lost `Hello`: the flow repeats it.
    pub(super) async fn send_early_hello(&mut self, client: &Client, id: u64) {
        let mut buf = Vec::with_capacity(crate::udp::packet::MIN_DATAGRAM);
        let keys = FlowKeys::derive(&client.secret, id);
        Flow::encode_early_hello(&keys, id, FlowTiming::default().max_datagram, &mut buf);
        let now = Instant::now();
        match self.io.send(client.peer, &buf, buf.len()).await {
            Ok(()) => self.early_hello = Some(now),
            Err(e) => tracing::debug!("early Hello not sent: {e}"),
        }
    }
}

impl ClientFlow {
    fn start(
        client: &Client,
        socket: FlowSocket,
        id: u64,
        direction: Direction,
        file: FileEnd,
        timing: FlowTiming,
    ) -> std::io::Result<ClientFlow> {
        let FlowSocket { io, early_hello, early_data } = socket;
        let cfg = FlowConfig {
            id,
            side: Side::Client { server: client.peer },
            direction,
            timing,
            max_segments: io.max_segments(),
            seed: rand::random(),
        };
        let mut flow = Flow::new(cfg, FlowKeys::derive(&client.secret, id), Instant::now());
        if let Some(at) = early_hello {
            flow.note_early_hello(at);
        }
        if early_data {
            flow.allow_early_data(Instant::now());
        }
        let shared = FlowShared::new(flow);
        let table = Arc::new(FlowTable::default());
        table.insert(id, shared.clone());
        let demux = tokio::spawn({
            let io = io.clone();
            async move {
                if let Err(e) = demux(io, table).await {
                    tracing::debug!("UDP socket failed: {e}");
                }
            }
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(drive(shared.clone(), io, file, stop_rx, Vec::new()));
        Ok(ClientFlow { shared, task, demux, stop })
    }

    /// (bytes known held by the receiver, packets sent, packets lost): for a receiving flow
    /// the packets are those numbered so far and the missing ones (`UDP-FALLBACK-3`).
    fn counters(&self) -> (u64, u64, u64) {
        let flow = self.shared.lock();
        if let Some(s) = flow.sender() {
            let st = s.stats();
            return (s.acked(), st.sent_packets, st.lost_packets);
        }
        match flow.receiver() {
            Some(r) => {
                let (numbered, missing) = r.numbered_and_missing();
                (r.held().covered(), numbered, missing)
            }
            None => (0, 0, 0),
        }
    }

    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if !self.task.is_finished() {
            let _ = (&mut self.task).await;
        }
    }
}

/// The flow's timing: the first-reply deadline follows the control connection's round trip
/// `control_rtt` (UDP-FALLBACK-2).
fn flow_timing(opts: &TransferOptions, control_rtt: Duration) -> FlowTiming {
    let forced = opts.transport == TransportChoice::Udp;
    FlowTiming { confirm_within: first_reply_deadline(control_rtt, forced), ..FlowTiming::default() }
}

impl Client {
    /// Uploads `local` to `remote` over the chosen transport.
    pub async fn put_with(
        &mut self,
        local: &Path,
        remote: &str,
        opts: &TransferOptions,
        progress: ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        self.tcp_rate = opts.rate_limit;
        // UDP-FALLBACK-4: a small file is done sooner over the control connection.
        if opts.transport == TransportChoice::Tcp || small_upload(local, opts) {
            progress(Progress::Via(Transport::Tcp));
            return self.put(local, remote, opts.resume, progress).await;
        }
        match self.put_udp(local, remote, opts, &progress).await? {
            Attempt::Done(summary) => Ok(summary),
            Attempt::FallBack(fb) if opts.transport == TransportChoice::Auto => {
                tracing::info!("falling back to TCP: {}", fb.reason);
                progress(Progress::Via(Transport::Tcp));
                self.put(local, remote, opts.resume || fb.progressed, progress).await
            }
            Attempt::FallBack(fb) => Err(ClientError::Udp(fb.reason)),
        }
    }

    /// Downloads `remote` to `local` over the chosen transport.
    pub async fn get_with(
        &mut self,
        remote: &str,
        local: &Path,
        opts: &TransferOptions,
        progress: ProgressFn,
    ) -> Result<TransferSummary, ClientError> {
        self.tcp_rate = opts.rate_limit;
        if opts.transport == TransportChoice::Tcp {
            progress(Progress::Via(Transport::Tcp));
            return self.get(remote, local, opts.resume, progress).await;
        }
        match self.get_udp(remote, local, opts, &progress).await? {
            Attempt::Done(summary) => Ok(summary),
            Attempt::FallBack(fb) if opts.transport == TransportChoice::Auto => {
                tracing::info!("falling back to TCP: {}", fb.reason);
                progress(Progress::Via(Transport::Tcp));
                self.get(remote, local, opts.resume || fb.progressed, progress).await
            }
            Attempt::FallBack(fb) => Err(ClientError::Udp(fb.reason)),
        }
    }

    /// Asks for an upload over UDP: with `PutFlow` and its first `Hello` beside it
    /// (UDP-CTRL-9), and its first flight too (UDP-CTRL-10); or with
    /// `Put { transport: Udp }` from a server that refused `PutFlow`. Returns the flow's socket
    /// or the flow already running, the server's answer, and whether the flow may end with
    /// an early `PutEnd` (UDP-END-8).
    async fn request_put_udp(
        &mut self,
        remote: &str,
        upload: &UploadSource<'_>,
    ) -> Result<(PutStart, PutReady), ClientError> {
        let (size, resume, local) = (upload.size, upload.opts.resume, upload.local);
        let mut socket = FlowSocket::bind(self).map_err(local_err(local))?;
        if !self.put_flow_refused {
            let id = chosen_flow_id();
            socket.send_early_hello(self, id).await;
            // UDP-CTRL-10: the first flight goes now, from the start of the file; what the
            // server turns out to hold of it is checked and skipped once it answers. The
            // deadline for the first challenge is set again then.
            socket.early_data = true;
            let timing = FlowTiming { confirm_within: REPLY_WITHIN, ..FlowTiming::default() };
            let start = PutStart::Running(self.start_put_flow(socket, id, upload, &RangeSet::new(), None, timing)?);
            let req = Request::PutFlow { path: remote.to_string(), size, resume, flow: id };
            match self.call(&req).await {
                Ok(Response::UdpPutReady { flow, held, held_md5 }) if flow == id => {
                    return Ok((start, PutReady { flow, held, held_md5, early_end: true }));
                }
                Ok(other) => return Err(unexpected(other)),
                Err(e) if e.code() == Some(crate::proto::ErrorCode::BadRequest) => {
                    tracing::debug!("PutFlow refused ({e}); asking with Put");
                    self.put_flow_refused = true;
                    drop(start); // its flow was for the refused id
                    socket = FlowSocket::bind(self).map_err(local_err(local))?;
                }
                Err(e) => return Err(e),
            }
        }
        let req = Request::Put { path: remote.to_string(), size, resume, transport: Transport::Udp };
        match self.call(&req).await? {
            Response::UdpPutReady { flow, held, held_md5 } => {
                Ok((PutStart::Socket(socket), PutReady { flow, held, held_md5, early_end: false }))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Starts the sending end of an upload's flow `id`, of which the server holds `held`.
    fn start_put_flow(
        &self,
        socket: FlowSocket,
        id: u64,
        upload: &UploadSource<'_>,
        held: &RangeSet,
        control_rtt: Option<Duration>,
        timing: FlowTiming,
    ) -> Result<ClientFlow, ClientError> {
        let mut cfg = SenderConfig::new(upload.size, held.clone());
        cfg.rate_limit = upload.opts.rate_limit;
        cfg.max_datagram = crate::udp::packet::MAX_DATAGRAM;
        // UDP-RATE-8: start from what the last upload to this server learnt; the sender uses
        // it only once an RTT agrees (the control connection's, or the flow's first sample),
        // and at half its rate for a round trip (UDP-RATE-7).
        cfg.start_hint = StartHint { rtt: control_rtt, remembered: self.paths.recall(&self.server) };
        let file = upload.file.try_clone().map_err(local_err(upload.local))?;
        let source = BlockSource::spawn(file, upload.size, held.clone());
        ClientFlow::start(self, socket, id, Direction::Send(cfg), FileEnd::Source(source), timing)
            .map_err(local_err(upload.local))
    }

    async fn put_udp(
        &mut self,
        local: &Path,
        remote: &str,
        opts: &TransferOptions,
        progress: &ProgressFn,
    ) -> Result<Attempt, ClientError> {
        let (file, size) = open_source(local)?;
        let upload = UploadSource { file: &file, size, local, opts };
        let asked = Instant::now();
        let (start, ready) = match self.request_put_udp(remote, &upload).await {
            Ok(r) => r,
            Err(e) if no_udp(&e) => {
                return Ok(Attempt::FallBack(Fallback { reason: e.to_string(), progressed: false }))
            }
            Err(e) => return Err(e),
        };
        let control_rtt = asked.elapsed();
        let held = RangeSet::from_ranges(ready.held);
        let timing = flow_timing(opts, control_rtt);
        let mut flow = match start {
            PutStart::Running(flow) => {
                if let Err(e) = check_held(&file, &held, ready.held_md5).await {
                    drop(flow);
                    self.abort_put().await?;
                    return Err(e);
                }
                let mut f = flow.shared.lock();
                f.note_held(Instant::now(), &held);
                // UDP-FALLBACK-2: the first challenge's deadline counts from the answer.
                f.set_confirm_deadline(Instant::now(), timing.confirm_within);
                drop(f);
                flow.shared.wake_task();
                flow
            }
            PutStart::Socket(socket) => {
                if let Err(e) = check_held(&file, &held, ready.held_md5).await {
                    self.abort_put().await?;
                    return Err(e);
                }
                self.start_put_flow(socket, ready.flow, &upload, &held, Some(control_rtt), timing)?
            }
        };
        progress(Progress::Via(Transport::Udp));
        progress(Progress::Start { total: size, offset: held.covered() });
        let auto = opts.transport == TransportChoice::Auto;
        let mut monitor = DegradeMonitor::new(Instant::now(), held.covered());
        let mut tick = tokio::time::interval(TICK);
        let mut all_sent = flow.shared.all_sent();
        let mut watch_all_sent = ready.early_end;
        // UDP-END-8: the md5 of a PutEnd sent before every byte was acked.
        let mut put_end: Option<Md5Digest> = None;
        let end = loop {
            tokio::select! {
                r = &mut flow.task => match r {
                    Ok(Ok(FlowEnd::Sent { md5 })) => break UploadEnd::Acked(md5),
                    Ok(Ok(FlowEnd::Stopped)) => return Err(ClientError::Udp("the flow stopped".into())),
                    Ok(Err(e)) => {
                        let progressed = flow.counters().0 > held.covered();
                        let outcome = fail(e, progressed);
                        if let Some(reply) = self.abort_udp_put(put_end.is_some()).await? {
                            break UploadEnd::Replied(reply);
                        }
                        return match outcome {
                            DataEnd::FallBack(fb) => Ok(Attempt::FallBack(fb)),
                            DataEnd::Failed(e) => Err(e),
                            DataEnd::Finished(_) => Err(ClientError::Udp("the flow stopped".into())),
                        };
                    }
                    Err(e) => return Err(TransferError::Io(std::io::Error::other(e)).into()),
                },
                r = all_sent.changed(), if watch_all_sent => {
                    let md5 = *all_sent.borrow_and_update();
                    match (r, md5) {
                        (Ok(()), Some(md5)) => {
                            self.writer.write_control(&Request::PutEnd { md5 }).await.map_err(crate::conn::ConnError::from)?;
                            put_end = Some(md5);
                            watch_all_sent = false;
                        }
                        (Ok(()), None) => {}
                        (Err(_), _) => watch_all_sent = false,
                    }
                },
                frame = self.reader.read_frame() => {
                    if put_end.is_some() {
                        break UploadEnd::Replied(super::reply_of(frame));
                    }
                    return Err(self.early_reply(frame).await);
                }
                _ = tick.tick() => {
                    let (acked, sent, lost) = flow.counters();
                    progress(Progress::Advance { done: acked });
                    if let Some(reason) = monitor.observe(Instant::now(), acked, sent, lost).filter(|_| auto) {
                        flow.stop().await;
                        if let Some(reply) = self.abort_udp_put(put_end.is_some()).await? {
                            break UploadEnd::Replied(reply);
                        }
                        return Ok(Attempt::FallBack(Fallback { reason, progressed: true }));
                    }
                }
            }
        };
        let (stats, estimate) = {
            let f = flow.shared.lock();
            (f.sender().map(|s| s.stats()), f.sender().and_then(|s| s.path_estimate()))
        };
        drop(flow);
        if let Some(e) = estimate {
            if let Err(err) = self.paths.remember(&self.server, e) {
                tracing::debug!("not remembering the path estimate: {err}");
            }
        }
        progress(Progress::Advance { done: size });
        let (md5, reply) = match (end, put_end) {
            (UploadEnd::Replied(reply), Some(md5)) => (md5, reply),
            (UploadEnd::Acked(_), Some(md5)) => {
                progress(Progress::Verifying);
                (md5, self.read_response().await)
            }
            (UploadEnd::Acked(md5), None) => {
                self.writer.write_control(&Request::PutEnd { md5 }).await.map_err(crate::conn::ConnError::from)?;
                progress(Progress::Verifying);
                (md5, self.read_response().await)
            }
            (UploadEnd::Replied(reply), None) => return Err(reply.map_or_else(|e| e, unexpected)),
        };
        match reply? {
            Response::PutDone { size: s, md5: m } if s == size && m == md5 => {}
            other => return Err(unexpected(other)),
        }
        progress(Progress::Finish);
        Ok(Attempt::Done(TransferSummary {
            size,
            resumed_from: held.covered(),
            md5,
            transport: Transport::Udp,
            udp_stats: stats,
        }))
    }

    /// Stops a UDP upload with `Abort`. After an early `PutEnd` (UDP-END-8) the server answers
    /// `Ok` if it stopped waiting for the missing bytes; if it had already answered the
    /// `PutEnd` (`PutDone` or `Error`), that reply comes first and the `Abort`, outside a
    /// transfer, gets `Error { BadRequest }`. Returns that earlier reply, or `None` when the
    /// upload was stopped.
    async fn abort_udp_put(
        &mut self,
        put_end_sent: bool,
    ) -> Result<Option<Result<Response, ClientError>>, ClientError> {
        if !put_end_sent {
            self.abort_put().await?;
            return Ok(None);
        }
        self.writer.write_control(&Request::Abort).await.map_err(crate::conn::ConnError::from)?;
        let first = self.read_response().await;
        match first {
            Ok(Response::Ok) => Ok(None),
            Err(ClientError::Conn(e)) => {
                self.broken = true;
                Err(ClientError::Conn(e))
            }
            earlier => {
                match self.read_response().await {
                    Err(ClientError::Server { .. }) => {}
                    Err(ClientError::Conn(e)) => {
                        self.broken = true;
                        return Err(ClientError::Conn(e));
                    }
                    Ok(other) => {
                        self.broken = true;
                        return Err(unexpected(other));
                    }
                    Err(e) => return Err(e),
                }
                Ok(Some(earlier))
            }
        }
    }

    async fn get_udp(
        &mut self,
        remote: &str,
        local: &Path,
        opts: &TransferOptions,
        progress: &ProgressFn,
    ) -> Result<Attempt, ClientError> {
        let partial = partial_path(local);
        let map_path = ranges_path(&partial);
        let (file, held) = open_partial_with_map(&partial, &map_path, opts.resume).await?;
        let held_md5 = hash_held(&file, &held).await?;
        let mut socket = FlowSocket::bind(self).map_err(local_err(local))?;
        let asked = Instant::now();
        let (flow, size, walk) = match self.request_get(remote, &held, held_md5, opts, &mut socket).await {
            Ok(GetStart::Udp { flow, size, walk }) => (flow, size, walk),
            Ok(GetStart::Tcp { size, walk }) => {
                // UDP-CTRL-7: the server chose TCP; the download is already coming.
                drop(file);
                progress(Progress::Via(Transport::Tcp));
                return self.receive_auto_tcp(&partial, local, size, walk, progress).await.map(Attempt::Done);
            }
            Err(e) if no_udp(&e) => {
                return Ok(Attempt::FallBack(Fallback { reason: e.to_string(), progressed: false }))
            }
            Err(e) => {
                if held.is_empty() {
                    let _ = std::fs::remove_file(&partial);
                }
                return Err(e);
            }
        };
        // UDP-FALLBACK-4: a small file is done sooner over the control connection (a server
        // that predates `GetAuto`; one that knows it chose already).
        if !self.get_auto_known() && held.is_empty() && small_goes_over_tcp(opts, size) {
            drop(file);
            progress(Progress::Via(Transport::Tcp));
            return self.get_small_instead(remote, local, progress.clone()).await.map(Attempt::Done);
        }
        let control_rtt = asked.elapsed();
        let persist = map_writer(map_path.clone(), size);
        let sink = spawn_sink(file, size, held.clone(), persist);
        let direction = Direction::Recv(ReceiverConfig::new(size, held.clone()));
        let timing = flow_timing(opts, control_rtt);
        let mut flow = ClientFlow::start(self, socket, flow, direction, FileEnd::Sink(sink.queue()), timing)
            .map_err(local_err(local))?;
        progress(Progress::Via(Transport::Udp));
        progress(Progress::Start { total: size, offset: held.covered() });
        let auto = opts.transport == TransportChoice::Auto;
        let mut monitor = DegradeMonitor::new(Instant::now(), held.covered());
        let mut tick = tokio::time::interval(TICK);
        let outcome = loop {
            tokio::select! {
                r = &mut flow.task => match r {
                    Ok(Ok(_)) => break DataEnd::Failed(ClientError::Udp("the flow stopped".into())),
                    Ok(Err(e)) => {
                        let progressed = flow.counters().0 > held.covered();
                        break fail(e, progressed);
                    }
                    Err(e) => break DataEnd::Failed(TransferError::Io(std::io::Error::other(e)).into()),
                },
                r = self.read_response() => match r {
                    Ok(Response::GetEnd { md5 }) => break DataEnd::Finished(md5),
                    Ok(other) => break DataEnd::Failed(unexpected(other)),
                    Err(e) => break DataEnd::Failed(e),
                },
                _ = tick.tick() => {
                    let (held_now, numbered, missing) = flow.counters();
                    progress(Progress::Advance { done: held_now });
                    if let Some(reason) = monitor.observe(Instant::now(), held_now, numbered, missing).filter(|_| auto) {
                        break DataEnd::FallBack(Fallback { reason, progressed: true });
                    }
                }
            }
        };
        flow.stop().await;
        let done = sink.finish().await;
        let server_md5 = match outcome {
            DataEnd::Finished(md5) => {
                if walk {
                    self.read_walk_behind().await;
                }
                md5
            }
            // The server ended the download with an error reply, or the connection broke:
            // there is nothing to abort.
            DataEnd::Failed(e @ (ClientError::Server { .. } | ClientError::Conn(_))) => {
                if matches!(e, ClientError::Conn(_)) {
                    self.broken = true;
                } else if walk && !ends_session(&e) {
                    // UDP-CTRL-8: the Walk's reply follows the download's final one.
                    self.read_walk_behind().await;
                }
                return Err(e);
            }
            DataEnd::Failed(e) => {
                self.abort_get(walk).await?;
                return Err(e);
            }
            DataEnd::FallBack(fb) => {
                self.abort_get(walk).await?;
                return Ok(Attempt::FallBack(fb));
            }
        };
        let done = done?;
        progress(Progress::Verifying);
        let ours =
            done.md5.ok_or(TransferError::Incomplete { expected: size, got: done.written.contiguous_from(0) })?;
        drop(done.target);
        partial::commit(&partial, local, size, &server_md5, &ours)?;
        progress(Progress::Finish);
        Ok(Attempt::Done(TransferSummary {
            size,
            resumed_from: held.covered(),
            md5: ours,
            transport: Transport::Udp,
            udp_stats: None,
        }))
    }
}

/// A flow id for the client to choose (UDP-CTRL-9, UDP-CTRL-11): random, never 0.
pub(super) fn chosen_flow_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// The server cannot do UDP: it said so, or could not decode the request (UDP-FALLBACK-1).
fn no_udp(e: &ClientError) -> bool {
    matches!(e.code(), Some(crate::proto::ErrorCode::UnsupportedTransport | crate::proto::ErrorCode::BadRequest))
}

/// A failed flow: no path and stalls hand over to TCP (for `auto`), the rest are errors.
fn fail(e: FlowError, progressed: bool) -> DataEnd {
    match e {
        FlowError::Source(t) => DataEnd::Failed(t.into()),
        other => DataEnd::FallBack(Fallback { reason: other.to_string(), progressed }),
    }
}

/// Checks that our file holds the same bytes as the server's held ranges (UDP-RESUME-2).
async fn check_held(file: &std::fs::File, held: &RangeSet, expected: Option<Md5Digest>) -> Result<(), ClientError> {
    if held.is_empty() {
        return Ok(());
    }
    if hash_held(file, held).await? != expected {
        return Err(TransferError::SourceChanged(
            "the server's partial upload does not match the local file; upload again without resuming".into(),
        )
        .into());
    }
    Ok(())
}

async fn hash_held(file: &std::fs::File, held: &RangeSet) -> Result<Option<Md5Digest>, ClientError> {
    if held.is_empty() {
        return Ok(None);
    }
    let file = file.try_clone().map_err(TransferError::from)?;
    let held = held.clone();
    let h = tokio::task::spawn_blocking(move || transfer::hash_ranges(&file, held.iter()))
        .await
        .map_err(|e| TransferError::Io(std::io::Error::other(e)))??;
    Ok(Some(h.finalize().into()))
}
