#!/usr/bin/env bash
# Two nodes on plain, TLS and cluster Redis, in one run (issue 18):
#
#   bash benches/redis_modes.sh
#
# For each mode, a fresh Redis on loopback (MODE=plain: one redis-server;
# tls: one TLS-only redis-server with a CA made here by openssl, the nodes
# on `rediss://` with `--redis-ca-file`; cluster: three primaries and three
# replicas from `redis-cli --cluster create`, the nodes with
# `--redis-cluster`) and two gateways `--cores 1` (A and B); then
# `redis-modes` (benches/peers/src/bin/redis-modes.rs) measures, ROUNDS
# times:
#   - resume: SESSIONS sessions made on A, dropped, resumed on B one after the
#     other: connect → `hello … resumed` p50/p99 (ms), resumes/s;
#   - fan-out: SUBS subscribers on B, one publisher on A (WINDOW `pub`s in
#     flight), MESSAGES messages of PAYLOAD bytes: deliveries/s at the
#     subscribers, publish → delivery p50/p99 (ms).
# Nothing is pinned: the gateways, Redis and the client share the machine.
# Knobs: ROUNDS=1 MODES="plain tls cluster" SESSIONS=200 SUBS=50 MESSAGES=2000 PAYLOAD=32 WINDOW=32
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-1}"; MODES="${MODES:-plain tls cluster}"; SESSIONS="${SESSIONS:-200}"
SUBS="${SUBS:-50}"; MESSAGES="${MESSAGES:-2000}"; PAYLOAD="${PAYLOAD:-32}"; WINDOW="${WINDOW:-32}"
for tool in redis-server redis-cli openssl; do
    command -v "$tool" >/dev/null || { echo "needs $tool (Debian: redis-server, redis-tools, openssl)" >&2; exit 1; }
done
cargo build --release --quiet
(cd benches/peers && cargo build --release --quiet --locked --bin redis-modes)
BENCH="$ROOT/target/peers/release/redis-modes"
WSGATE="$ROOT/target/release/wsgate"
WORK="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { # port [tls args...]
    local port="$1"; shift
    for _ in $(seq 100); do
        redis-cli -p "$port" "$@" PING 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "redis on $port did not answer" >&2; exit 1
}
redis() { # dir port [args...]
    local dir="$1" port="$2"; shift 2
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir" "$@" \
        >"$dir/log" 2>&1 &
    pids+=($!)
}

# The TLS mode's CA and server certificate (for 127.0.0.1).
PKI="$WORK/pki"; mkdir -p "$PKI"
(
    cd "$PKI"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj "/CN=bench ca" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
        -subj "/CN=redis" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -extfile ext.cnf 2>/dev/null
)

# start_redis MODE -> sets REDIS_FLAGS (the gateways' flags)
start_redis() {
    local mode="$1" dir="$WORK/redis-$1-$2"
    case "$mode" in
    plain)
        local p; p="$(free_port)"
        redis "$dir" "$p"; wait_ping "$p"
        REDIS_FLAGS=(--redis "redis://127.0.0.1:$p")
        ;;
    tls)
        local p; p="$(free_port)"
        redis "$dir" 0 --tls-port "$p" --tls-cert-file "$PKI/server.pem" --tls-key-file "$PKI/server.key" \
            --tls-ca-cert-file "$PKI/ca.pem" --tls-auth-clients no
        wait_ping "$p" --tls --cacert "$PKI/ca.pem"
        REDIS_FLAGS=(--redis "rediss://127.0.0.1:$p" --redis-ca-file "$PKI/ca.pem")
        ;;
    cluster)
        local ports=() p
        for i in 1 2 3 4 5 6; do
            p="$(free_port)"; ports+=("$p")
            # The bus port is given: port + 10000 (the default) may not fit.
            redis "$dir/$i" "$p" --cluster-port "$(free_port)" --cluster-enabled yes \
                --cluster-config-file "$dir/$i/nodes.conf" \
                --cluster-node-timeout 2000
        done
        for p in "${ports[@]}"; do wait_ping "$p"; done
        redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 1 \
            --cluster-yes >"$dir/create.log" 2>&1
        for _ in $(seq 100); do
            redis-cli -p "${ports[0]}" CLUSTER INFO | grep -q cluster_state:ok && break
            sleep 0.1
        done
        REDIS_FLAGS=(--redis "redis://127.0.0.1:${ports[0]}" --redis-cluster)
        ;;
    esac
}

# start_gateway NAME -> sets GW_ADDR
start_gateway() {
    local log="$WORK/$1.log"
    : >"$log"
    "$WSGATE" --cores 1 --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --node-id "$1" \
        --cookie-secure false "${REDIS_FLAGS[@]}" 2>"$log" &
    pids+=($!)
    for _ in $(seq 100); do grep -q "event=redis_up" "$log" && break; sleep 0.1; done
    grep -q "event=redis_up" "$log" || { echo "$1 not up on Redis: $(cat "$log")" >&2; exit 1; }
    GW_ADDR="$(sed -n 's/.*event=listening listen=\([^ ]*\).*/\1/p' "$log" | head -1)"
}

stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

echo "# redis modes: $(nproc) CPUs, $(uname -r), $(redis-server --version | cut -d' ' -f3), wsgate $(git rev-parse --short HEAD), $(date -u +%FT%TZ)"
echo "# sessions=$SESSIONS subs=$SUBS messages=$MESSAGES payload=$PAYLOAD window=$WINDOW, unpinned"
for r in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        start_redis "$mode" "$r"
        start_gateway "a-$mode"; A="$GW_ADDR"
        start_gateway "b-$mode"; B="$GW_ADDR"
        echo "round $r $mode $("$BENCH" --a "$A" --b "$B" --sessions "$SESSIONS" --subs "$SUBS" \
            --messages "$MESSAGES" --payload "$PAYLOAD" --window "$WINDOW")"
        stop_all
    done
done
