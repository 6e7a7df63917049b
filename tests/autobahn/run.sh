#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for wsgate.
#
# wstest runs in "fuzzingclient" mode (it is the client; wsgate's /echo
# endpoint is the server under test), once per monoio io driver: io_uring
# (default) and epoll (MONOIO_FORCE_LEGACY_DRIVER=1). Everything is on
# loopback and every wait is bounded. See tests/autobahn/README.md.
#
# Environment:
#   WSGATE_BIN                 use this binary instead of `cargo build --release`
#   WSGATE_AUTOBAHN_VENV       wstest virtualenv (default ~/.cache/wsgate/autobahn-venv)
#   WSGATE_PYTHON27            Python 2.7 interpreter (default: pyenv's 2.7.18)
#   WSGATE_AUTOBAHN_BLESS=1    overwrite expected.txt from the io_uring summary
#   WSGATE_AUTOBAHN_DRIVERS    drivers to run (default "io_uring epoll")
#   WSGATE_AUTOBAHN_CASES      comma-separated case patterns for a quick partial
#                              run, e.g. "1.*,7.*" (skips the expected.txt diff)
#   WSGATE_AUTOBAHN_TIMEOUT    seconds allowed for one driver's wstest run (2400)
#
# The gateway runs with its defaults for permessage-deflate (on, 256 B
# minimum), so cases 12.* and 13.* negotiate it and must all be OK.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$ROOT/target/autobahn"
TEMPLATE="$HERE/fuzzingclient.json"
EXPECTED="$HERE/expected.txt"
VENV="${WSGATE_AUTOBAHN_VENV:-${HOME:-/tmp}/.cache/wsgate/autobahn-venv}"
RUN_TIMEOUT="${WSGATE_AUTOBAHN_TIMEOUT:-2400}"
DRIVERS="${WSGATE_AUTOBAHN_DRIVERS:-io_uring epoll}"
CASES="${WSGATE_AUTOBAHN_CASES:-}"
BLESS="${WSGATE_AUTOBAHN_BLESS:-0}"

# autobahntestsuite is Python 2 only. These pins are the full dependency set
# resolved on CPython 2.7.18 (newest releases that still support 2.7), pinned
# so a fresh machine gets exactly what was verified.
VIRTUALENV_PIN="virtualenv==20.15.1"
WSTEST_PINS=(
  autobahntestsuite==0.8.2 autobahn==0.10.9 txaio==2.1.0 Twisted==20.3.0
  zope.interface==5.5.2 Automat==22.10.0 attrs==21.4.0 constantly==15.1.0
  hyperlink==21.0.0 idna==2.10 incremental==22.10.0 PyHamcrest==1.10.1
  six==1.17.0 typing==3.10.0.0 wsaccel==0.6.6 ujson==2.0.3
  klein==20.6.0 Werkzeug==1.0.1 Tubes==0.2.1 enum34==1.1.10
  Jinja2==2.11.3 MarkupSafe==1.1.1
  pyOpenSSL==21.0.0 cryptography==3.3.2 cffi==1.15.1 pycparser==2.21
  ipaddress==1.0.23 service-identity==21.1.0 pyasn1==0.5.1 pyasn1-modules==0.3.0
  unittest2==1.1.0 argparse==1.4.0 linecache2==1.0.0 traceback2==1.4.0
)

log() { printf 'autobahn: %s\n' "$*"; }
die() { printf 'autobahn: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup
GW_PID=""
WSTEST_PID=""
DRIVER_PIDS=()
# shellcheck disable=SC2317  # invoked from the EXIT trap
cleanup() {
  # The drivers' runs (subshells with their own cleanup).
  local pid
  for pid in "${DRIVER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  # wstest runs under `timeout`, which forwards TERM to it.
  if [[ -n "$WSTEST_PID" ]] && kill -0 "$WSTEST_PID" 2>/dev/null; then
    kill -TERM "$WSTEST_PID" 2>/dev/null || true
  fi
  stop_gateway quiet
}
# Turn INT/TERM into a normal exit so the EXIT trap runs; long waits use
# `wait` (interruptible), not foreground children, so this is prompt.
trap 'exit 130' INT
trap 'exit 143' TERM
trap cleanup EXIT

# ---------------------------------------------------------------- wstest
wstest_ok() {
  # The marker records the pin set; a changed pin list or a broken venv
  # (e.g. the base interpreter was rebuilt) triggers a clean reinstall.
  [[ -x "$VENV/bin/wstest" && -f "$VENV/.wsgate-pins" ]] &&
    [[ "$(cat "$VENV/.wsgate-pins")" == "${WSTEST_PINS[*]}" ]] &&
    "$VENV/bin/wstest" --autobahnversion >/dev/null 2>&1
}

install_wstest() {
  if wstest_ok; then return 0; fi
  local py27="${WSGATE_PYTHON27:-}"
  if [[ -z "$py27" ]]; then
    local pyroot
    if command -v pyenv >/dev/null 2>&1; then pyroot=$(pyenv root); else pyroot="${PYENV_ROOT:-$HOME/.pyenv}"; fi
    py27="$pyroot/versions/2.7.18/bin/python"
  fi
  [[ -x "$py27" ]] || die "Python 2.7 not found at $py27 (set WSGATE_PYTHON27)"
  log "installing wstest into $VENV (python: $py27)"
  if ! "$py27" -m virtualenv --version >/dev/null 2>&1; then
    "$py27" -m pip install --disable-pip-version-check -q "$VIRTUALENV_PIN"
  fi
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$py27" -m virtualenv -q "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check --no-python-version-warning -q "${WSTEST_PINS[@]}"
  "$VENV/bin/wstest" --autobahnversion >/dev/null 2>&1 || die "wstest installed but does not run"
  printf '%s' "${WSTEST_PINS[*]}" >"$VENV/.wsgate-pins"
}

# ---------------------------------------------------------------- helpers
# Prints the HTTP status of GET http://127.0.0.1:$1$2, or 000 on error.
http_status() {
  local port=$1 path=$2
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$path" || true
  elif command -v python3 >/dev/null 2>&1; then
    python3 - "$port" "$path" <<'EOF' || echo 000
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]), timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
EOF
  else
    (
      exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
      printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
      read -r -t 5 _ code _ <&3 && echo "$code"
    ) 2>/dev/null || echo 000
  fi
}

GW_LOG=""
GW_PORT=""
start_gateway() {
  local driver=$1
  GW_LOG="$OUT/$driver/wsgate.log"
  local -a envs
  # Default env for io_uring; make sure an inherited legacy flag can't leak in.
  if [[ "$driver" == epoll ]]; then envs=(MONOIO_FORCE_LEGACY_DRIVER=1); else envs=(-u MONOIO_FORCE_LEGACY_DRIVER); fi
  env "${envs[@]}" "$BIN" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --echo-path /echo \
    --max-message-size 16MiB --cookie-secure false --cores 2 >"$GW_LOG" 2>&1 </dev/null &
  GW_PID=$!

  # Wait for the ` event=listening ` line. Only complete lines are looked at
  # (stderr is unbuffered, a line may arrive in several writes).
  local deadline=$((SECONDS + 20)) line=""
  while :; do
    line=$(head -n "$(wc -l <"$GW_LOG")" "$GW_LOG" | grep -m1 -E '(^|[[:space:]])event=listening([[:space:]]|$)' || true)
    [[ -n "$line" ]] && break
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      cat "$GW_LOG" >&2; GW_PID=""; die "$driver: gateway exited before listening"
    fi
    (( SECONDS < deadline )) || { cat "$GW_LOG" >&2; die "$driver: no event=listening line within 20 s"; }
    sleep 0.1
  done
  GW_PORT=$(sed -nE 's/.*[[:space:]]listen="?[^ ":]*:([0-9]+).*/\1/p' <<<"$line")
  [[ -n "$GW_PORT" ]] || die "$driver: cannot parse listen= port from: $line"
  # monoio falls back to epoll silently when io_uring is unavailable; if the
  # gateway reports its driver, make sure we are testing the one we meant.
  local actual
  actual=$(sed -nE 's/.*[[:space:]]driver="?([A-Za-z_]+).*/\1/p' <<<"$line")
  [[ -z "$actual" || "$actual" == "$driver" ]] || die "$driver: gateway runs driver=$actual, not $driver"
  local status; status=$(http_status "$GW_PORT" /ws-health)
  [[ "$status" == 200 ]] || die "$driver: GET /ws-health on :$GW_PORT answered $status, want 200"
  log "$driver: gateway pid $GW_PID listening on 127.0.0.1:$GW_PORT (ws-health 200)"
}

# SIGTERM, then SIGKILL if it has not exited after 5 s.
stop_gateway() {
  [[ -n "$GW_PID" ]] || return 0
  local pid=$GW_PID; GW_PID=""
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    [[ "${1:-}" == quiet ]] || log "WARNING: gateway pid $pid ignored SIGTERM for 5 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Writes the wstest spec for one driver: the committed template (which is
# also the Docker spec) with server, outdir and cases filled in.
write_spec() {
  local driver=$1 spec=$2
  python3 - "$TEMPLATE" "$spec" "wsgate-$driver" "ws://127.0.0.1:$GW_PORT/echo" "$OUT/$driver" "$CASES" <<'EOF'
import json, sys
template, spec, agent, url, outdir, cases = sys.argv[1:]
s = json.load(open(template))
server = dict((s.get("servers") or [{}])[0])
server.update(agent=agent, url=url)
s["servers"] = [server]
s["outdir"] = outdir
s["cases"] = [c.strip() for c in cases.split(",") if c.strip()] if cases else ["*"]
s["exclude-cases"] = []
s["exclude-agent-cases"] = {}
json.dump(s, open(spec, "w"), indent=2)
EOF
}

# Turns index.json into summary.txt (`<case> <behavior> <behaviorClose>`,
# spaces inside a verdict become `_`, e.g. WRONG_CODE), prints counts, and
# exits non-zero if a verdict is not acceptable.
summarize() {
  local driver=$1
  python3 - "$OUT/$driver/index.json" "wsgate-$driver" "$OUT/$driver/summary.txt" <<'EOF'
import collections, json, sys
index, agent, summary = sys.argv[1:]
idx = json.load(open(index))
if agent not in idx:
    sys.exit("index.json has no results for agent %s (agents: %s)" % (agent, list(idx)))
cases = idx[agent]
key = lambda c: tuple(int(p) for p in c.split("."))
rows = [(c, cases[c]["behavior"].replace(" ", "_"), cases[c]["behaviorClose"].replace(" ", "_"))
        for c in sorted(cases, key=key)]
with open(summary, "w") as f:
    f.writelines("%s %s %s\n" % r for r in rows)

bad = []
for c, b, bc in rows:
    major = key(c)[0]
    if b == "FAILED" or bc == "FAILED":
        bad.append((c, b, bc, "FAILED"))
    elif major in (12, 13):   # permessage-deflate: every case must pass
        if b != "OK":
            bad.append((c, b, bc, "12.*/13.* must be OK"))
    elif b not in ("OK", "NON-STRICT", "INFORMATIONAL"):
        bad.append((c, b, bc, "1.*-11.* must be OK/NON-STRICT/INFORMATIONAL"))

fmt = lambda cnt: " ".join("%s=%d" % kv for kv in sorted(cnt.items()))
print("  %d cases; behavior: %s" % (len(rows), fmt(collections.Counter(r[1] for r in rows))))
print("  behaviorClose: %s" % fmt(collections.Counter(r[2] for r in rows)))
for c, b, bc in rows:
    if bc not in ("OK", "INFORMATIONAL"):   # UNCLEAN, WRONG_CODE, ... (recorded in expected.txt)
        print("  close %s: %s (behavior %s, remote close code %s)"
              % (bc, c, b, cases[c].get("remoteCloseCode")))
for c, b, bc, why in bad:
    print("  BAD %s %s %s: %s; see %s" % (c, b, bc, why, cases[c].get("reportfile")))
sys.exit(1 if bad else 0)
EOF
}

# ---------------------------------------------------------------- main
command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v timeout >/dev/null 2>&1 || die "timeout (coreutils) is required"
[[ -f "$TEMPLATE" ]] || die "missing $TEMPLATE"
if [[ "$BLESS" == 1 && -n "$CASES" ]]; then die "WSGATE_AUTOBAHN_BLESS=1 needs a full run (unset WSGATE_AUTOBAHN_CASES)"; fi

install_wstest
log "$("$VENV/bin/wstest" --autobahnversion 2>/dev/null | tr '\n' ' ')"

if [[ -n "${WSGATE_BIN:-}" ]]; then
  BIN="$WSGATE_BIN"
else
  (cd "$ROOT" && "${CARGO:-cargo}" build --release --bin wsgate)
  tdir="${CARGO_TARGET_DIR:-target}"
  [[ "$tdir" == /* ]] || tdir="$ROOT/$tdir"
  BIN="$tdir/release/wsgate"
fi
[[ -x "$BIN" ]] || die "gateway binary not executable: $BIN"
log "gateway binary: $BIN"

# One driver's run: its own gateway and wstest, in a subshell of its own
# (the drivers run side by side: wstest is single-threaded Python and the
# 216 permessage-deflate cases take most of the time). Writes the run's
# verdict line (`<rc> <alive> <status>`) to $OUT/<driver>/verdict.
run_driver() {
  local driver=$1 status=OK
  DRIVER_PIDS=()   # this subshell's cleanup stops its own gateway and wstest only
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap cleanup EXIT
  start_gateway "$driver"

  local spec="$OUT/$driver/fuzzingclient.json"
  write_spec "$driver" "$spec"
  log "$driver: running wstest (limit ${RUN_TIMEOUT}s, log $OUT/$driver/wstest.log)"
  local t0=$SECONDS rc=0
  # Background + wait so a signal to this script is handled promptly.
  (cd "$OUT/$driver" && exec timeout -k 10 "$RUN_TIMEOUT" "$VENV/bin/wstest" -m fuzzingclient -s "$spec") \
    >"$OUT/$driver/wstest.log" 2>&1 &
  WSTEST_PID=$!
  wait "$WSTEST_PID" || rc=$?
  WSTEST_PID=""
  log "$driver: wstest finished in $((SECONDS - t0)) s (exit $rc)"

  # The gateway must have survived the whole fuzzing run.
  local alive=1
  if ! kill -0 "$GW_PID" 2>/dev/null; then
    log "$driver: FAIL gateway process died during the run"; alive=0
  elif [[ "$(http_status "$GW_PORT" /ws-health)" != 200 ]]; then
    log "$driver: FAIL gateway no longer answers 200 on /ws-health"; alive=0
  fi
  stop_gateway
  if (( !alive )); then tail -n 40 "$GW_LOG" | sed 's/^/  wsgate.log: /'; status=FAILED; fi

  if (( rc != 0 )) || [[ ! -f "$OUT/$driver/index.json" ]]; then
    (( rc == 124 )) && log "$driver: FAIL wstest timed out after ${RUN_TIMEOUT}s"
    tail -n 30 "$OUT/$driver/wstest.log" | sed 's/^/  wstest.log: /'
    [[ -f "$OUT/$driver/index.json" ]] || { log "$driver: FAIL no index.json"; echo "$rc $alive FAILED" >"$OUT/$driver/verdict"; return 0; }
    status=FAILED
  fi

  log "$driver: results (summary: $OUT/$driver/summary.txt, report: $OUT/$driver/index.html)"
  summarize "$driver" || status=FAILED
  echo "$rc $alive $status" >"$OUT/$driver/verdict"
}

for driver in $DRIVERS; do
  rm -rf "${OUT:?}/$driver"
  mkdir -p "$OUT/$driver"
  run_driver "$driver" >"$OUT/$driver/run.log" 2>&1 &
  DRIVER_PIDS+=($!)
done
for pid in "${DRIVER_PIDS[@]}"; do wait "$pid" || true; done
DRIVER_PIDS=()

results=()
failed=0
blessed=0
for driver in $DRIVERS; do
  cat "$OUT/$driver/run.log"
  read -r rc alive status <"$OUT/$driver/verdict" 2>/dev/null || { rc=1; alive=0; status=FAILED; }
  n=0
  [[ -f "$OUT/$driver/summary.txt" ]] || { results+=("$driver FAILED"); failed=1; continue; }
  n=$(wc -l <"$OUT/$driver/summary.txt")

  # Bless only a run that completed against a gateway that stayed up.
  if [[ "$BLESS" == 1 && $blessed == 0 && $rc == 0 && $alive == 1 ]]; then
    cp "$OUT/$driver/summary.txt" "$EXPECTED"
    blessed=1
    log "$driver: BLESS wrote $EXPECTED ($n cases)"
  fi
  if [[ -n "$CASES" ]]; then
    log "$driver: partial run (WSGATE_AUTOBAHN_CASES=$CASES), expected.txt diff skipped"
  elif [[ ! -f "$EXPECTED" ]]; then
    log "$driver: FAIL $EXPECTED missing (run with WSGATE_AUTOBAHN_BLESS=1)"; status=FAILED
  elif ! diff -u --label expected.txt --label "$driver/summary.txt" "$EXPECTED" "$OUT/$driver/summary.txt" \
      >"$OUT/$driver/expected.diff"; then
    # A crashed run can differ in hundreds of lines: show the start only.
    head -n 80 "$OUT/$driver/expected.diff"
    log "$driver: FAIL results differ from expected.txt ($(grep -c '^[-+][0-9]' "$OUT/$driver/expected.diff") lines;" \
      "full diff: $OUT/$driver/expected.diff; if intended, re-bless)"
    status=FAILED
  fi

  [[ "$status" == OK ]] || failed=1
  results+=("$driver $status ($n cases)")
done

summary_line=$(IFS=,; echo "${results[*]}")
log "${summary_line//,/, }"
exit "$failed"
