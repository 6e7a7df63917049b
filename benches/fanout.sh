#!/usr/bin/env bash
# wsgate's pub/sub benchmarks, in one command:
#
#   bash benches/fanout.sh
#
# Builds wsgate and the load generators (benches/peers: `fanout`, and
# `loadgen` for the echo reference) in release mode, then measures:
#
# Topics at scale (issue 21; `fanout scale`, benches/peers/src/scale_bench.rs):
# the gateway `--cores 1` pinned to SERVER_CPU (taskset), the load generator
# (one process, one thread) pinned to CLIENT_CPU; medians of ROUNDS rounds, a
# fresh gateway per step, presence on at the binary's default cap.
#
#   subscribe  N clients (SUB_SIZES) connect first, then all send `sub` to one
#              topic: time from the first `sub` written to the last `ok sub`,
#              connections cut meanwhile, presence lines received (total).
#   cpu        on the same subscribers: fan-out, 1 publisher → N subscribers
#              (FAN_SIZES × PAYLOAD, and BIG_SUBS × BIG_PAYLOAD): server CPU
#              (utime+stime) per delivery counted at the subscribers,
#              deliveries/s, every subscriber checked to get every message once
#              and in order; and echo pipelined-32 (`loadgen run`, gateway with
#              --echo-path /echo) in the same round: the ratio fan-out CPU per
#              delivery ÷ echo CPU per message.
#   memory     RSS growth per subscribed session (MEM_SUBS subscribers), and
#              per subscriber left 1 s after a WARMUP+MEASURE s burst drained.
#   topics     RSS at the start, after publishing once to TOPICS topics nobody
#              subscribes to, and TOPIC_TTL + 2 s later (--topic-ttl is passed
#              only to binaries whose --help lists it); the wsgate_topics gauge.
#
# Older scenarios (`fanout suite`), against `wsgate --cores 2`, load generator
# unpinned (client and server share the two CPUs):
#
#   fanout   1 publisher → SUBS subscribers of one topic, PAYLOAD-byte messages:
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
# target/bench/logs/). A default run takes about 3.5 minutes after the build
# on a build with bounded presence; on one whose presence costs O(N^2)
# (4a0b5ca), subscribing 5,000 takes ~45 s per round and 15,000 does not finish
# within SUB_TIMEOUT (not repeated then): ~8 minutes for topics at scale alone.
#
# Knobs (environment):
#   SCENARIOS=subscribe,cpu,memory,topics,fanout,resume
#   ROUNDS=3  SUB_SIZES=5000,15000  FAN_SIZES=1000,5000,15000  BIG_SUBS=5000
#   BIG_PAYLOAD=1024  MEM_SUBS=5000  TOPICS=30000  TOPIC_TTL=5s  SUB_TIMEOUT=150
#   ECHO_SECONDS=2  PRESENCE_MAX= (passed as --presence-max-members if set and known)
#   SERVER_CPU=0  CLIENT_CPU=1  (topics at scale)
#   RUNS=3  SUBS=5000  THREADS=2 (client threads)  (fanout)
#   PAYLOAD=32  WARMUP=1  MEASURE=3  (both fan-outs)
#   RESUME_SESSIONS=1000  RESUME_CYCLES=20  RESUME_CONCURRENCY=64
#   QUIET_LOAD=0.5  LOAD_WAIT=600  first wait (at most LOAD_WAIT s) for the
#                   1-minute /proc/loadavg to fall to QUIET_LOAD
#   QUIET_WAIT=30   then, before every measurement, seconds to wait for other
#                   processes to leave the CPUs (each window records how much
#                   of either CPU others took; > 5 % is reported as disturbed)
#   WSGATE_BIN=     a wsgate binary to measure instead of building this checkout
#   PEERS=          other servers to measure in the same run, interleaved per
#                   round (after wsgate's steps), in the topics-at-scale table
#                   beside wsgate (a column each, and wsgate ÷ peer): `uws` is
#                   uWebSockets.js on one thread (benches/peers/uws, installed
#                   here with `npm ci`; needs node and npm). Peers run the
#                   subscribe, cpu (with echo) and memory scenarios, not topics.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCENARIOS="${SCENARIOS:-subscribe,cpu,memory,topics,fanout,resume}"
ROUNDS="${ROUNDS:-3}"
SUB_SIZES="${SUB_SIZES:-5000,15000}"
FAN_SIZES="${FAN_SIZES:-1000,5000,15000}"
BIG_SUBS="${BIG_SUBS:-5000}"
BIG_PAYLOAD="${BIG_PAYLOAD:-1024}"
MEM_SUBS="${MEM_SUBS:-5000}"
TOPICS="${TOPICS:-30000}"
TOPIC_TTL="${TOPIC_TTL:-5s}"
SUB_TIMEOUT="${SUB_TIMEOUT:-150}"
ECHO_SECONDS="${ECHO_SECONDS:-2}"
PRESENCE_MAX="${PRESENCE_MAX:-}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
QUIET_LOAD="${QUIET_LOAD:-0.5}"
LOAD_WAIT="${LOAD_WAIT:-600}"
RUNS="${RUNS:-3}"
SUBS="${SUBS:-5000}"
PAYLOAD="${PAYLOAD:-32}"
WARMUP="${WARMUP:-1}"
MEASURE="${MEASURE:-3}"
THREADS="${THREADS:-2}"
RESUME_SESSIONS="${RESUME_SESSIONS:-1000}"
RESUME_CYCLES="${RESUME_CYCLES:-20}"
RESUME_CONCURRENCY="${RESUME_CONCURRENCY:-64}"
QUIET_WAIT="${QUIET_WAIT:-30}"
PEERS="${PEERS:-}"
OUT="$ROOT/target/bench"

for tool in cargo taskset; do
    command -v "$tool" >/dev/null || { echo "benches/fanout.sh: $tool is required" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "benches/fanout.sh: needs 2 CPUs (the gateway on one, the load generator on the other); nproc=$(nproc)" >&2
    exit 2
fi
# Which scenarios go to which harness.
has() { case ",$SCENARIOS," in *",$1,"*) return 0;; *) return 1;; esac; }
scale_list=""
for s in subscribe cpu memory topics; do has "$s" && scale_list="$scale_list${scale_list:+,}$s"; done
suite_list=""
for s in fanout resume; do has "$s" && suite_list="$suite_list${suite_list:+,}$s"; done
for s in ${SCENARIOS//,/ }; do
    case "$s" in subscribe|cpu|memory|topics|fanout|resume) ;; *)
        echo "benches/fanout.sh: unknown scenario $s (subscribe cpu memory topics fanout resume)" >&2; exit 2;;
    esac
done

# Every subscriber is a socket in the load generator and one in the gateway:
# raise the soft limit of open files towards the hard one (children inherit it).
max_subs="$SUBS"
if [ -n "$scale_list" ]; then
    for n in ${SUB_SIZES//,/ } ${FAN_SIZES//,/ } "$BIG_SUBS" "$MEM_SUBS"; do
        [ "$n" -gt "$max_subs" ] && max_subs="$n"
    done
fi
need_fds=$((max_subs + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
    ulimit -n "$need_fds" 2>/dev/null || {
        echo "benches/fanout.sh: needs $need_fds file descriptors per process; ulimit -n is $(ulimit -n)," \
            "the hard limit $(ulimit -Hn)" >&2
        exit 2
    }
fi
# Peers of topics at scale: a launcher each that takes wsgate's flags.
peer_args=()
peer_note=""
for p in ${PEERS//,/ }; do
    case "$p" in
        uws)
            [ -n "$scale_list" ] || { echo "benches/fanout.sh: PEERS=uws needs a topics-at-scale scenario (subscribe, cpu, memory)" >&2; exit 2; }
            echo "== peer uws: npm ci in benches/peers/uws" >&2
            bash "$ROOT/benches/peers/uws/setup.sh"
            peer_args+=(--peer "uWebSockets=$ROOT/benches/peers/uws/wsgate-compat.sh")
            uws_version="$(node -p "require('$ROOT/benches/peers/uws/package-lock.json').packages['node_modules/@btc-vision/uwebsockets.js'].version")"
            peer_note="$peer_note; uWebSockets: \`@btc-vision/uwebsockets.js\` $uws_version (uWebSockets.js binaries) under node $(node --version), one thread (benches/peers/uws/server.js via wsgate-compat.sh, pinned like the gateway; CPU and RSS of the node process)"
            if [ -f "$ROOT/benches/peers/uws/isoc23-shim.so" ]; then
                peer_note="$peer_note, loaded on glibc $(ldd --version 2>&1 | awk 'NR == 1 { print $NF }') through isoc23-shim.so (benches/peers/uws/setup.sh)"
            fi
            ;;
        *) echo "benches/fanout.sh: unknown peer $p (uws)" >&2; exit 2;;
    esac
done
mkdir -p "$OUT/logs"
rm -f "$OUT/fanout-table.md" "$OUT/scale-table.md"

echo "== build (release)" >&2
# WSGATE_BIN: another build to measure (e.g. an older commit's) instead of this checkout's.
if [ -z "${WSGATE_BIN:-}" ]; then
    cargo build --release --bin wsgate
    WSGATE_BIN="$ROOT/target/release/wsgate"
fi
(cd benches/peers && cargo build --release --locked --bin fanout --bin loadgen)

# Flags that binaries before issue 21 do not know: pass only what --help lists.
help="$("$WSGATE_BIN" --help 2>&1 || true)"
knows() { grep -q -- "$1" <<<"$help"; }
scale_args=()
flags_note=""
if knows --topic-ttl; then
    scale_args+=(--topic-ttl "$TOPIC_TTL")
    flags_note="--topic-ttl $TOPIC_TTL to the topics gateway"
else
    flags_note="the binary has no --topic-ttl (topics are never dropped)"
fi
if [ -n "$PRESENCE_MAX" ]; then
    if knows --presence-max-members; then
        scale_args+=(--gateway-arg --presence-max-members --gateway-arg "$PRESENCE_MAX")
        flags_note="$flags_note; --presence-max-members $PRESENCE_MAX"
    else
        flags_note="$flags_note; the binary has no --presence-max-members (PRESENCE_MAX=$PRESENCE_MAX not passed)"
    fi
elif knows --presence-max-members; then
    flags_note="$flags_note; --presence-max-members at its default"
else
    flags_note="$flags_note; the binary has no --presence-max-members (presence lines to every member)"
fi
# TOPIC_TTL + 2 s, in seconds.
ttl_secs="$(awk -v t="$TOPIC_TTL" 'BEGIN {
    if (t ~ /ms$/) { sub(/ms$/, "", t); print t / 1000 }
    else if (t ~ /m$/) { sub(/m$/, "", t); print t * 60 }
    else if (t ~ /h$/) { sub(/h$/, "", t); print t * 3600 }
    else { sub(/s$/, "", t); print t + 0 } }')"
ttl_wait="$(awk -v t="$ttl_secs" 'BEGIN { print t + 2 }')"

echo "== waiting for a quiet machine (1-min load <= $QUIET_LOAD, at most ${LOAD_WAIT}s)" >&2
waited=0
load="$(cut -d' ' -f1 /proc/loadavg)"
while awk -v l="$load" -v q="$QUIET_LOAD" 'BEGIN { exit !(l > q) }' && [ "$waited" -lt "$LOAD_WAIT" ]; do
    sleep 10
    waited=$((waited + 10))
    load="$(cut -d' ' -f1 /proc/loadavg)"
done
if awk -v l="$load" -v q="$QUIET_LOAD" 'BEGIN { exit !(l > q) }'; then
    quiet="**not quiet**: 1-min load $load after waiting ${waited} s (limit $QUIET_LOAD)"
    echo "benches/fanout.sh: the machine is not quiet (load $load); measuring anyway" >&2
else
    quiet="quiet: 1-min load $load at the start (waited ${waited} s)"
fi
loadavg_start="$(cat /proc/loadavg)"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
t_start=$SECONDS

status=0
if [ -n "$scale_list" ]; then
    echo "== topics at scale: $scale_list, $ROUNDS round(s)" >&2
    "$ROOT/target/peers/release/fanout" scale \
        --wsgate "$WSGATE_BIN" --loadgen "$ROOT/target/peers/release/loadgen" \
        --out "$OUT" --rounds "$ROUNDS" --scenarios "$scale_list" \
        --sub-sizes "$SUB_SIZES" --fan-sizes "$FAN_SIZES" \
        --payload "$PAYLOAD" --big-payload "$BIG_PAYLOAD" --big-subs "$BIG_SUBS" \
        --mem-subs "$MEM_SUBS" --warmup "$WARMUP" --measure "$MEASURE" \
        --sub-timeout "$SUB_TIMEOUT" --echo-seconds "$ECHO_SECONDS" \
        --topics "$TOPICS" --ttl-wait "$ttl_wait" \
        --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" \
        --quiet-wait "$QUIET_WAIT" "${scale_args[@]}" "${peer_args[@]}" >/dev/null || status=$?
fi
if [ -n "$suite_list" ]; then
"$ROOT/target/peers/release/fanout" suite \
    --wsgate "$WSGATE_BIN" \
    --out "$OUT" \
    --runs "$RUNS" --threads "$THREADS" --scenarios "$suite_list" \
    --subs "$SUBS" --payload "$PAYLOAD" --warmup "$WARMUP" --measure "$MEASURE" \
    --resume-sessions "$RESUME_SESSIONS" --resume-cycles "$RESUME_CYCLES" \
    --resume-concurrency "$RESUME_CONCURRENCY" \
    --quiet-wait "$QUIET_WAIT" >/dev/null || status=$?
fi
loadavg_end="$(cat /proc/loadavg)"
elapsed=$((SECONDS - t_start))

cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes in src/ or Cargo.toml)"
fi
if [ "$WSGATE_BIN" != "$ROOT/target/release/wsgate" ]; then
    commit="binary $WSGATE_BIN (WSGATE_BIN), not this checkout ($commit)"
fi
{
    echo "# wsgate pub/sub: topics at scale, fan-out and resume"
    echo
    echo "- date: started $started, $elapsed s of measurement"
    echo "- machine: $(nproc) CPUs, ${cpu_model}; kernel $(uname -r); loopback (127.0.0.1)"
    echo "- machine load: $quiet; /proc/loadavg at the start \`$loadavg_start\`, at the end \`$loadavg_end\`"
    echo "- toolchain: $(rustc --version)"
    echo "- wsgate: commit $commit"
    echo "- command: \`bash benches/fanout.sh\` (SCENARIOS=$SCENARIOS ROUNDS=$ROUNDS SUB_SIZES=$SUB_SIZES" \
        "FAN_SIZES=$FAN_SIZES BIG_SUBS=$BIG_SUBS BIG_PAYLOAD=$BIG_PAYLOAD MEM_SUBS=$MEM_SUBS TOPICS=$TOPICS" \
        "TOPIC_TTL=$TOPIC_TTL SUB_TIMEOUT=$SUB_TIMEOUT ECHO_SECONDS=$ECHO_SECONDS PRESENCE_MAX=$PRESENCE_MAX" \
        "RUNS=$RUNS SUBS=$SUBS PAYLOAD=$PAYLOAD WARMUP=$WARMUP" \
        "MEASURE=$MEASURE THREADS=$THREADS RESUME_SESSIONS=$RESUME_SESSIONS RESUME_CYCLES=$RESUME_CYCLES" \
        "RESUME_CONCURRENCY=$RESUME_CONCURRENCY QUIET_WAIT=$QUIET_WAIT PEERS=$PEERS)"
    if [ -n "$scale_list" ]; then
        echo "- topics at scale: \`wsgate --cores 1 --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --cookie-secure false\`" \
            "under \`taskset -c $SERVER_CPU\` (echo: plus \`--echo-path /echo --max-message-size 16MiB\`); $flags_note;" \
            "load generator pinned to CPU $CLIENT_CPU"
        if [ -n "$peer_note" ]; then echo "- peers in the same run: ${peer_note#; }"; fi
    fi
    if [ -n "$suite_list" ]; then
        echo "- fan-out and resume: \`wsgate --cores 2 --cookie-secure false --max-backpressure 16MiB\`, load generator unpinned"
    fi
    echo
    if [ -n "$scale_list" ]; then
        if [ -s "$OUT/scale-table.md" ]; then cat "$OUT/scale-table.md"; else echo "(topics at scale produced no table)"; fi
        echo
    fi
    if [ -n "$suite_list" ]; then
        if [ -s "$OUT/fanout-table.md" ]; then cat "$OUT/fanout-table.md"; else echo "(the benchmark produced no table)"; fi
    fi
} >"$OUT/fanout.md"

cat "$OUT/fanout.md"
echo >&2
echo "written: $OUT/fanout.md (server logs: $OUT/logs/)" >&2
exit "$status"
