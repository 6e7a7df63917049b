#!/usr/bin/env bash
# What authentication costs the gateway path, in one command:
#
#   bash benches/auth.sh
#
# Builds wsgate and the peers (loadgen, mint-tokens, auth-hook) in release
# mode; mints the tokens (one 20-byte user id per token, HS256 with a secret
# made here, RS256/ES256 with the test-only keys of tests/keys/); waits for a
# quiet machine; then runs `loadgen auth`: upgrades on /ws with no auth,
# HS256, RS256, ES256 and a local auth hook (server CPU per upgrade,
# upgrades/s), and idle memory per connection with HS256 vs auth off, every
# configuration in every round, interleaved, medians of ROUNDS; finally the
# criterion micro-benchmark of token verification (benches/auth.rs) for
# comparison. Prints the tables and writes target/bench/auth.md (server logs:
# target/bench/logs/auth-*).
#
# Knobs (environment):
#   ROUNDS=5          rounds (medians are over rounds)
#   WARMUP=0.5        seconds of upgrades before each measured window
#   MEASURE=3         seconds measured per upgrades run
#   CLIENTS=32        concurrent upgrade loops
#   N=10000           idle connections (at most 18,900: 20,000 open files per process)
#   SETTLE=2          seconds before each RSS reading of the idle scenario
#   TOKENS=10000      RS256/ES256 tokens minted (HS256: at least N + 100); upgrades cycle through them
#   CONFIGS=none,hs256,rs256,es256,hook   upgrade configurations (empty: none)
#   IDLE_CONFIGS=none,hs256               idle configurations (empty or N=0: none)
#   IDLE_PRELOAD=auto for comparison, the idle configurations again with this
#                     allocator preloaded into the gateway (LD_PRELOAD): growth
#                     there is closer to the live data, without what glibc malloc
#                     keeps of freed memory. auto: libjemalloc.so.2 if installed;
#                     empty: off
#   SERVER_CPU=0      CPU of the gateway (--cores 1)
#   CLIENT_CPU=1      CPU of the load generator and of the hook server
#   QUIET_LOAD=0.5    wait until the 1-minute /proc/loadavg is at most this ...
#   QUIET_WAIT=1200   ... for at most this many seconds (then measure anyway, and say so)
#   RETRY_BUDGET=300  seconds that re-running disturbed runs may add
#   MICRO=1           0 skips the criterion verify micro-benchmark
#   WSGATE_BIN=       a wsgate binary to measure instead of building this checkout
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-0.5}"
MEASURE="${MEASURE:-3}"
CLIENTS="${CLIENTS:-32}"
N="${N:-10000}"
SETTLE="${SETTLE:-2}"
TOKENS="${TOKENS:-10000}"
CONFIGS="${CONFIGS-none,hs256,rs256,es256,hook}"
IDLE_CONFIGS="${IDLE_CONFIGS-none,hs256}"
IDLE_PRELOAD="${IDLE_PRELOAD-auto}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
QUIET_LOAD="${QUIET_LOAD:-0.5}"
QUIET_WAIT="${QUIET_WAIT:-1200}"
RETRY_BUDGET="${RETRY_BUDGET:-300}"
MICRO="${MICRO:-1}"
OUT="$ROOT/target/bench"
DIR="$OUT/auth"
PEERS="$ROOT/target/peers/release"

for tool in cargo taskset; do
    command -v "$tool" >/dev/null || { echo "benches/auth.sh: $tool is required" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "benches/auth.sh: needs 2 CPUs (gateway on $SERVER_CPU, load generator on $CLIENT_CPU); nproc=$(nproc)" >&2
    exit 2
fi
mkdir -p "$DIR"
rm -f "$OUT/auth-e2e.md"

echo "== build (release)" >&2
own_build=0
if [ -z "${WSGATE_BIN:-}" ]; then
    cargo build --release --bin wsgate
    WSGATE_BIN="$ROOT/target/release/wsgate"
    own_build=1
fi
(cd benches/peers && cargo build --release --locked --bin loadgen --bin mint-tokens --bin auth-hook)
if [ "$MICRO" = 1 ] && [ "$own_build" = 1 ]; then
    cargo bench --bench auth --no-run >"$DIR/micro-build.log" 2>&1 \
        || { echo "benches/auth.sh: benches/auth.rs does not build; MICRO=0" >&2; MICRO=0; }
fi

# The hook column needs a binary with --auth-hook; whether the gateway really
# calls it for every upgrade is checked by loadgen (the hello's user and the
# hook's request count).
help="$("$WSGATE_BIN" --help 2>/dev/null || true)"
if [[ ",$CONFIGS," == *",hook,"* ]] && [[ "$help" != *"--auth-hook <"* ]]; then
    echo "benches/auth.sh: $WSGATE_BIN has no --auth-hook; the hook column is left out" >&2
    CONFIGS="$(echo ",$CONFIGS," | sed 's/,hook,/,/; s/^,//; s/,$//')"
fi

if [ "$IDLE_PRELOAD" = auto ]; then
    IDLE_PRELOAD="$( (ldconfig -p 2>/dev/null || true) | awk '/libjemalloc\.so\.2 / { print $NF; exit }')"
fi
if [ -n "$IDLE_PRELOAD" ] && [ ! -f "$IDLE_PRELOAD" ]; then
    echo "benches/auth.sh: IDLE_PRELOAD=$IDLE_PRELOAD does not exist" >&2
    exit 2
fi

echo "== tokens" >&2
# A fresh HS256 secret (64 hex characters) for this run; test-only RSA/EC keys.
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DIR/hs256.secret"
hs_count=$(( TOKENS > N + 100 ? TOKENS : N + 100 ))
"$PEERS/mint-tokens" --alg HS256 --key "$DIR/hs256.secret" --count "$hs_count" >"$DIR/hs256.tokens"
if [[ ",$CONFIGS,$IDLE_CONFIGS," == *",rs256,"* ]]; then
    "$PEERS/mint-tokens" --alg RS256 --key tests/keys/rsa_private.pem --count "$TOKENS" >"$DIR/rs256.tokens"
fi
if [[ ",$CONFIGS,$IDLE_CONFIGS," == *",es256,"* ]]; then
    "$PEERS/mint-tokens" --alg ES256 --key tests/keys/ec_private.pem --count "$TOKENS" >"$DIR/es256.tokens"
fi

echo "== waiting for a quiet machine (1-min load <= $QUIET_LOAD, at most ${QUIET_WAIT}s)" >&2
waited=0
load="$(cut -d' ' -f1 /proc/loadavg)"
while awk -v l="$load" -v q="$QUIET_LOAD" 'BEGIN { exit !(l > q) }' && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 10
    waited=$((waited + 10))
    load="$(cut -d' ' -f1 /proc/loadavg)"
done
if awk -v l="$load" -v q="$QUIET_LOAD" 'BEGIN { exit !(l > q) }'; then
    quiet="**not quiet**: 1-min load $load after waiting ${waited} s (limit $QUIET_LOAD)"
    echo "benches/auth.sh: the machine is not quiet (load $load); measuring anyway" >&2
else
    quiet="quiet: 1-min load $load at the start (waited ${waited} s)"
fi
loadavg_start="$(cat /proc/loadavg)"
started="$(date -u +%Y-%m-%dT%H:%MZ)"

echo "== auth suite: $ROUNDS rounds" >&2
suite_status=0
taskset -c "$CLIENT_CPU" "$PEERS/loadgen" auth \
    --wsgate "$WSGATE_BIN" --hook "$PEERS/auth-hook" \
    --tokens "$DIR" --keys "$ROOT/tests/keys" \
    --configs "$CONFIGS" --idle-configs "$IDLE_CONFIGS" \
    --rounds "$ROUNDS" --warmup "$WARMUP" --measure "$MEASURE" --clients "$CLIENTS" \
    --idle-conns "$N" --settle "$SETTLE" --idle-preload "$IDLE_PRELOAD" \
    --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" \
    --quiet-wait 60 --retry-budget "$RETRY_BUDGET" \
    --out "$OUT" >/dev/null || suite_status=$?
loadavg_end="$(cat /proc/loadavg)"

micro=""
if [ "$MICRO" = 1 ] && [ "$own_build" = 1 ]; then
    echo "== verify micro-benchmark (criterion, benches/auth.rs)" >&2
    rm -rf target/criterion/auth_verify
    if taskset -c "$CLIENT_CPU" cargo bench --bench auth >"$DIR/micro.log" 2>&1; then
        micro="| algorithm | Verifier::verify median (µs) |"$'\n'"|---|---:|"
        for d in target/criterion/auth_verify/*/; do
            est="$d/new/estimates.json"
            [ -f "$est" ] || continue
            ns="$(grep -o '"median":{"confidence_interval":{[^}]*},"point_estimate":[0-9.e+-]*' "$est" | sed 's/.*"point_estimate"://')"
            micro+=$'\n'"| $(basename "$d") | $(awk -v n="$ns" 'BEGIN { printf "%.2f", n / 1000 }') |"
        done
    else
        micro="(cargo bench --bench auth failed; see $DIR/micro.log)"
    fi
fi

cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes in src/ or Cargo.toml)"
fi
if [ "$own_build" = 0 ]; then
    commit="binary $WSGATE_BIN (WSGATE_BIN), not this checkout ($commit)"
fi
lock_version() { # lock_version LOCKFILE CRATE
    awk -v name="$2" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$1"
}

{
    echo "# wsgate: authentication cost"
    echo
    echo "- date: $started (start of the measurement)"
    echo "- machine: $(nproc) CPUs, ${cpu_model}; kernel $(uname -r)"
    echo "- toolchain: $(rustc --version); the gateway allocates with the system malloc ($(ldd --version 2>&1 | head -1))"
    echo "- wsgate: commit $commit"
    echo "- tokens: jsonwebtoken $(lock_version benches/peers/Cargo.lock jsonwebtoken) (mint-tokens); HS256 secret of 64 bytes made for this run; RS256 (2048-bit) and ES256 (P-256) with tests/keys/ (test-only keys); claims \`sub\` (20 bytes, one per token), \`exp\`, \`iat\`; sent as \`?token=\`"
    echo "- machine load: $quiet; /proc/loadavg at the start \`$loadavg_start\`, at the end \`$loadavg_end\`"
    echo "- command: \`bash benches/auth.sh\` (ROUNDS=$ROUNDS WARMUP=$WARMUP MEASURE=$MEASURE CLIENTS=$CLIENTS N=$N SETTLE=$SETTLE TOKENS=$TOKENS CONFIGS=$CONFIGS IDLE_CONFIGS=$IDLE_CONFIGS IDLE_PRELOAD=$IDLE_PRELOAD RETRY_BUDGET=$RETRY_BUDGET)"
    echo
    if [ -f "$OUT/auth-e2e.md" ]; then cat "$OUT/auth-e2e.md"; else echo "(the suite produced no table)"; fi
    if [ -n "$micro" ]; then
        echo
        echo "### Token verification alone (criterion, \`cargo bench --bench auth\`, on CPU $CLIENT_CPU after the suite)"
        echo
        echo "$micro"
    fi
} >"$OUT/auth.md"

cat "$OUT/auth.md"
echo >&2
echo "written: $OUT/auth.md (logs: $OUT/logs/auth-*)" >&2
exit "$suite_status"
