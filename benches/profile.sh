#!/usr/bin/env bash
# Instruction counts per operation (valgrind callgrind) of one end-to-end
# scenario, wsgate beside the reference servers:
#
#   bash benches/profile.sh [SCENARIO] [COUNT]      (default: fan-in 100000)
#
# For each server: start it under callgrind (pinned to SERVER_CPU, one worker),
# zero the counters once it listens, drive it with `loadgen run --scenario
# SCENARIO --count COUNT --warmup 0` from CLIENT_CPU, dump the counters, and
# divide by COUNT. The Ir of the connections' upgrades and closes is included
# (amortized over COUNT; for `upgrades` it is the operation itself). Callgrind
# counts user-space instructions only: the kernel's share of the CPU (see the
# "server CPU in the kernel" rows of benches/run.sh) is not in these numbers.
#
# Writes target/bench/callgrind/<server>-<scenario>.out (open with
# callgrind_annotate or kcachegrind) and prints, per server, the total Ir per
# operation and the top TOP functions (exclusive Ir per operation).
#
# With STRACE=1 (default) each server is then run again without valgrind, with
# `strace -c -f` attached for the same load, and the system calls per
# operation are printed (io_uring submissions are not system calls: they show
# up as io_uring_enter, however many operations each one carries).
#
# Knobs: SERVERS="wsgate tt fws" (wsgate-epoll: wsgate on monoio's epoll
# driver)  TOP=15  STRACE=1  PORT=18480 (servers listen on 127.0.0.1:PORT)
# SERVER_CPU=0  CLIENT_CPU=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCENARIO="${1:-fan-in}"
COUNT="${2:-100000}"
SERVERS="${SERVERS:-wsgate tt fws}"
TOP="${TOP:-15}"
STRACE="${STRACE:-1}"
PORT="${PORT:-18480}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
OUT="$ROOT/target/bench/callgrind"
PEERS="$ROOT/target/peers/release"

for tool in valgrind callgrind_control callgrind_annotate strace taskset; do
    command -v "$tool" >/dev/null || { echo "benches/profile.sh: $tool is required" >&2; exit 2; }
done
mkdir -p "$OUT"
cargo build --release --bin wsgate >&2
(cd benches/peers && cargo build --release --locked --bin tt-echo --bin fws-echo --bin loadgen) >&2

ADDR="127.0.0.1:$PORT"
WSGATE_ARGS=(--cores 1 --listen "$ADDR" --admin-listen 127.0.0.1:0 --echo-path /echo
    --cookie-secure false --max-message-size 16MiB --drain-timeout 1s)

# Waits for the server's "listening" line in LOG, knocking on its port meanwhile:
# under valgrind, wsgate's io_uring thread can hold valgrind's lock while it
# waits in io_uring_enter, and a connection wakes it.
wait_listening() { # wait_listening LOG
    for _ in $(seq 1 300); do
        grep -q ' event=listening ' "$1" && return 0
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || true
        sleep 0.2
    done
    return 1
}

# Prints the total Ir per operation and the top TOP functions by exclusive Ir
# per operation of a callgrind dump. The threads' and main's entry points show
# up with the whole total even in the exclusive listing: they are skipped.
annotate() { # annotate CALLGRIND_FILE OPS
    callgrind_annotate --inclusive=no --threshold=100 "$1" 2>/dev/null | awk -v ops="$2" -v top="$TOP" '
        / PROGRAM TOTALS/ { total = $1; gsub(",", "", total); total += 0; printf "total: %.0f Ir per operation\n", total / ops; next }
        /^-+$/ { dashes++; next }
        dashes >= 4 && NF >= 2 && n < top {
            ir = $1; gsub(",", "", ir)
            if (ir !~ /^[0-9]+$/ || ir + 0 > 0.995 * total) next
            fn = $0; sub(/^ *[0-9,]+ +(\([ 0-9.%]+\) +)?/, "", fn); sub(/^[^:]*:/, "", fn); sub(/ \[[^]]*\]$/, "", fn)
            printf "%10.0f  %s\n", ir / ops, substr(fn, 1, 140); n++
        }'
}

profile() { # profile NAME ENV... -- PROGRAM ARGS...
    local name="$1"
    shift
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    local log="$OUT/$name-$SCENARIO.log" cg="$OUT/$name-$SCENARIO.out"
    rm -f "$cg"
    env "${envs[@]}" taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$cg" \
        "$@" 2>"$log" &
    local pid=$!
    wait_listening "$log" || { echo "$name did not start: $(tail -5 "$log")" >&2; kill -KILL "$pid"; return 1; }
    callgrind_control --zero "$pid" >/dev/null
    local result
    result="$(taskset -c "$CLIENT_CPU" "$PEERS/loadgen" run --addr "$ADDR" --scenario "$SCENARIO" \
        --count "$COUNT" --warmup 0)"
    sleep 1 # let the server finish the closes
    callgrind_control --dump "$pid" >/dev/null
    # SIGKILL: the dump is written; wsgate's drain does not finish under valgrind.
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    local ops
    ops="$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$result")"
    echo "## $name ($SCENARIO, $ops operations counted by loadgen)"
    # The dump is "<file>.1".
    annotate "$cg.1" "$ops"
    echo
}

syscalls() { # syscalls NAME ENV... -- PROGRAM ARGS...
    local name="$1"
    shift
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    local log="$OUT/$name-$SCENARIO.strace.log" st="$OUT/$name-$SCENARIO.strace"
    env "${envs[@]}" taskset -c "$SERVER_CPU" "$@" 2>"$log" &
    local pid=$!
    wait_listening "$log" || { echo "$name did not start: $(tail -5 "$log")" >&2; kill -KILL "$pid"; return 1; }
    strace -f -c -o "$st" -p "$pid" 2>/dev/null &
    local tracer=$!
    sleep 0.5
    local result ops
    result="$(taskset -c "$CLIENT_CPU" "$PEERS/loadgen" run --addr "$ADDR" --scenario "$SCENARIO" \
        --count "$COUNT" --warmup 0)"
    sleep 1
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    ops="$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$result")"
    echo "## $name: system calls per operation ($SCENARIO, $ops operations; strace -c -f)"
    awk -v ops="$ops" '
        $NF == "total" { printf "%8.2f  total\n", $(NF - 2) / ops; next }
        $1 ~ /^[0-9.]+$/ && NF >= 5 {
            calls = $4; name = $NF
            if (calls / ops >= 0.01) printf "%8.2f  %s\n", calls / ops, name
        }' "$st"
    echo
}

run_all() { # run_all profile|syscalls
    for s in $SERVERS; do
        case "$s" in
        wsgate) "$1" wsgate -- target/release/wsgate "${WSGATE_ARGS[@]}" ;;
        wsgate-epoll) "$1" wsgate-epoll MONOIO_FORCE_LEGACY_DRIVER=1 -- target/release/wsgate "${WSGATE_ARGS[@]}" ;;
        tt) "$1" tokio-tungstenite -- "$PEERS/tt-echo" --listen "$ADDR" ;;
        fws) "$1" fastwebsockets -- "$PEERS/fws-echo" --listen "$ADDR" ;;
        *) echo "benches/profile.sh: unknown server $s (wsgate wsgate-epoll tt fws)" >&2; exit 2 ;;
        esac
    done
}

run_all profile
if [ "$STRACE" = 1 ]; then run_all syscalls; fi
