//! quic-perf: send N bytes memory-to-memory over one QUIC (quinn) stream.
//!
//!   quic-perf server --listen 10.201.0.2:4433          (serves one transfer, then exits)
//!   quic-perf client --connect 10.201.0.2:4433 --bytes 1GiB [--time 20]
//!
//! The client opens one bidirectional stream, writes the bytes, finishes the
//! stream and waits for the server's 8-byte count of what it received. With
//! --time S it stops at S seconds instead: it resets the stream and the
//! server counts the bytes that had arrived in order by then. It prints one line:
//!   quic-perf client bytes=N seconds=T mbit=X cc=cubic capped=false
//! where T runs from the start of the connection attempt to the count's
//! arrival (handshake included, like a file transfer's wall time).
//! Dev-only benchmark tool: the client does not verify the server's
//! (self-signed) certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{congestion, Endpoint, EndpointConfig, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

const ALPN: &[u8] = b"quic-perf";

#[derive(Parser)]
#[command(name = "quic-perf", about = "memory-to-memory QUIC throughput (quinn)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Cc {
    Cubic,
    Bbr,
    Newreno,
}

#[derive(Subcommand)]
enum Cmd {
    Server {
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
        /// Congestion controller for the server's sending side (the ack).
        #[arg(long, value_enum, default_value = "cubic")]
        cc: Cc,
        /// Give up if no transfer completes within this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    Client {
        #[arg(long)]
        connect: SocketAddr,
        /// Bytes to send, e.g. 1000000, 100MiB, 1GB.
        #[arg(long, default_value = "100MiB")]
        bytes: String,
        /// Stop sending after this many seconds (the result then counts the bytes moved).
        #[arg(long)]
        time: Option<f64>,
        #[arg(long, value_enum, default_value = "cubic")]
        cc: Cc,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let i = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, u) = (&t[..i], t[i..].trim());
    let v: f64 = n.parse().map_err(|_| format!("bad size {s:?}"))?;
    let m: f64 = match u.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1048576.0,
        "gib" => 1073741824.0,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    Ok((v * m) as u64)
}

fn transport(cc: Cc) -> TransportConfig {
    let mut t = TransportConfig::default();
    // Windows large enough for 400 Mbit x 150 ms (7.5 MB) with room to spare.
    t.stream_receive_window(VarInt::from_u32(64 << 20));
    t.receive_window(VarInt::from_u32(128 << 20));
    t.send_window(128 << 20);
    t.max_idle_timeout(Some(VarInt::from_u32(60_000).into()));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    match cc {
        Cc::Cubic => t.congestion_controller_factory(Arc::new(congestion::CubicConfig::default())),
        Cc::Bbr => t.congestion_controller_factory(Arc::new(congestion::BbrConfig::default())),
        Cc::Newreno => t.congestion_controller_factory(Arc::new(congestion::NewRenoConfig::default())),
    };
    t
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Capped by net.core.{r,w}mem_max; ask for plenty.
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(16 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

async fn server(listen: SocketAddr, cc: Cc, timeout: u64) -> Result<(), BoxErr> {
    let ck = rcgen::generate_simple_self_signed(vec!["quic-perf".into()])?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    sc.transport_config(Arc::new(transport(cc)));
    let ep = Endpoint::new(EndpointConfig::default(), Some(sc), udp_socket(listen)?, Arc::new(quinn::TokioRuntime))?;
    println!("quic-perf server listening on {}", ep.local_addr()?);
    let work = async {
        let conn = ep.accept().await.ok_or("endpoint closed")?.await?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let t0 = Instant::now();
        let mut total = 0u64;
        let mut bufs: Vec<Bytes> = vec![Bytes::new(); 32];
        let mut reset = false;
        loop {
            match recv.read_chunks(&mut bufs).await {
                Ok(Some(n)) => {
                    for b in &bufs[..n] {
                        total += b.len() as u64;
                    }
                }
                Ok(None) => break,
                // the client hit its --time cap: report what arrived so far
                Err(quinn::ReadError::Reset(_)) => {
                    reset = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        send.write_all(&total.to_be_bytes()).await?;
        send.finish()?;
        // wait for the client to close (it has read the count)
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
        println!(
            "quic-perf server bytes={total} seconds={secs:.3} mbit={:.2} reset={reset}",
            total as f64 * 8.0 / secs / 1e6
        );
        Ok::<_, BoxErr>(())
    };
    let r = tokio::time::timeout(Duration::from_secs(timeout), work).await;
    ep.close(VarInt::from_u32(0), b"bye");
    ep.wait_idle().await;
    match r {
        Ok(r) => r,
        Err(_) => Err("server timeout".into()),
    }
}

async fn client(connect: SocketAddr, bytes: u64, time: Option<f64>, cc: Cc) -> Result<(), BoxErr> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(Arc::new(transport(cc)));
    let bind: SocketAddr = if connect.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let mut ep = Endpoint::new(EndpointConfig::default(), None, udp_socket(bind)?, Arc::new(quinn::TokioRuntime))?;
    ep.set_default_client_config(cfg);

    let t0 = Instant::now();
    let conn = ep.connect(connect, "quic-perf")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    let mut cnt = [0u8; 8];
    let work = async {
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            send.write_chunk(chunk.slice(..n)).await?;
            sent += n as u64;
        }
        send.finish()?;
        recv.read_exact(&mut cnt).await?;
        Ok::<_, BoxErr>(())
    };
    // With --time, stop at the deadline even if data is still buffered or in
    // flight: reset the stream and let the server report what it had received
    // in order by then. Without it, wait until everything has arrived.
    let capped = match time {
        Some(s) => {
            let deadline = tokio::time::Instant::from_std(t0 + Duration::from_secs_f64(s));
            match tokio::time::timeout_at(deadline, work).await {
                Ok(r) => {
                    r?;
                    false
                }
                Err(_) => true,
            }
        }
        None => {
            work.await?;
            false
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    if capped {
        let _ = send.reset(VarInt::from_u32(1));
        tokio::time::timeout(Duration::from_secs(30), recv.read_exact(&mut cnt))
            .await
            .map_err(|_| "no count from the server within 30 s after the reset")??;
    }
    let got = u64::from_be_bytes(cnt);
    conn.close(VarInt::from_u32(0), b"done");
    ep.wait_idle().await;
    let name = format!("{cc:?}").to_lowercase();
    println!(
        "quic-perf client bytes={got} seconds={secs:.3} mbit={:.2} cc={name} capped={capped}",
        got as f64 * 8.0 / secs / 1e6
    );
    if !capped && got != bytes {
        return Err(format!("server counted {got} bytes, sent {bytes}").into());
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Server { listen, cc, timeout } => server(listen, cc, timeout).await,
            Cmd::Client { connect, bytes, time, cc } => {
                let n = parse_size(&bytes).map_err(BoxErr::from)?;
                client(connect, n, time, cc).await
            }
        }
    });
    if let Err(e) = r {
        eprintln!("quic-perf: error: {e} ({e:?})");
        std::process::exit(1);
    }
}
