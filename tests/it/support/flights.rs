//! A loopback TCP relay that counts the client's flights: bursts of client-to-server bytes
//! separated by the client having been handed bytes from the server. A client that waits for a
//! reply before writing again starts a new flight each time, so flights count the round trips
//! a client spends on top of the TCP handshake (which the relay's kernel answers). The count
//! does not depend on timing, only on the order of events, with one allowance: server bytes
//! reach the client `hold` late (a link delay), so a client that writes several times without
//! waiting is not split into flights by scheduling jitter between its writes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{tcp, TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What one relayed connection looked like from the client's side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flights {
    /// Bytes of each client flight, in order.
    pub sizes: Vec<usize>,
    /// The client closed its side.
    pub closed: bool,
    /// ... within its last flight, without waiting for anything after it.
    pub closed_without_waiting: bool,
    /// Server bytes have been handed to the client since its last flight began.
    answered: bool,
}

impl Flights {
    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    /// Round trips the client waited for, the TCP handshake included: that one plus one per
    /// flight but the last, after which the client closed without waiting.
    pub fn round_trips(&self) -> usize {
        assert!(self.closed_without_waiting, "the client waited before closing: {self:?}");
        self.count()
    }

    fn client_bytes(&mut self, n: usize) {
        if self.sizes.is_empty() || self.answered {
            self.sizes.push(0);
            self.answered = false;
        }
        if let Some(last) = self.sizes.last_mut() {
            *last += n;
        }
    }

    fn client_closed(&mut self) {
        self.closed = true;
        self.closed_without_waiting = !self.answered;
    }
}

/// The relay: every accepted connection gets its own [`Flights`] record.
pub struct FlightProxy {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Arc<Mutex<Flights>>>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for FlightProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl FlightProxy {
    /// Listens on 127.0.0.1 and relays to `server`, handing server bytes to the client `hold`
    /// after they arrive. Runs on its own runtime, so synchronous tests can use it.
    pub fn start(server: SocketAddr, hold: Duration) -> FlightProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flight-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let records: Arc<Mutex<Vec<Arc<Mutex<Flights>>>>> = Arc::default();
        let recs = records.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = Arc::new(Mutex::new(Flights::default()));
                recs.lock().unwrap().push(record.clone());
                tokio::spawn(relay(client, server, hold, record));
            }
        });
        FlightProxy { addr, records, rt: Some(rt) }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Connections relayed so far.
    pub fn connections(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// The record of the most recent connection, waiting (bounded) until its client closed.
    pub fn last(&self) -> Flights {
        let record = self.records.lock().unwrap().last().cloned().expect("no connection relayed");
        let deadline = std::time::Instant::now() + super::STEP;
        loop {
            let f = record.lock().unwrap().clone();
            if f.closed || std::time::Instant::now() > deadline {
                return f;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn relay(client: TcpStream, server: SocketAddr, hold: Duration, record: Arc<Mutex<Flights>>) {
    let Ok(upstream) = TcpStream::connect(server).await else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = upstream.into_split();
    let (tx, rx) = mpsc::channel(4096);
    let up = tokio::spawn(client_to_server(client_r, server_w, record.clone()));
    let down = tokio::spawn(server_to_queue(server_r, tx, hold));
    deliver(rx, client_w, record).await;
    let _ = up.await;
    let _ = down.await;
}

async fn client_to_server(mut from: tcp::OwnedReadHalf, mut to: tcp::OwnedWriteHalf, record: Arc<Mutex<Flights>>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                record.lock().unwrap().client_closed();
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                record.lock().unwrap().client_bytes(n);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads server bytes and queues each chunk with the time it may reach the client; an empty
/// chunk marks the server's close.
async fn server_to_queue(mut from: tcp::OwnedReadHalf, tx: mpsc::Sender<(Instant, Vec<u8>)>, hold: Duration) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if tx.send((Instant::now() + hold, buf[..n].to_vec())).await.is_err() || n == 0 {
            return;
        }
    }
}

async fn deliver(mut rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: tcp::OwnedWriteHalf, record: Arc<Mutex<Flights>>) {
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if bytes.is_empty() {
            let _ = to.shutdown().await;
            return;
        }
        // Marked before the write, so whatever the client sends in answer counts as new.
        record.lock().unwrap().answered = true;
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
