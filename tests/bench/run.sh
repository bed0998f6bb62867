#!/usr/bin/env bash
# Tollgate benchmark: the gateway's added latency, throughput, CPU and memory against a direct
# call to the same mock upstream, measured in one run on this machine.
#
#   tests/bench/run.sh [--with-peers] [--no-build]
#
# Environment:
#   DURATION   seconds per wrk run (default 8)
#   STREAM_N   streamed requests per target for the first-byte median (default 50)
#   OUT        JSON output (default tests/bench/results/latest.json; that folder is git-ignored)
#   BILLING=0  run the gateway without a price table (billing is on by default)
#   GW_BIN, PLUGIN_WASM  the gateway binary and openai plugin to measure (default: this build)
#   KEEP_TMP=1 keep the temp dir (config, logs, raw wrk output) instead of deleting it
#   PREFETCH=0 skip the prefetch flow (and its settings: for a GW_BIN from before it existed)
#
# What it does: builds the gateway, mock-vendor and the openai plugin; starts mock-vendor, nginx
# as a plain keep-alive reverse proxy to it (the practical limit of a proxy hop), and a
# Tollgate with one channel pointing at it, all on 127.0.0.1 with ephemeral ports; loads each
# with wrk (post.lua) at c=1 (latency) and c=32 (throughput, CPU per request from /proc); times the
# first streamed byte with ttfb.py; runs the task flow with taskflow.py (a video submitted,
# polled, archived and downloaded through the gateway, against the mock's SiliconFlow video
# API, beside the same calls made directly) and the socket flow with wsflow.py (MiniMax's
# speech socket: time to the first audio frame through the gateway and direct, and SESSIONS
# sessions held at once with the gateway's memory per session) and the prefetch flow with
# prefetch.py (a chat's first sentence and whole reply to audio, with and without speech
# prefetch); prints a table and writes JSON via report.py.
# Everything started here is stopped by PID when the script exits (trap), and every load loop is
# bounded in time (wrk -d, `timeout`, ttfb.py --max-secs and a request count).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-8}
STREAM_N=${STREAM_N:-50}
# A relative OUT is relative to where the script was called from; the default lives in the repo.
OUT=${OUT:-$ROOT/tests/bench/results/latest.json}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac

WITH_PEERS=0
BUILD=1
for arg in "$@"; do
  case $arg in
    --with-peers) WITH_PEERS=1 ;;
    --no-build) BUILD=0 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

MOCK_BIN=$ROOT/target/release/mock-vendor
GW_BIN=${GW_BIN:-$ROOT/target/release/tollgate}
PLUGIN_WASM=${PLUGIN_WASM:-$ROOT/target/wasm32-wasip2/plugin/tollgate_plugin_openai.wasm}
# The task flow's plugin (video tasks).
VIDEO_WASM=${VIDEO_WASM:-$ROOT/target/wasm32-wasip2/plugin/tollgate_plugin_siliconflow.wasm}
# The socket flow's plugin (MiniMax's speech socket).
SPEECH_WASM=${SPEECH_WASM:-$ROOT/target/wasm32-wasip2/plugin/tollgate_plugin_minimax.wasm}
# Sessions the socket flow holds at once.
SESSIONS=${SESSIONS:-1000}
BENCH_ADMIN=bench-admin
CHAT=/v1/chat/completions
# The streamed request is paced: 5 chunks, 5 ms apart (no pause before the first one).
STREAM_HEADERS=(-H 'x-mock-delay-ms: 5' -H 'x-mock-chunks: 5')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
METRICS=$WORK/metrics.tsv
STARTED_PIDS=()

log() { echo "[bench] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Stop only what this script started, by PID: TERM, then KILL whatever is left after ~5 s.
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${STARTED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${STARTED_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${STARTED_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    for f in "$WORK"/mock.err "$WORK"/gateway.log; do
      [ -s "$f" ] && { log "last lines of $f:"; tail -n 20 "$f" >&2; }
    done
  fi
  if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" != 0 ]; then
    log "temp dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One figure for report.py: TARGET KEY VALUE (VALUE may be JSON).
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$METRICS"; }

# ---------------------------------------------------------------------------------------------
# Setup

build() {
  # The plugin target is needed for the wasm build; skip rustup when it is already there so an
  # offline machine does not stall.
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
  fi
  # cargo waits by itself if another job holds the build lock.
  log "building tollgate and mock-vendor (release)"
  (cd "$ROOT" && cargo build --release -p tollgate -p mock-vendor)
  log "building the openai and siliconflow plugins (wasm32-wasip2, profile plugin)"
  (cd "$ROOT" && cargo build --profile plugin --target wasm32-wasip2 -p tollgate-plugin-openai -p tollgate-plugin-siliconflow -p tollgate-plugin-minimax)
}

ensure_tools() {
  if ! command -v wrk > /dev/null; then
    log "installing wrk"
    apt-get update -qq && apt-get install -y -qq wrk > /dev/null
  fi
  if ! command -v nginx > /dev/null && [ ! -x /usr/sbin/nginx ]; then
    log "installing nginx (the practical limit: a plain keep-alive reverse proxy)"
    apt-get update -qq && apt-get install -y -qq nginx-light > /dev/null
  fi
  local t
  for t in wrk curl python3 timeout getconf ss; do
    command -v "$t" > /dev/null || die "missing tool: $t"
  done
  for t in "$MOCK_BIN" "$GW_BIN" "$PLUGIN_WASM" "$VIDEO_WASM" "$SPEECH_WASM"; do
    [ -e "$t" ] || die "missing $t (run without --no-build)"
  done
}

# wait_for_line FILE REGEX PID SECS: print the first match of REGEX in FILE (the process's stdout),
# failing if PID exits or SECS pass first.
wait_for_line() {
  local file=$1 re=$2 pid=$3 secs=$4 line
  for _ in $(seq 1 $((secs * 10))); do
    line=$(grep -m1 -oE "$re" "$file" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before printing /$re/"
    sleep 0.1
  done
  die "no /$re/ from process $pid within ${secs}s"
}

# wait_http_200 URL SECS: poll until GET URL answers 200.
wait_http_200() {
  local url=$1 secs=$2
  for _ in $(seq 1 $((secs * 10))); do
    [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)" = 200 ] && return 0
    sleep 0.1
  done
  die "$url did not answer 200 within ${secs}s"
}

start_mock() {
  # --chunk-delay-ms 5 as well as the x-mock-delay-ms header: Tollgate forwards only a few consumer
  # headers upstream (content-type, accept, accept-language, user-agent), so without the default
  # the gateway's stream would be unpaced while the direct one is paced.
  "$MOCK_BIN" --listen 127.0.0.1:0 --threads 1 --chunk-delay-ms 5 \
    > "$WORK/mock.out" 2> "$WORK/mock.err" &
  MOCK_PID=$!
  STARTED_PIDS+=("$MOCK_PID")
  local line
  line=$(wait_for_line "$WORK/mock.out" 'LISTENING 127\.0\.0\.1:[0-9]+' "$MOCK_PID" 10)
  MOCK_PORT=${line##*:}
  MOCK_URL=http://127.0.0.1:$MOCK_PORT
  log "mock-vendor pid $MOCK_PID on $MOCK_URL"
}

start_gateway() {
  mkdir -p "$WORK/plugins" "$WORK/data"
  cp "$PLUGIN_WASM" "$WORK/plugins/openai.wasm"
  cp "$VIDEO_WASM" "$WORK/plugins/siliconflow.wasm"
  cp "$SPEECH_WASM" "$WORK/plugins/minimax.wasm"
  CFG=$WORK/tollgate.toml
  # Billing on (every call priced, reserved, charged and written to the ledger) unless BILLING=0.
  local pricing=""
  if [ "${BILLING:-1}" != 0 ]; then
    cat > "$WORK/pricing.toml" <<EOF
[models."gpt-4o-mini"]
input_per_million = "0.15"
output_per_million = "0.60"

[models."Wan-AI/Wan2.2-T2V-A14B".units]
video = "0.01"

[models."speech-2.8-hd"]
characters_per_10k = "0.01"

[models."rtf-5"]
characters_per_10k = "0.01"
EOF
    pricing="pricing_file = \"$WORK/pricing.toml\""
  fi
  # The prefetch flow: chats' sentences synthesized ahead on the mock's T2A, which takes 5 ms a
  # character (the model rtf-5), as real synthesis takes time in proportion to the text.
  local prefetch=""
  if [ "${PREFETCH:-1}" != 0 ]; then
    prefetch=$(printf '[speech_prefetch]\nmodel = "rtf-5"\nvoice = "male-qn-qingse"\nformat = "wav"')
  fi
  cat > "$CFG" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data"
plugins_dir = "$WORK/plugins"
$pricing
# The task flow's videos come from the mock's CDN, on loopback.
fetch_allow_private_hosts = ["127.0.0.1"]
# The socket flow holds $SESSIONS sessions of one key at once (each holds a plugin slot).
max_sockets = $((SESSIONS + 50))
max_sockets_per_key = $((SESSIONS + 50))
max_concurrent_calls = $((SESSIONS + 500))
# The prefetch flow clears the speech cache between rounds.
admin_token = "$BENCH_ADMIN"

$prefetch

[[channel]]
name = "bench"
plugin = "openai"
base_url = "$MOCK_URL"
models = ["gpt-4o-mini"]
# A weighted pool with a backup priority: key selection is on the measured path.
keys = [{ key = "sk-upstream-1", weight = 3 }, "sk-upstream-2", { key = "sk-upstream-backup", priority = -1 }]

[[channel]]
name = "bench-video"
plugin = "siliconflow"
base_url = "$MOCK_URL"
models = ["Wan-AI/Wan2.2-T2V-A14B"]
keys = ["sk-upstream-video"]

[[channel]]
name = "bench-speech"
plugin = "minimax"
base_url = "$MOCK_URL"
models = ["speech-2.8-hd", "rtf-5"]
keys = ["mm-bench"]
EOF
  GW_KEY=$(TOLLGATE_LOG=warn "$GW_BIN" --config "$CFG" keys create --name bench --balance 100 \
    2>> "$WORK/gateway.log" | awk 'NF { k = $0 } END { print k }')
  [ -n "$GW_KEY" ] || die "keys create printed no key"

  TOLLGATE_LOG=warn "$GW_BIN" --config "$CFG" serve > "$WORK/gateway.out" 2>> "$WORK/gateway.log" &
  GW_PID=$!
  STARTED_PIDS+=("$GW_PID")
  local line
  line=$(wait_for_line "$WORK/gateway.out" 'tollgate listening on http://127\.0\.0\.1:[0-9]+' "$GW_PID" 30)
  GW_PORT=${line##*:}
  GW_URL=http://127.0.0.1:$GW_PORT
  wait_http_200 "$GW_URL/health" 30
  log "tollgate pid $GW_PID on $GW_URL"
}

# start_nginx: nginx as a plain keep-alive reverse proxy to the mock (no auth, no plugin, no
# billing): the practical limit of a proxy hop on this machine, measured beside Tollgate.
start_nginx() {
  local bin
  bin=$(command -v nginx || echo /usr/sbin/nginx)
  NGINX_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
  "$bin" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" > "$WORK/nginx/out" 2>&1 &
  NGINX_PID=$!
  STARTED_PIDS+=("$NGINX_PID")
  NGINX_URL=http://127.0.0.1:$NGINX_PORT
  wait_http_200 "$NGINX_URL/_mock/stats" 10
  log "nginx pid $NGINX_PID on $NGINX_URL"
}

# nginx_pids: the master and its workers.
nginx_pids() {
  local kids
  kids=$(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null | tr -s ' \n' ' ' || true)
  # shellcheck disable=SC2086  # word-split on purpose: one line of PIDs
  echo $NGINX_PID $kids
}

# check_chat NAME URL AUTH [curl header args...]: one request must succeed before we load it.
check_chat() {
  local name=$1 url=$2 auth=$3 code
  shift 3
  code=$(curl -s -m 10 -o "$WORK/check-$name.json" -w '%{http_code}' "$@" \
    -H 'Content-Type: application/json' -H "Authorization: Bearer $auth" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}' "$url" || true)
  if [ "$code" != 200 ]; then
    log "$name: POST $url answered '$code': $(head -c 300 "$WORK/check-$name.json" 2>/dev/null)"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Measurements

# cpu_ticks PID...: utime+stime of the processes (all their threads), in clock ticks. Fields 14
# and 15 of /proc/PID/stat; the part up to ") " is cut first because comm may contain spaces.
cpu_ticks() {
  local pid total=0 t
  for pid in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
    total=$((total + t))
  done
  echo "$total"
}

# cpu_busy_pct: share of all CPUs busy (not idle/iowait) over the next second, from /proc/stat.
cpu_busy_pct() {
  local a b
  a=$(head -n1 /proc/stat)
  sleep 1
  b=$(head -n1 /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; idle = $5 + $6 }
    NR == 1 { t0 = t; i0 = idle } NR == 2 { printf "%.0f\n", 100 * (1 - (idle - i0) / (t - t0)) }'
}

# hwm_kb PID...: summed peak resident set size (VmHWM) in KiB.
hwm_kb() {
  local pid total=0 v
  for pid in "$@"; do
    v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
    total=$((total + v))
  done
  echo "$total"
}

# run_wrk TAG CONNS URL [--latency]: one bounded wrk run; prints post.lua's JSON line.
# Env AUTH / EXTRA_HEADERS / MODEL are read by post.lua.
run_wrk() {
  local tag=$1 conns=$2 url=$3 raw
  shift 3
  raw=$WORK/wrk-$tag.txt
  timeout $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" "$@" -s "$HERE/post.lua" "$url" \
    > "$raw" 2>&1 || die "wrk $tag failed: $(tail -n 5 "$raw")"
  grep -m1 '^WRK_JSON ' "$raw" | sed 's/^WRK_JSON //' | grep . || die "no WRK_JSON in $raw"
}

# measure_load TARGET URL "SELF_PIDS" : c=1 latency and c=32 throughput + CPU per request.
# SELF_PIDS are the processes whose CPU counts as the target's own; the mock's is recorded too.
measure_load() {
  local target=$1 url=$2 self_pids=$3 before_self before_mock json
  # shellcheck disable=SC2086  # self_pids is a space-separated PID list
  {
    log "$target: warm-up 2 s"
    DURATION=2 run_wrk "$target-warmup" 32 "$url" > /dev/null
    log "$target: c=1 for ${DURATION}s"
    json=$(run_wrk "$target-c1" 1 "$url" --latency)
    record "$target" wrk_c1 "$json"
    log "$target: c=32 for ${DURATION}s"
    before_self=$(cpu_ticks $self_pids)
    before_mock=$(cpu_ticks "$MOCK_PID")
    json=$(run_wrk "$target-c32" 32 "$url")
    record "$target" cpu_ticks_self $(($(cpu_ticks $self_pids) - before_self))
    record "$target" cpu_ticks_mock $(($(cpu_ticks "$MOCK_PID") - before_mock))
    record "$target" wrk_c32 "$json"
  }
}

# measure_stream TARGET URL AUTH [ttfb.py args...]: median time to the first streamed byte.
measure_stream() {
  local target=$1 url=$2 auth=$3 json
  shift 3
  log "$target: $STREAM_N streamed requests"
  json=$(timeout 120 python3 "$HERE/ttfb.py" "$url" -n "$STREAM_N" --max-secs 60 --auth "$auth" "$@" \
    || true)
  [ -n "$json" ] || json='{"ok":0,"failed":null,"last_error":"ttfb.py gave no output"}'
  record "$target" stream "$json"
}

# measure_task_flow: a video task through the gateway and direct (taskflow.py; bounded).
measure_task_flow() {
  local json
  log "task flow: submits, polls, a 9 MiB video end to end and its download"
  json=$(timeout 150 python3 "$HERE/taskflow.py" "$GW_URL" "$GW_KEY" "$MOCK_URL" --max-secs 120 || true)
  [ -n "$json" ] || json='{"error":"taskflow.py gave no output"}'
  record meta task_flow "$json"
}

# measure_socket_flow: MiniMax's speech socket through the gateway and direct (wsflow.py).
measure_socket_flow() {
  local json
  if ! python3 -c 'import websockets.asyncio.client' 2> /dev/null; then
    record meta socket_flow '{"error":"the websockets Python package is not installed (pip install websockets)"}'
    return 0
  fi
  log "socket flow: first audio frame through the gateway and direct; $SESSIONS sessions held at once"
  json=$(timeout 150 python3 "$HERE/wsflow.py" "ws://127.0.0.1:$GW_PORT" "$GW_KEY" "ws://127.0.0.1:$MOCK_PORT" "$GW_PID" \
    --sessions "$SESSIONS" --max-secs 120 2>> "$WORK/wsflow.err" || true)
  [ -n "$json" ] || json="{\"error\":\"wsflow.py gave no output: $(tail -n 1 "$WORK/wsflow.err" 2>/dev/null | tr -d '\"')\"}"
  record meta socket_flow "$json"
}

# measure_prefetch: a chat's speech with and without prefetch (prefetch.py; bounded).
measure_prefetch() {
  local json
  log "prefetch flow: a chat's first sentence and whole reply to audio, with and without prefetch"
  json=$(timeout 150 python3 "$HERE/prefetch.py" "$GW_URL" "$GW_KEY" rtf-5 "$BENCH_ADMIN" --n 6 --max-secs 120 \
    2>> "$WORK/prefetch.err" || true)
  [ -n "$json" ] || json="{\"error\":\"prefetch.py gave no output: $(tail -n 1 "$WORK/prefetch.err" 2>/dev/null | tr -d '\"')\"}"
  record meta prefetch_flow "$json"
}

# ---------------------------------------------------------------------------------------------
# Optional peers (../shared/peer-bench): measured only if already running; never started here.

# listening_pids PORT: the PIDs holding the listening socket on 127.0.0.1:PORT, plus their
# direct children (LiteLLM workers).
listening_pids() {
  local pids kids
  pids=$(ss -ltnpH "sport = :$1" 2>/dev/null | grep -oE 'pid=[0-9]+' | cut -d= -f2 | sort -u | paste -sd' ')
  [ -n "$pids" ] || return 1
  kids=$(ps -o pid= --ppid "${pids// /,}" 2>/dev/null | tr -s ' \n' ' ' || true)
  # shellcheck disable=SC2086  # word-split on purpose: one line of PIDs
  echo $pids $kids
}

# measure_peer NAME PORT UPSTREAM AUTH [curl -H args...]
measure_peer() {
  local name=$1 port=$2 upstream=$3 auth=$4 pids url
  shift 4
  url=http://127.0.0.1:$port$CHAT
  pids=$(listening_pids "$port") || { log "$name: no process found on :$port"; return 0; }
  check_chat "$name" "$url" "$auth" "$@" || { record "$name" note "chat request failed, not measured"; return 0; }
  record "$name" upstream "$upstream"
  # post.lua takes extra headers as "Name: value;Name: value".
  local extra="" h
  for h in "$@"; do [ "$h" = -H ] || extra+="$h;"; done
  AUTH=$auth EXTRA_HEADERS=$extra measure_load "$name" "$url" "$pids"
  measure_stream "$name" "$url" "$auth" "$@" "${STREAM_HEADERS[@]}"
  # shellcheck disable=SC2086
  record "$name" rss_hwm_kb "$(hwm_kb $pids)"
}

measure_peers() {
  local pb
  pb=$(cd "$ROOT/.." && pwd)/shared/peer-bench
  if [ ! -d "$pb" ]; then
    record meta peers_note "skipped: $pb not found"
    return 0
  fi
  local up=() port
  for port in 18788 18787 14000; do
    curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/" && up+=("$port")
  done
  if [ ${#up[@]} = 0 ]; then
    record meta peers_note "skipped: none running (Portkey :18788/:18787, LiteLLM :14000); start them with $pb/bench/setup.sh then bench/start.sh"
    return 0
  fi
  record meta peers_note "measured what was running: ports ${up[*]} (not started by this script)"
  for port in "${up[@]}"; do
    case $port in
      18788 | 18787)
        # Portkey routes by headers; point it at this run's mock-vendor so the upstream is the same
        # as for Tollgate. The bearer is passed through to the mock, which accepts any.
        local name=portkey
        [ "$port" = 18787 ] && name=portkey-default
        measure_peer "$name" "$port" mock-vendor sk-bench \
          -H 'x-portkey-provider: openai' -H "x-portkey-custom-host: $MOCK_URL/v1"
        ;;
      14000)
        # LiteLLM's config routes gpt-4o-mini to peer-bench's own mock on :18000; measure that mock
        # directly too, so LiteLLM's overhead is computed against its real upstream.
        local key
        key=${LITELLM_MASTER_KEY:-$(sed -n 's/.*LITELLM_MASTER_KEY:-\([^}]*\)}.*/\1/p' "$pb/bench/start.sh" | head -n1)}
        if curl -s -o /dev/null -m 2 http://127.0.0.1:18000/v1/models; then
          measure_peer peer-mock 18000 peer-mock sk-bench
        fi
        measure_peer litellm 14000 peer-mock "$key"
        ;;
    esac
  done
}

# ---------------------------------------------------------------------------------------------

main() {
  [ "$BUILD" = 1 ] && build
  ensure_tools
  mkdir -p "$(dirname "$OUT")"

  record meta date "$(date +%F)"
  record meta cores "$(nproc)"
  record meta clk_tck "$(getconf CLK_TCK)"
  record meta duration_s "$DURATION"
  record meta stream_n "$STREAM_N"
  local rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && rev+=-dirty
  record meta git "$rev"

  start_mock
  start_nginx
  start_gateway
  check_chat direct "$MOCK_URL$CHAT" sk-bench || die "the mock does not answer the chat request"
  check_chat nginx "$NGINX_URL$CHAT" sk-bench || die "nginx does not answer the chat request"
  check_chat tollgate "$GW_URL$CHAT" "$GW_KEY" || die "tollgate does not answer the chat request"

  # Other jobs on the machine skew every figure; record how busy it was just before the load.
  record meta busy_before_pct "$(cpu_busy_pct)"

  # Same request, same wrk settings, one after the other in this run.
  AUTH=sk-bench measure_load direct "$MOCK_URL$CHAT" "$MOCK_PID"
  AUTH=sk-bench measure_load nginx "$NGINX_URL$CHAT" "$(nginx_pids)"
  AUTH=$GW_KEY measure_load tollgate "$GW_URL$CHAT" "$GW_PID"
  measure_stream direct "$MOCK_URL$CHAT" sk-bench "${STREAM_HEADERS[@]}"
  measure_stream nginx "$NGINX_URL$CHAT" sk-bench "${STREAM_HEADERS[@]}"
  measure_stream tollgate "$GW_URL$CHAT" "$GW_KEY" "${STREAM_HEADERS[@]}"
  record direct rss_hwm_kb "$(hwm_kb "$MOCK_PID")"
  # shellcheck disable=SC2046  # word-split on purpose: the PIDs
  record nginx rss_hwm_kb "$(hwm_kb $(nginx_pids))"
  record tollgate rss_hwm_kb "$(hwm_kb "$GW_PID")"
  measure_task_flow
  measure_socket_flow
  if [ "${PREFETCH:-1}" != 0 ]; then measure_prefetch; fi

  if [ "$WITH_PEERS" = 1 ]; then
    measure_peers
  fi

  echo
  python3 "$HERE/report.py" "$METRICS" "$OUT"
}

main
