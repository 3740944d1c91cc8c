#!/usr/bin/env bash
# Raw put throughput at 64 clients, 1 store then 3 stores (3 replicas):
# the 3-replica / 1-replica ratio issue 11 targets, without the 1-client
# and get levels of replication.sh. Each setup is a fresh cluster with a
# 2 s warm-up. Release-built binaries.
# Usage: bench/put64.sh [seconds, default 10]
PROFILE=release source "$(dirname "$0")/common.sh"
SECS="${1:-10}"
for n in 1 3; do
    STORES=$n fresh_cluster
    wait_voters "$n"
    "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration 2 >/dev/null
    echo "== $n replica(s): raw put, 64 clients =="
    "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration "$SECS" | tail -2
    stop_cluster
    rm -rf "$DIR"
done
