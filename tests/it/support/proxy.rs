//! A loopback proxy between a client and a server: TCP is relayed untouched, UDP datagrams on
//! the same port number pass through a policy that may drop, duplicate (replay) or corrupt
//! them. It stands in for a middlebox that blocks or degrades UDP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToServer,
    ToClient,
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Forward,
    Drop,
    /// Forward it twice: the second copy is a replay.
    Duplicate,
    /// Flip one bit of the byte at this index (mod the length), then forward.
    Corrupt(usize),
}

/// Decides per datagram: (direction, index of this datagram in its direction, length).
pub type Policy = Arc<dyn Fn(Dir, u64, usize) -> Action + Send + Sync>;

pub struct Proxy {
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    /// Datagrams seen per direction (to server, to client).
    pub seen: Arc<[AtomicU64; 2]>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 (TCP and UDP on one port number) and relays to `server`.
    pub async fn start(server: SocketAddr, policy: Policy) -> Proxy {
        let (listener, udp) = bind_pair().await;
        let addr = listener.local_addr().unwrap();
        let seen: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        let udp = Arc::new(udp);
        let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        upstream.connect(server).await.unwrap();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let up_task =
            tokio::spawn(relay_up(udp.clone(), upstream.clone(), client.clone(), policy.clone(), seen.clone()));
        let down_task = tokio::spawn(relay_down(udp, upstream, client, policy, seen.clone()));
        Proxy { addr, tasks: vec![tcp_task, up_task, down_task], seen }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }
}

/// A TCP listener and a UDP socket on the same free port.
async fn bind_pair() -> (TcpListener, UdpSocket) {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)).await {
            return (listener, udp);
        }
    }
    panic!("no free port for both TCP and UDP");
}

fn apply(action: Action, buf: &mut [u8]) -> usize {
    if let Action::Corrupt(i) = action {
        if !buf.is_empty() {
            let i = i % buf.len();
            buf[i] ^= 0x01;
        }
    }
    match action {
        Action::Drop => 0,
        Action::Duplicate => 2,
        _ => 1,
    }
}

async fn relay_up(
    front: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    policy: Policy,
    seen: Arc<[AtomicU64; 2]>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = front.recv_from(&mut buf).await {
        *client.lock().unwrap() = Some(from);
        let i = seen[0].fetch_add(1, Ordering::Relaxed);
        let copies = apply(policy(Dir::ToServer, i, n), &mut buf[..n]);
        for _ in 0..copies {
            let _ = upstream.send(&buf[..n]).await;
        }
    }
}

async fn relay_down(
    front: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    policy: Policy,
    seen: Arc<[AtomicU64; 2]>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = match upstream.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return,
        };
        let Some(to) = *client.lock().unwrap() else { continue };
        let i = seen[1].fetch_add(1, Ordering::Relaxed);
        let copies = apply(policy(Dir::ToClient, i, n), &mut buf[..n]);
        for _ in 0..copies {
            let _ = front.send_to(&buf[..n], to).await;
        }
    }
}
