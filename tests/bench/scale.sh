#!/usr/bin/env bash
# Tollgate at scale: STREAMS slow streams held open at once (the gateway's memory per stream, no
# error), then IDLE keep-alive connections left idle and used again (memory per connection, no
# error). All on 127.0.0.1, against the mock vendor.
#
#   tests/bench/scale.sh [--no-build]
#
# Environment:
#   STREAMS          streams held at once (default 10000)
#   IDLE             idle keep-alive connections (default 5000)
#   IDLE_SECS        how long they stay idle (default 20; the gateway's 30 s header read timeout
#                    closes a keep-alive connection idle for longer)
#   STREAM_DELAY_MS  the mock's pause between two chunks of a stream (default 6000: 9 chunks,
#                    ~48 s a stream, longer than it takes to open them all on a busy 2-core machine)
#   MAX_SECS         the streams' global deadline (default 120; the idle phase: IDLE_SECS + 60)
#   OUT              JSON output (default tests/bench/results/scale.json; git-ignored)
#   UPSTREAM_HTTP2   1 (default): the gateway speaks HTTP/2 to the mock (the channel's `http2`),
#                    a worker's streams 100 to an upstream connection (`http2_max_streams`);
#                    0: HTTP/1.1, one upstream connection per stream
#   KEEP_TMP=1       keep the temp dir (config, gateway log) instead of deleting it
#   GW_BIN, PLUGIN_WASM, GW_EXTRA_CONFIG, BILLING, PREFETCH  as for run.sh (lib.sh)
#
# What it does: raises the open-file limit to the hard limit (the gateway needs a descriptor per
# stream for the consumer's connection, and over HTTP/1.1 one more for its upstream one); starts the mock with a slow
# default pace (--chunk-delay-ms: the gateway does not forward the consumer's x-mock-* headers)
# and a Tollgate (billing, the openai plugin, the key pool and call log on, as in run.sh) whose
# max_connections and max_concurrent_calls (each stream holds a plugin slot) fit the load; runs
# scale.py, which opens the streams and the idle connections by hand on raw sockets and reads the
# gateway's VmRSS from /proc, once per phase, each on a fresh gateway (memory one phase left in
# the allocator would hide the other's); records the figures, prints a table and writes JSON.
# Everything started here is stopped by PID on exit; the load is bounded by MAX_SECS and `timeout`.
#
# Found at 27faefa (2026-12-03): the gateway holds at most 1000 streams at once whatever
# max_concurrent_calls says (a stream's plugin store keeps a wasm fiber stack, and the pooling
# allocator's total_stacks is left at wasmtime's default of 1000); the others get 503 overloaded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-8}
STREAMS=${STREAMS:-10000}
IDLE=${IDLE:-5000}
IDLE_SECS=${IDLE_SECS:-20}
STREAM_DELAY_MS=${STREAM_DELAY_MS:-6000}
MAX_SECS=${MAX_SECS:-120}
export UPSTREAM_HTTP2=${UPSTREAM_HTTP2:-1}
OUT=${OUT:-$ROOT/tests/bench/results/scale.json}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac

# shellcheck source=tests/bench/args.sh
source "$HERE/args.sh"

# shellcheck source=tests/bench/lib.sh
source "$HERE/lib.sh"

# raise_fd_limit: the soft open-file limit up to the hard one; says so when that is short of what
# the gateway needs (each stream: its consumer connection and its upstream connection).
raise_fd_limit() {
  local hard need
  hard=$(ulimit -Hn)
  ulimit -n "$hard"
  # Streams: 1 each (2 over HTTP/1.1) plus the gateway's own (~35); idle: 1 each plus its
  # upstream pool.
  need=$(((UPSTREAM_HTTP2 == 1 ? 1 : 2) * STREAMS + 200))
  record meta upstream_http2 "$UPSTREAM_HTTP2"
  if [ $((IDLE + 1200)) -gt "$need" ]; then need=$((IDLE + 1200)); fi
  record meta fd_limit "\"$(ulimit -n)\""
  record meta fd_needed "$need"
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    log "WARNING: open-file limit $hard (hard) is below the ~$need the gateway needs for $STREAMS streams" \
      "(per stream + its own); expect failed streams near the top (raising the hard limit needs CAP_SYS_RESOURCE)"
    record meta fd_note "\"hard limit $hard < ~$need needed\""
  else
    log "open-file limit $(ulimit -n)"
  fi
}

# gateway_log_summary: warnings and errors in the gateway's log, by message (timestamps cut).
gateway_log_summary() {
  local f=$WORK/gateway.log
  [ -s "$f" ] || { echo '{}'; return 0; }
  python3 - "$f" <<'EOF'
import collections, json, re, sys
c = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"\b(WARN|ERROR)\b\s+(.*)", line)
    if m:
        # The level and the message up to its first field, without values that vary.
        msg = re.sub(r"\x1b\[[0-9;]*m", "", m.group(2))
        msg = re.split(r"\s\w+=", msg, maxsplit=1)[0][:120]
        c[m.group(1) + " " + msg] += 1
print(json.dumps(dict(c.most_common(10))))
EOF
}

# start_scale_gateway: a fresh Tollgate whose limits fit the load. Each stream holds a connection
# and a plugin slot for its whole length. Few slots beyond the streams: each reserves ~8 GiB of
# address space (two wasm memories of 4 GiB + guard), and ~10,500 of them (83 TiB) fail to fit in
# the 128 TiB user space at some ASLR layouts.
start_scale_gateway() {
  local calls=$((STREAMS + 50)) conns=$((STREAMS + IDLE + 100))
  GW_EXTRA_CONFIG="${GW_EXTRA_CONFIG:-}
max_connections = $conns
max_concurrent_calls = $calls" start_gateway
  record meta gateway_limits "{\"max_connections\": $conns, \"max_concurrent_calls\": $calls}"
  check_chat tollgate "$GW_URL$CHAT" "$GW_KEY" || die "tollgate does not answer the chat request"
}

# stop_gateway: TERM the current gateway, wait for it, and forget its PID (so cleanup never signals
# a PID the system may have reused).
stop_gateway() {
  local pid keep=()
  kill -TERM "$GW_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$GW_PID" 2>/dev/null || true
  wait "$GW_PID" 2>/dev/null || true
  for pid in "${STARTED_PIDS[@]}"; do [ "$pid" = "$GW_PID" ] || keep+=("$pid"); done
  STARTED_PIDS=("${keep[@]}")
}

# run_phase NAME [scale.py args...]: one bounded scale.py run on the current gateway; records its
# JSON, the gateway's peak RSS and whether it survived.
run_phase() {
  local name=$1 json
  shift
  json=$(timeout $((MAX_SECS + 30)) python3 "$HERE/scale.py" 127.0.0.1 "$GW_PORT" "$GW_KEY" "$GW_PID" "$@" \
    2>> "$WORK/scale.err" || true)
  [ -n "$json" ] || json="{\"error\":\"scale.py gave no output: $(tail -n 1 "$WORK/scale.err" 2>/dev/null | tr -d '\"')\"}"
  record "$name" scale "$json"
  kill -0 "$GW_PID" 2>/dev/null || { record "$name" note '"the gateway exited during the run"'; return 0; }
  record "$name" rss_hwm_kb "$(hwm_kb "$GW_PID")"
}

main() {
  [ "$BUILD" = 1 ] && build
  local t
  for t in curl python3 timeout; do command -v "$t" > /dev/null || die "missing tool: $t"; done
  for t in "$MOCK_BIN" "$GW_BIN" "$PLUGIN_WASM" "$VIDEO_WASM" "$SPEECH_WASM"; do
    [ -e "$t" ] || die "missing $t (run without --no-build)"
  done
  mkdir -p "$(dirname "$OUT")"

  record meta date "\"$(date +%F)\""
  record meta cores "$(nproc)"
  local rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && rev+=-dirty
  record meta git "\"$rev\""
  record meta stream_delay_ms "$STREAM_DELAY_MS"
  raise_fd_limit

  start_mock "$STREAM_DELAY_MS"
  record meta busy_before_pct "$(cpu_busy_pct)"

  # Each phase on a fresh gateway, so that neither measures memory the other left in the allocator.
  log "streams: $STREAMS at once (a chunk every ${STREAM_DELAY_MS} ms, ~$((8 * STREAM_DELAY_MS / 1000)) s each)"
  start_scale_gateway
  run_phase streams --streams "$STREAMS" --idle 0 --max-secs "$MAX_SECS"
  stop_gateway
  log "idle: $IDLE keep-alive connections, idle for ${IDLE_SECS}s"
  start_scale_gateway
  run_phase idle --streams 0 --idle "$IDLE" --idle-secs "$IDLE_SECS" --max-secs $((IDLE_SECS + 60))
  record tollgate gateway_log "$(gateway_log_summary)"

  echo
  python3 - "$METRICS" "$OUT" <<'EOF'
import json, sys
data = {}
for line in open(sys.argv[1]):
    target, key, value = line.rstrip("\n").split("\t", 2)
    try:
        value = json.loads(value)
    except ValueError:
        pass
    data.setdefault(target, {})[key] = value
# One object with both phases' figures (scale.py's fields), beside the raw records.
s, d = {}, {}
for phase in ("streams", "idle"):
    p = dict(data.get(phase, {}).get("scale", {}))
    if "error" in p:
        print(f"scale.py ({phase}) failed:", p["error"])
    pd = p.pop("durations", {})
    if "total" in pd:
        pd[phase + "_total"] = pd.pop("total")
    d.update(pd)
    p.pop("rss_hwm_mib", None)
    s.update(p)
    s[phase + "_rss_hwm_mib"] = round(data.get(phase, {}).get("rss_hwm_kb", 0) / 1024, 1)
s["durations"] = d
data["scale"] = s
with open(sys.argv[2], "w") as f:
    json.dump(data, f, indent=2)
m = data.get("meta", {})
def growth(before, after):
    """What each mapping grew by between the two breakdowns, the largest first."""
    if not before or not after:
        return "-"
    g = {k: v - before.get(k, 0) for k, v in after.items()}
    return ", ".join(f"{k} +{v:.1f}" for k, v in sorted(g.items(), key=lambda kv: -kv[1])[:5] if v > 0.5) or "-"
def f(v, fmt="{}"):
    return "-" if v is None else fmt.format(v)
rows = [
    ("streams held at once", f"{f(s.get('peak_open_streams'))} of {f(s.get('streams'))} "
        f"(all open after {f(d.get('streams_all_open_after'))} s; a chunk every {m.get('stream_delay_ms')} ms)"),
    ("stream errors", f"{f(s.get('stream_errors'))} {s.get('stream_error_kinds') or ''}"),
    ("gateway RSS before / peak / after", f"{f(s.get('rss_before_mib'))} / {f(s.get('rss_peak_mib'))} / "
        f"{f(s.get('rss_after_streams_mib'))} MiB"),
    ("MiB per stream held", f(s.get("mib_per_stream"), "{:.3f}")),
    ("gateway fds at peak", f(s.get("gateway_fds_peak_streams"))),
    ("RSS growth by mapping, MiB", growth(s.get("rss_breakdown_before_mib"), s.get("rss_breakdown_when_all_answered_mib"))),
    ("idle connections held", f"{f(s.get('idle_held'))} of {f(s.get('idle'))} for {f(d.get('idle_hold'))} s"),
    ("idle errors", f"{f(s.get('idle_errors'))} {s.get('idle_error_kinds') or ''}"),
    ("gateway RSS before / held", f"{f(s.get('idle_rss_before_mib'))} / {f(s.get('idle_rss_held_peak_mib'))} MiB"),
    ("MiB per idle connection", f(s.get("mib_per_idle_connection"), "{:.4f}")),
    ("gateway peak RSS (VmHWM)", f"streams {f(s.get('streams_rss_hwm_mib'))} / idle {f(s.get('idle_rss_hwm_mib'))} MiB"),
    ("open-file limit", f"{m.get('fd_limit')} (needed ~{m.get('fd_needed')})"),
    ("machine busy before", f"{m.get('busy_before_pct')}%"),
]
w = max(len(r[0]) for r in rows)
for k, v in rows:
    print(f"  {k:<{w}}  {v}")
for phase in ("streams", "idle"):
    if data.get(phase, {}).get("note"):
        print(f"  {phase}: {data[phase]['note']}")
log = data.get("tollgate", {}).get("gateway_log") or {}
if log:
    print("  gateway log:", json.dumps(log))
ok = s.get("stream_errors") == 0 and s.get("idle_errors") == 0 and s.get("peak_open_streams") == s.get("streams")
print(f"\n  verdict: {'PASS' if ok else 'FAIL'} (every stream held at once and ended with [DONE]; every idle connection answered again)")
print(f"  written: {sys.argv[2]}")
EOF
}

main
