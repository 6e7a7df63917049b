#!/usr/bin/env bash
# Interrupts per operation on the server's and the load generator's CPU
# (/proc/interrupts: RES rescheduling IPIs, CAL function-call IPIs, LOC timer)
# and server CPU per operation, for wsgate on io_uring, wsgate on monoio's epoll
# driver and fastwebsockets, one scenario after the other:
#
#   bash benches/irqs.sh [SCENARIO...]      (default: fan-in upgrades)
#
# Each run: a fresh server pinned to SERVER_CPU, `loadgen run` for SECONDS on
# CLIENT_CPU. No build: run benches/run.sh (or the cargo builds) first.
# Knobs: SECONDS_PER_RUN=3  PORT=18484  SERVER_CPU=0  CLIENT_CPU=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECS="${SECONDS_PER_RUN:-3}"
PORT="${PORT:-18484}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
ADDR="127.0.0.1:$PORT"
PEERS="$ROOT/target/peers/release"
[ "$#" -gt 0 ] || set -- fan-in upgrades

# "RES=<server CPU>,<client CPU> CAL=... LOC=...", in this order.
irqs() {
    awk -v s="$SERVER_CPU" -v c="$CLIENT_CPU" '/^ *(RES|CAL|LOC):/ {
        gsub(":", "", $1); n[$1] = $(s + 2) "," $(c + 2) }
        END { printf "RES=%s CAL=%s LOC=%s", n["RES"], n["CAL"], n["LOC"] }' /proc/interrupts
}

run() { # run NAME SCENARIO ENV... -- PROGRAM ARGS...
    local name="$1" sc="$2"
    shift 2
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    env "${envs[@]}" taskset -c "$SERVER_CPU" "$@" 2>/dev/null &
    local pid=$!
    sleep 0.5
    local a b out
    a="$(irqs)"
    out="$(taskset -c "$CLIENT_CPU" "$PEERS/loadgen" run --addr "$ADDR" --scenario "$sc" --pid "$pid" \
        --seconds "$SECS" --warmup 0)"
    b="$(irqs)"
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v name="$name" -v sc="$sc" -v a="$a" -v b="$b" -v out="$out" 'BEGIN {
        n = split(out, f, " ")
        for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
        split(a, A, " "); split(b, B, " ")
        line = sprintf("| %s | %s | %d | %.2f |", sc, name, v["ops"], v["cpu"])
        for (i = 1; i <= 3; i++) {
            split(A[i], x, "[=,]"); split(B[i], y, "[=,]")
            line = line sprintf(" %.3f | %.3f |", (y[2] - x[2]) / v["ops"], (y[3] - x[3]) / v["ops"])
        }
        print line
    }'
    sleep 0.3
}

WSGATE=(target/release/wsgate --cores 1 --listen "$ADDR" --admin-listen 127.0.0.1:0 --echo-path /echo
    --cookie-secure false --max-message-size 16MiB)
echo "| scenario | server | ops | server CPU µs/op | RES/op server CPU | RES/op client CPU | CAL/op server CPU | CAL/op client CPU | LOC/op server CPU | LOC/op client CPU |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for sc in "$@"; do
    run wsgate "$sc" -- "${WSGATE[@]}"
    run "wsgate (epoll driver)" "$sc" MONOIO_FORCE_LEGACY_DRIVER=1 -- "${WSGATE[@]}"
    run fastwebsockets "$sc" -- "$PEERS/fws-echo" --listen "$ADDR"
done
