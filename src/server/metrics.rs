//! Prometheus metrics (OPS-METRICS-1): counters and gauges through the `metrics` facade, kept
//! by `metrics-exporter-prometheus`, and served as text at `GET /metrics` on the optional
//! admin address (`[admin] metrics_listen`).
//!
//! The recorder is process-wide: it is installed by the first server that needs it, and every
//! server in the process reports into it.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::proto::ErrorCode;

pub(crate) const SESSIONS: &str = "xfer_sessions";
pub(crate) const PENDING_LOGINS: &str = "xfer_pending_logins";
pub(crate) const LOGINS: &str = "xfer_logins_total";
pub(crate) const CONNECTIONS_REFUSED: &str = "xfer_connections_refused_total";
pub(crate) const TRANSFER_BYTES: &str = "xfer_transfer_bytes_total";
pub(crate) const ACTIVE_TRANSFERS: &str = "xfer_active_transfers";
pub(crate) const ERROR_REPLIES: &str = "xfer_error_replies_total";
pub(crate) const QUOTA_REFUSALS: &str = "xfer_quota_refusals_total";
pub(crate) const DISK_FULL: &str = "xfer_disk_full_errors_total";
pub(crate) const SESSIONS_REVOKED: &str = "xfer_sessions_revoked_total";

/// Largest request head read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper gets to send its request and read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder, once; later calls return the same handle.
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => {
                describe();
                Some(h)
            }
            Err(e) => {
                tracing::warn!("metrics disabled: {e}");
                None
            }
        })
        .as_ref()
}

fn describe() {
    metrics::describe_gauge!(SESSIONS, "Logged-in sessions");
    metrics::describe_gauge!(PENDING_LOGINS, "Connections that have not logged in yet");
    metrics::describe_counter!(LOGINS, "Login attempts by outcome (ok, failed, throttled, busy)");
    metrics::describe_counter!(CONNECTIONS_REFUSED, "Connections closed at once because a pool was full");
    metrics::describe_counter!(TRANSFER_BYTES, "File bytes moved, by direction (up, down) and transport");
    metrics::describe_gauge!(ACTIVE_TRANSFERS, "Uploads and downloads in progress");
    metrics::describe_counter!(ERROR_REPLIES, "Error replies sent, by error code");
    metrics::describe_counter!(QUOTA_REFUSALS, "Requests refused for a byte or file quota");
    metrics::describe_counter!(DISK_FULL, "Requests failed because the server's disk is full");
    metrics::describe_counter!(SESSIONS_REVOKED, "Sessions ended because their user was changed or deleted");
}

/// Counts one error reply (called for every reply the server sends).
pub(crate) fn error_reply(code: ErrorCode) {
    metrics::counter!(ERROR_REPLIES, "code" => format!("{code:?}")).increment(1);
    match code {
        ErrorCode::QuotaExceeded | ErrorCode::FileQuotaExceeded => metrics::counter!(QUOTA_REFUSALS).increment(1),
        ErrorCode::DiskFull => metrics::counter!(DISK_FULL).increment(1),
        _ => {}
    }
}

/// Counts one login attempt.
pub(crate) fn login(outcome: &'static str) {
    metrics::counter!(LOGINS, "outcome" => outcome).increment(1);
}

/// Holds a gauge one higher while alive.
pub(crate) struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    pub fn new(gauge: metrics::Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, handle: &'static PrometheusHandle) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, answer(tcp, handle)).await;
        });
    }
}

/// Binds the admin address; the caller logs a failure and goes on without metrics.
pub(crate) async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Answers one HTTP/1.x request: the metrics for `GET /metrics`, 404 for anything else.
async fn answer(mut tcp: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let wanted = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
    let (status, body) = if wanted { ("200 OK", handle.render()) } else { ("404 Not Found", String::new()) };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(reply.as_bytes()).await?;
    tcp.shutdown().await
}
