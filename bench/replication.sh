#!/usr/bin/env bash
# Raw put and get throughput and latency at 1 and 64 clients, with 1 replica
# (1 store) and with 3 replicas (3 stores, every write on a Raft quorum of
# 2), release-built binaries, through the official Rust client.
# Usage: bench/replication.sh [seconds per level, default 10]
PROFILE=release source "$(dirname "$0")/common.sh"
SECS="${1:-10}"
for n in 1 3; do
    STORES=$n fresh_cluster
    wait_voters "$n"
    echo "== $n replica(s): raw put (100-byte values) =="
    "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 1,64 --duration "$SECS"
    echo "== $n replica(s): raw get (100-byte values, 10000 keys) =="
    "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op get --clients 1,64 --duration "$SECS"
    stop_cluster
    rm -rf "$DIR"
done
