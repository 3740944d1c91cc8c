#!/usr/bin/env bash
# Where the CPU goes during a 64-client raw put run, with 1 store and with
# 3 (every write on a Raft quorum): CPU seconds of each process (PD, each
# store, the bench client) over an 8 s window in the middle of a 10 s run,
# from /proc/<pid>/stat (utime + stime, in clock ticks), release build.
# Usage: bench/cpu_split.sh
PROFILE=release source "$(dirname "$0")/common.sh"
HZ="$(getconf CLK_TCK)"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for n in 1 3; do
    STORES=$n fresh_cluster
    wait_voters "$n"
    # Warm up: connections, memtables.
    "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration 2 >/dev/null
    mapfile -t pids < <(pgrep -f -- "--data-dir=$DIR/c/")
    "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration 10 >"$DIR/bench.txt" &
    client=$!
    sleep 1
    declare -A before=()
    for p in "${pids[@]}" "$client"; do before[$p]=$(ticks "$p"); done
    sleep 8
    echo "== $n store(s): CPU over 8 s, % of one core =="
    for p in "${pids[@]}"; do
        name="$(tr '\0' '\n' <"/proc/$p/cmdline" | grep -- '--data-dir=' | sed 's|.*/||' || true)"
        echo "$name: $(( ($(ticks "$p") - before[$p]) * 100 / HZ / 8 ))%"
    done
    echo "bench client: $(( ($(ticks "$client") - before[$client]) * 100 / HZ / 8 ))%"
    wait "$client"
    tail -1 "$DIR/bench.txt"
    stop_cluster
    rm -rf "$DIR"
    unset before
done
