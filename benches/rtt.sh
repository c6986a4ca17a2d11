#!/usr/bin/env bash
# Round trips of short commands through linkem: wall time from process start to exit, divided
# by the link's RTT.
#
#   benches/rtt.sh                      # RTTS="100 50", RUNS=5, FILES=1000: ~25 min
#   RTTS=100 RUNS=3 FILES=100 benches/rtt.sh
#
# For each RTT it starts linkem (delay RTT/2 each way, no rate limit, no loss; netns
# xfer-rtt-a <-> xfer-rtt-b), an xfer server in -b and runs, from -a, each interleaved RUNS times:
#   xfer ls; xfer put of a 6-byte file; xfer get of it   (--transport auto and tcp)
#   sftp ls, scp put and get of the same file             (when sshd is installed)
#   with BIG_MIB=N also a put and a get of N MiB over --transport udp (the UDP path set-up)
# then once: FILES files of 4 KiB put, then got, through one `xfer shell` (commands piped to
# stdin; auto and tcp), and the same puts through one `sftp -b` session. For the shell it
# reports the whole session and the per-file times the shell prints (median, p99 and max, in
# RTTs; 10 ms resolution). Prints a Markdown table; raw numbers in $OUT.
#
# Environment: RTTS ["100 50"] (ms), RUNS [5], FILES [1000], SFTP_FILES [200] (the sftp batch),
# BIG_MIB [0: no UDP rows],
# XFER [target/release/xfer, else target/debug/xfer], BASE_XFER (another xfer binary, e.g. an
# older build: its short rows are added, marked "base"), OUT [/tmp/xfer-rtt-<date>],
# SKIP_BUILD=1 to not build linkem, SSH=0 to leave out the sftp/scp rows, NICE [-10]: the niceness of linkem, the servers and the
# clients (they are idle most of the time, but on a busy machine a late wake-up of the emulator
# or of argon2 adds tens of ms to a 100 ms round trip).
# Needs root and /dev/net/tun. Everything it creates is removed on exit.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
RTTS=${RTTS:-"100 50"}
RUNS=${RUNS:-5}
FILES=${FILES:-1000}
SFTP_FILES=${SFTP_FILES:-200}
BIG_MIB=${BIG_MIB:-0}
BASE_XFER=${BASE_XFER:-}
NICE=${NICE:--10}
SSH=${SSH:-1}
OUT=${OUT:-/tmp/xfer-rtt-$(date +%Y%m%d-%H%M%S)}
LINKEM="$repo/target/bench-tools/release/linkem"
if [[ -z ${XFER:-} ]]; then
    XFER="$repo/target/release/xfer"
    [[ -x $XFER ]] || XFER="$repo/target/debug/xfer"
fi
PREFIX=xfer-rtt
NS_C=$PREFIX-a NS_S=$PREFIX-b HOST=10.201.0.2 PORT=7443 P_SSH=2222
WORK=/dev/shm/xfer-rtt-$$
mkdir -p "$OUT" "$WORK"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"
LEM_PID="" SRV_PID="" SSHD_PID=""

log() { echo "[$(date +%T)] $*" >&2; }

stop() { # pid
    [[ -n $1 ]] || return 0
    kill -TERM "$1" 2>/dev/null
    local i
    for i in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

cleanup() {
    trap - EXIT INT TERM
    stop "$SSHD_PID"; stop "$SRV_PID"; stop "$LEM_PID"
    [[ -x $LINKEM ]] && "$LINKEM" cleanup --netns-prefix "$PREFIX" --kill >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 && -c /dev/net/tun ]] || { echo "skipped: needs root and /dev/net/tun"; exit 0; }
[[ -x $XFER ]] || { echo "no xfer binary at $XFER (cargo build)"; exit 1; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --quiet --manifest-path "$repo/benches/linkem/Cargo.toml" \
        --target-dir "$repo/target/bench-tools" || exit 1
fi

# ------------------------------------------------------------------ fixtures

XROOT=$WORK/root XCFG=$WORK/cfg LOCAL=$WORK/local
mkdir -p "$XROOT" "$XCFG" "$LOCAL/many"
XFER_PASSWORD=rttpw "$XFER" user add bench --quota 10GiB --root "$XROOT" --init >/dev/null </dev/null || exit 1
printf 'hello\n' >"$LOCAL/six.txt"
((BIG_MIB > 0)) && head -c $((BIG_MIB << 20)) /dev/urandom >"$LOCAL/big.bin"
for ((i = 0; i < FILES; i++)); do head -c 4096 /dev/urandom >"$LOCAL/many/f$i"; done

SSH_OK=0
if ((SSH)) && [[ -x /usr/sbin/sshd ]] && command -v sftp >/dev/null; then
    d=$WORK/ssh
    mkdir -p "$d" /run/sshd "$WORK/sshroot"
    chmod 700 "$d"
    ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" && ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
    cp "$d/client_key.pub" "$d/authorized_keys"
    cat >"$d/sshd_config" <<EOF
Port $P_SSH
ListenAddress 0.0.0.0
HostKey $d/host_key
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
PidFile none
LogLevel ERROR
Subsystem sftp internal-sftp
EOF
    SSH_OPTS=(-i "$d/client_key" -o BatchMode=yes -o GSSAPIAuthentication=no -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
        -o LogLevel=ERROR -o ConnectTimeout=15)
    /usr/sbin/sshd -t -f "$d/sshd_config" && SSH_OK=1
fi

# ------------------------------------------------------------------ running

# Runs a command in the client namespace; prints its wall time in ms (timed inside the
# namespace, so `ip netns exec` itself is not counted). stdin from $2 when it is a file.
timed() { # outfile stdinfile cmd...
    local out=$1 in=$2
    shift 2
    nice -n "$NICE" ip netns exec "$NS_C" bash -c '
        in=$1 out=$2; shift 2
        t0=$(date +%s%N)
        "$@" <"$in" >"$out" 2>&1
        rc=$?
        t1=$(date +%s%N)
        echo $(( (t1 - t0) / 1000000 )) $rc' _ "$in" "$out" "$@"
}

xfer_c() { # args... : the xfer client ($XBIN, default $XFER) as bench, from $LOCAL
    env -C "$LOCAL" XFER_CONFIG_DIR="$XCFG" HOME="$XCFG" XFER_PASSWORD=rttpw \
        "${XBIN:-$XFER}" --server "$HOST:$PORT" --user bench --accept-new-host -q "$@"
}
export -f xfer_c
export XFER XCFG HOST PORT LOCAL

record() { # rtt row ms rc
    local rtt=$1 row=$2 ms=$3 rc=$4
    printf '%s\t%s\t%s\t%s\n' "$rtt" "$row" "$ms" "$rc" >>"$RESULTS"
    ((rc == 0)) || log "  $row failed (rc=$rc): $(tail -2 "$WORK/cmd.out" | tr '\n' ' ')"
}

one() { # rtt row stdin cmd...
    local rtt=$1 row=$2 in=$3 r
    shift 3
    r=$(timed "$WORK/cmd.out" "$in" "$@")
    record "$rtt" "$row" $r
}

xfer_rows() { # rtt label binary
    local rtt=$1 label=$2 t
    export XBIN=$3
    for t in auto tcp; do
        one "$rtt" "xfer ls ($t$label)" /dev/null bash -c 'xfer_c ls'
        one "$rtt" "xfer put 6 B ($t$label)" /dev/null bash -c "xfer_c put six.txt six-$t.txt --transport $t"
        rm -f "$LOCAL/back.txt"
        one "$rtt" "xfer get 6 B ($t$label)" /dev/null bash -c "xfer_c get six-$t.txt back.txt --transport $t"
    done
    if ((BIG_MIB > 0)); then
        one "$rtt" "xfer put $BIG_MIB MiB (udp$label)" /dev/null bash -c "xfer_c put big.bin big.bin --transport udp"
        rm -f "$LOCAL/big-back.bin"
        one "$rtt" "xfer get $BIG_MIB MiB (udp$label)" /dev/null bash -c "xfer_c get big.bin big-back.bin --transport udp"
        cmp -s "$LOCAL/big.bin" "$LOCAL/big-back.bin" || log "  get $BIG_MIB MiB ($label): content DIFFERENT"
    fi
    unset XBIN
}

short_rows() { # rtt
    local rtt=$1
    xfer_rows "$rtt" "" "$XFER"
    [[ -n $BASE_XFER ]] && xfer_rows "$rtt" ", base" "$BASE_XFER"
    if ((SSH_OK)); then
        echo "ls $WORK/sshroot" >"$WORK/sftp-ls"
        one "$rtt" "sftp ls" "$WORK/sftp-ls" sftp -q "${SSH_OPTS[@]}" -P $P_SSH -b - "root@$HOST"
        one "$rtt" "scp put 6 B" /dev/null scp -q "${SSH_OPTS[@]}" -P $P_SSH "$LOCAL/six.txt" "root@$HOST:$WORK/sshroot/six.txt"
        one "$rtt" "scp get 6 B" /dev/null scp -q "${SSH_OPTS[@]}" -P $P_SSH "root@$HOST:$WORK/sshroot/six.txt" "$LOCAL/back-scp.txt"
    fi
}

# The per-file seconds the shell printed ("uploaded A -> B: 4 KiB in 0.10 s ..."), one a line.
per_file() { grep -oE ' in [0-9.]+ s ' "$1" | awk '{ print $2 * 1000 }'; }

many_rows() { # rtt
    local rtt=$1 t i
    for t in auto tcp; do
        : >"$WORK/script"
        for ((i = 0; i < FILES; i++)); do echo "put many/f$i m-$t-$i --transport $t" >>"$WORK/script"; done
        for ((i = 0; i < FILES; i++)); do echo "get m-$t-$i many/g$i --transport $t" >>"$WORK/script"; done
        rm -f "$LOCAL"/many/g*
        one "$rtt" "xfer shell ${FILES}x4KiB put+get ($t)" "$WORK/script" bash -c 'env -C "$LOCAL" XFER_CONFIG_DIR="$XCFG" HOME="$XCFG" XFER_PASSWORD=rttpw "$XFER" --server "$HOST:$PORT" --user bench --accept-new-host shell'
        cp "$WORK/cmd.out" "$OUT/shell-$rtt-$t.out"
        grep 'uploaded' "$WORK/cmd.out" >"$WORK/put.lines"
        grep 'downloaded' "$WORK/cmd.out" >"$WORK/get.lines"
        per_file "$WORK/put.lines" | sed "s/^/$rtt\tshell put per file ($t)\t/; s/\$/\t0/" >>"$RESULTS"
        per_file "$WORK/get.lines" | sed "s/^/$rtt\tshell get per file ($t)\t/; s/\$/\t0/" >>"$RESULTS"
        local ok
        ok=$(cmp -s <(cat "$LOCAL"/many/f*) <(cat "$LOCAL"/many/g* 2>/dev/null) && echo same || echo DIFFERENT)
        log "  shell $t: $(wc -l <"$WORK/put.lines") puts, $(wc -l <"$WORK/get.lines") gets, content $ok"
    done
    if ((SSH_OK)); then
        : >"$WORK/sftp-many"
        for ((i = 0; i < SFTP_FILES && i < FILES; i++)); do echo "put $LOCAL/many/f$i $WORK/sshroot/m$i" >>"$WORK/sftp-many"; done
        one "$rtt" "sftp ${SFTP_FILES}x4KiB put" "$WORK/sftp-many" sftp -q "${SSH_OPTS[@]}" -P $P_SSH -b - "root@$HOST"
    fi
}

for rtt in $RTTS; do
    half=$(awk -v r="$rtt" 'BEGIN { printf "%gms", r / 2 }')
    nice -n "$NICE" "$LINKEM" --delay "$half" --netns-prefix "$PREFIX" --duration 3600s >"$OUT/linkem-$rtt.log" 2>&1 &
    LEM_PID=$!
    for i in $(seq 150); do grep -q "linkem ready" "$OUT/linkem-$rtt.log" && break; sleep 0.1; done
    ping=$(ip netns exec "$NS_C" ping -c 5 -i 0.2 -q "$HOST" | awk -F'[/ =]+' '/^rtt/ { print $7 }')
    log "RTT $rtt ms (ping ${ping:-?} ms)"
    nice -n "$NICE" ip netns exec "$NS_S" "$XFER" serve --root "$XROOT" --listen "$HOST:$PORT" >"$OUT/server-$rtt.log" 2>&1 &
    SRV_PID=$!
    for i in $(seq 150); do ip netns exec "$NS_S" ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.1; done
    if ((SSH_OK)); then
        nice -n "$NICE" ip netns exec "$NS_S" /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" >"$OUT/sshd-$rtt.log" 2>&1 &
        SSHD_PID=$!
        for i in $(seq 100); do ip netns exec "$NS_S" ss -Hltn "sport = :$P_SSH" | grep -q . && break; sleep 0.1; done
    fi
    ip netns exec "$NS_C" bash -c 'xfer_c pwd' >/dev/null 2>&1 # pin the certificate
    for ((r = 1; r <= RUNS; r++)); do short_rows "$rtt"; done
    ((FILES > 0)) && many_rows "$rtt"
    stop "$SSHD_PID"; SSHD_PID=""
    stop "$SRV_PID"; SRV_PID=""
    stop "$LEM_PID"; LEM_PID=""
done

# ------------------------------------------------------------------ table

python3 - "$RESULTS" <<'EOF'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    rtt, row, ms, rc = line.rstrip("\n").split("\t")
    rows.setdefault((int(rtt), row), []).append((float(ms), int(rc)))
print("| RTT | what | runs | failed | median ms | min–max ms | median / RTT | p99 / RTT | max / RTT |")
print("|--:|---|--:|--:|--:|--:|--:|--:|--:|")
for (rtt, row), v in rows.items():
    ok = sorted(ms for ms, rc in v if rc == 0)
    bad = len(v) - len(ok)
    if not ok:
        print(f"| {rtt} | {row} | {len(v)} | {bad} | – | – | – | – | – |")
        continue
    med = st.median(ok)
    p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))]
    print(f"| {rtt} | {row} | {len(v)} | {bad} | {med:.0f} | {ok[0]:.0f}–{ok[-1]:.0f} | {med / rtt:.2f} | {p99 / rtt:.2f} | {ok[-1] / rtt:.2f} |")
EOF
echo "raw: $RESULTS"
