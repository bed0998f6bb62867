#!/usr/bin/env bash
# The first streamed byte, held side by side: one mock, nginx, and two Tollgates (A and B, e.g.
# the last session's build and this one) started once and asked in turn, ROUNDS rounds of N
# streams each (ttfb.py, the benchmark's paced stream). run.sh's first-byte figure, from one
# gateway in five rounds of ten, moves by ~0.1 ms from run to run; here every round asks the
# direct call (before and after), nginx, A and B within seconds of each other, so a change of
# a few tens of microseconds shows as A above B round after round.
#
#   tests/bench/firstbyte.sh [--no-build]
#
# Environment:
#   A_BIN, A_WASM    gateway A and its openai plugin (default: this tree's build, both A and B)
#   B_BIN, B_WASM    gateway B and its openai plugin
#   A_EXTRA, B_EXTRA top-level configuration lines for A or B (e.g. worker_poll_us = 1000)
#   ROUNDS           rounds (default 4); N  streams per target per round (default 50)
#   KEEP_AWAKE=1     two busy loops at the lowest priority (nice 19) run during the rounds, so
#                    neither core ever idles: what the figures lose then is what waking an idle
#                    core costs (on a virtual machine, an idle vCPU gives its core back to the
#                    host), for every target alike
#
# Prints, per round, each target's median and p90 time to the first byte (ms) and each gateway's
# and nginx's figure added over the mean of the two direct ones. Everything started here is
# stopped by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=5
export PREFETCH=0 SESSIONS=10

# shellcheck source=tests/bench/args.sh
source "$HERE/args.sh"
# shellcheck source=tests/bench/lib.sh
source "$HERE/lib.sh"

[ "$BUILD" = 1 ] && build
A_BIN=${A_BIN:-$GW_BIN} A_WASM=${A_WASM:-$PLUGIN_WASM}
B_BIN=${B_BIN:-$GW_BIN} B_WASM=${B_WASM:-$PLUGIN_WASM}
ensure_tools
for t in "$A_BIN" "$A_WASM" "$B_BIN" "$B_WASM"; do [ -e "$t" ] || die "missing $t"; done

start_mock
start_nginx
GW_NODE=a GW_BIN=$A_BIN PLUGIN_WASM=$A_WASM GW_EXTRA_CONFIG=${A_EXTRA:-} start_gateway
A_URL=$GW_URL A_KEY=$GW_KEY
GW_NODE=b GW_BIN=$B_BIN PLUGIN_WASM=$B_WASM GW_EXTRA_CONFIG=${B_EXTRA:-} start_gateway
B_URL=$GW_URL B_KEY=$GW_KEY

if [ "${KEEP_AWAKE:-0}" = 1 ]; then
  for _ in 1 2; do
    timeout 3600 nice -n 19 sh -c 'while :; do :; done' &
    STARTED_PIDS+=("$!")
  done
  log "two busy loops at nice 19 keep the cores awake"
fi

# first URL KEY: "median p90" of N streams.
first() {
  timeout 120 python3 "$HERE/ttfb.py" "$1$CHAT" -n "${N:-50}" --max-secs 60 --auth "$2" "${STREAM_HEADERS[@]}" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["failed"] == 0, d; print("%.3f %.3f" % (d["first_ms"], d["first_p90_ms"]))'
}

printf '%-6s %-13s %-13s %-13s %-13s %-13s  %s\n' round direct nginx A B direct 'added: nginx A B'
for r in $(seq 1 "${ROUNDS:-4}"); do
  d1=$(first "$UPSTREAM_URL" sk-bench)
  n=$(first "$NGINX_URL" sk-bench)
  a=$(first "$A_URL" "$A_KEY")
  b=$(first "$B_URL" "$B_KEY")
  d2=$(first "$UPSTREAM_URL" sk-bench)
  added=$(python3 -c 'import sys; d = (float(sys.argv[1]) + float(sys.argv[2])) / 2; print(" ".join("%+.2f" % (float(x) - d) for x in sys.argv[3:]))' \
    "${d1%% *}" "${d2%% *}" "${n%% *}" "${a%% *}" "${b%% *}")
  printf '%-6s %-13s %-13s %-13s %-13s %-13s  %s\n' "$r" "$d1" "$n" "$a" "$b" "$d2" "$added"
done
