#!/usr/bin/env bash
# Builds the decoder fuzz targets with libFuzzer on the stable toolchain and runs them.
#
#   fuzz/run.sh                      every target, 1,000,000 inputs each (what CI runs),
#                                    one target per core at a time (FUZZ_JOBS=N to change)
#   fuzz/run.sh --runs N [TARGET..]  N inputs per target
#   fuzz/run.sh --time S [TARGET..]  S seconds per target (the long run), until a crash
#   fuzz/run.sh ... -- ARGS          extra libFuzzer flags, e.g. -- -jobs=2 -workers=2
#
# Each target reads fuzz/seeds/TARGET/ (checked in) and grows fuzz/corpus/TARGET/ (ignored);
# a crash or timeout writes fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")"

limit=(-runs=1000000)
targets=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) limit=(-runs="$2"); shift 2 ;;
        --time) limit=(-max_total_time="$2"); shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) targets+=("$1"); shift ;;
    esac
done

# What `cargo fuzz build --sanitizer none` passes, all stable codegen flags: libFuzzer's coverage
# counters, comparison tracing and the PC table, plus the checks of a debug build.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
host=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
cargo build --locked --release --target "$host" --target-dir target --bin decoders
bin="target/$host/release/decoders"

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(XFER_FUZZ_TARGET=list "$bin" 2>/dev/null)
fi

# One target per core at a time: each still runs its full number of inputs.
jobs=${FUZZ_JOBS:-$(nproc)}
run_one() { # target
    local t=$1 start runs
    mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
    start=$(date +%s)
    XFER_FUZZ_TARGET="$t" "$bin" "${limit[@]}" -timeout=10 -use_value_profile=1 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "${extra[@]}" "corpus/$t" "seeds/$t" >"artifacts/$t/log" 2>&1 || {
        tail -n 60 "artifacts/$t/log"
        echo "fuzz: $t FAILED (artifacts in fuzz/artifacts/$t/)"
        return 1
    }
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "artifacts/$t/log")
    echo "fuzz: $t: ${runs:-?} inputs in $(($(date +%s) - start)) s, corpus $(ls "corpus/$t" | wc -l) files"
}

failed=0
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
exit "$failed"
