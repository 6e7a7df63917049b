#!/usr/bin/env bash
# wsgate's benchmark suite, in one command:
#
#   bash benches/run.sh
#
# Builds wsgate, the reference echo servers (tokio-tungstenite, fastwebsockets)
# and the load generator in release mode; runs the codec micro-benchmarks
# (criterion, benches/codec.rs) and the end-to-end suite (every scenario,
# every server, interleaved, medians of ROUNDS rounds); prints the tables and
# writes them to target/bench/results.md (raw per-run numbers:
# target/bench/results.json, server logs: target/bench/logs/).
#
# Knobs (environment):
#   ROUNDS=5        rounds of the end-to-end suite (medians are over rounds)
#   WARMUP=0.5      seconds of load before each measured window
#   MEASURE=2       seconds measured per run
#   SCENARIOS=all   or a comma list: fan-in,pipelined-32,pipelined-1k,large-64k,ping-pong,upgrades,idle
#   CODEC=1         0 skips the criterion micro-benchmarks
#   SERVER_CPU=0    CPU the servers are pinned to (one worker each)
#   CLIENT_CPU=1    CPU the load generator is pinned to
#   WSGATE_IO_EPOLL=1  0 drops the column of wsgate on its epoll data path
#                   (`--io epoll`) beside its default io_uring one
#   WSGATE_EPOLL=0  1 adds an informational column: wsgate forced onto monoio's
#                   epoll driver (MONOIO_FORCE_LEGACY_DRIVER=1)
#   QUIET_WAIT=60   seconds to wait for other processes to leave the CPUs first
#   WSGATE_BIN=     a wsgate binary to measure instead of building this checkout
#                   (e.g. an older commit's, for a before/after comparison)
#   RETRY_BUDGET=300  seconds that re-running disturbed runs (more than 5% of
#                   either CPU used by other processes) may add to the suite
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-0.5}"
MEASURE="${MEASURE:-2}"
SCENARIOS="${SCENARIOS:-all}"
CODEC="${CODEC:-1}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
WSGATE_EPOLL="${WSGATE_EPOLL:-0}"
WSGATE_IO_EPOLL="${WSGATE_IO_EPOLL:-1}"
QUIET_WAIT="${QUIET_WAIT:-60}"
RETRY_BUDGET="${RETRY_BUDGET:-300}"
OUT="$ROOT/target/bench"
PEERS="$ROOT/target/peers/release"

for tool in cargo taskset; do
    command -v "$tool" >/dev/null || { echo "benches/run.sh: $tool is required" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "benches/run.sh: needs 2 CPUs (server on $SERVER_CPU, load generator on $CLIENT_CPU); nproc=$(nproc)" >&2
    exit 2
fi
mkdir -p "$OUT"

echo "== build (release)" >&2
# WSGATE_BIN: another build to measure (e.g. an older commit's) instead of this checkout's.
if [ -z "${WSGATE_BIN:-}" ]; then
    cargo build --release --bin wsgate
    WSGATE_BIN="$ROOT/target/release/wsgate"
fi
(cd benches/peers && cargo build --release --locked --bin tt-echo --bin fws-echo --bin loadgen --bin codec-table)
if [ "$CODEC" = 1 ]; then
    cargo bench --bench codec --no-run
fi

if [ "$CODEC" = 1 ]; then
    echo "== codec micro-benchmarks (criterion)" >&2
    rm -rf target/criterion
    taskset -c "$CLIENT_CPU" cargo bench --bench codec >"$OUT/codec.log" 2>&1 \
        || { tail -30 "$OUT/codec.log" >&2; exit 1; }
    "$PEERS/codec-table" target/criterion >"$OUT/codec.md"
fi

echo "== end-to-end suite: $ROUNDS rounds, ${WARMUP}s warm-up + ${MEASURE}s per run" >&2
suite_status=0
extra=()
if [ "$WSGATE_IO_EPOLL" = 1 ]; then extra+=(--with-wsgate-io-epoll); fi
if [ "$WSGATE_EPOLL" = 1 ]; then extra+=(--with-wsgate-epoll); fi
taskset -c "$CLIENT_CPU" "$PEERS/loadgen" suite \
    --wsgate "$WSGATE_BIN" \
    --tt "$PEERS/tt-echo" \
    --fws "$PEERS/fws-echo" \
    --rounds "$ROUNDS" --warmup "$WARMUP" --measure "$MEASURE" \
    --scenarios "$SCENARIOS" \
    --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" \
    --quiet-wait "$QUIET_WAIT" --retry-budget "$RETRY_BUDGET" "${extra[@]}" \
    --out "$OUT" >/dev/null || suite_status=$?

lock_version() { # lock_version LOCKFILE CRATE
    awk -v name="$2" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$1"
}
cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes in src/ or Cargo.toml)"
fi
if [ "$WSGATE_BIN" != "$ROOT/target/release/wsgate" ]; then
    commit="binary $WSGATE_BIN (WSGATE_BIN), not this checkout ($commit)"
fi
peers_lock="benches/peers/Cargo.lock"

{
    echo "# wsgate benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- machine: $(nproc) CPUs, ${cpu_model}; kernel $(uname -r)"
    echo "- toolchain: $(rustc --version)"
    echo "- wsgate: commit $commit"
    echo "- peers (benches/peers/Cargo.lock): tokio-tungstenite $(lock_version "$peers_lock" tokio-tungstenite)" \
        "(tungstenite $(lock_version "$peers_lock" tungstenite)), fastwebsockets $(lock_version "$peers_lock" fastwebsockets)" \
        "(hyper $(lock_version "$peers_lock" hyper), hyper-util $(lock_version "$peers_lock" hyper-util))," \
        "tokio $(lock_version "$peers_lock" tokio)"
    echo "- command: \`bash benches/run.sh\` (ROUNDS=$ROUNDS WARMUP=$WARMUP MEASURE=$MEASURE SCENARIOS=$SCENARIOS WSGATE_IO_EPOLL=$WSGATE_IO_EPOLL WSGATE_EPOLL=$WSGATE_EPOLL RETRY_BUDGET=$RETRY_BUDGET)"
    echo
    echo "## End to end"
    echo
    if [ -f "$OUT/e2e.md" ]; then cat "$OUT/e2e.md"; else echo "(the suite produced no table)"; fi
    if [ "$CODEC" = 1 ]; then
        echo
        echo "## Codec micro-benchmarks"
        echo
        echo "Median time per operation (criterion; criterion $(lock_version Cargo.lock criterion)," \
            "tungstenite $(lock_version Cargo.lock tungstenite)) and payload throughput." \
            "header_parse: the header of a masked client frame with that payload."
        echo
        cat "$OUT/codec.md"
    fi
} >"$OUT/results.md"

cat "$OUT/results.md"
echo >&2
echo "written: $OUT/results.md (raw: $OUT/results.json, logs: $OUT/logs/)" >&2
exit "$suite_status"
