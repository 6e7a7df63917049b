#!/usr/bin/env bash
# The events hook (issue 15), in one command:
#
#   bash benches/events.sh
#
# One gateway core on SERVER_CPU (`--cores 1`); the load generator and a
# trivial events backend (`events-bench backend`: answers every `send` with
# `{"reply":"ok"}`) on CLIENT_CPU. Prints, for ROUNDS rounds:
#   - send-reply: CONNS WebSockets on /ws, each with DEPTH `send`s in flight:
#     sends/s, the round trip send → reply p50/p99, server CPU per send;
#   - idle-ws: IDLE WebSockets on /ws that said hello and stay idle, once with
#     `--events-hook` and once without: RSS growth per connection and the idle
#     gateway's CPU.
# Knobs: ROUNDS=3 CONNS=50 DEPTH=16 MEASURE=3 (seconds) IDLE=5000 SERVER_CPU=0 CLIENT_CPU=1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-3}"; CONNS="${CONNS:-50}"; DEPTH="${DEPTH:-16}"; MEASURE="${MEASURE:-3}"
IDLE="${IDLE:-5000}"; SERVER_CPU="${SERVER_CPU:-0}"; CLIENT_CPU="${CLIENT_CPU:-1}"
cargo build --release --quiet
(cd benches/peers && cargo build --release --quiet --locked --bin events-bench)
BENCH="$ROOT/target/peers/release/events-bench"
WSGATE="$ROOT/target/release/wsgate"
ulimit -n 19000 2>/dev/null || true
LOGS="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$LOGS"; }
trap cleanup EXIT

taskset -c "$CLIENT_CPU" "$BENCH" backend --listen 127.0.0.1:0 2>"$LOGS/backend.log" &
pids+=($!)
for _ in $(seq 50); do grep -q "event=listening" "$LOGS/backend.log" && break; sleep 0.1; done
HOOK="$(sed -n 's/.*listen=\([^ ]*\).*/\1/p' "$LOGS/backend.log" | head -1)"
[ -n "$HOOK" ] || { echo "backend did not start" >&2; exit 1; }

# start_gateway LOGFILE [extra flags...] -> sets GW_PID, GW_ADDR
start_gateway() {
    local log="$1"; shift
    taskset -c "$SERVER_CPU" "$WSGATE" --cores 1 --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --cookie-secure false --max-connections 19000 "$@" 2>"$log" &
    GW_PID=$!
    pids+=("$GW_PID")
    for _ in $(seq 100); do grep -q "event=listening" "$log" && break; sleep 0.1; done
    GW_ADDR="$(sed -n 's/.*event=listening listen=\([^ ]*\).*/\1/p' "$log" | head -1)"
    [ -n "$GW_ADDR" ] || { echo "gateway did not start: $(cat "$log")" >&2; exit 1; }
}
stop_gateway() { kill -9 "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; }

echo "# events hook benchmark: $(nproc) CPUs, $(uname -r), gateway on CPU $SERVER_CPU, clients and backend on CPU $CLIENT_CPU, $(date -u +%FT%TZ)"
for r in $(seq "$ROUNDS"); do
    start_gateway "$LOGS/gw.log" --events-hook "http://$HOOK/events"
    echo "round $r $(taskset -c "$CLIENT_CPU" "$BENCH" rtt --addr "$GW_ADDR" --pid "$GW_PID" --conns "$CONNS" --depth "$DEPTH" --seconds "$MEASURE")"
    stop_gateway
    start_gateway "$LOGS/gw.log" --events-hook "http://$HOOK/events"
    echo "round $r hook    $(taskset -c "$CLIENT_CPU" "$BENCH" idle --addr "$GW_ADDR" --pid "$GW_PID" --conns "$IDLE")"
    stop_gateway
    start_gateway "$LOGS/gw.log"
    echo "round $r no-hook $(taskset -c "$CLIENT_CPU" "$BENCH" idle --addr "$GW_ADDR" --pid "$GW_PID" --conns "$IDLE")"
    stop_gateway
done
