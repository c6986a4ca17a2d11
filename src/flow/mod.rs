//! UDP flows at run time: the socket, the demultiplexer that routes datagrams to flows by id,
//! and the per-flow task that drives a [`crate::udp::flow::Flow`] with file bytes, timers and
//! sends. The server runs one demultiplexer for all flows on its UDP port; a client runs one
//! for its own socket.

mod driver;
pub mod early;
pub mod io;
pub mod sink;
pub mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{watch, Notify};

use crate::proto::control::Md5Digest;
use crate::udp::flow::Flow;
pub use driver::{drive, FileEnd, FlowEnd, FlowError};
use early::{EarlyDatagram, EarlyDatagrams};
pub use io::UdpIo;

/// A flow as shared between the demultiplexer, its task and the control connection.
pub struct FlowShared {
    flow: Mutex<Flow>,
    wake: Notify,
    /// Sending end: the file's md5, once every byte has been sent at least once (UDP-END-8).
    all_sent: watch::Sender<Option<Md5Digest>>,
    /// Receiving end: true once every byte is held and handed to the writer (UDP-END-8).
    all_held: watch::Sender<bool>,
}

impl FlowShared {
    pub fn new(flow: Flow) -> Arc<FlowShared> {
        Arc::new(FlowShared {
            flow: Mutex::new(flow),
            wake: Notify::new(),
            all_sent: watch::channel(None).0,
            all_held: watch::channel(false).0,
        })
    }

    /// Sending end: turns `Some(md5 of the file)` once every byte has been sent once.
    pub fn all_sent(&self) -> watch::Receiver<Option<Md5Digest>> {
        self.all_sent.subscribe()
    }

    /// Receiving end: turns true once every byte is held and handed to the writer.
    pub fn all_held(&self) -> watch::Receiver<bool> {
        self.all_held.subscribe()
    }

    /// Wakes the flow's task to look at the flow again (after a change from outside it).
    pub fn wake_task(&self) {
        self.wake.notify_one();
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Live flows by id, and (a server's) datagrams that came before their flow.
#[derive(Default)]
pub struct FlowTable {
    flows: Mutex<HashMap<u64, Arc<FlowShared>>>,
    /// `Some` on a server: holds `Hello`s and `Data` for flows not registered yet
    /// (UDP-CTRL-9, UDP-CTRL-10).
    early: Option<Mutex<EarlyDatagrams>>,
}

/// The id a client chose is already a live flow's (UDP-CTRL-9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("flow id in use")]
pub struct IdInUse;

impl FlowTable {
    /// A server's table: it holds datagrams that arrive before their flow (UDP-CTRL-9, -10).
    pub fn holding_early_datagrams() -> FlowTable {
        FlowTable { flows: Mutex::default(), early: Some(Mutex::default()) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<FlowShared>>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn early(&self) -> Option<std::sync::MutexGuard<'_, EarlyDatagrams>> {
        self.early.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Registers a flow under the id its client chose, unless a live flow has it; returns the
    /// datagrams that came before it, for its task to hand it (UDP-CTRL-9, -10).
    pub fn insert_chosen(&self, now: Instant, id: u64, flow: Arc<FlowShared>) -> Result<Vec<EarlyDatagram>, IdInUse> {
        {
            let mut map = self.map();
            if id == 0 || map.contains_key(&id) {
                return Err(IdInUse);
            }
            map.insert(id, flow);
        }
        Ok(self.early().map(|mut e| e.take(now, id)).unwrap_or_default())
    }

    /// Drops what is held for `id`, whose request will not open a flow under it (UDP-CTRL-11).
    pub fn discard_early(&self, id: u64) {
        if let Some(mut early) = self.early() {
            early.take(Instant::now(), id);
        }
    }

    /// Picks a random id no live flow uses (UDP-CTRL-1).
    pub fn new_id(&self) -> u64 {
        let map = self.map();
        loop {
            let id = rand::random::<u64>();
            if id != 0 && !map.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn insert(&self, id: u64, flow: Arc<FlowShared>) {
        self.map().insert(id, flow);
    }

    pub fn contains(&self, id: u64) -> bool {
        self.map().contains_key(&id)
    }

    pub fn remove(&self, id: u64) {
        self.map().remove(&id);
    }

    fn get(&self, id: u64) -> Option<Arc<FlowShared>> {
        self.map().get(&id).cloned()
    }
}

/// Receives datagrams on `io` and hands each to its flow until the socket fails.
pub async fn demux(io: Arc<UdpIo>, table: Arc<FlowTable>) -> std::io::Result<()> {
    let mut batch = io::RecvBatch::default();
    let mut last: Option<(u64, Arc<FlowShared>)> = None;
    loop {
        io.recv(&mut batch).await?;
        let now = Instant::now();
        batch.for_each(|from, datagram| {
            let Ok(header) = crate::udp::packet::Header::decode(datagram) else { return };
            let flow = match &last {
                Some((id, f)) if *id == header.flow => f.clone(),
                _ => match table.get(header.flow) {
                    Some(f) => {
                        last = Some((header.flow, f.clone()));
                        f
                    }
                    None => {
                        if let Some(mut early) = table.early() {
                            early.hold(now, header.flow, header.kind, from, datagram);
                        }
                        return;
                    }
                },
            };
            if flow.lock().handle_datagram(now, from, datagram) {
                flow.wake.notify_one();
            }
        });
        // Do not keep a finished flow alive through the cache.
        last = None;
    }
}
