#!/usr/bin/env bash
# Raw put throughput at 64 clients on 3 stores (3 replicas each region):
# all keys in one region, then the same keys pre-split into many regions
# whose leaders PD spreads over the stores. Release-built binaries, the
# official Rust client; prints the leaders per store before each run.
# With ROUNDS > 1 the pair is run that many times and the median of the
# rounds' ratios (many regions / one region) is printed last, as
# bench/put64.sh does.
# Usage: bench/sharding.sh [seconds, default 10] [regions, default 48] [ROUNDS, default 1]
PROFILE=release source "$(dirname "$0")/common.sh"
SECS="${1:-10}"
REGIONS="${2:-48}"
ROUNDS="${3:-1}"
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    ops=()
    for split in 0 "$REGIONS"; do
        STORES=3 fresh_cluster
        wait_voters 3
        echo "== round $round: 3 stores, raw put (100-byte values, 10000 keys), split into $((split > 0 ? split : 1)) region(s) =="
        out="$("$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration "$SECS" \
            --split-regions "$split")"
        record_run "$out"
    done
    end_round "$round" "$REGIONS regions / 1 region"
done
print_median "${ratios[@]}"
