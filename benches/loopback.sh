#!/usr/bin/env bash
# Loopback benchmark: verified 1 GiB `xfer put` and `xfer get` on 127.0.0.1, side by side with
# md5sum of the same file, a plain TCP copy with nc (no crypto, no hashing),
# scp and rsync over a throwaway sshd on 127.0.0.1. Prints medians of RUNS runs in Markdown.
#
#   bash benches/loopback.sh                 # RUNS=5 SIZE_MIB=1024 DIR=/tmp (disk-backed)
#   DIR=/dev/shm RUNS=3 bash benches/loopback.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
DIR=${DIR:-/tmp}
PORT=${PORT:-7391}
SSH_PORT=${SSH_PORT:-2299}

work=$(mktemp -d "$DIR/xfer-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need sshd || ! need rsync || ! need nc; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client rsync netcat-openbsd) >/dev/null 2>&1 || true
fi
[[ -x /usr/sbin/sshd ]] && need rsync || echo "note: sshd/rsync unavailable; scp/rsync rows skipped" >&2

cargo build --release --quiet
X=$PWD/target/release/xfer

echo "creating ${SIZE_MIB} MiB test file in $work" >&2
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/src.bin"

# xfer server
root="$work/root"
XFER_PASSWORD=bench "$X" user add bench --quota 1TiB --root "$root" -q
"$X" serve --root "$root" --listen "127.0.0.1:$PORT" >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
export XFER_CONFIG_DIR="$work/cfg" XFER_SERVER="127.0.0.1:$PORT" XFER_USER=bench XFER_PASSWORD=bench
"$X" --accept-new-host -q ls >/dev/null

# sshd for scp/rsync
ssh_ok=0
if [[ -x /usr/sbin/sshd ]] && need rsync; then
    mkdir -p "$work/ssh" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host" && ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/id"
    cp "$work/ssh/id.pub" "$work/ssh/authorized_keys"
    /usr/sbin/sshd -D -p "$SSH_PORT" -o ListenAddress=127.0.0.1 -h "$work/ssh/host" \
        -o AuthorizedKeysFile="$work/ssh/authorized_keys" -o StrictModes=no -o PidFile=none \
        -o PermitRootLogin=prohibit-password 2>"$work/sshd.log" &
    pids+=($!)
    sleep 0.5
    SSH="ssh -p $SSH_PORT -i $work/ssh/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    $SSH 127.0.0.1 true && ssh_ok=1
fi

seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A times
run() { # name command...
    local name=$1; shift
    local all=()
    for _ in $(seq "$RUNS"); do
        all+=("$(seconds "$@")")
    done
    times[$name]=$(printf '%s\n' "${all[@]}" | median)
    echo "$name: ${all[*]} -> median ${times[$name]}" >&2
}

# The source stays in the page cache (as for md5sum); the receiver's fsync goes to $DIR.
run "md5sum (one side only)" md5sum "$work/src.bin"
run "xfer put (TLS, crc32+md5, fsync)" "$X" -q put "$work/src.bin" bench.bin
run "xfer get (TLS, crc32+md5, fsync)" "$X" -q get bench.bin "$work/dst.bin"
cmp "$work/src.bin" "$work/dst.bin"
if need nc; then
    run "plain TCP, no crypto or hashing (nc)" bash -c "nc -l -q 1 127.0.0.1 $((PORT + 1)) >$work/nc.out & sleep 0.1; nc -q 1 -N 127.0.0.1 $((PORT + 1)) <$work/src.bin; wait"
fi
qp=target/bench-tools/release/quic-perf
[[ -x $qp ]] || cargo build --release --quiet --manifest-path benches/quic-perf/Cargo.toml --target-dir target/bench-tools || true
if [[ -x $qp ]]; then
    run "QUIC memory to memory (quinn, quic-perf)" bash -c "$qp server --listen 127.0.0.1:$((PORT + 2)) --timeout 60 & s=\$!; sleep 0.3; $qp client --connect 127.0.0.1:$((PORT + 2)) --bytes ${SIZE_MIB}MiB; kill \$s 2>/dev/null; wait"
fi
if [[ $ssh_ok == 1 ]]; then
    run "scp upload" scp -q -P "$SSH_PORT" -i "$work/ssh/id" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$work/src.bin" "127.0.0.1:$work/scp.bin"
    run "rsync upload (whole file)" rsync -W -e "$SSH" "$work/src.bin" "127.0.0.1:$work/rsync-$RANDOM.bin"
fi

mib=$SIZE_MIB
printf '\n| %s | %s | %s | %s |\n|---|---|---|---|\n' "contender (${SIZE_MIB} MiB, loopback, $DIR)" "median s" "MiB/s" "vs xfer put"
base=${times["xfer put (TLS, crc32+md5, fsync)"]}
for k in "md5sum (one side only)" "xfer put (TLS, crc32+md5, fsync)" "xfer get (TLS, crc32+md5, fsync)" \
    "plain TCP, no crypto or hashing (nc)" "QUIC memory to memory (quinn, quic-perf)" "scp upload" "rsync upload (whole file)"; do
    [[ -n ${times[$k]:-} ]] || continue
    t=${times[$k]}
    printf '| %s | %.2f | %.0f | %.2fx |\n' "$k" "$t" "$(echo "$mib / $t" | bc -l)" "$(echo "$t / $base" | bc -l)"
done
