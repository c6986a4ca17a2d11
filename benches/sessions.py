#!/usr/bin/env python3
"""Login and session load against a release `xfer serve` on loopback (benches/sessions.sh).

Measures, each bounded in count and time:
  logins  server RSS before, at peak and after N parallel wrong-password logins
  idle    marginal RSS per idle logged-in session, for N sessions
  ls      `ls` round-trip latency (p50/p99) in a logged-in session, idle and while T
          `xfer put` processes run, with the server's CPU and run-queue wait per thread name
          during the busy phase (/proc/PID/task/*/schedstat)

Speaks the xfer control protocol directly (proto-spec/control.md): TLS 1.3, the preamble,
then length-prefixed bincode frames. Only `Auth`, `List` and their replies are needed.
Prints one JSON object per measurement.
"""
import argparse
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

MAGIC = b"XFER\x00\x01"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def string(s):
    b = s.encode()
    return struct.pack(">Q", len(b)) + b


def frame(body):
    return struct.pack(">IB", len(body) + 1, 1) + body


def auth(user, password):
    return frame(struct.pack(">I", 0) + string(user) + string(password))


def list_req(path):
    return frame(struct.pack(">I", 3) + string(path))


class Conn:
    def __init__(self, addr, src=None, timeout=60):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        raw = socket.create_connection(addr, timeout=timeout, source_address=(src, 0) if src else None)
        self.s = ctx.wrap_socket(raw, server_hostname="xfer")
        self.s.sendall(MAGIC)
        got = self.recv_exact(6)
        assert got == MAGIC, got

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def call(self, data):
        self.s.sendall(data)
        (length,) = struct.unpack(">I", self.recv_exact(4))
        body = self.recv_exact(length)
        variant = struct.unpack(">I", body[1:5])[0]  # response variant index
        if variant == 11:  # Error: name it by its code
            return "error-%d" % struct.unpack(">I", body[5:9])[0]
        return variant

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def sample_peak(pid, stop, out):
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_kib(pid))
        time.sleep(0.02)
    out.append(peak)


def bench_logins(addr, pid, n):
    base = rss_kib(pid)
    stop, peak = threading.Event(), []
    sampler = threading.Thread(target=sample_peak, args=(pid, stop, peak))
    sampler.start()
    replies, lock = {}, threading.Lock()

    def one(i):
        try:
            # Many source addresses, so the per-address caps do not refuse the load itself.
            c = Conn(addr, src=f"127.0.{1 + i // 250}.{1 + i % 250}")
            r = c.call(auth("alice", "wrong-password"))
            c.close()
        except (OSError, ConnectionError) as e:
            r = type(e).__name__
        with lock:
            replies[r] = replies.get(r, 0) + 1

    start = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    took = time.time() - start
    time.sleep(2)
    stop.set()
    sampler.join()
    after = rss_kib(pid)
    print(json.dumps({"bench": "parallel_wrong_logins", "n": n, "seconds": round(took, 2),
                      "rss_before_mib": round(base / 1024, 1), "rss_peak_mib": round(peak[0] / 1024, 1),
                      "rss_after_mib": round(after / 1024, 1), "replies": {str(k): v for k, v in replies.items()}}))


def bench_idle(addr, pid, n, password):
    conns = [Conn(addr, src="127.0.0.1")]
    assert conns[0].call(auth("alice", password)) == 1  # Authed (response index 1)
    time.sleep(1)
    base = rss_kib(pid)
    for i in range(n):
        c = Conn(addr, src=f"127.1.{1 + i // 250}.{1 + i % 250}")
        r = c.call(auth("alice", password))
        assert r == 1, r
        conns.append(c)
    time.sleep(2)
    after = rss_kib(pid)
    print(json.dumps({"bench": "idle_sessions", "n": n, "rss_before_mib": round(base / 1024, 1),
                      "rss_after_mib": round(after / 1024, 1),
                      "kib_per_session": round((after - base) / n, 1)}))
    for c in conns:
        c.close()


def thread_times(pid):
    """Per thread: (name, seconds on a CPU, seconds runnable but waiting for one)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, wait, _ = map(int, f.read().split())
            out[tid] = (name, run / 1e9, wait / 1e9)
        except OSError:
            pass
    return out


def thread_load(pid, before, after, seconds):
    """CPU and run-queue wait per thread name between two `thread_times`, in percent of one
    core: where the server's threads spent the busy phase (control runtime: tokio-rt-worker,
    data runtime: xfer-data)."""
    agg = {}
    for tid, (name, run, wait) in after.items():
        r0, w0 = before.get(tid, (name, 0.0, 0.0))[1:]
        a = agg.setdefault(name, {"threads": 0, "cpu_pct": 0.0, "runqueue_wait_pct": 0.0})
        a["threads"] += 1
        a["cpu_pct"] += (run - r0) / seconds * 100
        a["runqueue_wait_pct"] += (wait - w0) / seconds * 100
    return {k: {"threads": v["threads"], "cpu_pct": round(v["cpu_pct"], 1),
                "runqueue_wait_pct": round(v["runqueue_wait_pct"], 1)} for k, v in agg.items()}


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def ls_latency(addr, password, count):
    c = Conn(addr, src="127.0.0.1")
    assert c.call(auth("alice", password)) == 1
    lat = []
    for _ in range(count):
        t = time.perf_counter()
        r = c.call(list_req("/"))
        lat.append((time.perf_counter() - t) * 1000)
        assert r == 3, r  # Listing
        time.sleep(0.01)
    c.close()
    return {"p50_ms": round(percentile(lat, 0.5), 2), "p99_ms": round(percentile(lat, 0.99), 2),
            "max_ms": round(max(lat), 2), "n": count}


def bench_ls(addr, pid, password, xfer, transfers, size_mib, count, work, transport, client_nice=0):
    idle = ls_latency(addr, password, count)
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "big")
    with open(src, "wb") as f:
        f.truncate(size_mib << 20)
    env = dict(os.environ, XFER_PASSWORD=password, XFER_CONFIG_DIR=os.path.join(work, "cfg"))
    host = f"{addr[0]}:{addr[1]}"
    procs = []
    deadline = time.time() + 120
    stop = threading.Event()

    running, lock = {}, threading.Lock()

    def loop(i):
        while not stop.is_set() and time.time() < deadline:
            p = subprocess.Popen([xfer, "--server", host, "--user", "alice", "--accept-new-host", "-q", "put",
                                  "--transport", transport, src, f"big{i}"], env=env, cwd=work,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=(lambda: os.nice(client_nice)) if client_nice else None)
            with lock:
                running[i] = p
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    for i in range(transfers):
        t = threading.Thread(target=loop, args=(i,))
        t.start()
        procs.append(t)
    time.sleep(2)
    t0, threads0 = time.time(), thread_times(pid)
    busy = ls_latency(addr, password, count)
    threads = thread_load(pid, threads0, thread_times(pid), time.time() - t0)
    stop.set()
    with lock:
        for p in running.values():
            if p.poll() is None:
                p.kill()  # only the clients this script started, by their own handle
    for t in procs:
        t.join(130)
    print(json.dumps({"bench": "ls_latency", "transport": transport, "transfers": transfers, "client_nice": client_nice,
                      "idle": idle, "busy": busy, "server_threads_busy": threads}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["logins", "idle", "ls"])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--password", default="s3cret-pw")
    ap.add_argument("-n", type=int, default=512)
    ap.add_argument("--xfer", default="target/release/xfer")
    ap.add_argument("--work", default="/tmp/xfer-bench-work")
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--client-nice", type=int, default=0,
                    help="run the transfer clients at this niceness (they stand in for other machines)")
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    addr = (host, int(port))
    if a.what == "logins":
        bench_logins(addr, a.pid, a.n)
    elif a.what == "idle":
        bench_idle(addr, a.pid, a.n, a.password)
    else:
        bench_ls(addr, a.pid, a.password, a.xfer, a.n, a.size_mib, 300, a.work, a.transport, a.client_nice)


if __name__ == "__main__":
    sys.exit(main())
