#!/usr/bin/env bash
# CI smoke test for linkem: build it, run it ~2 s with 10 ms one-way delay,
# ping from netns a to b, and check that no namespace is left behind.
# Exits 0 with "skipped: ..." where it cannot run (no /dev/net/tun, not root).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="lem-smoke-$$"

if [[ $(id -u) -ne 0 || ! -c /dev/net/tun ]]; then
    echo "skipped: no /dev/net/tun or not root"
    exit 0
fi
for tool in ip ping; do
    if ! command -v "$tool" >/dev/null; then
        if command -v apt-get >/dev/null; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iputils-ping) >/dev/null 2>&1 || true
        fi
    fi
    if ! command -v "$tool" >/dev/null; then
        echo "skipped: '$tool' is not installed and could not be installed"
        exit 0
    fi
done
# A kernel without network namespaces or TUN support (some containers)
if ! ip netns add "$prefix-probe" 2>/dev/null; then
    echo "skipped: cannot create network namespaces here"
    exit 0
fi
ip netns del "$prefix-probe"

# build into the root's git-ignored target/ (the package has its own workspace)
target="$(cd "$here/../.." && pwd)/target/bench-tools"
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --target-dir "$target"
linkem="$target/release/linkem"

out="$(mktemp)"
trap 'rm -f "$out" "$out.ping"; "$linkem" cleanup --netns-prefix "$prefix" --kill >/dev/null 2>&1 || true' EXIT

# Bounded twice: linkem's own --duration, and timeout(1) around it. linkem
# runs in the background for 2 s and must remove its namespaces by itself.
timeout -k 5 20 "$linkem" --delay 10ms --duration 2s --netns-prefix "$prefix" >"$out" 2>&1 &
lem=$!
for _ in $(seq 100); do
    grep -q "linkem ready" "$out" && break
    sleep 0.05
done
set +e
timeout 10 ip netns exec "$prefix-a" ping -c 3 -i 0.2 -W 2 10.201.0.2 >"$out.ping" 2>&1
prc=$?
wait "$lem"
rc=$?
set -e
cat "$out" "$out.ping"
if [[ $prc -ne 0 || $rc -ne 0 ]]; then
    echo "FAIL: ping exited $prc, linkem exited $rc"
    exit 1
fi
if ! grep -q "3 received" "$out.ping"; then
    echo "FAIL: expected 3 ping replies"
    exit 1
fi
# RTT must include the emulated 2 x 10 ms
if ! awk -F'[/ =]+' '/^rtt/ { if ($6 < 19.5) exit 1 }' "$out.ping"; then
    echo "FAIL: RTT below the emulated 20 ms"
    exit 1
fi
if ! grep -q "forwarded=" "$out"; then
    echo "FAIL: linkem printed no counters"
    exit 1
fi
if ip netns list | grep -q "^$prefix-"; then
    echo "FAIL: namespaces left behind:"
    ip netns list
    exit 1
fi
echo "linkem smoke: OK (3 ping replies through 2 x 10 ms, counters printed, no namespace left)"
