//! A raw protocol client: frames written and read by hand, for what the library client
//! never sends.

use super::*;

type Tls = TlsStream<TcpStream>;

/// A protocol-level client for sending exactly the frames a test wants.
pub struct Raw {
    pub reader: FrameReader<ReadHalf<Tls>>,
    pub writer: WriteHalf<Tls>,
}

impl Raw {
    /// TLS only (accepting any certificate), no preamble yet.
    pub async fn tls(addr: SocketAddr) -> Raw {
        Raw::tls_exporting(addr).await.0
    }

    /// TLS only, and the session secret that keys its UDP flows (UDP-SEAL-1).
    pub async fn tls_exporting(addr: SocketAddr) -> (Raw, xfer::udp::seal::SessionSecret) {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let config = client_config(Arc::new(PinnedVerifier::new(None))).expect("client config");
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("tls handshake");
        let mut secret = [0u8; xfer::udp::seal::SECRET_LEN];
        tls.get_ref().1.export_keying_material(&mut secret, xfer::udp::seal::EXPORTER_LABEL, None).expect("export");
        let (r, w) = tokio::io::split(tls);
        (Raw { reader: FrameReader::new(r), writer: w }, secret)
    }

    /// Logged in, with the session secret that keys its UDP flows.
    pub async fn login_exporting(
        addr: SocketAddr,
        user: &str,
        password: &str,
    ) -> (Raw, xfer::udp::seal::SessionSecret) {
        let (mut raw, secret) = Raw::tls_exporting(addr).await;
        FrameWriter::new(&mut raw.writer).write_preamble(PROTOCOL_VERSION).await.expect("preamble");
        assert_eq!(raw.reader.read_preamble().await.expect("server preamble"), PROTOCOL_VERSION);
        let r = raw.call(&Request::Auth { user: user.into(), password: password.into() }).await;
        assert!(matches!(r, Response::Authed { .. }), "login failed: {r:?}");
        (raw, secret)
    }

    /// TLS plus version preamble exchange.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::tls(addr).await;
        FrameWriter::new(&mut raw.writer).write_preamble(PROTOCOL_VERSION).await.expect("preamble");
        let v = raw.reader.read_preamble().await.expect("server preamble");
        assert_eq!(v, PROTOCOL_VERSION);
        raw
    }

    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let r = raw.call(&Request::Auth { user: user.into(), password: password.into() }).await;
        assert!(matches!(r, Response::Authed { .. }), "login failed: {r:?}");
        raw
    }

    pub async fn send(&mut self, req: &Request) {
        FrameWriter::new(&mut self.writer).write_control(req).await.expect("send control");
    }

    pub async fn try_send(&mut self, req: &Request) -> std::io::Result<()> {
        FrameWriter::new(&mut self.writer).write_control(req).await
    }

    /// Sends one data frame and flushes.
    pub async fn send_chunk(&mut self, chunk: &DataChunk) {
        let mut w = FrameWriter::new(&mut self.writer);
        w.write_data(chunk).await.expect("send data");
        w.flush().await.expect("flush");
    }

    /// Writes raw bytes and flushes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send bytes");
        self.writer.flush().await.expect("flush");
    }

    pub async fn frame(&mut self) -> Result<Frame, ConnError> {
        tokio::time::timeout(STEP, self.reader.read_frame()).await.expect("no frame from server in time")
    }

    /// The next frame, which must be a control response.
    pub async fn recv(&mut self) -> Response {
        match self.frame().await {
            Ok(Frame::Control(p)) => Frame::decode_control::<Response>(&p).expect("decode response"),
            Ok(Frame::Data(c)) => panic!("expected a control reply, got a data frame at {}", c.offset),
            Err(e) => panic!("expected a control reply, connection failed: {e}"),
        }
    }

    /// Reads a TCP download's data frames from byte 0 until `GetEnd`, checking their order and
    /// the md5; returns the bytes.
    pub async fn recv_download(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            match self.frame().await {
                Ok(Frame::Data(c)) => {
                    assert_eq!(c.offset, got.len() as u64, "chunks in order");
                    got.extend_from_slice(&c.data);
                }
                Ok(Frame::Control(p)) => match Frame::decode_control::<Response>(&p).expect("decode") {
                    Response::GetEnd { md5 } => {
                        assert_eq!(md5, super::md5_bytes(&got));
                        return got;
                    }
                    other => panic!("expected data or GetEnd, got {other:?}"),
                },
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    pub async fn call(&mut self, req: &Request) -> Response {
        self.send(req).await;
        self.recv().await
    }

    /// Expects an error reply with `code`; returns its message.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.recv().await {
            Response::Error { code: c, message } if c == code => message,
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    }

    /// Waits until the server closes the connection (any read error counts as closed).
    pub async fn expect_closed(&mut self) {
        match self.frame().await {
            Err(_) => {}
            Ok(Frame::Control(p)) => {
                let r = Frame::decode_control::<Response>(&p);
                panic!("expected the connection to close, got {r:?}");
            }
            Ok(Frame::Data(_)) => panic!("expected the connection to close, got a data frame"),
        }
    }

    /// Starts an upload; returns the offset from `PutReady`.
    pub async fn start_put(&mut self, path: &str, size: u64, resume: bool) -> u64 {
        let req = Request::Put { path: path.into(), size, resume, transport: Transport::Tcp };
        match self.call(&req).await {
            Response::PutReady { offset, .. } => offset,
            other => panic!("expected PutReady, got {other:?}"),
        }
    }

    /// Requests a whole-file download without reading the reply.
    pub async fn send_get(&mut self, path: &str) {
        let req = Request::Get { path: path.into(), offset: 0, prefix_md5: None, transport: Transport::Tcp };
        self.send(&req).await;
    }

    /// Sends `data[from..to]` as chunks of at most CHUNK_SIZE.
    pub async fn send_range(&mut self, data: &[u8], from: usize, to: usize) {
        let mut pos = from;
        while pos < to {
            let end = (pos + CHUNK_SIZE).min(to);
            let chunk = DataChunk::new(pos as u64, Bytes::copy_from_slice(&data[pos..end]));
            self.send_chunk(&chunk).await;
            pos = end;
        }
    }
}
