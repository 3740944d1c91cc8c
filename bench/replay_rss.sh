#!/usr/bin/env bash
# Peak memory of a store during a long replay with the scheduler trace on:
# generates N requests at RATE/s (below capacity, so the run measures the
# steady state, not a backlog), replays them under edf, and reports the
# store's peak RSS (VmHWM), an RSS sample every 10 s, and the trace size.
# Usage: bench/replay_rss.sh [N, default 1000000] [RATE, default 12000]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tikal/target}"
cargo build --workspace --bins
BIN="$CARGO_TARGET_DIR/debug"
N="${1:-1000000}"; RATE="${2:-12000}"
d="$(mktemp -d /tmp/tikal-rss-XXXXXX)"; port=$((15000 + RANDOM % 15000))
"$BIN/tikal" gen-requests --count "$N" --rate "$RATE" --seed 5 -o "$d/req.csv"
printf '[scheduler]\npolicy = "edf"\n' >"$d/store.toml"
"$BIN/tikal" playground --data-dir "$d/c" --pd-port "$port" --store-port $((port + 10)) \
    --status-port $((port + 20)) --store-config "$d/store.toml" >"$d/pg.out" 2>&1 &
PG=$!
trap 'kill -INT $PG 2>/dev/null; wait $PG 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 1 600); do grep -q "Cluster is ready" "$d/pg.out" && break; sleep 0.1; done
pid=$(pgrep -f -- "--data-dir=$d/c/tikv-0" | head -1)
(while kill -0 "$pid" 2>/dev/null; do grep VmRSS "/proc/$pid/status" >>"$d/rss"; sleep 1; done) &
"$BIN/tikal" replay --csv "$d/req.csv" --pd "127.0.0.1:$port"
echo "store peak: $(grep VmHWM /proc/$pid/status)"
echo "RSS every 10 s (kB): $(awk 'NR % 10 == 1 {printf "%s ", $2}' "$d/rss")"
trace="$d/c/tikv-0/replay_trace_server.csv"
echo "trace: $(stat -c %s "$trace") bytes, $(wc -l <"$trace") lines"
"$BIN/tikal" trace-report "edf=$trace"
