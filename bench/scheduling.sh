#!/usr/bin/env bash
# Replays one overload CSV (offered load ~2x what the store sustains) under
# fcfs, threshold and edf, each on a fresh 1-store cluster, and compares the
# server traces: miss rate and delay per priority per policy.
# Usage: [POLICIES="fcfs threshold edf"] [VALUE_SIZE=100] [QUOTA=1MB] [THREAD_NICE=0]
#        bench/scheduling.sh [requests, default 100000] [out dir]
# QUOTA is the store's `[quota] foreground-write-bandwidth` for every policy
# (calibration included): a store whose disk takes in that many bytes of
# writes per second. Without it, on a 2-core machine shared with the replay
# client, gRPC handling saturates the CPU before the write path does and the
# backlog forms in sockets and task queues, where no admission policy can
# order it (docs/benchmarks.md). QUOTA=0 runs unthrottled.
# THREAD_NICE is the store's `[raftstore] thread-nice` for every policy.
# Under sustained overload `threshold` (the seed's v0) logs a check-delay row
# per waiting request every 5 ms (its trace reached 17 GB at 20,000
# requests), so this script sets `[scheduler.threshold] trace-every-check =
# false`: one check-delay row per delayed request, the same decisions and the
# same final rows. TRACE_EVERY_CHECK=true restores the seed's trace.
source "$(dirname "$0")/common.sh"
N="${1:-100000}"
OUT="${2:-$(mktemp -d /tmp/tikal-sched-XXXXXX)}"
mkdir -p "$OUT"
VALUE_SIZE="${VALUE_SIZE:-100}"
THREAD_NICE="${THREAD_NICE:-0}"
QUOTA="${QUOTA:-1MB}"
TRACE_EVERY_CHECK="${TRACE_EVERY_CHECK:-false}"

# run_cluster POLICY DATA_DIR PORT: a fresh cluster whose store uses POLICY.
run_cluster() {
    printf '[scheduler]\npolicy = "%s"\n[scheduler.threshold]\ntrace-every-check = %s\n[raftstore]\nthread-nice = %d\n[quota]\nforeground-write-bandwidth = "%s"\n' \
        "$1" "$TRACE_EVERY_CHECK" "$THREAD_NICE" "$QUOTA" >"$2.toml"
    start_cluster "$2" "$3" "$2.toml"
}

# 1. Capacity: what the store sustains when flooded (fcfs, no queueing policy).
port="$(random_port)"
"$BIN/tikal" gen-requests --count 40000 --rate 200000 --seed 1 --value-size "$VALUE_SIZE" -o "$OUT/calibrate.csv"
run_cluster fcfs "$OUT/calibrate" "$port"
cal=$("$BIN/tikal" replay --csv "$OUT/calibrate.csv" --pd "127.0.0.1:$port")
stop_cluster
echo "calibration: $cal"
capacity=$(echo "$cal" | sed -n 's/.*OPS: \([0-9.]*\),.*/\1/p')
rate=$(awk -v c="$capacity" 'BEGIN { printf "%d", 2 * c }')
echo "store sustains ~$capacity writes/s; offering $rate/s"

# 2. One overload CSV for all policies.
"$BIN/tikal" gen-requests --count "$N" --rate "$rate" --burstiness 4 --seed 42 --value-size "$VALUE_SIZE" \
    -o "$OUT/overload.csv"

# 3. Replay it under each policy; keep each store's trace.
POLICIES="${POLICIES:-fcfs threshold edf}"
for policy in $POLICIES; do
    port="$(random_port)"
    run_cluster "$policy" "$OUT/$policy" "$port"
    echo "== $policy =="
    "$BIN/tikal" replay --csv "$OUT/overload.csv" --pd "127.0.0.1:$port" | tee "$OUT/$policy.replay"
    pid="$(store_pid "$OUT/$policy")"
    grep VmHWM "/proc/$pid/status" | tee "$OUT/$policy.rss" || true
    stop_cluster
    cp "$OUT/$policy/tikv-0/replay_trace_server.csv" "$OUT/$policy.csv"
done

# 4. Compare.
traces=()
for policy in $POLICIES; do traces+=("$policy=$OUT/$policy.csv"); done
"$BIN/tikal" trace-report "${traces[@]}" --html "$OUT/report.html" | tee "$OUT/report.txt"
echo "results in $OUT (report.html has the charts)"
