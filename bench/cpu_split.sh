#!/usr/bin/env bash
# CPU time per raw put, per process and per thread name, at 64 clients:
# where a put's CPU goes with 1 store and with 3 stores (3 replicas).
# Reads utime+stime from /proc before and after a timed run of
# `tikal bench raw`; the client's own CPU comes from its rusage.
# With REGIONS, both runs are on 3 stores: one region, then the keys
# pre-split into REGIONS regions (the split and PD's leader spreading
# happen in the warm-up, outside the measured run).
# Context switches per put, per thread, beside the CPU.
# Release-built binaries. Usage: bench/cpu_split.sh [seconds, default 10] [REGIONS]
PROFILE=release source "$(dirname "$0")/common.sh"
SECS="${1:-10}"
if [ -n "${2:-}" ]; then setups=("3:0" "3:$2"); else setups=("1:0" "3:0"); fi
HZ=$(getconf CLK_TCK)

# ticks PID: "thread-name ticks switches" per thread of PID (CPU ticks and
# context switches so far), summed by name.
ticks() {
    for t in /proc/"$1"/task/*; do
        # comm may hold spaces: the fields after ") " start at state.
        local stat name sw
        stat="$(cat "$t/stat" 2>/dev/null)" || continue
        name="$(cat "$t/comm" 2>/dev/null | tr ' ' '_')"
        sw="$(awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }' "$t/status" 2>/dev/null)"
        awk -v n="$name" -v sw="${sw:-0}" '{ sub(/^.*\) /, ""); print n, $12 + $13, sw }' <<<"$stat"
    done | awk '{ s[$1] += $2; w[$1] += $3 } END { for (n in s) print n, s[n], w[n] }'
}

for setup in "${setups[@]}"; do
    n=${setup%:*} split=${setup#*:}
    STORES=$n fresh_cluster
    wait_voters "$n"
    "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" --op put --clients 64 --duration 2 \
        --split-regions "$split" | grep '^leaders' || true
    pids=("$(pgrep -f -- "--data-dir=$DIR/c/pd" | head -1)")
    names=(pd)
    for i in $(seq 0 $((n - 1))); do
        pids+=("$(pgrep -f -- "--data-dir=$DIR/c/tikv-$i" | head -1)")
        names+=("tikv-$i")
    done
    for k in "${!pids[@]}"; do ticks "${pids[$k]}" >"$DIR/before.$k"; done
    out="$( { /usr/bin/time -f 'client_cpu %U %S' "$BIN/tikal" bench raw --pd "127.0.0.1:$PORT" \
        --op put --clients 64 --duration "$SECS"; } 2>&1 )"
    for k in "${!pids[@]}"; do ticks "${pids[$k]}" >"$DIR/after.$k"; done
    ops=$(awk '$1 == "64" { print $2 }' <<<"$out")
    echo "== $n replica(s), $((split > 0 ? split : 1)) region(s): raw put, 64 clients, $ops puts =="
    grep -v client_cpu <<<"$out" | tail -2
    echo "process/thread                 CPU µs per put   switches per put"
    for k in "${!pids[@]}"; do
        join -a2 -e0 -o 0,1.2,2.2,1.3,2.3 <(sort "$DIR/before.$k") <(sort "$DIR/after.$k") |
            awk -v p="${names[$k]}" -v hz="$HZ" -v ops="$ops" '
                { d = ($3 - $2) / hz * 1e6 / ops; w = ($5 - $4) / ops; tot += d; wt += w
                  if (d >= 0.5) printf "  %-8s %-20s %6.1f %10.2f\n", p, $1, d, w }
                END { printf "%-8s %-22s %6.1f %10.2f\n", p, "(total)", tot, wt }'
    done
    awk -v ops="$ops" '/client_cpu/ { printf "%-31s %6.1f\n", "client (total)", ($2 + $3) * 1e6 / ops }' <<<"$out"
    stop_cluster
    rm -rf "$DIR"
    trap - EXIT
done
