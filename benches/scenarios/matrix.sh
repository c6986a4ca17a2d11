#!/usr/bin/env bash
# The link matrix: xfer (UDP, TCP, auto) beside iperf3 BBR and cubic and quinn on links spanning
# 10 Mbit/s-1 Gbit/s, 1-600 ms RTT, 0-10% random loss and bursty loss, then fairness (against one
# TCP BBR and one TCP cubic flow) and short transfers; table and chart by matrix.py.
#
#   benches/scenarios/matrix.sh                       # everything, RUNS=1: about 60 min on 2 cores
#   CELLS="m100-r50-l1 m10-r600-l10" FAIR=0 SHORT=0 benches/scenarios/matrix.sh   # some cells
#
# Cells are run.sh's generic link names (m<Mbit/s>-r<RTT ms>-l<loss %>, or -g<avg %>x<burst> for
# Gilbert-Elliott bursts). Every transfer moves SECS [20] seconds of the link's raw rate (so it
# lasts at least that long at the payload ceiling) and is stopped after CAP [30] s; iperf3 runs
# SECS seconds. Cells up to LIGHT_MBIT [100] Mbit/s run in JOBS [2] runners side by side (separate
# namespaces; those links need little CPU), faster ones alone.
#
# Environment: RUNS [1], SECS [20], CAP [30], JOBS [2], LIGHT_MBIT [100], CELLS (default below),
# CONTENDERS [iperf3-bbr iperf3-cubic xfer-put xfer-udp xfer-auto quic], FAIR [1] (30 s against
# iperf3 BBR and against cubic on 100 Mbit/s, 50 ms, 0%), SHORT [1] (8 s-of-link xfer UDP uploads
# on SHORT_CELLS), OUT [/tmp/xfer-matrix-<date>], XFER_BIN (default: a copy of
# target/release/xfer taken at the start, so that rebuilding during the run changes nothing),
# SKIP_BUILD=1, MX_PREFIX [xfer-mx] (netns prefix, so that two matrices can run at once). Results: $OUT/<part>/results.tsv per runner, $OUT/matrix.md, $OUT/matrix.svg.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

RUNS=${RUNS:-1}
SECS=${SECS:-20}
CAP=${CAP:-30}
JOBS=${JOBS:-2}
LIGHT_MBIT=${LIGHT_MBIT:-100}
FAIR=${FAIR:-1}
SHORT=${SHORT:-1}
CONTENDERS=${CONTENDERS:-"iperf3-bbr iperf3-cubic xfer-put xfer-udp xfer-auto quic"}
OUT=${OUT:-/tmp/xfer-matrix-$(date +%Y%m%d-%H%M%S)}
SKIP_BUILD=${SKIP_BUILD:-0}
MX_PREFIX=${MX_PREFIX:-xfer-mx}   # netns prefix of the runners (<prefix>0, <prefix>1, ...)
# rate (Mbit/s) x RTT (ms) x loss: every corner of 10-1000 Mbit/s, 1-600 ms, 0-10%, plus the
# issue's links, middle values and bursty loss.
CELLS=${CELLS:-"
m10-r1-l0 m10-r1-l10 m10-r20-l0 m10-r50-l1 m10-r100-l5 m10-r200-l2 m10-r600-l0 m10-r600-l10
m10-r100-g2x5
m100-r1-l0 m100-r1-l5 m100-r20-l0 m100-r50-l0 m100-r50-l1 m100-r100-l2 m100-r100-l5 m100-r100-l10
m100-r200-l0 m100-r200-l1 m100-r200-l2 m100-r600-l0 m100-r600-l5 m100-r50-g1x5 m100-r200-g3x10
m400-r150-l0.1 m400-r20-l1
m1000-r1-l0 m1000-r1-l10 m1000-r20-l1 m1000-r100-l0 m1000-r600-l0 m1000-r600-l10 m1000-r50-g1x5
"}
SHORT_CELLS=${SHORT_CELLS:-"m100-r20-l0 m100-r50-l1 m100-r100-l5 m10-r50-l0 m1000-r1-l0"}

mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/matrix.log" >&2; }

if [[ $SKIP_BUILD != 1 ]]; then
    log "building linkem, quic-perf and xfer (release)"
    cargo build --release --quiet --manifest-path "$repo/benches/linkem/Cargo.toml" --target-dir "$repo/target/bench-tools" &&
        cargo build --release --quiet --manifest-path "$repo/benches/quic-perf/Cargo.toml" --target-dir "$repo/target/bench-tools" &&
        (cd "$repo" && cargo build --release --quiet --bin xfer) || { log "build failed"; exit 1; }
fi
if [[ -z ${XFER_BIN:-} ]]; then
    XFER_BIN="$OUT/xfer"
    cp "$repo/target/release/xfer" "$XFER_BIN" || { log "no target/release/xfer"; exit 1; }
fi
export XFER_BIN SKIP_BUILD=1 RUNS CAP
log "xfer binary $XFER_BIN ($(cd "$repo" && git rev-parse --short HEAD)$(cd "$repo" && git diff --quiet HEAD -- src || echo '+changes'))"

rate_of() { sed -n 's/^m\([0-9.]*\)-.*/\1/p' <<<"$1"; }

runner() { # part prefix cells... : one run.sh over some cells
    local part=$1 prefix=$2
    shift 2
    PREFIX=$prefix OUT="$OUT/$part" SCENARIOS="$*" CONTENDERS="$CONTENDERS" XFER_SECS=$SECS DURATION=$SECS \
        FAIRNESS=0 "$here/run.sh" >"$OUT/$part.stdout" 2>"$OUT/$part.stderr"
}

light=() heavy=()
for c in $CELLS; do
    if awk -v r="$(rate_of "$c")" -v l="$LIGHT_MBIT" 'BEGIN { exit !(r <= l) }'; then light+=("$c"); else heavy+=("$c"); fi
done
log "${#light[@]} light cells in $JOBS runners, then ${#heavy[@]} alone"

t0=$(date +%s)
pids=()
for ((j = 0; j < JOBS; j++)); do
    mine=()
    for ((i = j; i < ${#light[@]}; i += JOBS)); do mine+=("${light[$i]}"); done
    ((${#mine[@]})) || continue
    runner "light$j" "$MX_PREFIX$j" "${mine[@]}" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
log "light cells done in $(( $(date +%s) - t0 )) s"
((${#heavy[@]})) && runner heavy "${MX_PREFIX}0" "${heavy[@]}"
log "heavy cells done in $(( $(date +%s) - t0 )) s"

if [[ $FAIR == 1 ]]; then
    for cc in bbr cubic; do
        PREFIX=${MX_PREFIX}0 OUT="$OUT/fair-$cc" SCENARIOS=" " CONTENDERS=" " FAIRNESS=1 FAIR_SECS=30 \
            FAIR_CONTENDERS="xfer-udp" FAIR_AGAINST=$cc "$here/run.sh" >"$OUT/fair-$cc.stdout" 2>"$OUT/fair-$cc.stderr"
    done
    log "fairness done in $(( $(date +%s) - t0 )) s"
fi
if [[ $SHORT == 1 ]]; then
    PREFIX=${MX_PREFIX}0 OUT="$OUT/short" SCENARIOS="$SHORT_CELLS" CONTENDERS="xfer-udp" XFER_SECS=8 CAP=20 \
        FAIRNESS=0 "$here/run.sh" >"$OUT/short.stdout" 2>"$OUT/short.stderr"
    log "short transfers done in $(( $(date +%s) - t0 )) s"
fi

python3 "$here/matrix.py" "$OUT" >"$OUT/matrix.md" && log "table $OUT/matrix.md, chart $OUT/matrix.svg"
