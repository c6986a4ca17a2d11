#!/usr/bin/env bash
# Login and session load on loopback against a release `xfer serve` (numbers: BENCHMARKS.md,
# "Logins and sessions"). Needs python3 and 127.0.0.0/8 (source addresses 127.x.y.z).
#
#   bash benches/sessions.sh            # all three: logins, idle, ls
#   bash benches/sessions.sh ls         # one of them
#
# logins: 512 parallel wrong-password logins from 512 addresses, throttle budget raised so
#         every one reaches argon2; server RSS before, at peak, after.
# idle:   1000 idle logged-in sessions; marginal RSS per session.
# ls:     `ls` p50/p99 in one session, idle and while 20 `xfer put` of SIZE_MIB (default 512)
#         run (TCP, then UDP); each put is repeated if it ends before the measurement does.
#         Also prints the server's CPU and run-queue wait per thread name while busy
#         (BENCHMARKS.md, "Control latency under load"). TRANSPORTS=tcp for one of them;
#         CLIENT_NICE=10 runs the 20 clients at niceness 10: on one machine they stand in for
#         remote clients, whose CPU the server would not share.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
cargo build --release --bin xfer >&2
XFER=$PWD/target/release/xfer
WORK=$(mktemp -d /tmp/xfer-sessions-bench.XXXXXX)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 8192

start() { # start ROOT-config-edits...: sed expressions applied to the default config
  local root=$WORK/root-$1; shift
  mkdir -p "$root"
  sed "$@" config/xfer.example.toml > "$root/xfer.toml"
  XFER_PASSWORD=s3cret-pw "$XFER" -q user add alice --quota 100GiB --root "$root" >/dev/null
  "$XFER" serve --root "$root" --listen 127.0.0.1:0 > "$root/out" 2> "$root/log" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$root/out" 2>/dev/null && break; sleep 0.1; done
  ADDR=$(sed -n 's/^xfer: listening on \([^ ]*\).*/\1/p' "$root/out")
}
stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

if [ "$WHAT" = all ] || [ "$WHAT" = logins ]; then
  start logins -e 's/^user_budget = .*/user_budget = 100000/' -e 's/^free_failures = .*/free_failures = 100000/' \
    -e 's/^max_pending_logins = .*/max_pending_logins = 1024/'
  python3 benches/sessions.py logins --addr "$ADDR" --pid "$SERVER_PID" -n 512
  stop
fi
if [ "$WHAT" = all ] || [ "$WHAT" = idle ]; then
  start idle -e 's/^max_sessions = .*/max_sessions = 2000/' -e 's/^max_sessions_per_user = .*/max_sessions_per_user = 2000/'
  python3 benches/sessions.py idle --addr "$ADDR" --pid "$SERVER_PID" -n 1000
  stop
fi
if [ "$WHAT" = all ] || [ "$WHAT" = ls ]; then
  for transport in ${TRANSPORTS:-tcp udp}; do
    start "ls-$transport" -e 's/^max_sessions_per_ip = .*/max_sessions_per_ip = 200/'
    python3 benches/sessions.py ls --addr "$ADDR" --pid "$SERVER_PID" -n 20 --xfer "$XFER" \
      --work "$WORK/ls-$transport" --size-mib "${SIZE_MIB:-512}" --transport "$transport" \
      --client-nice "${CLIENT_NICE:-0}"
    stop
  done
fi
