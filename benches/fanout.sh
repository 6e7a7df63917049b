#!/usr/bin/env bash
# wsgate's pub/sub fan-out and resume benchmark, in one command:
#
#   bash benches/fanout.sh
#
# Builds wsgate and the fan-out load generator (benches/peers/src/bin/fanout.rs)
# in release mode, then measures against `wsgate --cores 2` on 127.0.0.1:
#
#   fan-out  1 publisher → SUBS subscribers of one topic, PAYLOAD-byte messages:
#            deliveries/s counted at the subscribers, publishes/s, server CPU
#            per delivery, and whether every subscriber got every message in
#            order (medians of RUNS measured runs on one set of subscribers).
#   resume   RESUME_SESSIONS sessions drop their sockets (no close frame), miss
#            one message, and reconnect with their cookie, RESUME_CYCLES times per
#            run: reconnects/s and server CPU per resume, each one checked for
#            `hello <id> resumed` and the replayed message (medians of RUNS runs,
#            fresh server per run).
#
# Prints the tables and writes target/bench/fanout.md (server logs:
# target/bench/logs/). The server's two runtimes are pinned to the two CPUs
# by wsgate itself; the load generator is not pinned (there is no third CPU).
#
# Knobs (environment):
#   RUNS=3  SUBS=5000  PAYLOAD=32  WARMUP=1  MEASURE=3  THREADS=2 (client threads)
#   RESUME_SESSIONS=1000  RESUME_CYCLES=20  RESUME_CONCURRENCY=64
#   SCENARIOS=fanout,resume
#   QUIET_WAIT=30   seconds to wait for other processes to leave the CPUs first
#   WSGATE_BIN=     a wsgate binary to measure instead of building this checkout
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUNS="${RUNS:-3}"
SUBS="${SUBS:-5000}"
PAYLOAD="${PAYLOAD:-32}"
WARMUP="${WARMUP:-1}"
MEASURE="${MEASURE:-3}"
THREADS="${THREADS:-2}"
RESUME_SESSIONS="${RESUME_SESSIONS:-1000}"
RESUME_CYCLES="${RESUME_CYCLES:-20}"
RESUME_CONCURRENCY="${RESUME_CONCURRENCY:-64}"
SCENARIOS="${SCENARIOS:-fanout,resume}"
QUIET_WAIT="${QUIET_WAIT:-30}"
OUT="$ROOT/target/bench"

command -v cargo >/dev/null || { echo "benches/fanout.sh: cargo is required" >&2; exit 2; }
if [ "$(nproc)" -lt 2 ]; then
    echo "benches/fanout.sh: wsgate is started with --cores 2 and needs 2 CPUs; nproc=$(nproc)" >&2
    exit 2
fi
need_fds=$((SUBS + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
    ulimit -n "$need_fds" 2>/dev/null || {
        echo "benches/fanout.sh: needs $need_fds file descriptors per process; ulimit -n is $(ulimit -n)" >&2
        exit 2
    }
fi
mkdir -p "$OUT/logs"
rm -f "$OUT/fanout-table.md"

echo "== build (release)" >&2
# WSGATE_BIN: another build to measure (e.g. an older commit's) instead of this checkout's.
if [ -z "${WSGATE_BIN:-}" ]; then
    cargo build --release --bin wsgate
    WSGATE_BIN="$ROOT/target/release/wsgate"
fi
(cd benches/peers && cargo build --release --locked --bin fanout)

status=0
"$ROOT/target/peers/release/fanout" suite \
    --wsgate "$WSGATE_BIN" \
    --out "$OUT" \
    --runs "$RUNS" --threads "$THREADS" --scenarios "$SCENARIOS" \
    --subs "$SUBS" --payload "$PAYLOAD" --warmup "$WARMUP" --measure "$MEASURE" \
    --resume-sessions "$RESUME_SESSIONS" --resume-cycles "$RESUME_CYCLES" \
    --resume-concurrency "$RESUME_CONCURRENCY" \
    --quiet-wait "$QUIET_WAIT" >/dev/null || status=$?

cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes in src/ or Cargo.toml)"
fi
if [ "$WSGATE_BIN" != "$ROOT/target/release/wsgate" ]; then
    commit="binary $WSGATE_BIN (WSGATE_BIN), not this checkout ($commit)"
fi
{
    echo "# wsgate pub/sub fan-out and resume"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- machine: $(nproc) CPUs, ${cpu_model}; kernel $(uname -r); loopback (127.0.0.1)"
    echo "- toolchain: $(rustc --version)"
    echo "- wsgate: commit $commit, \`--cores 2 --cookie-secure false --max-backpressure 16MiB\`"
    echo "- command: \`bash benches/fanout.sh\` (RUNS=$RUNS SUBS=$SUBS PAYLOAD=$PAYLOAD WARMUP=$WARMUP" \
        "MEASURE=$MEASURE THREADS=$THREADS RESUME_SESSIONS=$RESUME_SESSIONS RESUME_CYCLES=$RESUME_CYCLES" \
        "RESUME_CONCURRENCY=$RESUME_CONCURRENCY)"
    echo
    if [ -s "$OUT/fanout-table.md" ]; then cat "$OUT/fanout-table.md"; else echo "(the benchmark produced no table)"; fi
} >"$OUT/fanout.md"

cat "$OUT/fanout.md"
echo >&2
echo "written: $OUT/fanout.md (server logs: $OUT/logs/)" >&2
exit "$status"
