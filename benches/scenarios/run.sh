#!/usr/bin/env bash
# Side-by-side transfer benchmarks through the linkem link emulator.
#
#   benches/scenarios/run.sh            # everything: ~40 min on 2 cores
#   RUNS=1 DURATION=3 XFER_SECS=3 SCENARIOS="lan wan" CONTENDERS="iperf3-bbr quic" FAIRNESS=0 \
#       benches/scenarios/run.sh        # quick look
#
# For each scenario it starts linkem (netns xfer-bench-a <-> xfer-bench-b,
# 10.201.0.1 -> 10.201.0.2; the loopback scenario uses 127.0.0.1 inside a
# netns of its own, no emulator), runs every contender RUNS times
# (interleaved: run 1 of every contender, then run 2, ...) and prints one
# Markdown table: goodput median (Mbit/s), min-max, CPU seconds (user+sys)
# of sender and receiver, ratio to iperf3 BBR. Then the fairness scenario.
#
# Environment (defaults in brackets):
#   RUNS [3]            runs per scenario x contender (median reported)
#   SCENARIOS           [loopback lan wan0 wan badwan2 badwan5 badwan10 lfn bursty]
#   CONTENDERS          [iperf3-cubic iperf3-bbr xfer-put xfer-get xfer-udp xfer-udp-get quic quic-bbr
#                        scp rsync]; xfer-put/xfer-get run with --transport tcp, xfer-udp (put) and
#                        xfer-udp-get with --transport udp
#   XFER_ARGS           extra arguments after xfer's put/get subcommand (e.g. "--rate-limit 12M")
#   DURATION [10]       seconds per iperf3 run
#   XFER_SECS [8]       file/QUIC transfers move rate x XFER_SECS bytes ...
#   CAP [20]            ... but stop after CAP seconds; goodput is then bytes moved / CAP
#   SIZE                fixed transfer size for every scenario (e.g. 200M), overrides XFER_SECS
#   LOOPBACK_SIZE [2G]  transfer size on raw loopback
#   FAIRNESS [1]        run the fairness scenario; FAIR_SECS [20], FAIR_CONTENDERS
#                       [iperf3-cubic iperf3-bbr quic quic-bbr xfer-put xfer-udp scp]
#   MTU [1500]          MTU of the emulated link
#   OUT                 results directory [/tmp/xfer-bench-<date>]
#   SKIP_BUILD=1        do not (re)build linkem, quic-perf and xfer
#   XFER_BIN            the xfer binary to run [target/release/xfer] (e.g. a copy, so that a rebuild
#                       during a long run does not change what is measured)
#   PREFIX [xfer-bench] netns prefix; runners with different prefixes can run side by side
#   FAIR_AGAINST [bbr]  congestion control of the iperf3 flow the fairness contenders share with
#
# Scenarios may also be generic link cells named m<rate Mbit/s>-r<RTT ms>-l<loss %> (random
# loss) or m<rate>-r<RTT>-g<avg %>x<burst> (Gilbert-Elliott bursts, mean burst length in
# packets), e.g. m100-r50-l1, m10-r600-l10, m100-r200-g3x10 (benches/scenarios/matrix.sh).
#
# Everything it creates (namespaces, processes, /dev/shm files) is removed on
# exit, on Ctrl-C and on SIGTERM.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-"loopback lan wan0 wan badwan2 badwan5 badwan10 lfn bursty"}
CONTENDERS=${CONTENDERS:-"iperf3-cubic iperf3-bbr xfer-put xfer-get xfer-udp xfer-udp-get quic quic-bbr scp rsync"}
XFER_ARGS=${XFER_ARGS:-}
DURATION=${DURATION:-10}
XFER_SECS=${XFER_SECS:-8}
CAP=${CAP:-20}
SIZE=${SIZE:-}
LOOPBACK_SIZE=${LOOPBACK_SIZE:-2G}
FAIRNESS=${FAIRNESS:-1}
FAIR_SECS=${FAIR_SECS:-20}
FAIR_CONTENDERS=${FAIR_CONTENDERS:-"iperf3-cubic iperf3-bbr quic quic-bbr xfer-put xfer-udp scp"}
MTU=${MTU:-1500}
OUT=${OUT:-/tmp/xfer-bench-$(date +%Y%m%d-%H%M%S)}
SKIP_BUILD=${SKIP_BUILD:-0}
FAIR_AGAINST=${FAIR_AGAINST:-bbr}

PREFIX=${PREFIX:-xfer-bench}
# The bench tools build into the root's (git-ignored) target directory.
TOOLS_TARGET="$repo/target/bench-tools"
LINKEM="$TOOLS_TARGET/release/linkem"
QPERF="$TOOLS_TARGET/release/quic-perf"
XFER="${XFER_BIN:-$repo/target/release/xfer}"
WORK=/dev/shm/xfer-bench-$$
P_IPERF=5201 P_IPERF2=5202 P_QUIC=4433 P_SSH=2222 P_XFER=7443

mkdir -p "$OUT" "$WORK"
RESULTS="$OUT/results.tsv"
FAIRRES="$OUT/fairness.tsv"
SCENRES="$OUT/scenarios.tsv"
: >"$RESULTS"
: >"$FAIRRES"
: >"$SCENRES"
LOG="$OUT/run.log"

log() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ------------------------------------------------------------------ cleanup

LEM_PID=""
BG_PIDS=()

kill_tree() { # pid: signal the whole tree we started, children first
    local pid=$1 sig=${2:-TERM} c
    for c in $(pgrep -P "$pid" 2>/dev/null); do kill_tree "$c" "$sig"; done
    kill -"$sig" "$pid" 2>/dev/null
}

stop_linkem() {
    if [[ -n "$LEM_PID" ]]; then
        kill -TERM "$LEM_PID" 2>/dev/null
        local i
        for i in $(seq 100); do kill -0 "$LEM_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$LEM_PID" 2>/dev/null
        wait "$LEM_PID" 2>/dev/null
        LEM_PID=""
    fi
}

del_ns() { # name: kill what runs inside (ours), delete
    local ns=$1 p
    [[ -e /run/netns/$ns ]] || return 0
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
}

cleanup() {
    trap - EXIT INT TERM
    local p
    # stop what runs under each job (time/timeout then reap it, so nothing
    # is left behind, not even a zombie)
    for p in "${BG_PIDS[@]}"; do reap "$p" 0; done
    stop_linkem
    [[ -x "$LINKEM" ]] && "$LINKEM" cleanup --netns-prefix "$PREFIX" --kill >/dev/null 2>&1
    del_ns "$PREFIX-a"; del_ns "$PREFIX-b"; del_ns "$PREFIX-lo"; del_ns "$PREFIX-seed"
    rm -rf "$WORK"
    if ip netns list | grep -q "^$PREFIX-"; then
        echo "WARNING: namespaces left: $(ip netns list | grep "^$PREFIX-")" >&2
    fi
}
trap cleanup EXIT
on_signal() {
    log "interrupted; partial table of the runs so far:"
    [[ -s $RESULTS || -s $FAIRRES ]] && python3 "$here/table.py" "$OUT" | tee "$OUT/table.md"
    exit 130
}
trap on_signal INT TERM

# ------------------------------------------------------------------ helpers

has() { [[ " $CONTENDERS " == *" $1 "* ]]; }
has_fair() { [[ $FAIRNESS == 1 && " $FAIR_CONTENDERS " == *" $1 "* ]]; }
wants_xfer() { # any xfer row in the table or the fairness scenario
    local c
    for c in xfer-put xfer-get xfer-udp xfer-udp-get xfer-auto; do has $c && return 0; done
    has_fair xfer-put || has_fair xfer-udp
}

wait_line() { # file pattern seconds
    local i n=$(( ${3:-10} * 10 ))
    for ((i = 0; i < n; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

wait_listen() { # ns port [t|u] seconds
    local i n=$(( ${4:-10} * 10 ))
    for ((i = 0; i < n; i++)); do
        ip netns exec "$1" ss -H -l"${3:-t}"n "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

reap() { # pid seconds: wait for a background job, then stop its tree
    local pid=$1 i n=$(( ${2:-5} * 10 ))
    for ((i = 0; i < n; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        # $pid is /usr/bin/time; signal what runs under it so that time
        # still reports the rusage
        local c
        for c in $(pgrep -P "$pid"); do kill_tree "$c" TERM; done
        for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill_tree "$pid" KILL
    fi
    wait "$pid" 2>/dev/null
    local k
    for k in "${!BG_PIDS[@]}"; do [[ ${BG_PIDS[$k]} == "$pid" ]] && unset 'BG_PIDS[k]'; done
}

fg() { # run "$@" as a job and wait for it: a trapped Ctrl-C/SIGTERM then
    # interrupts the wait at once (a foreground child that ignores SIGINT, like
    # /usr/bin/time, would otherwise make bash carry on after Ctrl-C)
    "$@" &
    local p=$! rc k
    BG_PIDS+=("$p")
    wait "$p"
    rc=$?
    for k in "${!BG_PIDS[@]}"; do [[ ${BG_PIDS[$k]} == "$p" ]] && unset 'BG_PIDS[k]'; done
    return $rc
}

bg() { # run "$@" in the background, remember the pid in BGPID
    "$@" &
    BGPID=$!
    BG_PIDS+=("$BGPID")
}

cpu_of() { # /usr/bin/time -f '%e %U %S' output -> user+sys
    [[ -s "$1" ]] || { echo "nan"; return; }
    tail -1 "$1" | awk '{ printf "%.2f", $2 + $3 }'
}
wall_of() { [[ -s "$1" ]] && tail -1 "$1" | awk '{ print $1 }' || echo "nan"; }

dir_bytes() { # dir [name-glob]
    find "$1" -type f -name "${2:-*}" -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { printf "%.f",s }'
}

# Bytes actually stored (tmpfs pages) rather than the apparent size: the UDP receiver writes
# each datagram at its offset, so a partial file is sparse and its size says nothing.
dir_alloc() { # dir [name-glob]
    find "$1" -type f -name "${2:-*}" -printf '%b\n' 2>/dev/null | awk '{ s += $1 * 512 } END { printf "%.f",s }'
}

# UDP datagrams the kernel dropped in a namespace for want of socket buffer (both directions).
udp_buf_errs() { # ns
    ip netns exec "$1" cat /proc/net/snmp 2>/dev/null | awk '/^Udp:/ {
        if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next }
        printf "%d", $col["RcvbufErrors"] + $col["SndbufErrors"]; exit }'
}

to_bytes() { # 125M, 2G, 1.5G, 1000 -> bytes (decimal units)
    awk -v s="$1" 'BEGIN {
        n = s + 0; u = toupper(substr(s, length(s)));
        m = (u == "K") ? 1e3 : (u == "M") ? 1e6 : (u == "G") ? 1e9 : 1;
        printf "%.f",n * m }'
}

mbit() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", b * 8 / s / 1e6; else print "nan" }'; }

TIME=(/usr/bin/time -f '%e %U %S')

record() { # scenario contender run status goodput cpu_snd cpu_rcv note
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
    log "  $2 run $3: $4 goodput=$5 Mbit/s cpu snd=$6 rcv=$7 ${8:-}"
}

# ------------------------------------------------------------------ setup

setup_tools() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, TUN)"
    [[ -c /dev/net/tun ]] || die "/dev/net/tun missing"
    local need=()
    command -v ip >/dev/null || need+=(iproute2)
    command -v ss >/dev/null || need+=(iproute2)
    command -v ping >/dev/null || need+=(iputils-ping)
    command -v iperf3 >/dev/null || need+=(iperf3)
    command -v jq >/dev/null || need+=(jq)
    [[ -x /usr/bin/time ]] || need+=(time)
    command -v python3 >/dev/null || need+=(python3)
    command -v pgrep >/dev/null || need+=(procps)
    if has scp || has rsync || [[ " $FAIR_CONTENDERS " == *" scp "* ]]; then
        [[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
        command -v ssh >/dev/null || need+=(openssh-client)
        command -v rsync >/dev/null || need+=(rsync)
    fi
    if ((${#need[@]})); then
        log "installing: ${need[*]}"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >>"$LOG" 2>&1 ||
            log "apt-get install failed (see $LOG); rows needing those tools will be skipped"
    fi
    for t in ip ss ping iperf3 jq python3; do command -v $t >/dev/null || die "$t is required"; done
}

build() {
    [[ $SKIP_BUILD == 1 ]] && return
    log "building linkem and quic-perf"
    cargo build --release --quiet --manifest-path "$repo/benches/linkem/Cargo.toml" --target-dir "$TOOLS_TARGET" >>"$LOG" 2>&1 ||
        die "linkem build failed"
    cargo build --release --quiet --manifest-path "$repo/benches/quic-perf/Cargo.toml" --target-dir "$TOOLS_TARGET" >>"$LOG" 2>&1 ||
        die "quic-perf build failed"
    if wants_xfer; then
        log "building xfer (cargo build --release at the repo root)"
        if ! (cd "$repo" && timeout 1200 cargo build --release --quiet --bin xfer) >>"$LOG" 2>&1; then
            log "xfer build failed (see $LOG)"
        fi
    fi
}

# ssh: a throwaway host key and client key, a private sshd config
SSH_OK=0
SSH_WHY=""
setup_ssh() {
    [[ -x /usr/sbin/sshd ]] && command -v ssh >/dev/null || { SSH_WHY="openssh-server not installed"; return; }
    local d="$WORK/ssh"
    mkdir -p "$d" /run/sshd
    chmod 700 "$d"
    ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" || { SSH_WHY="ssh-keygen failed"; return; }
    ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" || { SSH_WHY="ssh-keygen failed"; return; }
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
StrictModes no
PidFile none
LogLevel ERROR
Subsystem sftp internal-sftp
EOF
    SSH_OPTS=(-i "$d/client_key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
        -o LogLevel=ERROR -o ConnectTimeout=15)
    /usr/sbin/sshd -t -f "$d/sshd_config" >>"$LOG" 2>&1 || { SSH_WHY="sshd -t rejected the config"; return; }
    SSH_OK=1
}

# xfer: detect the binary and its interface, create a user, seed files for `get`
XFER_OK=0
XFER_WHY="pending: xfer CLI not yet built (no target/release/xfer)"
UDP_ERRS0=0
XFER_TRANSPORT=()   # the TCP rows' transport flag (empty for a binary without --transport)
XFER_UDP_WHY="xfer binary not built"
start_xfer_server() { # ns host timefile outfile
    bg ip netns exec "$1" "${TIME[@]}" -o "$3" timeout -k 3 $((CAP + 120)) \
        "$XFER" serve --root "$XROOT" --listen "$2:$P_XFER" >"$4" 2>&1 </dev/null
    XSRV=$BGPID
    if ! wait_listen "$1" $P_XFER t 15; then
        reap "$XSRV" 1
        return 1
    fi
}
setup_xfer() {
    [[ -x "$XFER" ]] || return
    XROOT="$WORK/xfer-root"
    mkdir -p "$XROOT"
    if ! XFER_PASSWORD=benchpw timeout 60 "$XFER" user add bench --quota 100GiB --root "$XROOT" --init >>"$LOG" 2>&1 </dev/null; then
        XFER_WHY="xfer binary not built or not ready: 'xfer user add' failed (see run.log)"
        return
    fi
    # the UDP data path, when the binary has it: --transport is a flag of put/get, and its
    # default (auto) is UDP, so the TCP rows must ask for tcp
    if "$XFER" put --help 2>/dev/null | grep -q -- '--transport'; then
        XFER_TRANSPORT=(--transport tcp)
        XFER_UDP_WHY=""
    else
        XFER_UDP_WHY="skipped: xfer has no --transport flag (no UDP data path)"
    fi
    if ! has xfer-get && ! has xfer-udp-get; then
        XFER_OK=1 XFER_WHY=""
        return
    fi
    # Seed the files that `get` fetches, over a private loopback.
    ip netns add "$PREFIX-seed" && ip -n "$PREFIX-seed" link set lo up || { XFER_WHY="netns for seeding failed"; return; }
    XCFG="$WORK/xfer-cfg-seed"
    mkdir -p "$XCFG"
    if ! start_xfer_server "$PREFIX-seed" 127.0.0.1 "$WORK/seed.time" "$OUT/xfer-seed-server.log"; then
        XFER_WHY="xfer binary not built or not ready: 'xfer serve' did not start listening (see $OUT/xfer-seed-server.log)"
        del_ns "$PREFIX-seed"
        return
    fi
    local s ok=1
    for s in $(all_sizes); do
        ensure_file "$s"
        if ! fg timeout 300 ip netns exec "$PREFIX-seed" env XFER_PASSWORD=benchpw XFER_CONFIG_DIR="$XCFG" \
            "$XFER" --server "127.0.0.1:$P_XFER" --user bench --accept-new-host --quiet \
            put "${XFER_TRANSPORT[@]}" "$WORK/src-$s.bin" "seed-$s.bin" </dev/null >>"$LOG" 2>&1; then
            ok=0
            break
        fi
    done
    reap "$XSRV" 1
    del_ns "$PREFIX-seed"
    if ((ok)); then
        XFER_OK=1
        XFER_WHY=""
    else
        XFER_WHY="xfer put failed while seeding files (see run.log)"
    fi
}

ensure_file() { # size: random (incompressible) source file in tmpfs
    local f="$WORK/src-$1.bin"
    [[ -s "$f" ]] && return
    head -c "$1" /dev/urandom >"$f"
}

# ------------------------------------------------------------------ scenarios

# name -> linkem arguments ("" = raw loopback), rate in Mbit/s for sizing, label
scenario() {
    case $1 in
    loopback) LEM_ARGS="" RATE=0 LABEL="raw loopback, no emulator" ;;
    lan) LEM_ARGS="--rate 1gbit --delay 50us" RATE=1000 LABEL="1 Gbit/s, 0.2 ms RTT, 0% loss" ;;
    wan0) LEM_ARGS="--rate 100mbit --delay 25ms" RATE=100 LABEL="100 Mbit/s, 50 ms RTT, 0% loss" ;;
    wan) LEM_ARGS="--rate 100mbit --delay 25ms --loss 1%" RATE=100 LABEL="100 Mbit/s, 50 ms RTT, 1% loss" ;;
    badwan2) LEM_ARGS="--rate 100mbit --delay 50ms --loss 2%" RATE=100 LABEL="100 Mbit/s, 100 ms RTT, 2% loss" ;;
    badwan5) LEM_ARGS="--rate 100mbit --delay 50ms --loss 5%" RATE=100 LABEL="100 Mbit/s, 100 ms RTT, 5% loss" ;;
    badwan10) LEM_ARGS="--rate 100mbit --delay 50ms --loss 10%" RATE=100 LABEL="100 Mbit/s, 100 ms RTT, 10% loss" ;;
    lfn) LEM_ARGS="--rate 400mbit --delay 75ms --loss 0.1%" RATE=400 LABEL="400 Mbit/s, 150 ms RTT, 0.1% loss" ;;
    bursty) LEM_ARGS="--rate 100mbit --delay 25ms --ge-burst 1%:5" RATE=100 LABEL="100 Mbit/s, 50 ms RTT, GE bursts avg 1% (mean burst 5 pkts)" ;;
    fair) LEM_ARGS="--rate 100mbit --delay 25ms" RATE=100 LABEL="100 Mbit/s, 50 ms RTT, 0% loss (shared)" ;;
    m*-r*-[lg]*) cell "$1" || die "bad cell name $1" ;;
    *) die "unknown scenario $1" ;;
    esac
}

# A generic link cell: m<rate Mbit/s>-r<RTT ms>-l<loss %> or m<rate>-r<RTT>-g<avg %>x<burst>.
cell() { # name -> LEM_ARGS RATE LABEL
    local re='^m([0-9.]+)-r([0-9.]+)-(l([0-9.]+)|g([0-9.]+)x([0-9.]+))$'
    [[ $1 =~ $re ]] || return 1
    local rate=${BASH_REMATCH[1]} rtt=${BASH_REMATCH[2]} loss=${BASH_REMATCH[4]} ge=${BASH_REMATCH[5]} len=${BASH_REMATCH[6]}
    local delay_us
    delay_us=$(awk -v r="$rtt" 'BEGIN { printf "%d", r * 1000 / 2 }')
    LEM_ARGS="--rate ${rate}mbit --delay ${delay_us}us"
    RATE=$rate
    if [[ -n $ge ]]; then
        LEM_ARGS+=" --ge-burst $ge%:$len"
        LABEL="$rate Mbit/s, $rtt ms RTT, GE bursts avg $ge% (mean burst $len pkts)"
    else
        [[ $loss != 0 ]] && LEM_ARGS+=" --loss $loss%"
        LABEL="$rate Mbit/s, $rtt ms RTT, $loss% loss"
    fi
}

size_for() { # scenario -> bytes
    scenario "$1"
    if [[ -n $SIZE ]]; then to_bytes "$SIZE"
    elif [[ $RATE == 0 ]]; then to_bytes "$LOOPBACK_SIZE"
    else awk -v r="$RATE" -v s="$XFER_SECS" 'BEGIN { printf "%.f",r * 1e6 / 8 * s }'
    fi
}

all_sizes() {
    local sc
    for sc in $SCENARIOS; do size_for "$sc"; echo; done | sort -un
}

NS_C="" NS_S="" HOST=""
start_scenario() { # name
    scenario "$1"
    if [[ -z $LEM_ARGS ]]; then
        ip netns add "$PREFIX-lo" && ip -n "$PREFIX-lo" link set lo up || die "netns $PREFIX-lo"
        ip netns exec "$PREFIX-lo" sysctl -q -w net.ipv4.tcp_rmem="4096 131072 67108864" \
            net.ipv4.tcp_wmem="4096 16384 67108864" >/dev/null
        NS_C="$PREFIX-lo" NS_S="$PREFIX-lo" HOST=127.0.0.1
    else
        # shellcheck disable=SC2086
        "$LINKEM" $LEM_ARGS --mtu "$MTU" --netns-prefix "$PREFIX" --duration 3600s \
            >"$OUT/linkem-$1.log" 2>&1 &
        LEM_PID=$!
        wait_line "$OUT/linkem-$1.log" "linkem ready" 15 || die "linkem did not start: $(cat "$OUT/linkem-$1.log")"
        NS_C="$PREFIX-a" NS_S="$PREFIX-b" HOST=10.201.0.2
    fi
    RTT=$(ip netns exec "$NS_C" ping -c 20 -i 0.05 -q -W 2 "$HOST" 2>/dev/null | awk -F'[/ =]+' '/^rtt/ { print $7 }')
    log "scenario $1: $LABEL; linkem ${LEM_ARGS:-none}; ping RTT avg ${RTT:-?} ms"
}

end_scenario() { # name
    local drops="-"
    if [[ -n $LEM_PID ]]; then
        stop_linkem
        drops=$(awk '/a->b|b->a/ && /forwarded=/ {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "dropped_loss") l += kv[2]; if (kv[1] == "dropped_queue") q += kv[2]; if (kv[1] == "forwarded") f += kv[2] }
        } END { printf "fwd %d, loss %d, queue %d", f, l, q }' "$OUT/linkem-$1.log")
    else
        del_ns "$PREFIX-lo"
    fi
    scenario "$1"
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$LABEL" "${LEM_ARGS:-(none)}" "${RTT:-?}" "$drops" >>"$SCENRES"
}

# ------------------------------------------------------------------ contenders
# Each run_* takes: scenario run-number; records one result line.

run_iperf3() { # scenario run cc
    local sc=$1 r=$2 cc=$3 d="$WORK/run"
    rm -rf "$d"; mkdir -p "$d"
    bg ip netns exec "$NS_S" "${TIME[@]}" -o "$d/srv.time" timeout -k 3 $((DURATION + 40)) \
        iperf3 -s -1 -p $P_IPERF >"$d/srv.out" 2>&1
    local spid=$BGPID
    if ! wait_listen "$NS_S" $P_IPERF t 10; then
        reap "$spid" 1
        record "$sc" "iperf3-$cc" "$r" fail nan nan nan "server did not start"
        return
    fi
    fg ip netns exec "$NS_C" "${TIME[@]}" -o "$d/cli.time" timeout -k 3 $((DURATION + 30)) \
        iperf3 -c "$HOST" -p $P_IPERF -t "$DURATION" -C "$cc" -J >"$d/cli.json" 2>"$d/cli.err"
    local rc=$?
    reap "$spid" 5
    local gp
    gp=$(jq -r '.end.sum_received.bits_per_second // empty | . / 1e6 | (. * 100 | round) / 100' "$d/cli.json" 2>/dev/null)
    if [[ $rc -ne 0 || -z $gp ]]; then
        record "$sc" "iperf3-$cc" "$r" fail nan "$(cpu_of "$d/cli.time")" "$(cpu_of "$d/srv.time")" "rc=$rc $(jq -r '.error // empty' "$d/cli.json" 2>/dev/null)"
        return
    fi
    local retr
    retr=$(jq -r '.end.sum_sent.retransmits // 0' "$d/cli.json")
    record "$sc" "iperf3-$cc" "$r" ok "$gp" "$(cpu_of "$d/cli.time")" "$(cpu_of "$d/srv.time")" "retransmits=$retr"
}

run_quic() { # scenario run cc [name]
    local sc=$1 r=$2 cc=$3 name=${4:-quic} d="$WORK/run" bytes
    bytes=$(size_for "$sc")
    rm -rf "$d"; mkdir -p "$d"
    bg ip netns exec "$NS_S" "${TIME[@]}" -o "$d/srv.time" timeout -k 3 $((CAP + 60)) \
        "$QPERF" server --listen "$HOST:$P_QUIC" --cc "$cc" --timeout $((CAP + 50)) >"$d/srv.out" 2>&1
    local spid=$BGPID
    if ! wait_line "$d/srv.out" "listening" 10; then
        reap "$spid" 1
        record "$sc" "$name" "$r" fail nan nan nan "server did not start"
        return
    fi
    fg ip netns exec "$NS_C" "${TIME[@]}" -o "$d/cli.time" timeout -k 3 $((CAP + 40)) \
        "$QPERF" client --connect "$HOST:$P_QUIC" --bytes "$bytes" --time "$CAP" --cc "$cc" >"$d/cli.out" 2>&1
    local rc=$?
    reap "$spid" 10
    local line gp capped
    line=$(grep '^quic-perf client' "$d/cli.out")
    gp=$(sed -n 's/.* mbit=\([0-9.]*\).*/\1/p' <<<"$line")
    capped=$(sed -n 's/.* capped=\([a-z]*\).*/\1/p' <<<"$line")
    if [[ $rc -ne 0 || -z $gp ]]; then
        record "$sc" "$name" "$r" fail nan "$(cpu_of "$d/cli.time")" "$(cpu_of "$d/srv.time")" "rc=$rc $(tail -1 "$d/cli.out")"
        return
    fi
    record "$sc" "$name" "$r" "$([[ $capped == true ]] && echo capped || echo ok)" "$gp" \
        "$(cpu_of "$d/cli.time")" "$(cpu_of "$d/srv.time")" "bytes=$bytes"
}

# File transfers. $1 scenario, $2 run, $3 contender name, $4 direction
# (put: client sends, server receives; get: the reverse), $5 destination dir
# and $7 name glob of the files whose size is the bytes moved (partial
# files included), $6 size, then the client command. MOVED=alloc counts the bytes stored
# rather than the apparent size (sparse UDP partial files); SRV_GRACE [5] is how long the
# server may take to exit by itself before it is stopped; EXTRA_NOTE is added to the note.
run_file_client() {
    local sc=$1 r=$2 name=$3 dir=$4 dest=$5 bytes=$6 glob=$7
    shift 7
    local d="$WORK/run"
    fg ip netns exec "$NS_C" "${TIME[@]}" -o "$d/cli.time" timeout -k 3 "$CAP" "$@" >"$d/cli.out" 2>&1 </dev/null
    local rc=$?
    local moved
    moved=$(dir_bytes "$dest" "$glob")
    [[ ${MOVED:-} == alloc && $rc -ne 0 ]] && moved=$(dir_alloc "$dest" "$glob")
    sleep 0.5 # let the server side notice the end
    reap "$SPID" "${SRV_GRACE:-5}"
    local EXTRA_NOTE=""
    [[ -n ${NOTE_FN:-} ]] && EXTRA_NOTE=$("$NOTE_FN" "$sc" "$dir")
    local csnd crcv
    if [[ $dir == put ]]; then
        csnd=$(cpu_of "$d/cli.time") crcv=$(cpu_of "$d/srv.time")
    else
        csnd=$(cpu_of "$d/srv.time") crcv=$(cpu_of "$d/cli.time")
    fi
    if [[ $rc -eq 0 && $moved -eq $bytes ]]; then
        record "$sc" "$name" "$r" ok "$(mbit "$bytes" "$(wall_of "$d/cli.time")")" "$csnd" "$crcv" "bytes=$bytes${EXTRA_NOTE:+ $EXTRA_NOTE}"
    elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
        record "$sc" "$name" "$r" capped "$(mbit "$moved" "$CAP")" "$csnd" "$crcv" "moved=$moved of $bytes in ${CAP}s${EXTRA_NOTE:+ $EXTRA_NOTE}"
    else
        record "$sc" "$name" "$r" fail nan "$csnd" "$crcv" "rc=$rc moved=$moved/$bytes $(grep -v '^ *$' "$d/cli.out" | tail -1 | cut -c1-120)"
    fi
}

start_sshd() { # -> SPID, 1 on failure
    local d="$WORK/run"
    bg ip netns exec "$NS_S" "${TIME[@]}" -o "$d/srv.time" timeout -k 3 $((CAP + 60)) \
        /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" >"$d/srv.out" 2>&1
    SPID=$BGPID
    if ! wait_listen "$NS_S" $P_SSH t 10; then
        reap "$SPID" 1
        return 1
    fi
}

run_scp() { # scenario run
    local sc=$1 r=$2 d="$WORK/run" bytes
    if ((!SSH_OK)); then record "$sc" scp "$r" skip nan nan nan "skipped: $SSH_WHY"; return; fi
    bytes=$(size_for "$sc"); ensure_file "$bytes"
    rm -rf "$d"; mkdir -p "$d/dst"
    start_sshd || { record "$sc" scp "$r" fail nan nan nan "sshd did not start"; return; }
    run_file_client "$sc" "$r" scp put "$d/dst" "$bytes" '*' \
        scp -q "${SSH_OPTS[@]}" -P $P_SSH "$WORK/src-$bytes.bin" "root@$HOST:$d/dst/f.bin"
}

run_rsync() { # scenario run
    local sc=$1 r=$2 d="$WORK/run" bytes
    if ((!SSH_OK)); then record "$sc" rsync "$r" skip nan nan nan "skipped: $SSH_WHY"; return; fi
    command -v rsync >/dev/null || { record "$sc" rsync "$r" skip nan nan nan "skipped: rsync not installed"; return; }
    bytes=$(size_for "$sc"); ensure_file "$bytes"
    rm -rf "$d"; mkdir -p "$d/dst"
    start_sshd || { record "$sc" rsync "$r" fail nan nan nan "sshd did not start"; return; }
    run_file_client "$sc" "$r" rsync put "$d/dst" "$bytes" '*' \
        rsync -a --whole-file --inplace -e "ssh ${SSH_OPTS[*]} -p $P_SSH" "$WORK/src-$bytes.bin" "root@$HOST:$d/dst/f.bin"
}

# xfer's own timer (request to verified end, without connecting and logging in), from its
# summary line "uploaded A -> B: 23.8 MiB in 2.69 s (8.9 MiB/s) over udp".
xfer_note() { # scenario put|get -> note words
    local line
    line=$(grep -m1 -E '^(uploaded|downloaded) .* in [0-9.]+ s \(' "$WORK/run/cli.out")
    printf 'xsecs=%s via=%s' "$(sed -n 's/.* in \([0-9.]*\) s (.*/\1/p' <<<"$line")" \
        "$(sed -n 's/.* over \([a-z]*\).*/\1/p' <<<"$line")"
}

# The redundancy of a UDP transfer: retransmitted payload bytes as a percent of the file,
# from the client's -v line (put: the client sends) or the server's log (get: the server
# sends), plus the datagram size, the losses the sender declared, and the UDP datagrams the
# kernels dropped for want of socket buffer during the run.
xfer_udp_note() { # scenario put|get -> note words
    xfer_note "$@"
    printf ' '
    local d="$WORK/run" line red="" lost="" dg=""
    if [[ $2 == put ]]; then
        # udp: N datagrams of up to D bytes, X MiB retransmitted (P% of the data), L lost, ...
        line=$(grep -m1 '^ *udp: ' "$d/cli.out")
        red=$(sed -n 's/.*retransmitted (\([0-9.]*\)% of the data).*/\1/p' <<<"$line")
        lost=$(sed -n 's/.*of the data), \([0-9]*\) lost.*/\1/p' <<<"$line")
        dg=$(sed -n 's/.*datagrams of up to \([0-9]*\) bytes.*/\1/p' <<<"$line")
    else
        # download over UDP complete ... size=S sent=B retransmitted=R datagram=D
        line=$(grep -m1 'download over UDP complete' "$d/srv.out")
        local size rt
        size=$(sed -n 's/.* size=\([0-9]*\).*/\1/p' <<<"$line")
        rt=$(sed -n 's/.* retransmitted=\([0-9]*\).*/\1/p' <<<"$line")
        dg=$(sed -n 's/.* datagram=\([0-9]*\).*/\1/p' <<<"$line")
        [[ -n $size && -n $rt && $size -gt 0 ]] && red=$(awk -v r="$rt" -v s="$size" 'BEGIN { printf "%.2f", 100 * r / s }')
    fi
    local e1 e2
    e1=$(udp_buf_errs "$NS_C"); e2=$(udp_buf_errs "$NS_S")
    [[ $NS_C == "$NS_S" ]] && e2=0
    printf 'redundant=%s lost=%s dgram=%s bufdrops=%s' "${red:-?}" "${lost:--}" "${dg:-?}" \
        $(( ${e1:-0} + ${e2:-0} - UDP_ERRS0 ))
}

run_xfer() { # scenario run put|get tcp|udp|auto
    local sc=$1 r=$2 dir=$3 tr=$4 name d="$WORK/run" bytes
    case $dir-$tr in
    put-auto) name=xfer-auto ;;
    put-tcp) name=xfer-put ;;
    get-tcp) name=xfer-get ;;
    put-udp) name=xfer-udp ;;
    get-udp) name=xfer-udp-get ;;
    esac
    if ((!XFER_OK)); then record "$sc" "$name" "$r" skip nan nan nan "$XFER_WHY"; return; fi
    if [[ $tr != tcp && -n $XFER_UDP_WHY ]]; then record "$sc" "$name" "$r" skip nan nan nan "$XFER_UDP_WHY"; return; fi
    bytes=$(size_for "$sc"); ensure_file "$bytes"
    rm -rf "$d"; mkdir -p "$d/dst"
    find "$XROOT" -name '*put-bench*' -delete 2>/dev/null
    XCFG="$d/cfg"; mkdir -p "$XCFG"
    if ! start_xfer_server "$NS_S" "$HOST" "$d/srv.time" "$d/srv.out"; then
        record "$sc" "$name" "$r" skip nan nan nan "xfer serve did not start (see logs)"
        cp "$d/srv.out" "$OUT/xfer-serve-fail-$sc.log" 2>/dev/null
        return
    fi
    SPID=$XSRV
    # The transport flag and the options go after the subcommand. The client runs with -v
    # instead of --quiet: its summary (xfer's own timer, the transport used, and for UDP
    # uploads the sender statistics) is printed after the transfer, into a file.
    local how=(-v) flag=("${XFER_TRANSPORT[@]}") extra=()
    # shellcheck disable=SC2206
    [[ -n $XFER_ARGS ]] && extra=($XFER_ARGS)
    local MOVED="" NOTE_FN=xfer_note SRV_GRACE=1
    if [[ $tr != tcp ]]; then
        flag=(--transport "$tr") MOVED=alloc NOTE_FN=xfer_udp_note
        local e1 e2
        e1=$(udp_buf_errs "$NS_C"); e2=$(udp_buf_errs "$NS_S")
        [[ $NS_C == "$NS_S" ]] && e2=0
        UDP_ERRS0=$(( ${e1:-0} + ${e2:-0} ))
    fi
    if [[ $dir == put ]]; then
        # bytes moved when capped: whatever grew under the server root
        run_file_client "$sc" "$r" "$name" put "$XROOT" "$bytes" "*put-bench-$r.bin*" \
            env XFER_PASSWORD=benchpw XFER_CONFIG_DIR="$XCFG" \
            "$XFER" --server "$HOST:$P_XFER" --user bench --accept-new-host "${how[@]}" \
            put "${flag[@]}" "${extra[@]}" "$WORK/src-$bytes.bin" "put-bench-$r.bin"
    else
        run_file_client "$sc" "$r" "$name" get "$d/dst" "$bytes" '*' \
            env XFER_PASSWORD=benchpw XFER_CONFIG_DIR="$XCFG" \
            "$XFER" --server "$HOST:$P_XFER" --user bench --accept-new-host "${how[@]}" \
            get "${flag[@]}" "${extra[@]}" "seed-$bytes.bin" "$d/dst/f.bin"
    fi
    # keep the client's and the server's output of UDP runs for the report
    if [[ $tr != tcp ]]; then
        cp "$d/cli.out" "$OUT/$sc-$name-$r.client.log" 2>/dev/null
        cp "$d/srv.out" "$OUT/$sc-$name-$r.server.log" 2>/dev/null
    fi
    find "$XROOT" -name '*put-bench*' -delete 2>/dev/null
}

run_contender() { # scenario run contender
    case $3 in
    iperf3-cubic) run_iperf3 "$1" "$2" cubic ;;
    iperf3-bbr) run_iperf3 "$1" "$2" bbr ;;
    quic) run_quic "$1" "$2" cubic quic ;;
    quic-bbr) run_quic "$1" "$2" bbr quic-bbr ;;
    scp) run_scp "$1" "$2" ;;
    rsync) run_rsync "$1" "$2" ;;
    xfer-put) run_xfer "$1" "$2" put tcp ;;
    xfer-get) run_xfer "$1" "$2" get tcp ;;
    xfer-udp) run_xfer "$1" "$2" put udp ;;
    xfer-udp-get) run_xfer "$1" "$2" get udp ;;
    xfer-auto) run_xfer "$1" "$2" put auto ;;
    *) die "unknown contender $3" ;;
    esac
}

# ------------------------------------------------------------------ fairness

# One bulk contender and one iperf3 TCP flow (FAIR_AGAINST: bbr or cubic) share the link for
# FAIR_SECS.
run_fair() { # run contender
    local r=$1 c=$2 d="$WORK/run" sc=fair
    rm -rf "$d"; mkdir -p "$d/dst"
    # the competing BBR flow
    bg ip netns exec "$NS_S" timeout -k 3 $((FAIR_SECS + 40)) iperf3 -s -1 -p $P_IPERF2 >"$d/bbr-srv.out" 2>&1
    local bsrv=$BGPID
    wait_listen "$NS_S" $P_IPERF2 t 10 || { reap "$bsrv" 1; log "  fairness: iperf3 server did not start"; return; }
    local cpid="" cgp="" note=""
    case $c in
    iperf3-cubic | iperf3-bbr)
        bg ip netns exec "$NS_S" timeout -k 3 $((FAIR_SECS + 40)) iperf3 -s -1 -p $P_IPERF >"$d/srv.out" 2>&1
        SPID=$BGPID
        wait_listen "$NS_S" $P_IPERF t 10
        bg ip netns exec "$NS_C" timeout -k 3 $((FAIR_SECS + 30)) iperf3 -c "$HOST" -p $P_IPERF -t "$FAIR_SECS" -C "${c#iperf3-}" -J >"$d/c.json" 2>/dev/null
        cpid=$BGPID
        ;;
    quic | quic-bbr)
        local cc=cubic; [[ $c == quic-bbr ]] && cc=bbr
        bg ip netns exec "$NS_S" timeout -k 3 $((FAIR_SECS + 60)) "$QPERF" server --listen "$HOST:$P_QUIC" --cc $cc --timeout $((FAIR_SECS + 50)) >"$d/srv.out" 2>&1
        SPID=$BGPID
        wait_line "$d/srv.out" "listening" 10
        bg ip netns exec "$NS_C" timeout -k 3 $((FAIR_SECS + 40)) "$QPERF" client --connect "$HOST:$P_QUIC" --bytes 100G --time "$FAIR_SECS" --cc $cc >"$d/c.out" 2>&1
        cpid=$BGPID
        ;;
    scp)
        if ((!SSH_OK)); then reap "$bsrv" 1; printf 'fair\t%s\t%s\tskip\tnan\tnan\t%s\n' "$c" "$r" "$SSH_WHY" >>"$FAIRRES"; return; fi
        ensure_file 1000000000
        bg ip netns exec "$NS_S" timeout -k 3 $((FAIR_SECS + 60)) /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" >"$d/srv.out" 2>&1
        SPID=$BGPID
        wait_listen "$NS_S" $P_SSH t 10
        bg ip netns exec "$NS_C" timeout -k 3 "$FAIR_SECS" scp -q "${SSH_OPTS[@]}" -P $P_SSH "$WORK/src-1000000000.bin" "root@$HOST:$d/dst/f.bin"
        cpid=$BGPID
        ;;
    xfer-put | xfer-udp)
        if ((!XFER_OK)); then reap "$bsrv" 1; printf 'fair\t%s\t%s\tskip\tnan\tnan\t%s\n' "$c" "$r" "$XFER_WHY" >>"$FAIRRES"; return; fi
        if [[ $c == xfer-udp && -n $XFER_UDP_WHY ]]; then reap "$bsrv" 1; printf 'fair\t%s\t%s\tskip\tnan\tnan\t%s\n' "$c" "$r" "$XFER_UDP_WHY" >>"$FAIRRES"; return; fi
        local flag=("${XFER_TRANSPORT[@]}")
        [[ $c == xfer-udp ]] && flag=(--transport udp)
        ensure_file 1000000000
        find "$XROOT" -name '*put-bench*' -delete 2>/dev/null
        XCFG="$d/cfg"; mkdir -p "$XCFG"
        start_xfer_server "$NS_S" "$HOST" "$d/srv.time" "$d/srv.out" || { reap "$bsrv" 1; printf 'fair\t%s\t%s\tskip\tnan\tnan\t%s\n' "$c" "$r" "xfer serve did not start" >>"$FAIRRES"; return; }
        SPID=$XSRV
        bg ip netns exec "$NS_C" timeout -k 3 "$FAIR_SECS" env XFER_PASSWORD=benchpw XFER_CONFIG_DIR="$XCFG" \
            "$XFER" --server "$HOST:$P_XFER" --user bench --accept-new-host --quiet put "${flag[@]}" "$WORK/src-1000000000.bin" put-bench-fair.bin
        cpid=$BGPID
        ;;
    esac
    # the BBR flow starts at the same moment
    fg ip netns exec "$NS_C" timeout -k 3 $((FAIR_SECS + 30)) iperf3 -c "$HOST" -p $P_IPERF2 -t "$FAIR_SECS" -C "$FAIR_AGAINST" -J >"$d/bbr.json" 2>/dev/null
    local i
    for ((i = 0; i < 400; i++)); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    case $c in
    iperf3-*) cgp=$(jq -r '.end.sum_received.bits_per_second // empty | . / 1e6' "$d/c.json" 2>/dev/null) ;;
    quic*) cgp=$(sed -n 's/^quic-perf client.* mbit=\([0-9.]*\).*/\1/p' "$d/c.out") ;;
    scp) cgp=$(mbit "$(dir_bytes "$d/dst")" "$FAIR_SECS") ;;
    xfer-put) cgp=$(mbit "$(dir_bytes "$XROOT" '*put-bench-fair.bin*')" "$FAIR_SECS"); find "$XROOT" -name '*put-bench*' -delete 2>/dev/null ;;
    # the UDP partial file is sparse: count the bytes stored
    xfer-udp) cgp=$(mbit "$(dir_alloc "$XROOT" '*put-bench-fair.bin*')" "$FAIR_SECS"); find "$XROOT" -name '*put-bench*' -delete 2>/dev/null ;;
    esac
    reap "$cpid" 1
    reap "$SPID" 5
    reap "$bsrv" 5
    local bgp
    bgp=$(jq -r '.end.sum_received.bits_per_second // empty | . / 1e6' "$d/bbr.json" 2>/dev/null)
    note="against=$FAIR_AGAINST"
    printf 'fair\t%s\t%s\tok\t%s\t%s\t%s\n' "$c" "$r" "${cgp:-nan}" "${bgp:-nan}" "$note" >>"$FAIRRES"
    log "  fairness $c run $r: contender ${cgp:-?} Mbit/s, iperf3-$FAIR_AGAINST ${bgp:-?} Mbit/s"
}

# ------------------------------------------------------------------ main

setup_tools
build
[[ -x $LINKEM && -x $QPERF ]] || die "linkem/quic-perf binaries missing (SKIP_BUILD=1 without a build?)"
"$LINKEM" cleanup --netns-prefix "$PREFIX" --kill >/dev/null 2>&1
del_ns "$PREFIX-lo"; del_ns "$PREFIX-seed"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "host: $(uname -srm); nproc $(nproc); $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2 }')"
    echo "memory: $(free -g | awk '/Mem:/ { print $2 " GiB" }')"
    echo "default TCP CC: $(sysctl -n net.ipv4.tcp_congestion_control) (used by xfer-tcp, scp, rsync); tools: $(iperf3 --version | head -1 | cut -d' ' -f1-2), $(ssh -V 2>&1 | cut -d, -f1), rsync $(rsync --version 2>/dev/null | head -1 | awk '{ print $3 }')"
    echo "settings: RUNS=$RUNS DURATION=${DURATION}s XFER_SECS=${XFER_SECS}s CAP=${CAP}s MTU=$MTU SIZE=${SIZE:-auto} LOOPBACK_SIZE=$LOOPBACK_SIZE"
} >"$OUT/env.txt"
cat "$OUT/env.txt" | tee -a "$LOG" >&2

has scp || has rsync || [[ $FAIRNESS == 1 && " $FAIR_CONTENDERS " == *" scp "* ]] && setup_ssh
for s in $(all_sizes); do ensure_file "$s"; done
if wants_xfer; then
    setup_xfer
    [[ -n $XFER_WHY ]] && log "xfer rows: $XFER_WHY"
fi

t_start=$(date +%s)
for sc in $SCENARIOS; do
    start_scenario "$sc"
    for ((r = 1; r <= RUNS; r++)); do
        for c in $CONTENDERS; do
            run_contender "$sc" "$r" "$c"
        done
    done
    end_scenario "$sc"
done

if [[ $FAIRNESS == 1 ]]; then
    start_scenario fair
    for ((r = 1; r <= RUNS; r++)); do
        for c in $FAIR_CONTENDERS; do run_fair "$r" "$c"; done
    done
    end_scenario fair
fi
log "all runs done in $(( $(date +%s) - t_start ))s"

python3 "$here/table.py" "$OUT" | tee "$OUT/table.md"
log "results in $OUT (table.md, results.tsv, run.log)"
