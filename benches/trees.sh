#!/usr/bin/env bash
# Trees and many files (issue 11): `xfer put -r`, `get -r` and `sync` beside `scp -r`,
# `rsync -a` and `tar c | ssh tar x`, on loopback and through linkem at 50 ms RTT.
#
#   bash benches/trees.sh                          # MODES="lo 50" RUNS=3: ~30 min on 2 cores
#   MODES=lo RUNS=1 TREES=small bash benches/trees.sh   # a quick look
#
# Trees (built under $DIR, tmpfs by default, so that fsync costs nothing to anyone):
#   small  1000 files of 4 KiB in one directory
#   mixed  200 files of 4 KiB plus 3 files of BIG_MIB MiB (random data)
#   src    this repository's files (`git ls-files`, so without target/), mtimes kept
# Rows, each run RUNS times, interleaved (run 1 of every row, then run 2, ...), the destination
# removed before every run except the no-change rows:
#   xfer put -r (auto, default -j), (auto, -j 1), (tcp, default -j), (tcp, -j 1); xfer get -r
#   (auto, default -j); xfer sync into an empty directory, then again with nothing to do;
#   rsync -a up, again with nothing to do, rsync -a down (pull); tar c | ssh tar x; scp -r up
#   and down (OpenSSH's scp, SFTP protocol).
# Wall time is taken from process start to exit (inside the client namespace at 50 ms). The
# first run of every row is checked: `diff -r` of source and destination (and, for xfer and
# rsync, equal mtimes of every file); a row that fails the check is marked WRONG in the table.
# A row whose first run took longer than SLOW seconds is not run again (the runs column says
# so); every command is stopped after T seconds.
#
# Modes: `lo` (xfer server and sshd on 127.0.0.1) and an RTT in ms (linkem, half the RTT as
# delay each way, rate RATE, no loss; netns xfer-trees-a <-> xfer-trees-b, servers in -b).
# Environment: MODES ["lo 50"], RUNS [3], TREES ["small mixed src"], RATE [1gbit], BIG_MIB
# [100], JSWEEP ["16 32"] (extra `put -r -j N` rows, auto, tree small), ROWS [.] (a bash regex:
# only the rows whose names match, e.g. ROWS='xfer|rsync'), SLOW [30], T [300],
# DIR [/dev/shm], XFER [target/release/xfer], BASE_XFER (another xfer binary, e.g. an older
# build: its `put -r` rows on tree src are added, marked "base"), OUT
# [/tmp/xfer-trees-<date>], SKIP_BUILD=1 to not build linkem, NICE [-10]. Raw numbers:
# $OUT/results.tsv (mode, tree, row, run, ms, rc), the table: $OUT/table.md.
# Needs root (and /dev/net/tun for linkem). Installs openssh-server and rsync from Debian if
# missing. Everything it creates is removed on exit.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
MODES=${MODES:-"lo 50"}
RUNS=${RUNS:-3}
TREES=${TREES:-"small mixed src"}
RATE=${RATE:-1gbit}
BIG_MIB=${BIG_MIB:-100}
JSWEEP=${JSWEEP-"16 32"}
SLOW=${SLOW:-30}
ROWS=${ROWS:-.}
T=${T:-300}
DIR=${DIR:-/dev/shm}
NICE=${NICE:--10}
OUT=${OUT:-/tmp/xfer-trees-$(date +%Y%m%d-%H%M%S)}
XFER=${XFER:-$repo/target/release/xfer}
BASE_XFER=${BASE_XFER:-}
LINKEM="$repo/target/bench-tools/release/linkem"
PREFIX=xfer-trees
NS_C=$PREFIX-a NS_S=$PREFIX-b
PORT=7453 P_SSH=2233
WORK=$DIR/xfer-trees-$$
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

[[ $(id -u) == 0 ]] || { echo "skipped: needs root"; exit 0; }
XFER=$(realpath "$XFER")
[[ -z $BASE_XFER ]] || BASE_XFER=$(realpath "$BASE_XFER")
[[ -x $XFER ]] || { echo "no xfer binary at $XFER (cargo build --release)"; exit 1; }
if [[ ! -x /usr/sbin/sshd ]] || ! command -v rsync >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client rsync) \
        >/dev/null 2>&1
fi
[[ -x /usr/sbin/sshd ]] && command -v rsync >/dev/null || { echo "sshd and rsync are required"; exit 1; }
need_linkem=0
for m in $MODES; do [[ $m == lo ]] || need_linkem=1; done
if ((need_linkem)); then
    [[ -c /dev/net/tun ]] || { echo "skipped: needs /dev/net/tun for linkem"; exit 0; }
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        cargo build --release --quiet --manifest-path "$repo/benches/linkem/Cargo.toml" \
            --target-dir "$repo/target/bench-tools" || exit 1
    fi
fi
mkdir -p "$OUT" "$WORK"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"

# ------------------------------------------------------------------ fixtures

SRC=$WORK/src XROOT=$WORK/xroot XCFG=$WORK/cfg BACK=$WORK/back SSHDST=$WORK/sshdst
mkdir -p "$SRC" "$XCFG" "$BACK" "$SSHDST"
log "building the trees in $SRC"
mkdir -p "$SRC/small" "$SRC/mixed" "$SRC/src"
if [[ " $TREES " == *" small "* ]]; then
    for ((i = 0; i < 1000; i++)); do head -c 4096 /dev/urandom >"$SRC/small/f$(printf %04d $i)"; done
fi
if [[ " $TREES " == *" mixed "* ]]; then
    for ((i = 0; i < 200; i++)); do head -c 4096 /dev/urandom >"$SRC/mixed/s$(printf %03d $i)"; done
    for i in 0 1 2; do head -c $((BIG_MIB << 20)) /dev/urandom >"$SRC/mixed/big$i"; done
fi
if [[ " $TREES " == *" src "* ]]; then
    (cd "$repo" && git ls-files -z | xargs -0 cp -p --parents -t "$SRC/src") || exit 1
fi
for t in $TREES; do
    echo "$t: $(find "$SRC/$t" -type f | wc -l) files, $(find "$SRC/$t" -mindepth 1 -type d | wc -l) directories, $(du -s --apparent-size -B1 "$SRC/$t" | cut -f1) bytes" >>"$OUT/trees.txt"
done
cat "$OUT/trees.txt" >&2

XFER_PASSWORD=treepw "$XFER" user add bench --quota 1TiB --root "$XROOT" --init -q </dev/null || exit 1

d=$WORK/ssh
mkdir -p "$d" /run/sshd
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
/usr/sbin/sshd -t -f "$d/sshd_config" || exit 1
SSHC="ssh -i $d/client_key -p $P_SSH -o BatchMode=yes -o GSSAPIAuthentication=no -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=15"
SCPO="-o BatchMode=yes -o GSSAPIAuthentication=no -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
export SSHC

# ------------------------------------------------------------------ running

CLIENT=() # the prefix that runs a command on the client side
# Runs a command on the client side; prints its wall time in ms and its exit status (timed
# inside the namespace, so `ip netns exec` itself is not counted).
timed() { # outfile cmd...
    local out=$1
    shift
    nice -n "$NICE" "${CLIENT[@]}" timeout -k 5 "$T" bash -c '
        out=$1; shift
        t0=$(date +%s%N)
        "$@" </dev/null >"$out" 2>&1
        rc=$?
        t1=$(date +%s%N)
        echo $(( (t1 - t0) / 1000000 )) $rc' _ "$out" "$@" || echo "$((T * 1000)) 124"
}

xc() { # xfer client as bench
    env XFER_CONFIG_DIR="$XCFG" HOME="$XCFG" XFER_PASSWORD=treepw XFER_SERVER="$HOST:$PORT" XFER_USER=bench \
        "$XFER" --accept-new-host -q "$@"
}
export -f xc
export XFER XCFG PORT

home_of() { echo "$XHOME"; } # the server path of the user's home, found after the first login

# Checks a destination against the source tree: content, and with mtimes=1 every file's mtime.
check() { # src dst mtimes -> "ok" or what differs
    local s=$1 dd=$2 m=$3
    diff -rq "$s" "$dd" >"$WORK/diff.out" 2>&1 || { echo "diff: $(head -2 "$WORK/diff.out" | tr '\n' ' ')"; return; }
    if ((m)); then
        local a b
        a=$(cd "$s" && find . -type f -printf '%P %T@\n' | sed 's/\.[0-9]*$//' | sort | md5sum)
        b=$(cd "$dd" && find . -type f -printf '%P %T@\n' | sed 's/\.[0-9]*$//' | sort | md5sum)
        [[ $a == "$b" ]] || { echo "mtimes differ"; return; }
    fi
    echo ok
}

declare -A SKIP
record() { # tree row run ms rc
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$MODE" "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"
    ((${5} == 0)) || log "  $1 / $2 failed (rc=$5): $(tail -2 "$WORK/cmd.out" | tr '\n' ' ')"
    (($4 > SLOW * 1000)) && SKIP["$MODE/$1/$2"]=1
    return 0
}

# One run of one row: clears the destination (unless keep), times the command, checks the
# result on the first run.
one() { # tree row run clear-path check-dst mtimes cmd...
    local tree=$1 row=$2 run=$3 clear=$4 dst=$5 mt=$6 r
    shift 6
    [[ -n ${SKIP["$MODE/$tree/$row"]:-} ]] && return 0
    [[ $row =~ $ROWS ]] || return 0
    [[ $clear != - ]] && rm -rf "$clear"
    r=$(timed "$WORK/cmd.out" "$@")
    record "$tree" "$row" "$run" $r
    if ((run == 1)) && [[ $dst != - ]]; then
        local v
        v=$(check "$SRC/$tree" "$dst" "$mt")
        printf '%s\t%s\t%s\t%s\n' "$MODE" "$tree" "$row" "$v" >>"$OUT/checks.tsv"
        [[ $v == ok ]] || log "  $tree / $row: WRONG: $v"
    fi
}

rows() { # tree run
    local t=$1 run=$2 h j
    h=$(home_of)
    local up=$h/up-$t rsrc=$SRC/$t
    local sshup=$SSHDST/up-$t
    one "$t" "xfer put -r (auto, -j 4)" "$run" "$up" "$up" 1 bash -c "cd $SRC && xc put -r $t up-$t"
    one "$t" "xfer put -r (tcp, -j 4)" "$run" "$up" "$up" 1 bash -c "cd $SRC && xc put -r --transport tcp $t up-$t"
    one "$t" "xfer put -r (auto, -j 1)" "$run" "$up" "$up" 1 bash -c "cd $SRC && xc put -r -j 1 $t up-$t"
    one "$t" "xfer put -r (tcp, -j 1)" "$run" "$up" "$up" 1 bash -c "cd $SRC && xc put -r -j 1 --transport tcp $t up-$t"
    if [[ -n $BASE_XFER && $t == src ]]; then
        one "$t" "xfer put -r (auto, -j 4), base" "$run" "$up" "$up" 1 bash -c "cd $SRC && XFER=$BASE_XFER xc put -r $t up-$t"
        one "$t" "xfer put -r (auto, -j 1), base" "$run" "$up" "$up" 1 bash -c "cd $SRC && XFER=$BASE_XFER xc put -r -j 1 $t up-$t"
    fi
    if [[ $t == small ]]; then
        for j in $JSWEEP; do
            one "$t" "xfer put -r (auto, -j $j)" "$run" "$up" "$up" 1 bash -c "cd $SRC && xc put -r -j $j $t up-$t"
        done
    fi
    one "$t" "xfer get -r (auto, -j 4)" "$run" "$BACK/$t" "$BACK/$t" 1 bash -c "cd $BACK && xc get -r seed/$t $t"
    one "$t" "xfer sync up, first (auto, -j 4)" "$run" "$up" "$up" 1 bash -c "xc sync $rsrc :up-$t"
    one "$t" "xfer sync up, no change" "$run" - "$up" 1 bash -c "xc sync $rsrc :up-$t"
    one "$t" "rsync -a up" "$run" "$sshup" "$sshup" 1 bash -c "rsync -a -e \"\$SSHC\" $rsrc/ root@$HOST:$sshup/"
    one "$t" "rsync -a up, no change" "$run" - "$sshup" 1 bash -c "rsync -a -e \"\$SSHC\" $rsrc/ root@$HOST:$sshup/"
    one "$t" "rsync -a down" "$run" "$BACK/$t" "$BACK/$t" 1 bash -c "rsync -a -e \"\$SSHC\" root@$HOST:$rsrc/ $BACK/$t/"
    one "$t" "tar c | ssh tar x" "$run" "$sshup" "$sshup" 1 bash -c "mkdir -p $sshup && tar cf - -C $rsrc . | \$SSHC root@$HOST tar xf - -C $sshup"
    one "$t" "scp -r up" "$run" "$sshup" "$sshup" 0 bash -c "scp -q -r -i $d/client_key -P $P_SSH $SCPO $rsrc root@$HOST:$sshup"
    one "$t" "scp -r down" "$run" "$BACK/$t" "$BACK/$t" 0 bash -c "scp -q -r -i $d/client_key -P $P_SSH $SCPO root@$HOST:$rsrc $BACK/$t"
}

for MODE in $MODES; do
    if [[ $MODE == lo ]]; then
        HOST=127.0.0.1 CLIENT=(env) SRVNS=(env)
    else
        HOST=10.201.0.2 CLIENT=(ip netns exec "$NS_C") SRVNS=(ip netns exec "$NS_S")
        half=$(awk -v r="$MODE" 'BEGIN { printf "%gms", r / 2 }')
        nice -n "$NICE" "$LINKEM" --delay "$half" --rate "$RATE" --netns-prefix "$PREFIX" --duration 3600s \
            >"$OUT/linkem-$MODE.log" 2>&1 &
        LEM_PID=$!
        for i in $(seq 150); do grep -q "linkem ready" "$OUT/linkem-$MODE.log" && break; sleep 0.1; done
        ping=$(ip netns exec "$NS_C" ping -c 5 -i 0.2 -q "$HOST" | awk -F'[/ =]+' '/^rtt/ { print $7 }')
        log "RTT $MODE ms, rate $RATE (ping ${ping:-?} ms)"
    fi
    export HOST
    nice -n "$NICE" "${SRVNS[@]}" "$XFER" serve --root "$XROOT" --listen "$HOST:$PORT" >"$OUT/server-$MODE.log" 2>&1 &
    SRV_PID=$!
    nice -n "$NICE" "${SRVNS[@]}" /usr/sbin/sshd -D -e -f "$d/sshd_config" >"$OUT/sshd-$MODE.log" 2>&1 &
    SSHD_PID=$!
    for i in $(seq 150); do
        "${SRVNS[@]}" ss -Hltn "sport = :$PORT" | grep -q . && "${SRVNS[@]}" ss -Hltn "sport = :$P_SSH" | grep -q . && break
        sleep 0.1
    done
    rm -f "$XCFG"/known_hosts* # a new server certificate per mode
    "${CLIENT[@]}" bash -c 'xc pwd' >/dev/null 2>&1 || { log "xfer login failed: $(tail -3 "$OUT/server-$MODE.log")"; exit 1; }
    "${CLIENT[@]}" bash -c 'xc mkdir seed; xc put /etc/hostname .xfer-probe-home' >/dev/null 2>&1
    XHOME=$(dirname "$(find "$XROOT" -name .xfer-probe-home -print -quit)")
    [[ -d $XHOME/seed ]] || exit 1
    h=$XHOME
    for t in $TREES; do [[ -d $h/seed/$t ]] || cp -a "$SRC/$t" "$h/seed/$t"; done
    echo "$MODE start: $(uptime)" >>"$OUT/load.txt"
    log "$MODE: $(uptime)"
    for ((r = 1; r <= RUNS; r++)); do
        for t in $TREES; do
            log "$MODE run $r: $t"
            rows "$t" "$r"
        done
    done
    echo "$MODE end: $(uptime)" >>"$OUT/load.txt"
    stop "$SSHD_PID"; SSHD_PID=""
    stop "$SRV_PID"; SRV_PID=""
    stop "$LEM_PID"; LEM_PID=""
done

# ------------------------------------------------------------------ table

python3 - "$RESULTS" "$OUT/checks.tsv" "$OUT/load.txt" "$RUNS" <<'EOF' | tee "$OUT/table.md"
import sys, statistics as st
res, checks, load, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows, order = {}, []
for line in open(res):
    mode, tree, row, run, ms, rc = line.rstrip("\n").split("\t")
    key = (mode, tree, row)
    if key not in rows:
        rows[key] = []
        order.append(key)
    rows[key].append((float(ms), int(rc)))
ok = {}
try:
    for line in open(checks):
        mode, tree, row, v = line.rstrip("\n").split("\t")
        ok[(mode, tree, row)] = v
except FileNotFoundError:
    pass
med = {k: st.median([ms for ms, rc in v if rc == 0]) for k, v in rows.items() if any(rc == 0 for _, rc in v)}
print("Load: " + "; ".join(l.strip() for l in open(load)))
print()
for mode in dict.fromkeys(m for m, _, _ in order):
    for tree in dict.fromkeys(t for m, t, _ in order if m == mode):
        rs = med.get((mode, tree, "rsync -a up"))
        rd = med.get((mode, tree, "rsync -a down"))
        rn = med.get((mode, tree, "rsync -a up, no change"))
        rtt = None if mode == "lo" else float(mode)
        print(f"**{tree}, {'loopback' if mode == 'lo' else mode + ' ms RTT'}**")
        print()
        print("| what | runs | failed | check | median s | min–max s | rsync / this | median / RTT |")
        print("|---|--:|--:|---|--:|--:|--:|--:|")
        for (m, t, row) in order:
            if (m, t) != (mode, tree):
                continue
            v = rows[(m, t, row)]
            good = sorted(ms for ms, rc in v if rc == 0)
            bad = len(v) - len(good)
            chk = ok.get((m, t, row), "?")
            chk = "ok" if chk == "ok" else "WRONG: " + chk
            row = row.replace("|", "\\|")
            if not good:
                print(f"| {row} | {len(v)} | {bad} | {chk} | – | – | – | – |")
                continue
            md = st.median(good)
            base = rn if "no change" in row else rd if ("down" in row or "get" in row) else rs
            ratio = f"{base / md:.2f}" if base else "–"
            per = f"{md / rtt:.1f}" if rtt else "–"
            print(f"| {row} | {len(v)} | {bad} | {chk} | {md / 1000:.2f} | {good[0] / 1000:.2f}–{good[-1] / 1000:.2f} | {ratio} | {per} |")
        print()
EOF
echo "raw: $RESULTS"
