#!/usr/bin/env bash
# Loopback benchmark: verified 1 GiB `xfer put` and `xfer get` on 127.0.0.1, over TCP and over
# UDP (--transport tcp|udp), side by side with md5sum of the same file, a plain TCP copy with
# nc (no crypto, no hashing), quinn memory to memory (benches/quic-perf), and scp and rsync over
# a throwaway sshd on 127.0.0.1. Prints medians of RUNS runs in Markdown: wall time, MiB/s, and
# the CPU seconds (user+sys) per GB (10^9 bytes) of the sending and of the receiving process.
#
#   bash benches/loopback.sh                 # RUNS=5 SIZE_MIB=1024 DIR=/tmp (disk-backed)
#   DIR=/dev/shm RUNS=3 bash benches/loopback.sh
#
# CPU: the client runs under /usr/bin/time; for the long-running servers (xfer serve, sshd,
# quic-perf server) the script reads utime+stime (+ reaped children) from /proc/PID/stat
# before and after each run. Runs are interleaved (run 1 of every row, then run 2, ...) so
# that load from other work on the machine spreads over all rows. Every command is bounded by
# `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
DIR=${DIR:-/tmp}
PORT=${PORT:-7391}
SSH_PORT=${SSH_PORT:-2299}
T=${T:-300} # seconds at most for one command

work=$(mktemp -d "$DIR/xfer-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need sshd || ! need rsync || ! need nc || [[ ! -x /usr/bin/time ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client rsync netcat-openbsd time) >/dev/null 2>&1 || true
fi
[[ -x /usr/sbin/sshd ]] && need rsync || echo "note: sshd/rsync unavailable; scp/rsync rows skipped" >&2
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is required" >&2; exit 1; }

cargo build --release --quiet
X=$PWD/target/release/xfer
qp=target/bench-tools/release/quic-perf
[[ -x $qp ]] || cargo build --release --quiet --manifest-path benches/quic-perf/Cargo.toml --target-dir target/bench-tools || true

echo "creating ${SIZE_MIB} MiB test file in $work" >&2
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/src.bin"
BYTES=$((SIZE_MIB * 1024 * 1024))

# xfer server (TCP and UDP on the same port)
root="$work/root"
XFER_PASSWORD=bench "$X" user add bench --quota 1TiB --root "$root" --init -q
"$X" serve --root "$root" --listen "127.0.0.1:$PORT" >"$work/serve.log" 2>&1 &
XSRV=$!
pids+=("$XSRV")
for _ in $(seq 50); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
export XFER_CONFIG_DIR="$work/cfg" XFER_SERVER="127.0.0.1:$PORT" XFER_USER=bench XFER_PASSWORD=bench
timeout 60 "$X" --accept-new-host -q ls >/dev/null

# sshd for scp/rsync
ssh_ok=0
SSHD=""
if [[ -x /usr/sbin/sshd ]] && need rsync; then
    mkdir -p "$work/ssh" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host" && ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/id"
    cp "$work/ssh/id.pub" "$work/ssh/authorized_keys"
    /usr/sbin/sshd -D -p "$SSH_PORT" -o ListenAddress=127.0.0.1 -h "$work/ssh/host" \
        -o AuthorizedKeysFile="$work/ssh/authorized_keys" -o StrictModes=no -o PidFile=none \
        -o PermitRootLogin=prohibit-password 2>"$work/sshd.log" &
    SSHD=$!
    pids+=("$SSHD")
    sleep 0.5
    SSH="ssh -p $SSH_PORT -i $work/ssh/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    timeout 30 $SSH 127.0.0.1 true && ssh_ok=1
fi

HZ=$(getconf CLK_TCK)
ticks() { # pid -> utime+stime+cutime+cstime (clock ticks); the comm field may hold spaces
    [[ -n $1 && -r /proc/$1/stat ]] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 + $14 + $15 }'
}
udp_buf_errs() { # UDP datagrams dropped for want of socket buffer, this netns, both directions
    awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
        print $c["RcvbufErrors"] + $c["SndbufErrors"]; exit }' /proc/net/snmp
}
median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) print "nan"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2) }'; }

declare -A W C S N FAILS # per row: wall s, client CPU s, server CPU s, notes (lists)
# measure ROW SERVER_PID CMD...: one timed run; CMD's output goes to $work/last.out
measure() {
    local row=$1 spid=$2
    shift 2
    local s0 s1 t0 t1 rc=0
    s0=$(ticks "$spid")
    t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$work/time" timeout -k 5 "$T" "$@" >"$work/last.out" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    sleep 0.3 # let the server reap what it forked (sshd) and finish its bookkeeping
    s1=$(ticks "$spid")
    if [[ $rc -ne 0 ]]; then
        FAILS[$row]+="rc=$rc: $(tail -1 "$work/last.out" | cut -c1-100); "
        echo "$row: FAILED rc=$rc: $(tail -3 "$work/last.out")" >&2
        return 1
    fi
    W[$row]+="$(printf '%.2f' "$(echo "$t1 - $t0" | bc)") "
    C[$row]+="$(tail -1 "$work/time" | awk '{ print $1 + $2 }') "
    [[ -n $spid ]] && S[$row]+="$(echo "scale=2; ($s1 - $s0) / $HZ" | bc) "
    return 0
}
note() { N[$1]+="$2 "; }

R_MD5="md5sum (one side only)"
R_PUT="xfer put, TCP (TLS, crc32+md5, fsync)"
R_GET="xfer get, TCP (TLS, crc32+md5, fsync)"
R_UPUT="xfer put, UDP (AES-GCM datagrams, md5, fsync)"
R_UGET="xfer get, UDP (AES-GCM datagrams, md5, fsync)"
R_NC="plain TCP, no crypto or hashing (nc)"
R_QUIC="QUIC memory to memory (quinn, quic-perf)"
R_SCP="scp upload"
R_RSYNC="rsync upload (whole file)"

xfer_put() { # row transport remote
    local e0 e1 out
    e0=$(udp_buf_errs)
    if [[ $2 == udp ]]; then
        measure "$1" "$XSRV" "$X" -v put --transport udp "$work/src.bin" "$3" || return 0
        out=$(cat "$work/last.out")
        grep -q ' over udp\| over UDP' <<<"$out" || note "$1" "NOT-UDP"
        note "$1" "redundant=$(sed -n 's/.*retransmitted (\([0-9.]*\)% of the data).*/\1/p' <<<"$out")%"
    else
        measure "$1" "$XSRV" "$X" -q put --transport tcp "$work/src.bin" "$3" || return 0
    fi
    e1=$(udp_buf_errs)
    [[ $2 == udp ]] && note "$1" "bufdrops=$((e1 - e0))"
    return 0
}
xfer_get() { # row transport remote
    local e0 e1 line
    rm -f "$work/dst.bin"
    e0=$(udp_buf_errs)
    measure "$1" "$XSRV" "$X" -q get --transport "$2" "$3" "$work/dst.bin" || return 0
    e1=$(udp_buf_errs)
    cmp "$work/src.bin" "$work/dst.bin" || { FAILS[$1]+="cmp differs; "; echo "$1: downloaded file differs" >&2; }
    if [[ $2 == udp ]]; then
        line=$(grep 'download over UDP complete' "$work/serve.log" | tail -1)
        local rt size
        rt=$(sed -n 's/.* retransmitted=\([0-9]*\).*/\1/p' <<<"$line")
        size=$(sed -n 's/.* size=\([0-9]*\).*/\1/p' <<<"$line")
        [[ -n $rt && -n $size ]] && note "$1" "redundant=$(printf '%.2f' "$(echo "100 * $rt / $size" | bc -l)")%"
        note "$1" "bufdrops=$((e1 - e0))"
    fi
    rm -f "$work/dst.bin"
    return 0
}
quic_once() { # the quic-perf server serves one connection and exits: its CPU comes from time
    [[ -x $qp ]] || return 0
    rm -f "$work/qs.time"
    /usr/bin/time -f '%U %S' -o "$work/qs.time" timeout -k 5 120 \
        "$qp" server --listen "127.0.0.1:$((PORT + 2))" --timeout 100 >"$work/qs.out" 2>&1 &
    local qs=$! ok=0
    for _ in $(seq 50); do grep -q listening "$work/qs.out" 2>/dev/null && break; sleep 0.1; done
    measure "$R_QUIC" "" "$qp" client --connect "127.0.0.1:$((PORT + 2))" --bytes "${SIZE_MIB}MiB" && ok=1
    for _ in $(seq 100); do kill -0 "$qs" 2>/dev/null || break; sleep 0.1; done
    kill "$qs" 2>/dev/null || true
    wait "$qs" 2>/dev/null || true
    if ((ok)) && [[ -s $work/qs.time ]]; then
        S[$R_QUIC]+="$(tail -1 "$work/qs.time" | awk '{ print $1 + $2 }') "
    fi
}

for r in $(seq "$RUNS"); do
    echo "run $r/$RUNS" >&2
    # The source stays in the page cache (as for md5sum); the receiver's fsync goes to $DIR.
    measure "$R_MD5" "" md5sum "$work/src.bin" || true
    xfer_put "$R_PUT" tcp bench.bin
    xfer_put "$R_UPUT" udp bench-udp.bin
    xfer_get "$R_GET" tcp bench.bin
    xfer_get "$R_UGET" udp bench-udp.bin
    if need nc; then
        rm -f "$work/nc.out"
        measure "$R_NC" "" bash -c "nc -l -q 1 127.0.0.1 $((PORT + 1)) >$work/nc.out & sleep 0.1; nc -q 1 -N 127.0.0.1 $((PORT + 1)) <$work/src.bin; wait" || true
        rm -f "$work/nc.out"
    fi
    quic_once
    if [[ $ssh_ok == 1 ]]; then
        measure "$R_SCP" "$SSHD" scp -q -P "$SSH_PORT" -i "$work/ssh/id" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$work/src.bin" "127.0.0.1:$work/scp.bin" || true
        rm -f "$work/scp.bin"
        measure "$R_RSYNC" "$SSHD" rsync -W -e "$SSH" "$work/src.bin" "127.0.0.1:$work/rsync.bin" || true
        rm -f "$work/rsync.bin"
    fi
done

med() { printf '%s\n' $1 | median; }
gb=$(echo "$BYTES / 1000000000" | bc -l)
per_gb() { [[ -n $1 && $1 != nan ]] && printf '%.2f' "$(echo "$1 / $gb" | bc -l)" || printf '—'; }
base=$(med "${W[$R_PUT]:-}")
printf '\n| %s | %s | %s | %s | %s | %s | %s |\n|---|--:|--:|--:|--:|--:|---|\n' \
    "contender (${SIZE_MIB} MiB, loopback, $DIR)" "median s" "MiB/s" "time vs xfer put TCP" \
    "CPU-s/GB sender" "CPU-s/GB receiver" "notes (per run)"
for k in "$R_MD5" "$R_PUT" "$R_UPUT" "$R_GET" "$R_UGET" "$R_NC" "$R_QUIC" "$R_SCP" "$R_RSYNC"; do
    [[ -n ${W[$k]:-} ]] || { [[ -n ${FAILS[$k]:-} ]] && printf '| %s | — | — | — | — | — | failed: %s |\n' "$k" "${FAILS[$k]}"; continue; }
    t=$(med "${W[$k]}")
    c=$(med "${C[$k]}")
    s=$(med "${S[$k]:-}")
    case $k in
    "$R_GET" | "$R_UGET") snd=$s rcv=$c ;; # the server sends
    "$R_MD5") snd=$c rcv="" ;;
    "$R_NC") snd="" rcv="" ;;                # one process tree holds both ends
    *) snd=$c rcv=$s ;;
    esac
    notes="times ${W[$k]}"
    [[ -n ${N[$k]:-} ]] && notes+="; ${N[$k]}"
    [[ -n ${FAILS[$k]:-} ]] && notes+="; failed: ${FAILS[$k]}"
    printf '| %s | %.2f | %.0f | %.2fx | %s | %s | %s |\n' "$k" "$t" "$(echo "$SIZE_MIB / $t" | bc -l)" \
        "$(echo "$t / $base" | bc -l)" "$(per_gb "$snd")" "$(per_gb "$rcv")" "$notes"
done
