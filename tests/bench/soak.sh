#!/usr/bin/env bash
# Tollgate soak: the gateway held at a fixed share of its peak throughput for a long run, its
# memory sampled all along, to show whether RSS stays flat.
#
#   tests/bench/soak.sh [--no-build]
#
# Environment:
#   SOAK_SECS   seconds of load at the fixed rate (default 600)
#   SOAK_PCT    the rate, in percent of the measured peak (default 80)
#   SOAK_RATE   a fixed rate in req/s instead of SOAK_PCT (the peak is still measured)
#   SOAK_CONNS  wrk connections for the paced load (default 64: headroom, as each waits its slot)
#   SAMPLE_SECS seconds between samples (default 5)
#   SOAK_TIMEOUT wrk's --timeout for a soak request (default 2s, wrk's own); one counts as failed
#   DURATION    seconds of the c=32 peak measurement (default 6; a 2 s warm-up comes first)
#   OUT_DIR     where plot.py writes soak.csv and soak.svg (default docs/bench)
#   SOAK_BALANCE the balance of the soak's own key, in dollars (default 10000)
#   BILLING=0, GW_BIN, PLUGIN_WASM, KEEP_TMP=1  as for run.sh
#
# What it does: starts mock-vendor and a Tollgate on it (lib.sh: billing with the ledger, a
# weighted key pool and the call log on), measures the gateway's peak req/s with wrk c=32, runs
# 2 s unpaced on SOAK_CONNS connections (see below), then loads it at SOAK_PCT% of that rate
# for SOAK_SECS with one wrk run paced by soak.lua (a slot every 1/rate s, see there). Every SAMPLE_SECS it writes a CSV row: the gateway's VmRSS,
# RssAnon, RssFile and VmHWM (/proc/PID/status), its CPU over the interval (/proc/PID/stat), the
# req/s it answered 2xx over the interval and its non-2xx answers so far (its /metrics counters),
# calls in flight, the plugin runtime's slots (instances alive, fiber stacks that ran a plugin,
# what unused slots keep resident), the most call records the writer has found waiting (a
# backlog of them is resident memory), how busy the whole machine was (/proc/stat), the CPU of
# wrk and the mock, and what the rest of the machine took (other jobs share these cores). /proc/PID/smaps at the start
# and the end of the soak are compared (the mappings that grew most are printed). plot.py then
# draws the CSV (RSS, req/s and CPU over time) into OUT_DIR/soak.svg and copies it to OUT_DIR/soak.csv.
#
# Why the unpaced 2 s first: the gateway's memory grows with the most calls it has held at
# once (each keeps ~140–170 KiB resident after it: its plugin slot, kept warm for the next
# instance, and its upstream connection), not with time. The paced load is bursty, so without
# them its first minutes set new peaks of calls, each a step in RSS that says nothing of a
# leak; with them the soak starts with the peak its connections can reach.
#
# Fails (exit 1) on any failed request: a socket error or non-2xx answer in wrk's summary, or a
# non-2xx answer counted by the gateway, in the peak run or the soak. Everything is bounded in
# time: every wrk runs under `timeout`, every curl has -m, and a watchdog ends the script at a
# global deadline (SOAK_SECS + DURATION + 240 s). Everything started is stopped by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-6}
SOAK_SECS=${SOAK_SECS:-600}
SOAK_PCT=${SOAK_PCT:-80}
SOAK_RATE=${SOAK_RATE:-}
SOAK_CONNS=${SOAK_CONNS:-64}
SAMPLE_SECS=${SAMPLE_SECS:-5}
SOAK_TIMEOUT=${SOAK_TIMEOUT:-2s}
OUT_DIR=${OUT_DIR:-$ROOT/docs/bench}
case $OUT_DIR in /*) ;; *) OUT_DIR=$PWD/$OUT_DIR ;; esac
# The balance of the key the soak uses: lib.sh's key has $100, and 10 minutes at ~10k req/s
# spend about $25 at the mock's token counts, so the soak makes its own key with room to spare.
SOAK_BALANCE=${SOAK_BALANCE:-10000}
# The socket flow's session allowance is irrelevant here; keep lib.sh's limits modest.
SESSIONS=${SESSIONS:-200}

# shellcheck source=tests/bench/args.sh
source "$HERE/args.sh"

# shellcheck source=tests/bench/lib.sh
source "$HERE/lib.sh"

# The global deadline: a watchdog that sends this script TERM (its trap exits and cleans up).
# It stops its own sleep when cleanup TERMs it, so nothing is left behind.
start_watchdog() {
  local secs=$1 me=$$
  (
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$secs" &
    sp=$!
    wait "$sp"
    echo "[bench] global deadline of ${secs}s reached: stopping" >&2
    kill -TERM "$me"
  ) &
  STARTED_PIDS+=("$!")
}

# status_kb FIELD PID: a field of /proc/PID/status in KiB (VmRSS, RssAnon, RssFile, VmHWM).
status_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

# now_us: wall clock in microseconds.
now_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }

# metric NAME TEXT: the value of one sample line of the gateway's /metrics text (0 if absent).
metric() { awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }' <<< "$2"; }

# What the plugin runtime's unused slots keep resident, all kinds, in KiB. It and the warm
# stacks (one per instance that ran) grow only with the most instances alive at once; a fiber
# stack's pages stay resident once touched and are not in the bytes.
slot_kib() { awk '$1 ~ /^tollgate_plugin_slot_resident_bytes[{]/ { b += $2 } END { printf "%d\n", b / 1024 }' <<< "$1"; }

# json_sum JSON KEY...: the sum of KEYs of a flat JSON object.
json_sum() {
  python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(sum(int(d[k]) for k in sys.argv[2:]))' "$@"
}

# count_failed LABEL JSON: logs the failed requests in wrk's summary JSON, if any, and marks the
# soak failed (main's `failed`).
count_failed() {
  local errs
  errs=$(json_sum "$2" err_connect err_read err_write err_status err_timeout)
  if [ "$errs" != 0 ]; then log "$1: $errs failed requests: $2"; failed=1; fi
}

# smaps_growth BEFORE AFTER: how two /proc/PID/smaps copies differ: Rss by mapping name
# (anonymous ones together), then the single mappings whose Rss grew most (by start address;
# "new" ones were not there before: a buffer that realloc moved, a new arena or thread stack).
smaps_growth() {
  python3 - "$1" "$2" << 'EOF'
import re, sys
def read(path):
    maps, cur = {}, None
    for line in open(path):
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
        if m:
            cur = m[1]
            maps[cur] = {"kib": (int(m[2], 16) - int(m[1], 16)) // 1024, "perm": m[3], "name": m[4] or "[anon]", "rss": 0}
        elif line.startswith("Rss:") and cur is not None:
            maps[cur]["rss"] = int(line.split()[1])
    return maps
a, b = read(sys.argv[1]), read(sys.argv[2])
by_name = {}
for side, maps in ((0, a), (1, b)):
    for m in maps.values():
        e = by_name.setdefault(m["name"], [0, 0, 0, 0])
        e[side] += m["rss"]
        e[2 + side] += 1
for name, (ra, rb, na, nb) in sorted(by_name.items(), key=lambda kv: kv[1][0] - kv[1][1])[:4]:
    print(f"  {rb - ra:+9d} KiB  {name}  (Rss {ra} -> {rb} KiB, mappings {na} -> {nb})")
print("  single mappings:")
rows = sorted(((b[k]["rss"] - a.get(k, {}).get("rss", 0), k) for k in b), reverse=True)
for d, k in rows[:6]:
    m = b[k]
    print(f"  {d:+9d} KiB  {k} {m['perm']} {m['name']}, {m['kib']} KiB mapped, Rss {m['rss']} KiB"
          + ("" if k in a else ", new"))
EOF
}

main() {
  [ "$BUILD" = 1 ] && build
  local t
  for t in wrk curl python3 timeout getconf; do
    command -v "$t" > /dev/null || die "missing tool: $t"
  done
  for t in "$MOCK_BIN" "$GW_BIN" "$PLUGIN_WASM" "$VIDEO_WASM" "$SPEECH_WASM"; do
    [ -e "$t" ] || die "missing $t (run without --no-build)"
  done
  mkdir -p "$OUT_DIR"
  start_watchdog $((SOAK_SECS + DURATION + 240))

  start_mock
  start_gateway
  GW_KEY=$(TOLLGATE_LOG=warn timeout 30 "$GW_BIN" --config "$CFG" keys create --name soak --balance "$SOAK_BALANCE" \
    2>> "$WORK/gateway.log" | awk 'NF { k = $0 } END { print k }')
  [ -n "$GW_KEY" ] || die "keys create (the soak's key) printed no key"
  # A key created beside a running gateway is accepted within key_refresh_ms (1 s by default).
  local tries=0
  until check_chat tollgate "$GW_URL$CHAT" "$GW_KEY" 2> /dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || { check_chat tollgate "$GW_URL$CHAT" "$GW_KEY" || die "tollgate does not answer the chat request"; }
    sleep 0.2
  done
  export AUTH=$GW_KEY
  local failed=0 json text
  text=$(curl -s -m 2 "$GW_URL/metrics") || die "GET /metrics failed"
  local bad0
  bad0=$(($(metric 'tollgate_responses_total{class="4xx"}' "$text") + $(metric 'tollgate_responses_total{class="5xx"}' "$text")))

  # The peak: c=32 closed loop, as run.sh measures throughput.
  log "peak: warm-up 2 s, then wrk c=32 for ${DURATION}s"
  DURATION=2 run_wrk warmup 32 "$GW_URL$CHAT" > /dev/null
  json=$(run_wrk peak 32 "$GW_URL$CHAT")
  count_failed "peak run" "$json"
  local peak rate
  peak=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(round(d["requests"] / (d["duration_us"] / 1e6)))' "$json")
  if [ -n "$SOAK_RATE" ]; then rate=$SOAK_RATE; else rate=$((peak * SOAK_PCT / 100)); fi
  [ "$rate" -gt 0 ] || die "no rate to soak at (peak $peak req/s)"
  log "peak $peak req/s; soak at $rate req/s ($SOAK_CONNS connections) for ${SOAK_SECS}s, a sample every ${SAMPLE_SECS}s"

  log "the soak's connections unpaced for 2 s (c=$SOAK_CONNS): the most calls at once they can hold"
  json=$(DURATION=2 run_wrk fill "$SOAK_CONNS" "$GW_URL$CHAT")
  count_failed "c=$SOAK_CONNS run" "$json"

  # Let the backlog of those runs (call log, ledger) drain before the first sample.
  sleep 2

  local csv=$WORK/soak.csv rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- host plugins 2>/dev/null)" ] && rev+=-dirty
  {
    echo "# date=$(date -u +%FT%TZ)"
    echo "# git=$rev"
    echo "# cores=$(nproc)"
    echo "# peak_rps=$peak"
    echo "# target_rps=$rate"
    echo "# soak_pct=$SOAK_PCT"
    echo "# conns=$SOAK_CONNS"
    echo "# soak_secs=$SOAK_SECS"
    echo "# sample_secs=$SAMPLE_SECS"
    echo "# billing=${BILLING:-1}"
    echo "# gw_bin=$GW_BIN"
    echo "# gw_bin_built=$(date -u -r "$GW_BIN" +%FT%TZ)"
    echo "# gw_bin_sha256=$(sha256sum "$GW_BIN" | cut -c1-16)"
    echo "t_s,rss_kib,rss_anon_kib,rss_file_kib,hwm_kib,threads,cpu_pct,cpu_us_per_req,req_s,non_2xx_total,in_flight,records_dropped,machine_busy_pct,load_cpu_pct,others_cpu_pct,plugin_instances,stacks_warm,slot_resident_kib,records_queued_peak"
  } > "$csv"

  local clk
  clk=$(getconf CLK_TCK)
  # The state the deltas are taken from.
  local prev_us prev_ticks prev_ok prev_stat_t prev_stat_i prev_load wrk_real=""
  # read_stat: all CPUs' ticks, total and idle (idle + iowait), from /proc/stat's first line.
  read_stat() { awk 'NR == 1 { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
  # load_ticks: the CPU ticks of the load's side (the mock and wrk, once it runs).
  load_ticks() {
    local pids=("$MOCK_PID")
    [ -n "$wrk_real" ] && [ -e "/proc/$wrk_real/stat" ] && pids+=("$wrk_real")
    cpu_ticks "${pids[@]}"
  }
  sample() {
    # sample T_LABEL: one CSV row; the first call (prev_us empty) writes the starting point.
    local now ticks load ok bad st_t st_i text dt req_s cpu_pct cpu_us busy load_pct others_pct
    text=$(curl -s -m 2 "$GW_URL/metrics") || { log "GET /metrics failed"; text=""; }
    now=$(now_us)
    ticks=$(cpu_ticks "$GW_PID")
    load=$(load_ticks)
    read -r st_t st_i < <(read_stat)
    ok=$(metric 'tollgate_responses_total{class="2xx"}' "$text")
    bad=$(($(metric 'tollgate_responses_total{class="4xx"}' "$text") + $(metric 'tollgate_responses_total{class="5xx"}' "$text") - bad0))
    if [ -z "$prev_us" ]; then
      req_s="" cpu_pct="" cpu_us="" busy="" load_pct="" others_pct=""
    else
      # Each scrape of /metrics is itself a 2xx answer (counted after it is rendered): take the
      # previous one off.
      # CPU shares are in % of one core; the machine's busy share in % of all its cores. "Others"
      # is what the machine spent beyond the gateway, the mock and wrk (other jobs, this script).
      read -r dt req_s cpu_pct cpu_us busy load_pct others_pct < <(awk -v us=$((now - prev_us)) \
        -v dok=$((ok - prev_ok - 1)) -v dtk=$((ticks - prev_ticks)) -v dl=$((load - prev_load)) -v clk="$clk" \
        -v dst=$((st_t - prev_stat_t)) -v dsi=$((st_i - prev_stat_i)) \
        'BEGIN { dt = us / 1e6; cpu = dtk / clk; others = (dst - dsi - dtk - dl) / clk;
                 printf "%.3f %.1f %.1f %.1f %.1f %.1f %.1f\n", dt, dok / dt, 100 * cpu / dt,
                   (dok > 0 ? 1e6 * cpu / dok : 0), (dst > 0 ? 100 * (1 - dsi / dst) : 0),
                   100 * dl / clk / dt, (others > 0 ? 100 * others / dt : 0) }')
    fi
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$1" \
      "$(status_kb VmRSS "$GW_PID")" "$(status_kb RssAnon "$GW_PID")" "$(status_kb RssFile "$GW_PID")" \
      "$(status_kb VmHWM "$GW_PID")" "$(awk '$1 == "Threads:" { print $2 }' "/proc/$GW_PID/status")" \
      "$cpu_pct" "$cpu_us" "$req_s" "$bad" "$(metric tollgate_in_flight "$text")" \
      "$(metric tollgate_call_records_dropped_total "$text")" "$busy" "$load_pct" "$others_pct" \
      "$(metric tollgate_plugin_instances "$text")" "$(metric 'tollgate_plugin_slots_warm{kind="stack"}' "$text")" \
      "$(slot_kib "$text")" "$(metric tollgate_call_records_queued_peak "$text")" >> "$csv"
    if [ "$bad" -gt 0 ] && [ "$failed" = 0 ]; then
      log "the gateway has answered $bad requests with a non-2xx status"
      failed=1
    fi
    prev_us=$now prev_ticks=$ticks prev_load=$load prev_ok=$ok prev_stat_t=$st_t prev_stat_i=$st_i
  }

  cp "/proc/$GW_PID/smaps" "$WORK/smaps-start.txt"
  cp "/proc/$GW_PID/smaps_rollup" "$WORK/smaps_rollup-start.txt"
  prev_us=""
  sample 0
  local start_us=$prev_us

  # One paced wrk run for the whole soak, 2 s longer than the sampled window so that the last
  # interval is fully loaded. Its PID is recorded, so an interrupted soak stops it too.
  local raw=$WORK/wrk-soak.txt
  RATE=$rate THREADS=1 timeout $((SOAK_SECS + 60)) wrk -t1 -c"$SOAK_CONNS" -d"$((SOAK_SECS + 2))s" --timeout "$SOAK_TIMEOUT" \
    -s "$HERE/soak.lua" "$GW_URL$CHAT" > "$raw" 2>&1 &
  local wrk_pid=$!
  STARTED_PIDS+=("$wrk_pid")
  # wrk itself (the child of `timeout`), for its CPU; it starts at 0 ticks, as load_ticks assumed.
  for _ in $(seq 1 20); do
    wrk_real=$(ps -o pid= --ppid "$wrk_pid" 2> /dev/null | tr -d ' ' || true)
    [ -n "$wrk_real" ] && break
    sleep 0.05
  done
  [ -n "$wrk_real" ] || log "wrk's PID not found: its CPU counts as others'"

  local i=1 target wait_us
  while [ $((i * SAMPLE_SECS)) -le "$SOAK_SECS" ]; do
    target=$((start_us + i * SAMPLE_SECS * 1000000))
    wait_us=$((target - $(now_us)))
    [ "$wait_us" -gt 0 ] && sleep "$(printf '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000)))"
    kill -0 "$GW_PID" 2> /dev/null || die "the gateway (pid $GW_PID) exited during the soak"
    kill -0 "$wrk_pid" 2> /dev/null || { log "wrk ended early: $(tail -n 5 "$raw")"; failed=1; break; }
    sample $((i * SAMPLE_SECS))
    if [ $((i % 12)) = 0 ]; then
      log "$((i * SAMPLE_SECS))s: $(tail -n 1 "$csv" | awk -F, '{ printf "RSS %.1f MiB, %s req/s, gateway CPU %s%%, wrk+mock %s%%, others %s%% (of a core)", $2 / 1024, $9, $7, $14, $15 }')"
    fi
    i=$((i + 1))
  done
  cp "/proc/$GW_PID/smaps" "$WORK/smaps-end.txt"
  cp "/proc/$GW_PID/smaps_rollup" "$WORK/smaps_rollup-end.txt"

  local rc=0
  wait "$wrk_pid" || rc=$?
  [ "$rc" = 0 ] || { log "wrk soak exited $rc: $(tail -n 5 "$raw")"; failed=1; }
  json=$(grep -m1 '^WRK_JSON ' "$raw" | sed 's/^WRK_JSON //' || true)
  if [ -z "$json" ]; then
    log "no WRK_JSON in $raw"
    failed=1
  else
    count_failed "soak (wrk's summary)" "$json"
    log "wrk soak: $json"
  fi

  log "smaps_rollup at the start and the end of the soak (KiB):"
  paste <(grep -E '^(Rss|Pss_Anon|Pss_File|Anonymous|Private_Dirty|Shared_Clean|Private_Clean):' "$WORK/smaps_rollup-start.txt") \
    <(grep -E '^(Rss|Pss_Anon|Pss_File|Anonymous|Private_Dirty|Shared_Clean|Private_Clean):' "$WORK/smaps_rollup-end.txt" | awk '{ print $2 }') \
    | awk '{ printf "  %-15s %9d -> %9d  (%+d)\n", $1, $2, $4, $4 - $2 }' >&2
  log "where the gateway's Rss grew (/proc/PID/smaps, start -> end of the soak):"
  smaps_growth "$WORK/smaps-start.txt" "$WORK/smaps-end.txt" >&2
  log "data dir at the end: $(du -sh "$WORK/data" | cut -f1) ($(ls "$WORK/data" | paste -sd' '))"

  local figures
  figures=$(python3 "$HERE/plot.py" "$csv" --out-dir "$OUT_DIR")
  echo "$figures"
  python3 - "$figures" << 'EOF' >&2
import json, sys
f = json.loads(sys.argv[1])
print(f"[bench] rate: target {f['target_rps']:.0f} req/s ({f['target_rps'] / f['peak_rps']:.0%} of the {f['peak_rps']:.0f} peak); "
      f"answered per interval mean {f['rps_mean']:.0f}, min {f['rps_min']:.0f}, max {f['rps_max']:.0f}; "
      f"{f['intervals_off_target_5pct']} intervals more than 5% off the target")
print(f"[bench] RSS: idle before the load {f['rss_idle_before_mib']} MiB; under load start {f['rss_start_mib']} MiB "
      f"(at {f['rss_start_t_s']:g} s), end {f['rss_end_mib']} MiB, max {f['rss_max_mib']} MiB; "
      f"slope {f['slope_mib_per_min']:+.3f} MiB/min over the last {f['slope_window_s']:g} s: "
      + ("flat (grows at most 0.1 MiB/min)" if f["rss_flat"] else "NOT flat (grows more than 0.1 MiB/min)"))
if f.get("slot_resident_end_mib") is not None:
    print(f"[bench] plugin slots: unused ones keep {f['slot_resident_start_mib']} -> {f['slot_resident_end_mib']} MiB resident; "
          f"fiber stacks used {f['stacks_used_start']:g} -> {f['stacks_used_end']:g} (warm and in use; their touched pages stay resident)")
EOF
  if [ "$failed" != 0 ]; then
    die "failed requests during the soak (see above)"
  fi
  log "no failed request"
}

main
