# Sourced by the bench scripts: builds the binaries once and starts/stops
# local clusters with `tikal playground`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tikal/target}"
# PROFILE=release benchmarks release-built binaries (default: the dev
# profile tests use, see docs/benchmarks.md).
# TIKAL_BIN=DIR runs binaries built elsewhere (an A/B of two commits).
if [ -n "${TIKAL_BIN:-}" ]; then
    BIN="$TIKAL_BIN"
elif [ "${PROFILE:-debug}" = release ]; then
    cargo build --workspace --bins --release
    BIN="$CARGO_TARGET_DIR/release"
else
    cargo build --workspace --bins
    BIN="$CARGO_TARGET_DIR/debug"
fi

# A PD port below the ephemeral range; stores use +10 and +20.
random_port() { echo $((15000 + RANDOM % 15000)); }

# start_cluster DATA_DIR PORT [STORE_CONFIG_FILE]: PD + $STORES stores
# (default 1), waits until ready; sets PG to the playground's pid.
start_cluster() {
    local dir=$1 port=$2 config=${3:-}
    local extra=()
    [ -n "$config" ] && extra=(--store-config "$config")
    "$BIN/tikal" playground --stores "${STORES:-1}" --data-dir "$dir" --pd-port "$port" \
        --store-port $((port + 10)) --status-port $((port + 20)) "${extra[@]}" >"$dir.out" 2>&1 &
    PG=$!
    for _ in $(seq 1 600); do
        grep -q "Cluster is ready" "$dir.out" 2>/dev/null && return 0
        kill -0 "$PG" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir.out"
    return 1
}

# stop_cluster: Ctrl-C the playground started last and wait for it.
stop_cluster() { kill -INT "$PG" 2>/dev/null || true; wait "$PG" 2>/dev/null || true; }

# store_pid DATA_DIR: the pid of the cluster's first store.
store_pid() { pgrep -f -- "--data-dir=$1/tikv-0" | head -1; }

# wait_voters N: until PD shows the region with N voters and no pending peer.
wait_voters() {
    for _ in $(seq 1 1200); do
        local r
        r="$(curl -s "http://127.0.0.1:$PORT/pd/api/v1/regions" || true)"
        if [ "$(grep -o '"role_name":"Voter"' <<<"$r" | wc -l)" -ge "$1" ] &&
            ! grep -q pending_peers <<<"$r"; then
            return 0
        fi
        sleep 0.1
    done
    echo "region never reached $1 voters" >&2
    return 1
}

# fresh_cluster: PD + $STORES stores (default 1, with the store config file
# $STORE_CONFIG if set) on a random port in a new temp dir, both
# removed on exit; sets DIR and PORT.
fresh_cluster() {
    DIR="$(mktemp -d /tmp/tikal-bench-XXXXXX)"
    PORT="$(random_port)"
    trap 'stop_cluster; rm -rf "$DIR" "$DIR/c.out"' EXIT
    start_cluster "$DIR/c" "$PORT" "${STORE_CONFIG:-}"
}

# ops_at_64 OUTPUT: ops/s of the 64-client line of `tikal bench raw` OUTPUT.
ops_at_64() { awk '$1 == "64" { print $3 }' <<<"$1"; }

# percent A B: B as a percentage of A, one decimal.
percent() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * b / a }'; }

# record_run OUTPUT: prints a measured run's output, adds its 64-client
# ops/s to the round's `ops`, and stops and removes its cluster.
record_run() {
    echo "$1"
    ops+=("$(ops_at_64 "$1")")
    stop_cluster
    rm -rf "$DIR"
}

# end_round N LABEL: the round's second run as a percentage of its first,
# added to `ratios` and printed as "round N: LABEL = R %".
end_round() {
    ratios+=("$(percent "${ops[0]}" "${ops[1]}")")
    echo "round $1: $2 = ${ratios[-1]} %"
}

# print_median RATIO...: the median of rounds' ratios, with the extremes
# (nothing for a single round).
print_median() {
    [ "$#" -gt 1 ] || return 0
    printf '%s\n' "$@" | sort -n |
        awk '{ r[NR] = $1 } END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
              printf "median of %d rounds: %.1f %% (lowest %.1f, highest %.1f)\n", NR, m, r[1], r[NR] }'
}
