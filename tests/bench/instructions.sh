#!/usr/bin/env bash
# Instructions per request: the gateway under valgrind's callgrind serves REQUESTS small chats
# one after another (the benchmark's gateway: billing with the ledger, the openai plugin, a
# weighted key pool, the call log), and the script prints the instructions it executed per
# request, by part (the plugin's own code named by function, wasmtime, hyper, SQLite, ...).
# Unlike CPU time, the count is the same run after run whatever else the machine does, so a
# change of 1% shows: measure a change to the request path with it beside run.sh's times.
#
#   tests/bench/instructions.sh [--no-build]
#
# Environment:
#   REQUESTS  requests counted (default 2000), after WARMUP uncounted ones (default 600)
#   STREAM=1  the chats are streamed (the mock's 5 chunks, unpaced: a chat forwarded by the host)
#   CACHE=1   callgrind simulates the caches (a 32 KB I1, 48 KB D1, 4 MB L2) and the request
#             workers' misses per request are printed: the instruction-cache misses count the
#             code a request runs, which is what it pays for when it runs on cold caches (the
#             first streamed byte: README, Performance)
#   TOP       functions listed (default 30)
#   OUT       keep callgrind's output (a file per thread) and the plugins' symbol map in this
#             folder (default: not kept); `callgrind_annotate OUT/callgrind.out.1-02` reads one
#   GW_BIN, PLUGIN_WASM, GW_EXTRA_CONFIG, BILLING  as for run.sh (lib.sh)
#
# Notes: the count includes everything the gateway's threads did while the requests ran, shown
# per kind of thread: the request workers' count repeats to a few hundred instructions; the
# database's varies by thousands with how the call log's batches fall (their pace here is ~200
# requests a second, under valgrind). The plugin's code is named through wasmtime's perf map
# (`plugin_perf_map = true`), with names only if the plugin was built without stripping its
# symbols (`CARGO_PROFILE_PLUGIN_STRIP=false`). Copies and fills (memcpy, memset) count each
# loop step as an instruction: read them as bytes moved more than as time. valgrind is
# installed from Debian's packages if missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=1
REQUESTS=${REQUESTS:-2000}
WARMUP=${WARMUP:-600}
TOP=${TOP:-30}
export PREFETCH=0 SESSIONS=10

# shellcheck source=tests/bench/args.sh
source "$HERE/args.sh"

# shellcheck source=tests/bench/lib.sh
source "$HERE/lib.sh"

if ! command -v valgrind > /dev/null; then
  log "installing valgrind"
  apt-get update -qq && apt-get install -y -qq valgrind > /dev/null
fi
[ "$BUILD" = 1 ] && build
ensure_tools

CG=$WORK/callgrind.out
# wasmtime's map of the plugins' code, named by the gateway's pid (set by start_gateway).
bench_on_exit() { [ -n "${GW_PID:-}" ] && rm -f "/tmp/perf-$GW_PID.map"; }
# Instrumentation starts off (the start-up and the plugins' compilation run at valgrind's
# uninstrumented pace) and is turned on for the warm-up; the counts are zeroed before the
# measured requests and dumped after them.
export GW_WRAP="valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file=$CG --log-file=$WORK/valgrind.log"
export GW_START_SECS=300
if [ "${CACHE:-0}" = 1 ]; then
  export VALGRIND_OPTS="--cache-sim=yes --I1=32768,8,64 --D1=49152,12,64 --LL=4194304,16,64"
fi
# Valgrind's address space is smaller than the pool's reservation for the default slots. The
# workers do not poll before sleeping (`worker_poll_us`): how often a poll's pass runs depends
# on timing, which would make the count vary run to run. A caller's GW_EXTRA_CONFIG line for
# either setting replaces these defaults (`gw_default`).
export GW_EXTRA_CONFIG="plugin_perf_map = true
$(gw_default max_concurrent_calls 64)
$(gw_default worker_poll_us 0)
${GW_EXTRA_CONFIG:-}"
# Unpaced: the count is per request, and callgrind's pace is slow enough.
start_mock 0
start_gateway
# The plugin folder's first backstop rescan (10 s after the start) reads the files the start
# found just copied (too fresh to trust their metadata); the next four read nothing (the
# sixth, a minute in, reads every file: after the default run's end). Past the first:
sleep 11

# STREAM=1 streams; unset or anything else (STREAM=0 too) asks whole chats.
mode=()
[ "${STREAM:-}" = 1 ] && mode=(stream)
python3 "$HERE/instructions.py" load "$GW_URL" "$GW_KEY" "$((WARMUP / 2))" "${mode[@]}"
callgrind_control -i on "$GW_PID" > /dev/null
python3 "$HERE/instructions.py" load "$GW_URL" "$GW_KEY" "$((WARMUP - WARMUP / 2))" "${mode[@]}"
callgrind_control -z "$GW_PID" > /dev/null
python3 "$HERE/instructions.py" load "$GW_URL" "$GW_KEY" "$REQUESTS" "${mode[@]}"
callgrind_control -d "$GW_PID" > /dev/null
MAP=/tmp/perf-$GW_PID.map
# One file per thread (callgrind.out.1-01, -02, ...).
python3 "$HERE/instructions.py" report "$MAP" "$REQUESTS" "$TOP" "$CG".*
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$CG".* "$MAP" "$OUT/"
  log "kept in $OUT"
fi
