//! One UDP socket with batched I/O: GSO sends and GRO/`recvmmsg` receives through `quinn-udp`,
//! which also sets don't-fragment (UDP-PMTU-1), and large kernel buffers.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Kernel buffer size asked for each direction. At the 208 KB default a 2 Gbit/s flow loses
/// datagrams to the receive queue; 4 MB does not.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Room for one receive: a GRO batch of up to 64 KiB.
const RECV_SLOT: usize = 64 * 1024;

static CLAMP_WARNED: AtomicBool = AtomicBool::new(false);

/// A UDP socket plus its batching state.
pub struct UdpIo {
    socket: UdpSocket,
    state: UdpSocketState,
}

/// Received datagrams, reused between calls.
pub struct RecvBatch {
    slots: Vec<BytesMut>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            slots: (0..BATCH_SIZE).map(|_| BytesMut::zeroed(RECV_SLOT)).collect(),
            meta: vec![RecvMeta::default(); BATCH_SIZE],
            filled: 0,
        }
    }
}

impl RecvBatch {
    /// Calls `f(from, datagram)` for every datagram of the last receive, splitting GRO batches.
    pub fn for_each(&mut self, mut f: impl FnMut(SocketAddr, &mut [u8])) {
        for (slot, meta) in self.slots.iter_mut().zip(&self.meta).take(self.filled) {
            let stride = meta.stride.max(1);
            for seg in slot[..meta.len].chunks_mut(stride) {
                f(meta.addr, seg);
            }
        }
    }
}

impl UdpIo {
    /// Wraps a bound socket: enables GSO/GRO and don't-fragment, enlarges the buffers.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<UdpIo> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let socket = UdpSocket::from_std(socket)?;
        let io = UdpIo { socket, state };
        io.grow_buffers();
        Ok(io)
    }

    /// Binds `addr` and wraps the socket.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpIo> {
        UdpIo::new(std::net::UdpSocket::bind(addr)?)
    }

    fn grow_buffers(&self) {
        let s = (&self.socket).into();
        let _ = self.state.set_recv_buffer_size(s, SOCKET_BUFFER);
        let _ = self.state.set_send_buffer_size((&self.socket).into(), SOCKET_BUFFER);
        let got = self.state.recv_buffer_size((&self.socket).into()).unwrap_or(0);
        // Linux reports twice the requested size; below the request means it was clamped.
        if got < SOCKET_BUFFER && !CLAMP_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "UDP receive buffer clamped to {got} bytes (asked {SOCKET_BUFFER}); fast transfers may lose \
                 datagrams. Raise net.core.rmem_max and net.core.wmem_max"
            );
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Most datagrams one `send` may carry.
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Waits for and receives one batch of datagrams.
    pub async fn recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        loop {
            self.socket.readable().await?;
            let mut iov: Vec<IoSliceMut<'_>> = batch.slots.iter_mut().map(|s| IoSliceMut::new(&mut s[..])).collect();
            let r = self
                .socket
                .try_io(Interest::READABLE, || self.state.recv((&self.socket).into(), &mut iov, &mut batch.meta));
            match r {
                Ok(n) => {
                    batch.filled = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors surface here on connected sockets; they say nothing we act on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `contents` to `to` as datagrams of `segment` bytes (the last may be shorter).
    /// Local send errors other than a full buffer are dropped, as UDP drops packets.
    pub async fn send(&self, to: SocketAddr, contents: &[u8], segment: usize) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        loop {
            self.socket.writable().await?;
            match self.socket.try_io(Interest::WRITABLE, || self.state.send((&self.socket).into(), &transmit)) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
