//! Bookkeeping around the request dispatch of `session.rs`: the audit line of every state
//! change (OPS-AUDIT-1) and the transfer metrics (OPS-METRICS-1), taken from the replies and
//! data frames that pass through the connection, so the command handlers need no hooks.

use super::audit::Audit;
use super::metrics::{GaugeGuard, ACTIVE_TRANSFERS, TRANSFER_BYTES};
use super::session::{Conn, Session};
use crate::proto::{ErrorCode, Request, Response, Transport};

/// How a transfer got ready, as its ready reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    Put,
    PutUdp { held: u64 },
    Get,
    GetUdp { size: u64 },
}

impl Ready {
    fn transport(self) -> Transport {
        match self {
            Ready::Put | Ready::Get => Transport::Tcp,
            Ready::PutUdp { .. } | Ready::GetUdp { .. } => Transport::Udp,
        }
    }
}

/// How a transfer ended, as its final reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Final {
    Done { size: u64 },
    Aborted,
    Failed(ErrorCode),
}

/// What a connection has carried: data bytes each way, and the latest transfer replies.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    rx: u64,
    tx: u64,
    ready: Option<Ready>,
    last: Option<Final>,
    /// The digest of the upload that just committed, from its `PutDone`.
    committed_md5: Option<crate::proto::control::Md5Digest>,
    /// The latest upload of this session, if it committed: its target and digest (CTRL-ATTR-2).
    pub last_upload: Option<(crate::home::HomePath, crate::proto::control::Md5Digest)>,
}

impl Tally {
    pub fn received(&mut self, n: usize) {
        self.rx += n as u64;
    }

    pub fn sent(&mut self, n: usize) {
        self.tx += n as u64;
    }

    /// What the replies so far said of the transfer in progress, to put back with `restore`.
    pub fn recorded(&self) -> (Option<Ready>, Option<Final>) {
        (self.ready, self.last)
    }

    pub fn restore(&mut self, (ready, last): (Option<Ready>, Option<Final>)) {
        (self.ready, self.last) = (ready, last);
    }

    pub fn replied(&mut self, resp: &Response) {
        match resp {
            Response::PutReady { .. } => self.ready = Some(Ready::Put),
            Response::UdpPutReady { held, .. } => {
                self.ready = Some(Ready::PutUdp { held: held.iter().map(|r| r.1.saturating_sub(r.0)).sum() })
            }
            Response::GetReady { .. } => self.ready = Some(Ready::Get),
            Response::UdpGetReady { size, .. } => self.ready = Some(Ready::GetUdp { size: *size }),
            Response::PutDone { size, md5 } => {
                self.last = Some(Final::Done { size: *size });
                self.committed_md5 = Some(*md5);
            }
            Response::GetEnd { .. } => self.last = Some(Final::Done { size: 0 }),
            Response::Ok => self.last = Some(Final::Aborted),
            Response::Error { code, .. } => self.last = Some(Final::Failed(*code)),
            _ => {}
        }
    }
}

/// Watches one transfer from request to final reply.
pub(crate) struct TransferWatch {
    op: &'static str,
    transport: Transport,
    rx: u64,
    tx: u64,
    /// For a UDP download, the bytes the client already held.
    held: u64,
    _active: GaugeGuard,
}

impl TransferWatch {
    pub fn start(conn: &mut Conn, op: &'static str, transport: Transport) -> TransferWatch {
        Self::start_holding(conn, op, transport, 0)
    }

    pub fn start_holding(conn: &mut Conn, op: &'static str, transport: Transport, held: u64) -> TransferWatch {
        conn.tally.ready = None;
        conn.tally.last = None;
        conn.tally.committed_md5 = None;
        let gauge = metrics::gauge!(ACTIVE_TRANSFERS, "direction" => direction(op));
        TransferWatch { op, transport, rx: conn.tally.rx, tx: conn.tally.tx, held, _active: GaugeGuard::new(gauge) }
    }

    /// Writes the audit line and counts the bytes moved.
    pub fn finish(self, conn: &mut Conn, session: &Session, path: &str) {
        if self.op == "put" {
            let md5 = conn.tally.committed_md5.take();
            conn.tally.last_upload = md5.and_then(|m| session.resolve(path).ok().map(|p| (p, m)));
        }
        let t = &conn.tally;
        let result = match (t.ready, t.last) {
            (_, Some(Final::Done { .. })) => "ok".to_string(),
            (_, Some(Final::Aborted)) => "aborted".to_string(),
            (_, Some(Final::Failed(code))) => format!("{code:?}"),
            (_, None) => "interrupted".to_string(),
        };
        // A `GetAuto` goes over the transport its ready reply names (UDP-CTRL-7).
        let used = t.ready.map_or(self.transport, Ready::transport);
        let bytes = match (used, t.ready, t.last) {
            (Transport::Tcp, _, _) if self.op == "put" => t.rx - self.rx,
            (Transport::Tcp, _, _) => t.tx - self.tx,
            (Transport::Udp, Some(Ready::PutUdp { held }), Some(Final::Done { size })) => size.saturating_sub(held),
            (Transport::Udp, Some(Ready::GetUdp { size }), Some(Final::Done { .. })) => size.saturating_sub(self.held),
            // A UDP transfer cut short: its flow knows, the control connection does not.
            _ => 0,
        };
        let transport = match used {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        metrics::counter!(TRANSFER_BYTES, "direction" => direction(self.op), "transport" => transport).increment(bytes);
        let shown = session.resolve(path).map_or_else(|_| path.to_string(), |p| p.to_string());
        let mut line = Audit::new(self.op, &session.user, session.peer, &shown).result(result);
        line.bytes = Some(bytes);
        line.transport = Some(transport);
        line.emit();
    }
}

fn direction(op: &str) -> &'static str {
    if op == "put" {
        "up"
    } else {
        "down"
    }
}

/// A file operation that changes the home: mkdir, rm, rmdir, mv.
pub(crate) struct Change {
    event: &'static str,
    path: String,
    to: Option<String>,
}

impl Change {
    /// The change `request` would make, or `None` for requests that change nothing.
    pub fn of(request: &Request, session: &Session) -> Option<Change> {
        let shown = |p: &str| session.resolve(p).map_or_else(|_| p.to_string(), |p| p.to_string());
        let (event, path, to) = match request {
            Request::Mkdir { path } => ("mkdir", shown(path), None),
            Request::Remove { path } => ("rm", shown(path), None),
            Request::Rmdir { path } => ("rmdir", shown(path), None),
            Request::Rename { from, to } => ("mv", shown(from), Some(shown(to))),
            Request::SetAttrs { path, .. } => ("setattr", shown(path), None),
            Request::Copy { from, to } => ("cp", shown(from), Some(shown(to))),
            _ => return None,
        };
        Some(Change { event, path, to })
    }

    pub fn emit(self, session: &Session, resp: &Response) {
        let result = match resp {
            Response::Error { code, .. } => format!("{code:?}"),
            _ => "ok".to_string(),
        };
        let mut line = Audit::new(self.event, &session.user, session.peer, &self.path).result(result);
        line.to = self.to.as_deref();
        line.emit();
    }
}
