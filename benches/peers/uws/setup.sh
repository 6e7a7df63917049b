#!/usr/bin/env bash
# Installs the uWebSockets.js peer: `npm ci` (the exact version in
# package-lock.json), and on a glibc older than 2.38 (Debian 12: 2.36) makes
# its binary loadable: the binary needs only three C23 functions from 2.38
# (__isoc23_sscanf/strtol/strtoul); weak-glibc238.py marks that version
# requirement weak and isoc23-shim.so (built here, preloaded by
# wsgate-compat.sh) provides them. Called by benches/fanout.sh PEERS=uws.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$dir"
for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "uws-peer: $tool is required" >&2; exit 2; }
done
npm ci --no-audit --no-fund --loglevel=error >&2
rm -f isoc23-shim.so
glibc="$(ldd --version 2>&1 | awk 'NR == 1 { print $NF }')"
if awk -v v="$glibc" 'BEGIN { split(v, p, "."); exit !(p[1] == 2 && p[2] < 38) }'; then
    abi="$(node -p process.versions.modules)"
    bin="node_modules/@btc-vision/uwebsockets.js/uws_linux_$(node -p process.arch)_$abi.node"
    [ -f "$bin" ] || { echo "uws-peer: no $bin for this node" >&2; exit 2; }
    command -v cc >/dev/null || { echo "uws-peer: glibc $glibc < 2.38 and no C compiler for the shim" >&2; exit 2; }
    python3 weak-glibc238.py "$bin" >&2
    cc -O2 -shared -fPIC -o isoc23-shim.so isoc23-shim.c
    echo "uws-peer: glibc $glibc: built isoc23-shim.so for $bin" >&2
fi
LD_PRELOAD="$( [ -f isoc23-shim.so ] && echo "$dir/isoc23-shim.so" )" \
    node -e "require('@btc-vision/uwebsockets.js')" || { echo "uws-peer: uWebSockets.js does not load" >&2; exit 2; }
