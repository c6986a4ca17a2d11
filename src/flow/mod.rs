//! UDP flows at run time: the socket, the demultiplexer that routes datagrams to flows by id,
//! and the per-flow task that drives a [`crate::udp::flow::Flow`] with file bytes, timers and
//! sends. The server runs one demultiplexer for all flows on its UDP port; a client runs one
//! for its own socket.

mod driver;
pub mod io;
pub mod sink;
pub mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::udp::flow::Flow;
pub use driver::{drive, FileEnd, FlowEnd, FlowError};
pub use io::UdpIo;

/// A flow as shared between the demultiplexer and its task.
pub struct FlowShared {
    flow: Mutex<Flow>,
    wake: Notify,
}

impl FlowShared {
    pub fn new(flow: Flow) -> Arc<FlowShared> {
        Arc::new(FlowShared { flow: Mutex::new(flow), wake: Notify::new() })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Live flows by id.
#[derive(Default)]
pub struct FlowTable {
    flows: Mutex<HashMap<u64, Arc<FlowShared>>>,
}

impl FlowTable {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<FlowShared>>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
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
                    None => return,
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
