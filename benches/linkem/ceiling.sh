#!/usr/bin/env bash
# The emulator's own ceiling: iperf3 through linkem at zero delay, no loss,
# no rate limit. TCP cubic and BBR at MTU 1500 and 9000, plus UDP at a rate
# above what the box can carry; prints a Markdown table.
#   benches/linkem/ceiling.sh            (T=10 seconds per test)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
T=${T:-10}
prefix=lem-ceil
[[ $(id -u) -eq 0 && -c /dev/net/tun ]] || { echo "skipped: no /dev/net/tun or not root"; exit 0; }
command -v iperf3 >/dev/null || (apt-get update -qq && apt-get install -y -qq iperf3) >/dev/null 2>&1
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --target-dir "$repo/target/bench-tools" || exit 1
linkem="$repo/target/bench-tools/release/linkem"
work=$(mktemp -d)
trap '"$linkem" cleanup --netns-prefix $prefix --kill >/dev/null 2>&1; rm -rf "$work"' EXIT

echo "| test | MTU | iperf3 receiver Mbit/s | UDP loss % | linkem forwarded a→b Mbit/s | linkem CPU s (user+sys) / wall s | iperf3 CPU % snd / rcv |"
echo "|---|--:|--:|--:|--:|---|---|"
one() { # label mtu iperf3-client-args...
    local label=$1 mtu=$2
    shift 2
    /usr/bin/time -f '%e %U %S' -o "$work/lem.time" timeout 120 "$linkem" --mtu "$mtu" --duration $((T + 30))s \
        --netns-prefix $prefix -- bash -c "
            ip netns exec $prefix-b timeout $((T + 20)) iperf3 -s -1 >/dev/null 2>&1 &
            for i in \$(seq 50); do ip netns exec $prefix-b ss -Hltn 'sport = :5201' | grep -q . && break; sleep 0.1; done
            ip netns exec $prefix-a timeout $((T + 15)) iperf3 -c 10.201.0.2 -t $T -J $* >$work/c.json
            wait" >"$work/lem.out" 2>&1
    local rcv fwd cpu snd_cpu rcv_cpu loss
    rcv=$(jq -r '(.end.sum_received.bits_per_second // .end.sum.bits_per_second) * (1 - ((.end.sum.lost_percent // 0) / 100)) / 1e6 | floor' "$work/c.json")
    loss=$(jq -r 'if .end.sum.lost_percent then (.end.sum.lost_percent * 100 | round / 100) else "—" end' "$work/c.json")
    snd_cpu=$(jq -r '.end.cpu_utilization_percent.host_total | floor' "$work/c.json")
    rcv_cpu=$(jq -r '.end.cpu_utilization_percent.remote_total | floor' "$work/c.json")
    fwd=$(awk -v t="$T" '/a->b/ && /forwarded=/ { for (i = 1; i <= NF; i++) if ($i ~ /^\(/) { b = substr($i, 2) } } END { printf "%d", b * 8 / t / 1e6 }' "$work/lem.out")
    cpu=$(awk '{ printf "%.1f / %.1f", $2 + $3, $1 }' "$work/lem.time")
    echo "| $label | $mtu | $rcv | $loss | ~$fwd | $cpu | $snd_cpu / $rcv_cpu |"
}
for mtu in 1500 9000; do
    one "TCP cubic" $mtu -C cubic
    one "TCP BBR" $mtu -C bbr
done
one "UDP 1400-byte datagrams at 1 Gbit/s" 1500 -u -b 1G -l 1400 -w 4M
one "UDP 1400-byte datagrams at 1.5 Gbit/s" 1500 -u -b 1500M -l 1400 -w 4M
echo
echo "linkem forwarded = bytes it wrote to the far TUN during the run / test time (includes headers, and for"
echo "UDP the datagrams the iperf3 receiver then dropped for lack of CPU/socket buffer). 2 cores are shared"
echo "by linkem, the iperf3 sender and the iperf3 receiver; linkem's sys time includes the receiver's kernel"
echo "stack work, which runs in linkem's write(2) to the TUN."
