# The benchmark scripts' shared setup, sourced by run.sh, scale.sh, soak.sh, nodes.sh and
# instructions.sh (it runs nothing itself): the binaries, a work folder removed on exit,
# starting the mock, nginx and a Tollgate, and the measurements they share (wrk runs, CPU
# ticks, peak RSS). Expects HERE, ROOT and DURATION to be set and `set -euo pipefail`.
#
# Everything started here is recorded in STARTED_PIDS and stopped by PID when the script exits;
# a script that started something else defines bench_on_exit, run once those are stopped.

MOCK_BIN=$ROOT/target/release/mock-vendor
GW_BIN=${GW_BIN:-$ROOT/target/release/tollgate}
PLUGIN_WASM=${PLUGIN_WASM:-$ROOT/target/wasm32-unknown-unknown/plugin/tollgate_plugin_openai.wasm}
# The task flow's plugin (video tasks).
VIDEO_WASM=${VIDEO_WASM:-$ROOT/target/wasm32-unknown-unknown/plugin/tollgate_plugin_siliconflow.wasm}
# The socket flow's plugin (MiniMax's speech socket).
SPEECH_WASM=${SPEECH_WASM:-$ROOT/target/wasm32-unknown-unknown/plugin/tollgate_plugin_minimax.wasm}
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
  if declare -F bench_on_exit > /dev/null; then bench_on_exit || true; fi
  if [ "$rc" != 0 ]; then
    for f in "$WORK"/mock.err "$WORK"/gateway.log "$WORK"/gateway-*.log; do
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
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
  fi
  # cargo waits by itself if another job holds the build lock.
  log "building tollgate and mock-vendor (release)"
  (cd "$ROOT" && cargo build --release -p tollgate -p mock-vendor)
  log "building the openai, siliconflow and minimax plugins (cargo plugins: .cargo/config.toml)"
  (cd "$ROOT" && cargo plugins -p tollgate-plugin-openai -p tollgate-plugin-siliconflow -p tollgate-plugin-minimax)
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
  if [ "${UPSTREAM_TLS:-0}" = 1 ]; then command -v openssl > /dev/null || die "missing tool: openssl (UPSTREAM_TLS=1)"; fi
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

# make_tls_files DIR: a CA (DIR/ca.pem) and a certificate it signed for localhost and 127.0.0.1
# (DIR/server.pem, DIR/server.key), as a vendor's https endpoint has.
make_tls_files() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=Tollgate bench CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>> "$dir/openssl.log" \
    || die "openssl could not make the CA (see $dir/openssl.log)"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>> "$dir/openssl.log" \
    || die "openssl could not make the server's key (see $dir/openssl.log)"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    > "$dir/server.ext"
  openssl x509 -req -days 2 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -extfile "$dir/server.ext" -out "$dir/server.pem" 2>> "$dir/openssl.log" \
    || die "openssl could not sign the server's certificate (see $dir/openssl.log)"
}

# start_mock [CHUNK_DELAY_MS]: the pause between a stream's chunks when the request names none
# (default 5; scale.sh paces its slow streams with it). Env UPSTREAM_TLS=1: the mock also serves
# TLS (HTTP/1.1 and HTTP/2 by ALPN) with a certificate of a CA made here (UPSTREAM_CA), which the
# chat's targets (direct, nginx, the gateway's chat channel) reach at UPSTREAM_URL (https); the
# mock's control routes and the other flows stay on MOCK_URL (plain text, the same port).
start_mock() {
  local delay=${1:-5} tls=()
  if [ "${UPSTREAM_TLS:-0}" = 1 ]; then
    make_tls_files "$WORK/tls"
    UPSTREAM_CA=$WORK/tls/ca.pem
    tls=(--tls-cert "$WORK/tls/server.pem" --tls-key "$WORK/tls/server.key")
  fi
  # --chunk-delay-ms 5 as well as the x-mock-delay-ms header: Tollgate forwards only a few consumer
  # headers upstream (content-type, accept, accept-language, user-agent), so without the default
  # the gateway's stream would be unpaced while the direct one is paced.
  "$MOCK_BIN" --listen 127.0.0.1:0 --threads 1 --chunk-delay-ms "$delay" "${tls[@]}" \
    > "$WORK/mock.out" 2> "$WORK/mock.err" &
  MOCK_PID=$!
  STARTED_PIDS+=("$MOCK_PID")
  local line
  line=$(wait_for_line "$WORK/mock.out" 'LISTENING 127\.0\.0\.1:[0-9]+' "$MOCK_PID" 10)
  MOCK_PORT=${line##*:}
  MOCK_URL=http://127.0.0.1:$MOCK_PORT
  UPSTREAM_URL=$MOCK_URL
  [ "${UPSTREAM_TLS:-0}" = 1 ] && UPSTREAM_URL=https://127.0.0.1:$MOCK_PORT
  log "mock-vendor pid $MOCK_PID on $UPSTREAM_URL"
}

# gw_default KEY VALUE: the line "KEY = VALUE", unless GW_EXTRA_CONFIG sets KEY itself (a key may
# appear only once in TOML, so the caller's line replaces this default).
gw_default() {
  if printf '%s\n' "${GW_EXTRA_CONFIG:-}" | grep -qE "^[[:space:]]*$1[[:space:]]*="; then return 0; fi
  echo "$1 = $2"
}

# start_gateway: a Tollgate on the mock (channels for chat, video and speech). Env GW_EXTRA_CONFIG:
# top-level configuration lines added to its file (e.g. database_url, max_connections; one that
# sets max_sockets, max_sockets_per_key or max_concurrent_calls replaces the default below).
# Env GW_NODE: a name for a further node (e.g. "b"), whose files get a suffix (data-b,
# plugins-b, tollgate-b.toml, gateway-b.out, gateway-b.log) so it runs beside the first one;
# GW_CREATE_KEY=0 creates no key (GW_KEY is kept: a node sharing the first one's database).
# Env UPSTREAM_HTTP2=1: the chat channel speaks HTTP/2 to the mock (`http2 = true`).
# Env GW_WRAP: a command the gateway's `serve` runs under; GW_START_SECS: how long it may take
# to listen (default 30).
# Sets CFG, GW_KEY, GW_PID, GW_PORT and GW_URL (save the first node's before starting another).
start_gateway() {
  local sfx=${GW_NODE:+-$GW_NODE}
  local data=$WORK/data$sfx plugins=$WORK/plugins$sfx
  mkdir -p "$plugins" "$data"
  cp "$PLUGIN_WASM" "$plugins/openai.wasm"
  cp "$VIDEO_WASM" "$plugins/siliconflow.wasm"
  cp "$SPEECH_WASM" "$plugins/minimax.wasm"
  CFG=$WORK/tollgate$sfx.toml
  # Billing on (every call priced, reserved, charged and written to the ledger) unless BILLING=0.
  local pricing=""
  if [ "${BILLING:-1}" != 0 ]; then
    cat > "$WORK/pricing$sfx.toml" <<EOF
[models."gpt-4o-mini"]
input_per_million = "0.15"
output_per_million = "0.60"

# The mock's unpaced 500-chunk stream (run.sh's cost per chunk).
[models."burst-500"]
input_per_million = "0.15"
output_per_million = "0.60"

[models."Wan-AI/Wan2.2-T2V-A14B".units]
video = "0.01"

[models."speech-2.8-hd"]
characters_per_10k = "0.01"

[models."rtf-5"]
characters_per_10k = "0.01"
EOF
    pricing="pricing_file = \"$WORK/pricing$sfx.toml\""
  fi
  # The prefetch flow: chats' sentences synthesized ahead on the mock's T2A, which takes 5 ms a
  # character (the model rtf-5), as real synthesis takes time in proportion to the text.
  local prefetch=""
  if [ "${PREFETCH:-1}" != 0 ]; then
    prefetch=$(printf '[speech_prefetch]\nmodel = "rtf-5"\nvoice = "male-qn-qingse"\nformat = "wav"')
  fi
  cat > "$CFG" <<EOF
listen = "127.0.0.1:0"
data_dir = "$data"
plugins_dir = "$plugins"
$pricing
${GW_EXTRA_CONFIG:-}
# The task flow's videos come from the mock's CDN, on loopback.
fetch_allow_private_hosts = ["127.0.0.1"]
# The socket flow holds $SESSIONS sessions of one key at once (each holds a plugin slot).
$(gw_default max_sockets $((SESSIONS + 50)))
$(gw_default max_sockets_per_key $((SESSIONS + 50)))
$(gw_default max_concurrent_calls $((SESSIONS + 500)))
$([ "${UPSTREAM_TLS:-0}" = 1 ] && echo "tls_ca_file = \"$UPSTREAM_CA\"")
# The prefetch flow clears the speech cache between rounds.
admin_token = "$BENCH_ADMIN"

$prefetch

[[channel]]
name = "bench"
plugin = "openai"
base_url = "$UPSTREAM_URL"
models = ["gpt-4o-mini", "burst-500"]
$([ "${UPSTREAM_HTTP2:-0}" = 1 ] && echo "http2 = true")
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
  if [ "${GW_CREATE_KEY:-1}" != 0 ]; then
    GW_KEY=$(TOLLGATE_LOG=warn "$GW_BIN" --config "$CFG" keys create --name bench --balance 100 \
      2>> "$WORK/gateway$sfx.log" | awk 'NF { k = $0 } END { print k }')
    [ -n "$GW_KEY" ] || die "keys create printed no key"
  fi

  # GW_WRAP: a command the gateway runs under (instructions.sh: valgrind), as words.
  # shellcheck disable=SC2086
  TOLLGATE_LOG=warn ${GW_WRAP:-} "$GW_BIN" --config "$CFG" serve > "$WORK/gateway$sfx.out" 2>> "$WORK/gateway$sfx.log" &
  GW_PID=$!
  STARTED_PIDS+=("$GW_PID")
  local line
  line=$(wait_for_line "$WORK/gateway$sfx.out" 'tollgate listening on http://127\.0\.0\.1:[0-9]+' "$GW_PID" "${GW_START_SECS:-30}")
  GW_PORT=${line##*:}
  GW_URL=http://127.0.0.1:$GW_PORT
  wait_http_200 "$GW_URL/health" 30
  log "tollgate${GW_NODE:+ $GW_NODE} pid $GW_PID on $GW_URL"
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
      proxy_pass ${UPSTREAM_URL%%://*}://mock;
$([ "${UPSTREAM_TLS:-0}" = 1 ] && printf '      proxy_ssl_verify on;\n      proxy_ssl_trusted_certificate %s;\n      proxy_ssl_name localhost;\n      proxy_ssl_session_reuse on;' "$UPSTREAM_CA")
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
# Env AUTH / EXTRA_HEADERS / MODEL are read by post.lua; WRK_SCRIPT replaces post.lua by a
# script that prints the same line.
run_wrk() {
  local tag=$1 conns=$2 url=$3 raw
  shift 3
  raw=$WORK/wrk-$tag.txt
  timeout $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" "$@" -s "${WRK_SCRIPT:-$HERE/post.lua}" "$url" \
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
