#!/usr/bin/env bash
# Reservation throughput of the PostgreSQL store (issue 12): one and two store handles (as
# two servers) on one database, THREADS threads each, SECS seconds, each op one reservation
# of 1 KiB ended at once (half commit, half release); the embedded SQLite store alongside.
# The test harness starts a private PostgreSQL 15 on 127.0.0.1 (fsync=off).
#
#   bash benches/store_reserve.sh            # SECS=5 THREADS=8
set -euo pipefail
cd "$(dirname "$0")/.."
export SECS=${SECS:-5} THREADS=${THREADS:-8}
timeout 1800 cargo test --test it -- --ignored --exact cluster::store_bench::bench_reservations --nocapture 2>&1 \
    | grep '^|'
