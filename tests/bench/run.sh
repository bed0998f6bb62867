#!/usr/bin/env bash
# Tollgate benchmark: the gateway's added latency, throughput, CPU and memory against a direct
# call to the same mock upstream, measured in one run on this machine.
#
#   tests/bench/run.sh [--with-peers] [--no-build]
#
# Environment:
#   DURATION   seconds per wrk run (default 8)
#   STREAM_N   streamed requests per target for the first-byte median (default 50), asked in
#   STREAM_ROUNDS rounds (default 5): each round asks every target in turn, the order turned
#              round by round, and each target's figures are the median of all its rounds
#   CHUNK_N    500-chunk streams per target for the cost per chunk (default 20; warm-up 2 more)
#   OUT        JSON output (default tests/bench/results/latest.json; that folder is git-ignored)
#   BILLING=0  run the gateway without a price table (billing is on by default)
#   GW_BIN, PLUGIN_WASM  the gateway binary and openai plugin to measure (default: this build)
#   KEEP_TMP=1 keep the temp dir (config, logs, raw wrk output) instead of deleting it
#   PREFETCH=0 skip the prefetch flow (and its settings: for a GW_BIN from before it existed)
#   UPSTREAM_TLS=1  the chat's upstream over TLS, as a real vendor's: direct, nginx
#              (proxy_ssl_verify) and the gateway (tls_ca_file) reach the mock over https
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
# prefetch); prints a table and writes JSON via report.py. --with-peers adds Portkey and LiteLLM
# from ../shared/peer-bench: those running are measured; if none is, its scripts install (once)
# and start them, and stop them at the end.
# Everything started here is stopped by PID when the script exits (trap), and every load loop is
# bounded in time (wrk -d, `timeout`, ttfb.py --max-secs and a request count).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-8}
STREAM_N=${STREAM_N:-50}
STREAM_ROUNDS=${STREAM_ROUNDS:-5}
CHUNK_N=${CHUNK_N:-20}
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

# The peers are measured against the plain mock, and their overhead against `direct`.
if [ "$WITH_PEERS" = 1 ] && [ "${UPSTREAM_TLS:-0}" = 1 ]; then
  echo "--with-peers measures the peers against a plain upstream: run it without UPSTREAM_TLS=1" >&2
  exit 2
fi

# shellcheck source=tests/bench/lib.sh
source "$HERE/lib.sh"

# measure_stream TARGET KEY N URL AUTH [ttfb.py args...]: N streamed requests, their times to
# the first byte recorded under KEY (stream.<round>; report.py pools a target's rounds).
measure_stream() {
  local target=$1 key=$2 n=$3 url=$4 auth=$5 json
  shift 5
  log "$target: $n streamed requests ($key)"
  json=$(timeout 120 python3 "$HERE/ttfb.py" "$url" -n "$n" --max-secs 60 --auth "$auth" "$@" \
    ${UPSTREAM_CA:+--cafile "$UPSTREAM_CA"} \
    || true)
  [ -n "$json" ] || json='{"ok":0,"failed":null,"last_error":"ttfb.py gave no output"}'
  record "$target" "$key" "$json"
}

# measure_streams: direct, nginx and the gateway in STREAM_ROUNDS rounds, the order turned each
# round. A target asked in one turn of its own meets that moment's machine (a slow second, a
# core the scheduler shares with the client), and its median moved by ~0.2 ms from run to run
# with the code unchanged; rounds spread such moments over every target alike.
measure_streams() {
  local per=$(((STREAM_N + STREAM_ROUNDS - 1) / STREAM_ROUNDS)) r i
  local -a order=(direct nginx tollgate)
  for ((r = 1; r <= STREAM_ROUNDS; r++)); do
    for i in 0 1 2; do
      case ${order[(r + i) % 3]} in
        direct) measure_stream direct "stream.$r" "$per" "$UPSTREAM_URL$CHAT" sk-bench "${STREAM_HEADERS[@]}" ;;
        nginx) measure_stream nginx "stream.$r" "$per" "$NGINX_URL$CHAT" sk-bench "${STREAM_HEADERS[@]}" ;;
        tollgate) measure_stream tollgate "stream.$r" "$per" "$GW_URL$CHAT" "$GW_KEY" "${STREAM_HEADERS[@]}" ;;
      esac
    done
  done
}

# measure_chunks TARGET URL AUTH "SELF_PIDS": the cost per chunk of a stream: CHUNK_N sequential
# streams of the mock's unpaced 500 chunks (model burst-500), their median time to the last byte
# and the target's own CPU per chunk.
measure_chunks() {
  local target=$1 url=$2 auth=$3 self_pids=$4 before json
  log "$target: $CHUNK_N streams of 500 chunks"
  # shellcheck disable=SC2086  # self_pids is a space-separated PID list
  before=$(cpu_ticks $self_pids)
  json=$(timeout 120 python3 "$HERE/ttfb.py" "$url" -n "$CHUNK_N" --warmup 2 --max-secs 60 --auth "$auth" \
    --model burst-500 ${UPSTREAM_CA:+--cafile "$UPSTREAM_CA"} || true)
  [ -n "$json" ] || json='{"ok":0,"failed":null,"last_error":"ttfb.py gave no output"}'
  record "$target" chunks "$json"
  # shellcheck disable=SC2086
  record "$target" chunks_cpu_ticks $(($(cpu_ticks $self_pids) - before))
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
# Optional peers (../shared/peer-bench). Those already running are measured as they are; when
# none is, peer-bench's own scripts install them (once: apt, pip, npm, cargo) and start them,
# and its stop script stops them, by PID, when this script exits.

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
  measure_stream "$name" stream.1 "$STREAM_N" "$url" "$auth" "$@" "${STREAM_HEADERS[@]}"
  # shellcheck disable=SC2086
  record "$name" rss_hwm_kb "$(hwm_kb $pids)"
}

# peers_up: the peers' ports that answer, one per line.
peers_up() {
  local port
  for port in 18788 18787 14000; do
    curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/" && echo "$port"
  done
}

# start_peers DIR: peer-bench's setup (when its installs are missing) and start scripts; its stop
# script runs when this script exits. Their output goes to $WORK/peers.log.
start_peers() {
  local pb=$1
  if [ ! -x "$pb/.venv/bin/litellm" ] || [ ! -d "$pb/portkey/node_modules" ] \
    || [ ! -d "$pb/portkey-default/node_modules" ] || [ ! -x "$pb/mock/target/release/mockup" ]; then
    log "peers: installing them with $pb/bench/setup.sh (once; apt, pip, npm and cargo)"
    (cd "$pb" && bash bench/setup.sh) >> "$WORK/peers.log" 2>&1 || return 1
  fi
  log "peers: starting them with $pb/bench/start.sh"
  PEERS_DIR=$pb
  (cd "$pb" && bash bench/start.sh) >> "$WORK/peers.log" 2>&1
}

# Stops the peers this script started (peer-bench's stop script stops what its start script
# recorded, by PID).
bench_on_exit() {
  if [ -n "${PEERS_DIR:-}" ]; then
    log "peers: stopping them with $PEERS_DIR/bench/stop.sh"
    (cd "$PEERS_DIR" && bash bench/stop.sh) > /dev/null 2>&1
  fi
}

measure_peers() {
  local pb
  pb=$(cd "$ROOT/.." && pwd)/shared/peer-bench
  if [ ! -d "$pb" ]; then
    record meta peers_note "skipped: $pb not found"
    return 0
  fi
  local up note
  mapfile -t up < <(peers_up)
  if [ ${#up[@]} = 0 ]; then
    start_peers "$pb" || {
      record meta peers_note "skipped: peer-bench could not be set up or started (see $WORK/peers.log)"
      return 0
    }
    mapfile -t up < <(peers_up)
    note="started by this script with $pb/bench/start.sh and stopped at its end: ports ${up[*]}"
  else
    note="measured what was running: ports ${up[*]} (not started by this script)"
  fi
  record meta peers_note "$note"
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
  record meta stream_rounds "$STREAM_ROUNDS"
  local rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && rev+=-dirty
  record meta git "$rev"
  record meta upstream_tls "${UPSTREAM_TLS:-0}"

  start_mock
  start_nginx
  start_gateway
  check_chat direct "$UPSTREAM_URL$CHAT" sk-bench ${UPSTREAM_CA:+--cacert "$UPSTREAM_CA"} || die "the mock does not answer the chat request"
  check_chat nginx "$NGINX_URL$CHAT" sk-bench || die "nginx does not answer the chat request"
  check_chat tollgate "$GW_URL$CHAT" "$GW_KEY" || die "tollgate does not answer the chat request"

  # Other jobs on the machine skew every figure; record how busy it was just before the load.
  record meta busy_before_pct "$(cpu_busy_pct)"

  # Same request, same wrk settings, one after the other in this run.
  AUTH=sk-bench measure_load direct "$UPSTREAM_URL$CHAT" "$MOCK_PID"
  AUTH=sk-bench measure_load nginx "$NGINX_URL$CHAT" "$(nginx_pids)"
  AUTH=$GW_KEY measure_load tollgate "$GW_URL$CHAT" "$GW_PID"
  measure_streams
  measure_chunks direct "$UPSTREAM_URL$CHAT" sk-bench "$MOCK_PID"
  measure_chunks nginx "$NGINX_URL$CHAT" sk-bench "$(nginx_pids)"
  measure_chunks tollgate "$GW_URL$CHAT" "$GW_KEY" "$GW_PID"
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
