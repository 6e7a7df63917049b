#!/usr/bin/env bash
# Starts the uWebSockets.js peer (server.js) with wsgate's command-line flags,
# so `fanout scale --peer uws=benches/peers/uws/wsgate-compat.sh` (and
# benches/fanout.sh PEERS=uws) launches it the way it launches wsgate.
# `exec` keeps the process id, so the CPU and RSS the harness reads from
# /proc/<pid> are the node process's (all its threads). Run setup.sh first.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -d "$dir/node_modules/@btc-vision/uwebsockets.js" ]; then
    echo "uws-peer: run $dir/setup.sh first" >&2
    exit 2
fi
if [ -f "$dir/isoc23-shim.so" ]; then
    export LD_PRELOAD="$dir/isoc23-shim.so${LD_PRELOAD:+:$LD_PRELOAD}"
fi
exec node "$dir/server.js" "$@"
