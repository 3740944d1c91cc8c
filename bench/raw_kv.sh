#!/usr/bin/env bash
# Raw KV put/get throughput and latency against a fresh 1-store cluster, at
# 1 and 64 concurrent clients, through the official Rust client.
# Usage: bench/raw_kv.sh [seconds per level, default 10]
source "$(dirname "$0")/common.sh"
SECS="${1:-10}"
fresh_cluster
echo "== raw put (100-byte values) =="
"$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 1,64 --duration "$SECS"
echo "== raw get (100-byte values, 10000 keys) =="
"$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op get --clients 1,64 --duration "$SECS"
