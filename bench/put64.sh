#!/usr/bin/env bash
# Raw put throughput at 64 clients, 1 store then 3 stores (3 replicas):
# the 3-replica / 1-replica ratio issue 11 targets, without the 1-client
# and get levels of replication.sh. Each setup is a fresh cluster with a
# 2 s warm-up. Release-built binaries.
# With ROUNDS > 1 the pair is run that many times, one after the other,
# and the median of the rounds' ratios is printed last: on a noisy
# machine one pair says little (see docs/benchmarks.md, session 18).
# Usage: bench/put64.sh [seconds, default 10] [ROUNDS, default 1]
PROFILE=release source "$(dirname "$0")/common.sh"
SECS="${1:-10}"
ROUNDS="${2:-1}"
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    ops=()
    for n in 1 3; do
        STORES=$n fresh_cluster
        wait_voters "$n"
        "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration 2 >/dev/null
        echo "== round $round: $n replica(s): raw put, 64 clients =="
        out="$("$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration "$SECS" | tail -2)"
        record_run "$out"
    done
    end_round "$round" "3 replicas / 1 replica"
done
print_median "${ratios[@]}"
