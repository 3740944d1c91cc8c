#!/usr/bin/env bash
# Peak memory of a store during a long replay with the scheduler trace on:
# generates N requests at RATE/s (below capacity, so the run measures the
# steady state, not a backlog), replays them under edf, and reports the
# store's peak RSS (VmHWM), an RSS sample every 10 s, and the trace size.
# Usage: bench/replay_rss.sh [N, default 1000000] [RATE, default 12000]
source "$(dirname "$0")/common.sh"
N="${1:-1000000}"; RATE="${2:-12000}"
d="$(mktemp -d /tmp/tikal-rss-XXXXXX)"; port="$(random_port)"
trap 'stop_cluster; rm -rf "$d"' EXIT
"$BIN/tikal" gen-requests --count "$N" --rate "$RATE" --seed 5 -o "$d/req.csv"
printf '[scheduler]\npolicy = "edf"\n' >"$d/store.toml"
start_cluster "$d/c" "$port" "$d/store.toml"
pid="$(store_pid "$d/c")"
(while kill -0 "$pid" 2>/dev/null; do grep VmRSS "/proc/$pid/status" >>"$d/rss"; sleep 1; done) &
"$BIN/tikal" replay --csv "$d/req.csv" --pd "127.0.0.1:$port"
echo "store peak: $(grep VmHWM "/proc/$pid/status")"
echo "RSS every 10 s (kB): $(awk 'NR % 10 == 1 {printf "%s ", $2}' "$d/rss")"
trace="$d/c/tikv-0/replay_trace_server.csv"
echo "trace: $(stat -c %s "$trace") bytes, $(wc -l <"$trace") lines"
"$BIN/tikal" trace-report "edf=$trace"
