//! Asking for a download under `auto` or `udp` (UDP-CTRL-3, UDP-CTRL-7, UDP-CTRL-11,
//! UDP-FALLBACK-5), and stopping a UDP download with `Abort` (UDP-END-3), with the `Walk` that
//! may ride behind the request (UDP-CTRL-8).

use super::get_end::{AbortEnd, Seen};
use super::udp::{chosen_flow_id, FlowSocket};
use super::{unexpected, Client, ClientError, TransferOptions, TransportChoice, SMALL_TRANSFER_MAX};
use crate::conn::{Batch, ConnError};
use crate::proto::control::Md5Digest;
use crate::proto::{ErrorCode, Request, Response};
use crate::udp::ranges::RangeSet;

impl Client {
    /// Whether this server is known to serve `GetAuto`: it has not refused it on this
    /// connection.
    pub(super) fn get_auto_known(&self) -> bool {
        !self.get_auto_refused
    }

    /// Asks for a download: with `GetFlow`, its flow's first `Hello` sent from `socket` beside
    /// it (UDP-CTRL-11); from a server that refused `GetFlow`, under `auto` with `GetAuto`, so
    /// that the server picks the transport by size (UDP-CTRL-7); with forced `udp`, or once the
    /// server has refused `GetAuto` too, with `GetUdp` (UDP-CTRL-3). Under `auto` the request
    /// carries `tcp_max` and the `Walk` of `CTRL-ATTR-3` rides behind it when one is wanted
    /// (UDP-CTRL-8).
    pub(super) async fn request_get(
        &mut self,
        remote: &str,
        held: &RangeSet,
        held_md5: Option<Md5Digest>,
        opts: &TransferOptions,
        socket: &mut FlowSocket,
    ) -> Result<GetStart, ClientError> {
        let ranges: Vec<_> = held.iter().collect();
        let auto = opts.transport == TransportChoice::Auto && self.get_auto_known();
        let tcp_max = auto.then_some(SMALL_TRANSFER_MAX);
        if !self.get_flow_refused {
            let id = chosen_flow_id();
            socket.send_early_hello(self, id).await;
            let req = Request::GetFlow {
                path: remote.to_string(),
                held: ranges.clone(),
                held_md5,
                rate_limit: opts.rate_limit,
                tcp_max,
                flow: id,
            };
            match self.ask_get(&req, remote, auto, held).await {
                Ok(start) => {
                    if !matches!(start, GetStart::Udp { flow, .. } if flow == id) {
                        socket.early_hello = None;
                    }
                    return Ok(start);
                }
                Err(e) if e.code() == Some(ErrorCode::BadRequest) => {
                    tracing::debug!("the server refused GetFlow ({e}); asking without a chosen flow");
                    self.get_flow_refused = true;
                    // Its Hello was for the refused id: the flow starts from a fresh socket.
                    *socket = FlowSocket::bind(self).map_err(ConnError::from)?;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(tcp_max) = tcp_max {
            let req = Request::GetAuto {
                path: remote.to_string(),
                held: ranges.clone(),
                held_md5,
                rate_limit: opts.rate_limit,
                tcp_max,
            };
            match self.ask_get(&req, remote, true, held).await {
                Err(e) if e.code() == Some(ErrorCode::BadRequest) => {
                    // A server that predates GetAuto: ask it the old way from now on.
                    tracing::debug!("the server refused GetAuto ({e}); using GetUdp");
                    self.get_auto_refused = true;
                }
                other => return other,
            }
        }
        let req = Request::GetUdp { path: remote.to_string(), held: ranges, held_md5, rate_limit: opts.rate_limit };
        self.ask_get(&req, remote, false, held).await
    }

    /// Sends one download request for `remote` and reads its ready reply. With `auto` (the
    /// request carries `tcp_max`), the wanted `Walk` rides behind it (UDP-CTRL-8) and the server
    /// may answer `GetReady` when the client holds nothing (UDP-CTRL-7). After an error reply
    /// the `Walk`'s own reply is read, so a request asked again goes without it.
    async fn ask_get(
        &mut self,
        req: &Request,
        remote: &str,
        auto: bool,
        held: &RangeSet,
    ) -> Result<GetStart, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        if self.ahead_in_flight() > 0 {
            // Its reply would be read as theirs (CTRL-SESS-1).
            return Err(ClientError::Protocol("a request is sent while small transfers are unanswered".into()));
        }
        let walk = auto && std::mem::take(&mut self.walk_behind_get);
        let mut batch = Batch::new();
        batch.control(req).map_err(ConnError::from)?;
        if walk {
            batch.control(&Request::Walk { path: remote.to_string() }).map_err(ConnError::from)?;
        }
        self.writer.write_batch(batch).await.map_err(ConnError::from)?;
        match self.read_response().await {
            Ok(Response::UdpGetReady { flow, size }) => Ok(GetStart::Udp { flow, size, walk }),
            Ok(Response::GetReady { size, offset: 0 }) if auto && held.is_empty() => Ok(GetStart::Tcp { size, walk }),
            Ok(other) => {
                self.broken = true;
                Err(unexpected(other))
            }
            Err(e @ ClientError::Server { .. }) => {
                if walk && !self.broken && !ends_session(&e) {
                    self.read_walk_behind().await;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Stops a UDP download on the control connection: reads the server's answer to the
    /// `Abort` and, before it, the download's own final reply if it ended first and the reply
    /// to a `Walk` that rode behind the request (UDP-END-3, UDP-CTRL-8; see `get_end`).
    pub(super) async fn abort_get(&mut self, walk: bool) -> Result<(), ClientError> {
        self.writer.write_control(&Request::Abort).await.map_err(crate::conn::ConnError::from)?;
        let mut state = AbortEnd::new(walk);
        while state != AbortEnd::Done {
            let reply = self.read_response().await;
            let seen = match &reply {
                Ok(Response::Ok) => Seen::Ok,
                Ok(Response::GetEnd { .. }) => Seen::GetEnd,
                Ok(Response::Tree { .. }) => Seen::Tree,
                Ok(_) => Seen::Other,
                Err(ClientError::Server { .. }) => Seen::Error,
                Err(_) => {
                    self.broken = true;
                    return reply.map(|_| ());
                }
            };
            let step = state.handle(seen);
            if step.unexpected {
                self.broken = true;
                return Err(reply.map_or_else(|e| e, unexpected));
            }
            if step.walk_reply {
                if let Ok(Response::Tree { mut entries }) = reply {
                    if entries.len() == 1 {
                        self.walked = entries.pop();
                    }
                }
            }
            state = step.next;
        }
        Ok(())
    }
}

/// How the server answered a download request.
pub(super) enum GetStart {
    /// `UdpGetReady`: the flow and the file's size; `walk`: a `Walk` rode behind.
    Udp { flow: u64, size: u64, walk: bool },
    /// `GetReady` to `GetAuto`: the whole file follows on the control connection (UDP-CTRL-7).
    Tcp { size: u64, walk: bool },
}

/// Error replies after which the server sends nothing more (CTRL-SESS-3, CTRL-SESS-7).
pub(super) fn ends_session(e: &ClientError) -> bool {
    use crate::proto::ErrorCode;
    matches!(e.code(), Some(ErrorCode::ShuttingDown | ErrorCode::IdleTimeout | ErrorCode::NotAuthenticated))
}
