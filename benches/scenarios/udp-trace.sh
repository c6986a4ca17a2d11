#!/usr/bin/env bash
# One xfer UDP upload through linkem with the sender's rate control traced (XFER_LOG=xfer=trace:
# a "round end" line per round trip), then a summary: phases, rounds with a standing queue or a
# capped estimate, the Cruise delivery rate and the bytes resolved per second.
#
#   benches/scenarios/udp-trace.sh                                   # 100 Mbit/s, 50 ms, 100 MB
#   LEM="--rate 1gbit --delay 50us" BYTES=1000000000 benches/scenarios/udp-trace.sh
#   COMPETE=1 SECS=20 BYTES=300000000 benches/scenarios/udp-trace.sh # beside an iperf3 BBR flow
#   COMPETE=1 COMPETE_CC=cubic ...                                     # beside a cubic flow
#
# Needs root, /dev/net/tun, iperf3 (COMPETE=1), and the binaries run.sh builds (linkem in
# target/bench-tools, target/release/xfer). Netns prefix xfer-trace; everything is bounded by
# timeouts and removed on exit. The full trace is left in $OUTLOG [/tmp/xfer-udp-trace.log].
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
L=$repo/target/bench-tools/release/linkem
X=${XFER_BIN:-$repo/target/release/xfer}
LEM=${LEM:-"--rate 100mbit --delay 25ms"}
BYTES=${BYTES:-100000000}
SECS=${SECS:-60}
COMPETE=${COMPETE:-0}
COMPETE_CC=${COMPETE_CC:-bbr}
OUTLOG=${OUTLOG:-/tmp/xfer-udp-trace.log}
P=xfer-trace
[[ -x $L && -x $X ]] || { echo "build first: benches/scenarios/run.sh builds linkem and xfer" >&2; exit 1; }
W=$(mktemp -d /dev/shm/xfer-trace.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    [[ -n ${LP:-} ]] && { kill -INT "$LP" 2>/dev/null; wait "$LP" 2>/dev/null; }
    "$L" cleanup --netns-prefix "$P" --kill >/dev/null 2>&1
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/root" "$W/cfg"
head -c "$BYTES" /dev/urandom >"$W/src.bin"
XFER_PASSWORD=pw "$X" user add bench --quota 100GiB --root "$W/root" --init >/dev/null
# shellcheck disable=SC2086
"$L" $LEM --netns-prefix "$P" --duration $((SECS + 60))s >"$W/lem.log" 2>&1 &
LP=$!
for _ in $(seq 100); do grep -q "linkem ready" "$W/lem.log" && break; sleep 0.1; done
ip netns exec "$P-b" timeout $((SECS + 30)) "$X" serve --root "$W/root" --listen 10.201.0.2:7443 >"$W/srv.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do ip netns exec "$P-b" ss -Hltn 'sport = :7443' | grep -q . && break; sleep 0.1; done
if [[ $COMPETE == 1 ]]; then
    ip netns exec "$P-b" timeout $((SECS + 30)) iperf3 -s -1 -p 5202 >/dev/null 2>&1 &
    pids+=($!)
    sleep 0.5
    ip netns exec "$P-a" timeout $((SECS + 20)) iperf3 -c 10.201.0.2 -p 5202 -t "$SECS" -C "$COMPETE_CC" -i 2 >"$W/iperf.log" 2>&1 &
    IC=$!
fi
ip netns exec "$P-a" timeout "$SECS" env XFER_LOG=xfer=trace XFER_PASSWORD=pw XFER_CONFIG_DIR="$W/cfg" \
    "$X" --server 10.201.0.2:7443 --user bench --accept-new-host -v put --transport udp "$W/src.bin" f.bin >"$OUTLOG" 2>&1
echo "client exit $?"
if [[ $COMPETE == 1 ]]; then wait "$IC"; grep -E "receiver" "$W/iperf.log"; fi
kill -INT "$LP"; wait "$LP"; LP=""
grep -v "round end" "$OUTLOG" | grep -E "uploaded|udp:"
grep "linkem:.*rx=" "$W/lem.log"
awk '/round end/ {
    split($1, t, "T"); split(t[2], h, ":"); s = h[1] * 3600 + h[2] * 60 + substr(h[3], 1, length(h[3]) - 1)
    delete v; for (i = 2; i <= NF; i++) { k = index($i, "="); if (k) v[substr($i, 1, k - 1)] = substr($i, k + 1) }
    if (!s0) s0 = s
    n++; if (v["cap"] != "None") capped++; if (v["queue"] == "true") q++; if (v["competing"] == "true") comp++
    if (v["phase"] == "Cruise") { if (!c0) c0 = s; cres += v["round_resolved"]; clast = s }
    sec = int(s - s0); ps[sec] += v["round_resolved"]; if (sec > maxs) maxs = sec
}
END {
    printf "rounds %d, with a standing queue %d, with a capped estimate %d, competing %d, Cruise from +%.2f s\n", n, q, capped, comp, c0 - s0
    if (clast > c0) printf "Cruise: %.2f MB/s resolved (payload bytes that arrived or were lost)\n", cres / (clast - c0) / 1e6
    printf "resolved per second (MB):"; for (i = 0; i <= maxs; i++) printf " %.1f", ps[i] / 1e6; printf "\n"
}' "$OUTLOG"
echo "trace: $OUTLOG"
