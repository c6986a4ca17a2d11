//! linkem: two network namespaces joined through this process by a pair of
//! TUN devices. Each direction is shaped by a [`linkem::model::LinkModel`]
//! and delayed in a [`linkem::delayline::DelayLine`] (preallocated buffers,
//! heap of due times, no allocation per packet). One thread per direction.

use std::ffi::CString;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use linkem::delayline::DelayLine;
use linkem::model::{DirConfig, GeParams, LinkModel};
use linkem::parse;

const DEV: &str = "lem0";

#[derive(Parser, Debug)]
#[command(
    name = "linkem",
    version,
    about = "Userspace link emulator: netns <prefix>-a <-> TUN <-> linkem <-> TUN <-> netns <prefix>-b",
    long_about = "Creates network namespaces <prefix>-a and <prefix>-b, each holding a TUN device \
`lem0` (default addresses 10.201.0.1/24 and 10.201.0.2/24), and forwards IP packets between \
them with per-direction delay, loss, Gilbert-Elliott burst loss, rate limit with a drop-tail \
queue, reordering and duplication. Values may be given per direction as A2B/B2A, e.g. \
--loss 1%/0. Prints 'linkem ready: ...' on stdout when the link is up, and its counters on \
stderr at exit. Exits (and removes the namespaces) after --duration, on SIGINT/SIGTERM/SIGHUP, \
or when the optional command after `--` exits (then with its exit status).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Remove stale namespaces <prefix>-a / <prefix>-b left by a killed linkem.
    Cleanup {
        #[arg(long, default_value = "xfer-lem")]
        netns_prefix: String,
        /// Also SIGKILL processes still running inside those namespaces.
        #[arg(long)]
        kill: bool,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Link rate, e.g. 100mbit, 1gbit; 0 = unlimited.
    #[arg(long, default_value = "0")]
    rate: String,
    /// One-way delay, e.g. 25ms, 100us.
    #[arg(long, default_value = "0")]
    delay: String,
    /// Independent random loss, e.g. 1% or 0.01.
    #[arg(long, default_value = "0")]
    loss: String,
    /// Gilbert-Elliott burst loss AVG:LEN: average loss AVG with bursts of
    /// LEN packets on average (all packets lost while in the bad state).
    #[arg(long)]
    ge_burst: Option<String>,
    /// Drop-tail queue depth in packets, counting the one on the wire.
    /// Default: one bandwidth-delay product (rate x (delay a->b + delay b->a))
    /// in 1500-byte packets, at least 100. Only used with a rate limit.
    #[arg(long)]
    queue_pkts: Option<String>,
    /// Probability that a packet is held back by --reorder-delay, so that the
    /// packets behind it overtake it.
    #[arg(long, default_value = "0")]
    reorder: String,
    #[arg(long, default_value = "1ms")]
    reorder_delay: String,
    /// Probability that a packet is duplicated.
    #[arg(long, default_value = "0")]
    dup: String,
    /// MTU of both TUN devices.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Packet buffers per direction (default: sized from rate, delay and queue).
    #[arg(long)]
    pool: Option<usize>,
    /// Lifetime; the emulator always stops after this.
    #[arg(long, default_value = "600s")]
    duration: String,
    #[arg(long, default_value = "xfer-lem")]
    netns_prefix: String,
    #[arg(long, default_value = "10.201.0.1")]
    addr_a: Ipv4Addr,
    #[arg(long, default_value = "10.201.0.2")]
    addr_b: Ipv4Addr,
    /// Seed of the loss/reorder/dup random streams.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not raise tcp_rmem/tcp_wmem maxima to 64 MiB inside the namespaces.
    #[arg(long)]
    no_tune: bool,
    /// Command to run (in the root namespace, with LINKEM_NS_A/B and
    /// LINKEM_ADDR_A/B set) once the link is up; linkem exits when it does.
    #[arg(last = true)]
    cmd: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.sub {
        Some(Sub::Cleanup { netns_prefix, kill }) => match cleanup(&netns_prefix, kill) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("linkem cleanup: {e}");
                ExitCode::FAILURE
            }
        },
        None => match run(cli.run) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("linkem: error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

// ---------------------------------------------------------------- netns

/// Children must not inherit linkem's blocked SIGINT/SIGTERM/SIGHUP (a blocked
/// mask survives exec), or `timeout` and Ctrl-C could not stop them.
fn unblocked(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = unblocked(Command::new("ip"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Deletes the namespaces it holds when dropped (also on error paths).
struct NetnsGuard {
    names: Vec<String>,
}

impl NetnsGuard {
    fn add(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.names.push(name.to_string());
        Ok(())
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for n in self.names.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &n]) {
                eprintln!("linkem: cleanup: {e}");
            }
        }
    }
}

fn validate_prefix(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 40 || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("bad --netns-prefix {p:?}: use 1-40 of [A-Za-z0-9_-]"));
    }
    Ok(())
}

fn cleanup(prefix: &str, kill: bool) -> Result<(), String> {
    validate_prefix(prefix)?;
    let mut n = 0;
    for suffix in ["a", "b"] {
        let name = format!("{prefix}-{suffix}");
        if !netns_exists(&name) {
            continue;
        }
        if let Ok(out) = unblocked(Command::new("ip")).args(["netns", "pids", &name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if kill {
                    if let Ok(p) = pid.parse::<i32>() {
                        // SAFETY: plain kill(2) on a pid listed inside our namespace
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                    eprintln!("linkem cleanup: killed pid {pid} in {name}");
                } else {
                    eprintln!("linkem cleanup: pid {pid} still runs in {name} (use --kill)");
                }
            }
        }
        ip(&["netns", "del", &name])?;
        eprintln!("linkem cleanup: removed netns {name}");
        n += 1;
    }
    if n == 0 {
        eprintln!("linkem cleanup: no namespace {prefix}-a/{prefix}-b");
    }
    Ok(())
}

// ---------------------------------------------------------------- TUN

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

struct Tun {
    fd: RawFd,
    name: String,
}

impl Tun {
    fn open(name: &str) -> Result<Tun, String> {
        let path = CString::new("/dev/net/tun").unwrap();
        // SAFETY: FFI calls with valid pointers; fd checked.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open /dev/net/tun: {}", std::io::Error::last_os_error()));
        }
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: req is a properly laid out struct ifreq prefix (40 bytes).
        if unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut req as *mut IfReq) } < 0 {
            let e = std::io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(format!("TUNSETIFF {name}: {e}"));
        }
        // SAFETY: fcntl on our fd
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(Tun { fd, name: name.to_string() })
    }
}

impl Drop for Tun {
    fn drop(&mut self) {
        // SAFETY: closing our own fd once
        unsafe { libc::close(self.fd) };
    }
}

fn setup_side(tun: &Tun, ns: &str, addr: Ipv4Addr, mtu: u32, tune: bool) -> Result<(), String> {
    ip(&["link", "set", "dev", &tun.name, "netns", ns])?;
    ip(&["-n", ns, "link", "set", "dev", &tun.name, "name", DEV])?;
    ip(&["-n", ns, "link", "set", "dev", DEV, "mtu", &mtu.to_string(), "txqueuelen", "1000"])?;
    ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", DEV])?;
    ip(&["-n", ns, "link", "set", "dev", DEV, "up"])?;
    ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    let mut kv = vec![format!("net.ipv6.conf.{DEV}.disable_ipv6=1")];
    if tune {
        kv.push("net.ipv4.tcp_rmem=4096 131072 67108864".into());
        kv.push("net.ipv4.tcp_wmem=4096 16384 67108864".into());
    }
    let out = unblocked(Command::new("ip"))
        .args(["netns", "exec", ns, "sysctl", "-q", "-w"])
        .args(&kv)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("sysctl in {ns}: {e}"))?;
    if !out.status.success() {
        eprintln!("linkem: warning: sysctl in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

// ---------------------------------------------------------------- forwarding

#[derive(Default, Debug, Clone, Copy)]
struct DirStats {
    rx: u64,
    rx_bytes: u64,
    forwarded: u64,
    fwd_bytes: u64,
    dropped_loss: u64,
    dropped_queue: u64,
    dropped_nobuf: u64,
    duplicated: u64,
    reordered: u64,
    write_err: u64,
    read_err: u64,
    in_flight_at_exit: u64,
    max_in_flight: u64,
}

#[inline]
fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

#[inline]
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn forward(
    src: RawFd,
    dst: RawFd,
    mut model: LinkModel,
    mut dl: DelayLine,
    stop: &AtomicBool,
    start: Instant,
) -> DirStats {
    // Sub-microsecond timer slack for accurate pacing of small delays.
    // SAFETY: prctl on the current thread
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0, 0, 0) };
    let mut st = DirStats::default();
    let bufsz = dl.buf_size();
    let mut scratch = vec![0u8; bufsz];
    let mut pfd = libc::pollfd { fd: src, events: libc::POLLIN, revents: 0 };

    macro_rules! flush {
        ($now:expr) => {
            while let Some(i) = dl.pop_due($now) {
                let p = dl.packet(i);
                // SAFETY: writing an initialised buffer to our TUN fd
                let n = unsafe { libc::write(dst, p.as_ptr() as *const libc::c_void, p.len()) };
                if n < 0 {
                    st.write_err += 1;
                } else {
                    st.forwarded += 1;
                    st.fwd_bytes += p.len() as u64;
                }
                dl.release(i);
            }
        };
    }

    while !stop.load(Ordering::Relaxed) {
        let now = now_ns(start);
        flush!(now);
        // Drain what the kernel has queued on the TUN, up to a batch.
        let mut got = 0;
        while got < 64 {
            let Some(idx) = dl.alloc() else {
                // Pool exhausted: drain into scratch so the TUN does not stall.
                // SAFETY: scratch is bufsz bytes
                let n = unsafe { libc::read(src, scratch.as_mut_ptr() as *mut libc::c_void, bufsz) };
                if n <= 0 {
                    break;
                }
                st.rx += 1;
                st.rx_bytes += n as u64;
                st.dropped_nobuf += 1;
                got += 1;
                continue;
            };
            let buf = dl.buf_mut(idx);
            // SAFETY: buf is bufsz bytes
            let n = unsafe { libc::read(src, buf.as_mut_ptr() as *mut libc::c_void, bufsz) };
            if n <= 0 {
                dl.release(idx);
                if n < 0 {
                    let e = errno();
                    if e == libc::EINTR {
                        continue;
                    }
                    if e != libc::EAGAIN {
                        st.read_err += 1;
                    }
                }
                break;
            }
            got += 1;
            let n = n as usize;
            let now = now_ns(start);
            st.rx += 1;
            st.rx_bytes += n as u64;
            match model.on_packet(now, n) {
                linkem::model::Verdict::Deliver { due, dup_due, .. } => {
                    dl.set_len(idx, n);
                    if let Some(d) = dup_due {
                        if let Some(j) = dl.duplicate(idx) {
                            dl.schedule(j, d);
                        }
                    }
                    dl.schedule(idx, due);
                    st.max_in_flight = st.max_in_flight.max(dl.in_flight() as u64);
                }
                _ => dl.release(idx),
            }
            flush!(now);
        }
        if got > 0 {
            continue;
        }
        // Sleep until the TUN is readable or the next packet is due (<= 50 ms
        // so that a stop request is seen promptly).
        let now = now_ns(start);
        let wait = dl.next_due().map_or(50_000_000, |d| d.saturating_sub(now)).min(50_000_000);
        if wait == 0 {
            continue;
        }
        let ts = libc::timespec { tv_sec: (wait / 1_000_000_000) as _, tv_nsec: (wait % 1_000_000_000) as _ };
        // SAFETY: one valid pollfd, valid timespec, no sigmask change
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    }
    let ms = model.stats;
    st.dropped_loss = ms.dropped_loss;
    st.dropped_queue = ms.dropped_queue;
    st.duplicated = ms.duplicated;
    st.reordered = ms.reordered;
    st.in_flight_at_exit = dl.in_flight() as u64;
    st
}

// ---------------------------------------------------------------- signals

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, then pthread_sigmask for this
    // thread; threads spawned later inherit the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        // A shell starts background jobs with SIGINT ignored; an ignored
        // signal is discarded even while blocked, so restore the default
        // action (it never runs: the signals stay blocked and are taken with
        // sigtimedwait).
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(s, libc::SIG_DFL);
        }
        set
    }
}

/// Wait up to `timeout` for one of the blocked signals.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: valid set and timespec
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

fn stop_child(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    // SAFETY: signalling our own child
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

// ---------------------------------------------------------------- run

struct Plan {
    ab: DirConfig,
    ba: DirConfig,
    pool_ab: usize,
    pool_ba: usize,
    duration: Duration,
}

fn plan(a: &RunArgs) -> Result<Plan, String> {
    let (rate_ab, rate_ba) = parse::per_dir(&a.rate, parse::rate)?;
    let (delay_ab, delay_ba) = parse::per_dir(&a.delay, parse::duration_ns)?;
    let (loss_ab, loss_ba) = parse::per_dir(&a.loss, parse::prob)?;
    let (reo_ab, reo_ba) = parse::per_dir(&a.reorder, parse::prob)?;
    let (dup_ab, dup_ba) = parse::per_dir(&a.dup, parse::prob)?;
    let (rd_ab, rd_ba) = parse::per_dir(&a.reorder_delay, parse::duration_ns)?;
    let (ge_ab, ge_ba) = match &a.ge_burst {
        None => (None, None),
        Some(s) => {
            let f = |x: &str| -> Result<Option<GeParams>, String> {
                if x.trim() == "0" || x.trim() == "none" {
                    return Ok(None);
                }
                let (avg, len) = parse::ge_burst(x)?;
                Ok(Some(GeParams::from_burst(avg, len)))
            };
            parse::per_dir(s, f)?
        }
    };
    let rtt = delay_ab + delay_ba;
    let auto_q = |rate: u64| -> usize {
        let bdp = (rate as u128 * rtt as u128 / 8 / 1_000_000_000 / 1500) as usize;
        bdp.max(100)
    };
    let (q_ab, q_ba) = match &a.queue_pkts {
        Some(s) => parse::per_dir(s, |x| x.trim().parse::<usize>().map_err(|_| format!("bad queue {x:?}")))?,
        None => (auto_q(rate_ab), auto_q(rate_ba)),
    };
    if q_ab == 0 || q_ba == 0 {
        return Err("--queue-pkts must be >= 1".into());
    }
    let dir = |delay_ns, rate_bps, queue_pkts, loss, ge, reorder, reorder_extra_ns, dup| DirConfig {
        delay_ns,
        rate_bps,
        queue_pkts,
        loss,
        ge,
        reorder,
        reorder_extra_ns,
        dup,
        ..DirConfig::default()
    };
    let ab = dir(delay_ab, rate_ab, q_ab, loss_ab, ge_ab, reo_ab, rd_ab, dup_ab);
    let ba = dir(delay_ba, rate_ba, q_ba, loss_ba, ge_ba, reo_ba, rd_ba, dup_ba);
    let auto_pool = |c: &DirConfig| -> usize {
        if c.rate_bps == 0 {
            return 65536;
        }
        // queue + packets in propagation (counted at 256 B each, to leave room
        // for small packets) + slack
        let hold = c.delay_ns + if c.reorder > 0.0 { c.reorder_extra_ns } else { 0 };
        let flight = (c.rate_bps as u128 * hold as u128 / 8 / 1_000_000_000 / 256) as usize;
        (c.queue_pkts * (1 + (c.dup > 0.0) as usize) + flight + 1024).clamp(4096, 1 << 20)
    };
    let (pool_ab, pool_ba) = match a.pool {
        Some(p) if p > 0 => (p, p),
        Some(_) => return Err("--pool must be >= 1".into()),
        None => (auto_pool(&ab), auto_pool(&ba)),
    };
    let duration = Duration::from_nanos(parse::duration_ns(&a.duration)?);
    if duration.is_zero() {
        return Err("--duration must be > 0 (the emulator always has a bounded lifetime)".into());
    }
    if !(576..=65535).contains(&a.mtu) {
        return Err("--mtu must be in 576..=65535".into());
    }
    Ok(Plan { ab, ba, pool_ab, pool_ba, duration })
}

fn describe(c: &DirConfig) -> String {
    let mut s = format!(
        "delay={}us rate={} queue={}pkts loss={}%",
        c.delay_ns / 1000,
        if c.rate_bps == 0 { "unlimited".to_string() } else { format!("{}kbit", c.rate_bps / 1000) },
        c.queue_pkts,
        c.loss * 100.0
    );
    if let Some(g) = c.ge {
        s += &format!(" ge(p={:.5},r={:.3},avg={:.3}%,burst={:.1})", g.p, g.r, g.average_loss() * 100.0, 1.0 / g.r);
    }
    if c.reorder > 0.0 {
        s += &format!(" reorder={}%+{}us", c.reorder * 100.0, c.reorder_extra_ns / 1000);
    }
    if c.dup > 0.0 {
        s += &format!(" dup={}%", c.dup * 100.0);
    }
    s
}

fn print_stats(dir: &str, s: &DirStats) {
    eprintln!(
        "linkem: {dir} rx={} forwarded={} ({} bytes) dropped_loss={} dropped_queue={} dropped_nobuf={} \
duplicated={} reordered={} write_err={} in_flight_at_exit={} max_in_flight={}",
        s.rx,
        s.forwarded,
        s.fwd_bytes,
        s.dropped_loss,
        s.dropped_queue,
        s.dropped_nobuf,
        s.duplicated,
        s.reordered,
        s.write_err,
        s.in_flight_at_exit,
        s.max_in_flight
    );
}

fn run(a: RunArgs) -> Result<ExitCode, String> {
    let sigset = block_signals();
    validate_prefix(&a.netns_prefix)?;
    let p = plan(&a)?;
    // SAFETY: getuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root (creates network namespaces and TUN devices)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    let ns_a = format!("{}-a", a.netns_prefix);
    let ns_b = format!("{}-b", a.netns_prefix);
    for n in [&ns_a, &ns_b] {
        if netns_exists(n) {
            return Err(format!(
                "netns {n} already exists (another linkem, or a stale one: `linkem cleanup --netns-prefix {}`)",
                a.netns_prefix
            ));
        }
    }
    let mut guard = NetnsGuard { names: Vec::new() };
    guard.add(&ns_a)?;
    guard.add(&ns_b)?;
    let pid = std::process::id() % 10_000_000;
    let tun_a = Tun::open(&format!("lem{pid}a"))?;
    let tun_b = Tun::open(&format!("lem{pid}b"))?;
    setup_side(&tun_a, &ns_a, a.addr_a, a.mtu, !a.no_tune)?;
    setup_side(&tun_b, &ns_b, a.addr_b, a.mtu, !a.no_tune)?;

    let bufsz = (a.mtu as usize + 64 + 63) & !63;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    eprintln!("linkem: a->b {} pool={}", describe(&p.ab), p.pool_ab);
    eprintln!("linkem: b->a {} pool={}", describe(&p.ba), p.pool_ba);
    let spawn = |src: RawFd, dst: RawFd, cfg: DirConfig, pool: usize, seed: u64, name: &str| {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let model = LinkModel::new(cfg, seed);
                let dl = DelayLine::new(pool, bufsz);
                forward(src, dst, model, dl, &stop, start)
            })
            .map_err(|e| format!("spawn: {e}"))
    };
    let t_ab = spawn(tun_a.fd, tun_b.fd, p.ab.clone(), p.pool_ab, a.seed.wrapping_mul(2), "a2b")?;
    let t_ba = spawn(tun_b.fd, tun_a.fd, p.ba.clone(), p.pool_ba, a.seed.wrapping_mul(2) + 1, "b2a")?;

    println!(
        "linkem ready: ns-a={ns_a} addr-a={} ns-b={ns_b} addr-b={} dev={DEV} mtu={} duration={}s",
        a.addr_a,
        a.addr_b,
        a.mtu,
        p.duration.as_secs_f64()
    );
    let _ = std::io::stdout().flush();

    let mut child = None;
    if !a.cmd.is_empty() {
        match unblocked(Command::new(&a.cmd[0]))
            .args(&a.cmd[1..])
            .env("LINKEM_NS_A", &ns_a)
            .env("LINKEM_NS_B", &ns_b)
            .env("LINKEM_ADDR_A", a.addr_a.to_string())
            .env("LINKEM_ADDR_B", a.addr_b.to_string())
            .env("LINKEM_DEV", DEV)
            .spawn()
        {
            Ok(c) => child = Some(c),
            Err(e) => eprintln!("linkem: cannot start {:?}: {e}", a.cmd[0]),
        }
    }
    let had_cmd = !a.cmd.is_empty();

    let reason;
    let mut child_status = None;
    loop {
        if let Some(s) = wait_signal(&sigset, Duration::from_millis(50)) {
            reason = format!("signal {s}");
            break;
        }
        if start.elapsed() >= p.duration {
            reason = "duration elapsed".to_string();
            break;
        }
        if let Some(c) = child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                child_status = Some(st);
                reason = format!("command exited ({st})");
                break;
            }
        } else if had_cmd {
            reason = "command failed to start".to_string();
            break;
        }
    }
    if let Some(c) = child.as_mut() {
        if child_status.is_none() {
            child_status = stop_child(c);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let s_ab = t_ab.join().map_err(|_| "a2b thread panicked")?;
    let s_ba = t_ba.join().map_err(|_| "b2a thread panicked")?;
    drop(tun_a);
    drop(tun_b);
    drop(guard); // removes the namespaces
    eprintln!("linkem: stopping after {:.1}s: {reason}", start.elapsed().as_secs_f64());
    print_stats("a->b", &s_ab);
    print_stats("b->a", &s_ba);
    let leftover: Vec<_> = [&ns_a, &ns_b].into_iter().filter(|n| netns_exists(n)).collect();
    if !leftover.is_empty() {
        eprintln!("linkem: warning: namespaces still present: {leftover:?}");
    } else {
        eprintln!("linkem: removed netns {ns_a} {ns_b}");
    }
    if had_cmd {
        let code = match child_status {
            Some(st) => st.code().unwrap_or(1),
            None => 1,
        };
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    Ok(ExitCode::SUCCESS)
}
