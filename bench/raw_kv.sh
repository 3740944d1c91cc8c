#!/usr/bin/env bash
# Raw KV put/get throughput and latency against a fresh 1-store cluster, at
# 1 and 64 concurrent clients, through the official Rust client.
# Usage: bench/raw_kv.sh [seconds per level, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tikal/target}"
cargo build --workspace --bins
BIN="$CARGO_TARGET_DIR/debug"
SECS="${1:-10}"
DIR="$(mktemp -d /tmp/tikal-bench-XXXXXX)"
PORT_BASE=$((15000 + RANDOM % 15000))

"$BIN/tikal" playground --data-dir "$DIR" --pd-port "$PORT_BASE" \
    --store-port $((PORT_BASE + 10)) --status-port $((PORT_BASE + 20)) >"$DIR/playground.out" 2>&1 &
PG=$!
trap 'kill -INT $PG 2>/dev/null; wait $PG 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 600); do
    grep -q "Cluster is ready" "$DIR/playground.out" 2>/dev/null && break
    kill -0 $PG 2>/dev/null || { cat "$DIR/playground.out"; exit 1; }
    sleep 0.1
done
grep -q "Cluster is ready" "$DIR/playground.out" || { echo "cluster did not start"; exit 1; }

echo "== raw put (100-byte values) =="
"$BIN/tikal" bench raw --pd "127.0.0.1:$PORT_BASE" --op put --clients 1,64 --duration "$SECS"
echo "== raw get (100-byte values, 10000 keys) =="
"$BIN/tikal" bench raw --pd "127.0.0.1:$PORT_BASE" --op get --clients 1,64 --duration "$SECS"
