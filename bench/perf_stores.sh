#!/usr/bin/env bash
# Profiles every store with `perf record` during a timed raw put run at 64
# clients (release build): where a put's CPU goes inside each process.
# One perf.N.data per store in OUT; read them with
#   perf report -i OUT/perf.N.data --children --sort sym --stdio -g none
# With REGIONS, the keys are pre-split into REGIONS regions in the warm-up
# (as bench/sharding.sh), so the profile shows the many-region costs.
# Usage: bench/perf_stores.sh [stores, default 3] [seconds, default 10] [OUT, default /tmp/tikal-perf] [REGIONS]
PROFILE=release source "$(dirname "$0")/common.sh"
N="${1:-3}"
SECS="${2:-10}"
OUT="${3:-/tmp/tikal-perf}"
REGIONS="${4:-0}"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$OUT"
STORES=$N fresh_cluster
wait_voters "$N"
"$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration 2 \
    --split-regions "$REGIONS" >/dev/null
perfs=()
for i in $(seq 0 $((N - 1))); do
    pid="$(pgrep -f -- "--data-dir=$DIR/c/tikv-$i" | head -1)"
    perf record -F 499 --call-graph dwarf,16384 -o "$OUT/perf.$i.data" -p "$pid" \
        >/dev/null 2>&1 &
    perfs+=($!)
done
"$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration "$SECS" | tail -2
kill -INT "${perfs[@]}" 2>/dev/null || true
wait "${perfs[@]}" 2>/dev/null || true
curl -s "http://127.0.0.1:$PORT/pd/api/v1/regions" | grep -o '"leader":{[^}]*}' || true
echo "profiles: $OUT/perf.{0..$((N - 1))}.data (store ids are in the leader line above)"
