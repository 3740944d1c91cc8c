#!/usr/bin/env bash
# Transactional vs raw put throughput and latency on the same fresh 1-store
# cluster, at 1 and 64 concurrent clients, through the official Rust client.
# A transactional put is a whole transaction (begin, put, commit).
# Usage: bench/txn_kv.sh [seconds per level, default 10]
source "$(dirname "$0")/common.sh"
SECS="${1:-10}"
fresh_cluster
echo "== raw put (100-byte values) =="
"$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 1,64 --duration "$SECS"
for mode in optimistic pessimistic async-commit one-pc; do
    echo "== txn put, $mode (100-byte values) =="
    "$BIN/tikal" bench txn --pd "127.0.0.1:$PORT" --op put --mode "$mode" --clients 1,64 \
        --duration "$SECS"
done
echo "== txn snapshot get (100-byte values, 10000 keys) =="
"$BIN/tikal" bench txn --pd "127.0.0.1:$PORT" --op get --clients 1,64 --duration "$SECS"
