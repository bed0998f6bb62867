#!/usr/bin/env bash
# Several nodes on one PostgreSQL (issue 11, item 4): two gateways sharing one database, their
# throughput beside one gateway's, what the database costs, and how far one user's balance is
# overdrawn when both nodes spend it at once, against the bound the README documents.
#
#   tests/bench/nodes.sh
#
# Environment:
#   DURATION        seconds per throughput run (default 5)
#   NODE_CONNS      wrk connections per node when both nodes are loaded (default 16: the same 32
#                   in all as the one-node run, so both runs offer the same load)
#   KEY_REFRESH_MS  the nodes' key_refresh_ms (default 1000, the gateway's default)
#   SMALL_CALLS     the small user's balance, in calls at the charge measured (default 400)
#   MAX_TOKENS      max_tokens of the overdraw run's requests (default 16; see nodes.lua)
#   OVERDRAW_SECS   length of the small overdraw round (default 3: long enough for both nodes to
#                   spend the balance, sync, and refuse)
#   LARGE_SECS      the large round's balance: what both nodes spend in this many seconds at the
#                   two-node run's rate (default 3); the round lasts that plus the sync window + 2 s
#   DRAIN_SECS      the longest wait for the nodes' call-log writers to go idle after a round
#                   (default 30)
#   OUT             JSON output (default tests/bench/results/nodes-latest.json; git-ignored);
#                   the raw figures go beside it (.tsv) and the wrk outputs to OUT's .raw folder
#   KEEP_TMP=1      keep the temp dir (configs, logs)
#
# What it does, all on 127.0.0.1 (binaries prebuilt: target/release, target/wasm32-unknown-unknown/plugin):
# 1. starts a throwaway PostgreSQL (tests/postgres.sh, stopped on exit), the mock vendor and
#    node A on it (lib.sh's start_gateway: auth, the openai plugin, billing with the ledger, a
#    weighted key pool, the call log); one user with a large balance; wrk c=32 on A alone;
# 2. starts node B on the same database (its own data_dir, the same key) and runs two wrk at
#    once, NODE_CONNS each, on A and B. For both runs: req/s, and the CPU of every process
#    (nodes, mock, wrk, PostgreSQL's processes) from /proc, so it shows whether PostgreSQL is
#    the limit;
# 3. the overdraw, in two rounds, each a new user loaded through both nodes at once (NODE_CONNS
#    each, requests with max_tokens: see nodes.lua) until both refuse with 402: "small", a
#    balance of SMALL_CALLS calls (both nodes spend it before either hears of the other's
#    charges), and "large", what both spend in LARGE_SECS (they sync while spending, so the sync
#    window sets the overdraw). Then the user's final balance, the sum of its ledger, the
#    charges per node (request ids carry a per-process prefix) and `tollgate ledger verify`.
#    The README's bound: the calls the other node has in flight (its wrk connections) plus the
#    charges it made in its last sync window (the call log's 200 ms write window plus
#    key_refresh_ms: the most calls a node answered 200 in any such window of the round, from
#    its /metrics sampled every 100 ms), at the per-call charge measured. Exits 1 if an
#    overdraw is above its bound or a balance is not the sum of its ledger. During each round
#    it also samples what PostgreSQL's sessions wait on (pg_stat_activity every 250 ms) and the
#    kernel's CPU and I/O stall shares (PSI), to tell a database stall from a starved gateway.
# Everything started is stopped by PID on exit; every run is bounded (wrk -d, `timeout`, loops
# with a count). The whole script takes about a minute and a half.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-5}
NODE_CONNS=${NODE_CONNS:-16}
KEY_REFRESH_MS=${KEY_REFRESH_MS:-1000}
SMALL_CALLS=${SMALL_CALLS:-400}
MAX_TOKENS=${MAX_TOKENS:-16}
OVERDRAW_SECS=${OVERDRAW_SECS:-3}
LARGE_SECS=${LARGE_SECS:-3}
DRAIN_SECS=${DRAIN_SECS:-30}
OUT=${OUT:-$ROOT/tests/bench/results/nodes-latest.json}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac

for arg in "$@"; do
  case $arg in
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

# shellcheck source=tests/bench/lib.sh
source "$HERE/lib.sh"

PG_DIR=""
# Run by lib.sh's cleanup once the gateways and the mock are stopped (they flush to the database
# on SIGTERM, so the database goes last).
bench_on_exit() {
  if [ -n "$PG_DIR" ]; then
    "$ROOT/tests/postgres.sh" stop "$PG_DIR" || true
    log "PostgreSQL stopped"
  fi
}

tg() { TOLLGATE_LOG=warn timeout 30 "$GW_BIN" --config "$A_CFG" "$@" 2>> "$WORK/cli.log"; }
sql() { timeout 30 psql -X -q -At -F $'\t' -v ON_ERROR_STOP=1 "$DB_URL" -c "$1"; }

# pg_snapshot: one line per PostgreSQL process: PID, its CPU ticks (utime+stime), the ticks of
# its reaped children (cutime+cstime: a backend that exits during a run is counted through the
# postmaster), and its title ("postgres: tollgate bench 127.0.0.1(…) idle").
pg_snapshot() {
  local pid stat
  # shellcheck disable=SC2046  # word-split on purpose: the PIDs
  for pid in "$PG_MAIN" $(ps -o pid= --ppid "$PG_MAIN" 2> /dev/null || true); do
    stat=$(sed 's/^.*) //' "/proc/$pid/stat" 2> /dev/null) || continue
    [ -n "$stat" ] || continue
    awk -v p="$pid" -v c="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | tr -s ' \t' '__')" \
      '{ print p, $12 + $13, $14 + $15, c }' <<< "$stat"
  done
}

# pg_delta BEFORE AFTER: "TOTAL_TICKS BUSIEST_TICKS BUSIEST_TITLE" over a run. A process alive at
# the end counts from the start (or from its birth); the postmaster's reaped-children ticks add
# the processes that ended in between (their whole life: an upper bound).
pg_delta() {
  awk -v main="$PG_MAIN" '
    NR == FNR { t[$1] = $2; if ($1 == main) c0 = $3; next }
    { d = $2 - (($1 in t) ? t[$1] : 0); tot += d; if (d > max) { max = d; title = $4 }
      if ($1 == main) tot += $3 - c0 }
    END { printf "%d %d %s\n", tot, max, (title == "" ? "-" : title) }' "$1" "$2"
}

# load_nodes PHASE CONNS SECS URL...: one wrk per URL, all at once, CONNS connections each, for
# SECS; records each wrk's JSON line and CPU seconds, and the CPU ticks of the nodes, the mock
# and PostgreSQL over the run. Env AUTH, WRK_SCRIPT as run_wrk.
load_nodes() {
  local phase=$1 conns=$2 secs=$3
  shift 3
  local i=0 url pids=() t0 t1 n
  local -A before
  for n in "${!NODE_PIDS[@]}"; do before[$n]=$(cpu_ticks "${NODE_PIDS[$n]}"); done
  before[mock]=$(cpu_ticks "$MOCK_PID")
  pg_snapshot > "$WORK/pg-$phase-0.txt"
  t0=$(date +%s%N)
  for url in "$@"; do
    i=$((i + 1))
    (
      TIMEFORMAT='%3U %3S'
      { time DURATION=$secs run_wrk "$phase-$i" "$conns" "$url" > "$WORK/$phase-$i.json"; } 2> "$WORK/$phase-$i.time"
    ) &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || die "wrk $phase-$((i + 1)) failed: $(cat "$WORK/$phase-$((i + 1)).time")"
  done
  t1=$(date +%s%N)
  pg_snapshot > "$WORK/pg-$phase-1.txt"
  record "$phase" wall_us $(((t1 - t0) / 1000))
  record "$phase" conns "$conns"
  record "$phase" urls "$(printf '%s\n' "$@" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().split()))')"
  for i in $(seq 1 $#); do
    record "$phase" "wrk_$i" "$(cat "$WORK/$phase-$i.json")"
    record "$phase" "wrk_${i}_cpu_s" "$(tail -n 1 "$WORK/$phase-$i.time" | awk '{ print $1 + $2 }')"
  done
  for n in "${!NODE_PIDS[@]}"; do
    record "$phase" "cpu_ticks_node_$n" $(($(cpu_ticks "${NODE_PIDS[$n]}") - before[$n]))
  done
  record "$phase" cpu_ticks_mock $(($(cpu_ticks "$MOCK_PID") - before[mock]))
  local tot max title
  read -r tot max title < <(pg_delta "$WORK/pg-$phase-0.txt" "$WORK/pg-$phase-1.txt")
  record "$phase" cpu_ticks_pg "$tot"
  record "$phase" cpu_ticks_pg_busiest "$max"
  record "$phase" pg_busiest "$title"
}

# pg_activity PID COUNT: every 250 ms while PID runs (at most COUNT times), the database's
# sessions that are not idle: time, pid, state, wait event, their statement's start, its age.
pg_activity() {
  local i
  for i in $(seq 1 "$2"); do
    kill -0 "$1" 2> /dev/null || break
    timeout 5 psql -X -q -At -F '|' "$DB_URL" -c "SELECT extract(epoch FROM clock_timestamp()), pid, state,
        COALESCE(wait_event_type, '-') || ':' || COALESCE(wait_event, '-'), left(regexp_replace(query, '\s+', ' ', 'g'), 30),
        extract(epoch FROM clock_timestamp() - query_start), extract(epoch FROM clock_timestamp() - xact_start)
      FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'" || true
    sleep 0.25
  done
}

# pressure: the kernel's stall totals (PSI, microseconds): "cpu_some io_some io_full" ("" if absent).
pressure() {
  [ -r /proc/pressure/cpu ] && [ -r /proc/pressure/io ] || return 0
  printf '{"cpu_some_us": %s, "io_some_us": %s, "io_full_us": %s}' \
    "$(awk '/^some/ { sub("total=", "", $5); print $5 }' /proc/pressure/cpu)" \
    "$(awk '/^some/ { sub("total=", "", $5); print $5 }' /proc/pressure/io)" \
    "$(awk '/^full/ { sub("total=", "", $5); print $5 }' /proc/pressure/io)"
}

# chat_status URL KEY FILE: one overdraw-shaped request; prints the HTTP status.
chat_status() {
  curl -s -m 10 -o "$3" -w '%{http_code}' -H 'Content-Type: application/json' -H "Authorization: Bearer $2" \
    -d "{\"model\":\"gpt-4o-mini\",\"max_tokens\":$MAX_TOKENS,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}" \
    "$1$CHAT" || true
}

# node_prefix NAME URL: one chat with the bench key, which must succeed; prints the node's request
# id prefix (24 hex digits drawn once per process), which tells its ledger entries apart.
node_prefix() {
  local name=$1 url=$2 code
  code=$(curl -s -m 10 -D "$WORK/check-$name.headers" -o "$WORK/check-$name.json" -w '%{http_code}' \
    -H 'Content-Type: application/json' -H "Authorization: Bearer $GW_KEY" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}' "$url$CHAT" || true)
  [ "$code" = 200 ] || die "node $name: POST $url$CHAT answered '$code': $(head -c 300 "$WORK/check-$name.json")"
  tr -d '\r' < "$WORK/check-$name.headers" | sed -n 's/^x-request-id: req-\([0-9a-f]\{24\}\).*/\1/Ip' | head -n 1 | grep . \
    || die "node $name: no x-request-id in its answer"
}

# sql_into VAR QUERY: a query's output into VAR, failing the script if the query fails.
sql_into() {
  local out
  out=$(sql "$2") || die "query failed: $2"
  printf -v "$1" '%s' "$out"
}

# overdraw_round NAME BALANCE_MICROS SECS: a new user NAME with BALANCE_MICROS, its key loaded
# through both nodes at once (NODE_CONNS each) for SECS; records what was answered, charged
# and left (target od_NAME).
overdraw_round() {
  local name=$1 balance=$2 secs=$3 key url ok n
  key=$(tg keys create --name "$name" --balance "$(printf '%d.%06d' $((balance / 1000000)) $((balance % 1000000)))" \
    | awk 'NF { k = $0 } END { print k }')
  [ -n "$key" ] || die "keys create printed no key (see $WORK/cli.log)"
  record "od_$name" initial_micros "$balance"
  log "user '$name': $balance micros ($((balance / CHARGE)) calls of $CHARGE micros); waiting for both nodes to know its key"
  for url in "$A_URL" "$B_URL"; do
    ok=0
    for _ in $(seq 1 $((KEY_REFRESH_MS / 100 + 100))); do
      if [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H "Authorization: Bearer $key" "$url/v1/user/info" || true)" = 200 ]; then
        ok=1
        break
      fi
      sleep 0.1
    done
    [ "$ok" = 1 ] || die "$url did not accept the new key within $((KEY_REFRESH_MS / 1000 + 10)) s"
  done
  log "overdraw '$name': both nodes, c=$NODE_CONNS each, max_tokens $MAX_TOKENS, for ${secs}s"
  # The nodes' /metrics every 100 ms through the round and until their writers are idle (at most
  # DRAIN_SECS after it): how many calls each answered in a sync window, when they committed.
  local sampler activity t0 t1
  python3 "$HERE/nodes.py" sample "$WORK/samples-$name.tsv" $((secs + 1)) $((secs + DRAIN_SECS)) "$A_URL" "$B_URL" &
  sampler=$!
  STARTED_PIDS+=("$sampler")
  # The load starts once both nodes' counters are read: a small balance is spent in ~0.1 s.
  for _ in $(seq 1 100); do
    [ "$(cat "$WORK/samples-$name.tsv" 2> /dev/null | wc -l)" -ge 2 ] && break
    kill -0 "$sampler" 2> /dev/null || die "the /metrics sampler exited"
    sleep 0.1
  done
  # What PostgreSQL's sessions wait on, every 250 ms while the sampler runs.
  pg_activity "$sampler" $(((secs + DRAIN_SECS) * 4)) > "$WORK/activity-$name.txt" 2> /dev/null &
  activity=$!
  STARTED_PIDS+=("$activity")
  record "od_$name" pressure_before "$(pressure)"
  AUTH=$key WRK_SCRIPT=$HERE/nodes.lua load_nodes "od_$name" "$NODE_CONNS" "$secs" "$A_URL$CHAT" "$B_URL$CHAT"
  t0=$(date +%s%N)
  wait "$sampler" || die "the /metrics sampler failed"
  t1=$(date +%s%N)
  record "od_$name" pressure_after "$(pressure)"
  wait "$activity" || true
  record "od_$name" activity_file "$WORK/activity-$name.txt"
  record "od_$name" samples_file "$WORK/samples-$name.tsv"
  record "od_$name" drain_wait_ms $(((t1 - t0) / 1000000))

  # The writers commit within their 200 ms window; wait until the user's ledger stops changing.
  local uid n0 n1=-1
  sql_into uid "SELECT id FROM users WHERE name = '$name'"
  for _ in $(seq 1 20); do
    sql_into n0 "SELECT COUNT(*) FROM ledger WHERE user_id = $uid"
    [ "$n0" = "$n1" ] && break
    n1=$n0
    sleep 0.5
  done
  # Both nodes must refuse now; their 402 says what one call reserves.
  local code msg
  for n in a b; do
    url=$A_URL
    [ "$n" = b ] && url=$B_URL
    code=$(chat_status "$url" "$key" "$WORK/probe-$name-$n.json")
    record "od_$name" "probe_${n}_status" "$code"
    msg=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["error"]["message"])' "$WORK/probe-$name-$n.json" 2> /dev/null || true)
    record "od_$name" "probe_${n}_message" "$msg"
  done
  local user
  sql_into user "SELECT json_build_object(
      'balance_micros', u.balance_micros,
      'ledger_sum_micros', (SELECT COALESCE(SUM(amount_micros), 0) FROM ledger l WHERE l.user_id = u.id),
      'charges', (SELECT COUNT(*) FROM ledger l WHERE l.user_id = u.id AND l.kind = 'charge'),
      'charges_node_a', (SELECT COUNT(*) FROM ledger l WHERE l.user_id = u.id AND l.kind = 'charge'
                         AND substr(l.entry_id, 5, 24) = '$PREFIX_A'),
      'charges_node_b', (SELECT COUNT(*) FROM ledger l WHERE l.user_id = u.id AND l.kind = 'charge'
                         AND substr(l.entry_id, 5, 24) = '$PREFIX_B'),
      'charge_min_micros', (SELECT MIN(-amount_micros) FROM ledger l WHERE l.user_id = u.id AND l.kind = 'charge'),
      'charge_max_micros', (SELECT MAX(-amount_micros) FROM ledger l WHERE l.user_id = u.id AND l.kind = 'charge'),
      'charged_sum_micros', (SELECT COALESCE(-SUM(amount_micros), 0) FROM ledger l WHERE l.user_id = u.id AND l.kind = 'charge'),
      'call_log', (SELECT COALESCE(json_object_agg(status, n), '{}') FROM
                   (SELECT status, COUNT(*) AS n FROM call_log c
                    WHERE c.key_id IN (SELECT id FROM consumer_keys k WHERE k.user_id = u.id) GROUP BY status) s)
    ) FROM users u WHERE u.id = $uid"
  record "od_$name" db_user "$user"
}

main() {
  local t
  for t in wrk curl python3 psql timeout getconf ps; do
    command -v "$t" > /dev/null || die "missing tool: $t"
  done
  for t in "$MOCK_BIN" "$GW_BIN" "$PLUGIN_WASM" "$VIDEO_WASM" "$SPEECH_WASM"; do
    [ -e "$t" ] || die "missing $t (build it first: cargo build --release; the plugins with cargo plugins)"
  done
  mkdir -p "$(dirname "$OUT")"
  # Private copies of the binaries: a rebuild during the run cannot give the nodes different ones.
  mkdir -p "$WORK/bin"
  cp "$GW_BIN" "$WORK/bin/tollgate"
  cp "$PLUGIN_WASM" "$WORK/bin/openai.wasm"
  cp "$VIDEO_WASM" "$WORK/bin/siliconflow.wasm"
  cp "$SPEECH_WASM" "$WORK/bin/minimax.wasm"
  record meta gw_bin "$GW_BIN, $(stat -c %y "$GW_BIN" | cut -d. -f1), sha256 $(sha256sum "$GW_BIN" | cut -c1-12)"
  record meta plugin "$(basename "$PLUGIN_WASM"), sha256 $(sha256sum "$PLUGIN_WASM" | cut -c1-12)"
  GW_BIN=$WORK/bin/tollgate
  PLUGIN_WASM=$WORK/bin/openai.wasm
  VIDEO_WASM=$WORK/bin/siliconflow.wasm
  SPEECH_WASM=$WORK/bin/minimax.wasm
  record meta date "$(date +%F)"
  record meta cores "$(nproc)"
  record meta clk_tck "$(getconf CLK_TCK)"
  record meta duration_s "$DURATION"
  record meta key_refresh_ms "$KEY_REFRESH_MS"
  record meta write_window_ms 200
  record meta max_tokens "$MAX_TOKENS"
  record meta small_calls "$SMALL_CALLS"
  local rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)
  [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2> /dev/null)" ] && rev+=-dirty
  record meta git "$rev"

  log "starting PostgreSQL"
  local pg_line
  pg_line=$(timeout 90 "$ROOT/tests/postgres.sh" start) || die "tests/postgres.sh start failed"
  read -r PG_URL PG_DIR <<< "$pg_line"
  PG_MAIN=$(head -n 1 "$PG_DIR/data/postmaster.pid")
  timeout 30 psql -X -q -v ON_ERROR_STOP=1 "$PG_URL/postgres" -c 'CREATE DATABASE tollgate_bench' > /dev/null
  DB_URL=$PG_URL/tollgate_bench
  record meta postgres "$("$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/postgres" --version)"
  log "PostgreSQL (postmaster pid $PG_MAIN) on $DB_URL"

  start_mock
  local extra
  extra=$(printf 'database_url = "%s"\nkey_refresh_ms = %s' "$DB_URL" "$KEY_REFRESH_MS")
  declare -gA NODE_PIDS=()
  GW_EXTRA_CONFIG=$extra start_gateway
  A_CFG=$CFG
  A_URL=$GW_URL
  NODE_PIDS[a]=$GW_PID
  PREFIX_A=$(node_prefix a "$A_URL")
  record meta busy_before_pct "$(cpu_busy_pct)"

  # 1. One node.
  log "node A alone: warm-up 2 s, then c=32 for ${DURATION}s"
  AUTH=$GW_KEY DURATION=2 run_wrk warm-a 32 "$A_URL$CHAT" > /dev/null
  AUTH=$GW_KEY load_nodes one 32 "$DURATION" "$A_URL$CHAT"

  # 2. Two nodes on the same database and key.
  GW_NODE=b GW_CREATE_KEY=0 GW_EXTRA_CONFIG=$extra start_gateway
  B_URL=$GW_URL
  NODE_PIDS[b]=$GW_PID
  PREFIX_B=$(node_prefix b "$B_URL")
  [ "$PREFIX_A" != "$PREFIX_B" ] || die "both nodes draw request ids with the prefix $PREFIX_A"
  log "nodes A and B at once: warm-up 2 s, then c=$NODE_CONNS each for ${DURATION}s"
  AUTH=$GW_KEY load_nodes warm2 "$NODE_CONNS" 2 "$A_URL$CHAT" "$B_URL$CHAT"
  AUTH=$GW_KEY load_nodes two "$NODE_CONNS" "$DURATION" "$A_URL$CHAT" "$B_URL$CHAT"

  # 3. The overdraw: one user's balance spent through both nodes at once. Round "small": a few
  # hundred calls (both nodes spend it before either learns of the other's charges, so the
  # balance, not the sync window, sets the overdraw). Round "large": what both nodes spend in
  # LARGE_SECS at the two-node run's rate, so they sync a few times while spending and the
  # overdraw at the end is set by the sync window the bound is about.
  sql_into CHARGE "SELECT COALESCE(MAX(-amount_micros), 0) FROM ledger WHERE kind = 'charge'"
  [ "$CHARGE" -gt 0 ] || die "no charge in the ledger after the throughput runs"
  record meta charge_seen_micros "$CHARGE"
  local rate2 sync_s
  rate2=$(python3 -c 'import json, sys; print(int(sum(json.loads(w)["requests"] / (json.loads(w)["duration_us"] / 1e6) for w in sys.argv[1:])))' \
    "$(cat "$WORK/two-1.json")" "$(cat "$WORK/two-2.json")")
  sync_s=$(((200 + KEY_REFRESH_MS + 999) / 1000))
  overdraw_round small $((SMALL_CALLS * CHARGE)) "$OVERDRAW_SECS"
  overdraw_round large $((LARGE_SECS * rate2 * CHARGE)) $((LARGE_SECS + sync_s + 2))
  record meta rounds '["small", "large"]'

  local every
  sql_into every "SELECT json_build_object(
      'users', (SELECT COUNT(*) FROM users),
      'mismatched_users', (SELECT COUNT(*) FROM users u WHERE u.balance_micros <>
                           (SELECT COALESCE(SUM(amount_micros), 0) FROM ledger l WHERE l.user_id = u.id)),
      'charges', (SELECT COUNT(*) FROM ledger WHERE kind = 'charge'),
      'call_records', (SELECT COUNT(*) FROM call_log))"
  record meta db_all "$every"
  record meta slow_statements "$(cat "$WORK"/gateway*.log | grep -c 'slow statement' || true)"
  local verify vrc=0
  verify=$(tg ledger verify 2>&1) || vrc=$?
  record meta ledger_verify_rc "$vrc"
  record meta ledger_verify "$(echo "$verify" | tr '\n\t' '  ')"

  cp "$PG_DIR/server.log" "$WORK/postgres.log" 2> /dev/null || true
  # Raw outputs beside the JSON (git-ignored), then the table and the verdicts.
  local raw=${OUT%.json}.raw
  rm -rf "$raw"
  mkdir -p "$raw"
  cp "$WORK"/*.json "$WORK"/*.time "$WORK"/wrk-*.txt "$WORK"/pg-*.txt "$WORK"/samples-*.tsv "$WORK"/activity-*.txt "$WORK"/gateway*.log "$WORK"/postgres.log "$raw"/ 2> /dev/null || true
  cp "$METRICS" "${OUT%.json}.tsv"
  echo
  python3 "$HERE/nodes.py" report "$METRICS" "$OUT"
}

main
