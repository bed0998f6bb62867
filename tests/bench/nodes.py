#!/usr/bin/env python3
"""nodes.sh's helper (stdlib only): samples the nodes' /metrics during an overdraw round, and
turns the figures into a printed table, the verdicts and a JSON file.

Usage: nodes.py sample OUT_TSV MIN_SECS MAX_SECS URL...
         every 100 ms, one line per node: t_ns, node index, responses 2xx and 4xx, charged micros
         (committed by its writer), call records written and dropped; for at least MIN_SECS and
         then until nothing changed for 1 s (the writers drained), at most MAX_SECS
       nodes.py report METRICS_TSV OUT_JSON     (exit 1 when a verdict fails)

METRICS_TSV: TARGET <tab> KEY <tab> VALUE lines (lib.sh's `record`). Targets: meta (with rounds,
charge_seen_micros, db_all, ledger_verify_rc); the load runs "one" (node A alone), "warm2", "two"
(nodes A and B at once) and "od_<round>" (an overdraw round), each with wall_us, conns, urls, wrk_N
(the wrk script's JSON line), wrk_N_cpu_s, cpu_ticks_node_a/_b, cpu_ticks_mock, cpu_ticks_pg (every
PostgreSQL process), cpu_ticks_pg_busiest and pg_busiest (its title); an overdraw round also has
initial_micros, db_user (balance, ledger sum, charges per node) and probe_* (the 402 after it).

The bound on the overdraw is the README's (Database): the calls the other node has in flight
(its wrk connections: wrk keeps each one busy) plus the charges it made in its last sync window
(the call log's 200 ms write window plus key_refresh_ms) at its rate, all at the per-call charge.
The other node's charges in that window are measured: the most calls a node answered 200 in any
such window of the round, from its /metrics sampled every 100 ms (`sample`).
"""
import json
import re
import sys
import time
import urllib.request

import report  # the figures' file format, shared with run.sh's report (same folder)
from collections import defaultdict

SAMPLE_S = 0.1
METRICS = ("tollgate_responses_total{class=\"2xx\"}", "tollgate_responses_total{class=\"4xx\"}",
           "tollgate_charged_micros_total", "tollgate_call_records_written_total",
           "tollgate_call_records_dropped_total")


def scrape(url):
    with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in METRICS:
            values[name] = int(float(value))
    return [values.get(m, 0) for m in METRICS]


def sample(out_path, min_s, max_s, urls):
    start = time.monotonic()
    last, still_since = None, start
    with open(out_path, "w") as out:
        for _ in range(int(max_s / SAMPLE_S) + 1):
            now = time.monotonic()
            if now - start >= max_s:
                break
            t = time.time_ns()
            rows = []
            for i, url in enumerate(urls):
                try:
                    rows.append([i, *scrape(url)])
                except OSError:
                    rows.append(None)
            for r in rows:
                if r:
                    out.write("\t".join(map(str, [t, *r])) + "\n")
            out.flush()
            # /metrics counts itself as a 2xx: the other figures tell a change (every call
            # answered is recorded, so a node still answering moves `written` or `dropped`).
            key = [r[2:] for r in rows if r]
            if key != last:
                last, still_since = key, now
            elif now - start >= min_s and now - still_since >= 1.0:
                break
            time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - now)))


def load(path):
    return report.load(path, ("git", "postgres", "pg_busiest", "probe_a_message", "probe_b_message", "ledger_verify"))


def run_figures(r, clk_tck):
    """One load run: req/s per wrk and in all, CPU per process in % of one core."""
    if not r:
        return None
    wall = r["wall_us"] / 1e6
    wrks = [r[k] for k in sorted(r) if re.fullmatch(r"wrk_\d+", k)]
    per = [w["requests"] / (w["duration_us"] / 1e6) for w in wrks]
    errors = [sum(w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")) for w in wrks]
    pct = lambda ticks: 100.0 * ticks / clk_tck / wall
    total_rps = sum(per)
    cpu = {
        "node_a": pct(r.get("cpu_ticks_node_a", 0)),
        "mock": pct(r["cpu_ticks_mock"]),
        "wrk": [100.0 * r[f"wrk_{i + 1}_cpu_s"] / wall for i in range(len(wrks))],
        "postgres": pct(r["cpu_ticks_pg"]),
        "postgres_busiest": pct(r["cpu_ticks_pg_busiest"]),
        "postgres_busiest_title": r.get("pg_busiest", "").replace("_", " "),
    }
    if "cpu_ticks_node_b" in r:
        cpu["node_b"] = pct(r["cpu_ticks_node_b"])
    requests = sum(w["requests"] for w in wrks)
    return {
        "conns_per_node": r["conns"],
        "rps_per_node": per,
        "rps": total_rps,
        "requests": requests,
        "errors": errors,
        "wall_s": wall,
        "cpu_pct_of_one_core": cpu,
        "postgres_us_per_request": 1e6 * r["cpu_ticks_pg"] / clk_tck / requests if requests else None,
        "gateway_us_per_request": 1e6 * (r.get("cpu_ticks_node_a", 0) + r.get("cpu_ticks_node_b", 0)) / clk_tck / requests
        if requests else None,
    }


def timeline(path, charge, window_s):
    """Per node, from the /metrics samples of a round: the most calls it answered 200 in any
    window_s (an upper bound: a window is widened to the samples around it), and how long its
    answers waited for their charges to commit (answer -> commit, at the samples' resolution)."""
    series = defaultdict(list)
    with open(path) as f:
        for line in f:
            t, node, ok, refused, charged, written, dropped = map(int, line.split("\t"))
            # The j-th scrape's 2xx count includes the j scrapes before it.
            ok -= len(series[node])
            series[node].append((t / 1e9, ok, refused, charged, written, dropped))
    nodes = []
    for node in sorted(series):
        s = series[node]
        t0, ok0, _, ch0, w0, d0 = s[0]
        most = 0
        for i in range(len(s)):
            nxt = s[i + 1][0] if i + 1 < len(s) else s[i][0]
            j = next((j for j in range(i, len(s)) if s[j][0] >= nxt + window_s), len(s) - 1)
            most = max(most, s[j][1] - s[i][1])
        final_ok = s[-1][1]
        answered_until = next(t for t, ok, *_ in s if ok == final_ok) - t0
        lag = 0.0
        for t, ok, _, charged, _, _ in s:
            need = (ok - ok0) * charge
            if need <= 0:
                continue
            tc = next((tc for tc, _, _, c, _, _ in s if c - ch0 >= need), None)
            lag = max(lag, (tc - t) if tc is not None else float("inf"))
        nodes.append({
            "samples": len(s),
            "sampled_s": s[-1][0] - t0,
            "answered_200": final_ok - ok0,
            "most_200_in_window": most,
            "last_200_at_s": answered_until,
            "committed_micros": s[-1][3] - ch0,
            "writer_lag_max_s": lag,
            "records_written": s[-1][4] - w0,
            "records_dropped": s[-1][5] - d0,
        })
    return nodes


def activity(path):
    """PostgreSQL's sessions sampled every 250 ms (nodes.sh's pg_activity): per state and wait
    event, how often a session was seen in it, and the longest transaction seen."""
    seen = defaultdict(int)
    longest = (0.0, "")
    try:
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("|")
                if len(parts) != 7:
                    continue
                _, _, state, wait, query, _, xact = parts
                seen[f"{state} {wait}"] += 1
                if xact and float(xact) > longest[0]:
                    longest = (float(xact), f"{state} {wait}: {query}")
    except OSError:
        pass
    return {"seen": dict(sorted(seen.items(), key=lambda kv: -kv[1])), "longest_xact_s": longest[0],
            "longest_xact": longest[1]}


def pressure(run):
    a, b = run.get("pressure_before"), run.get("pressure_after")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return None
    wall = run["wall_us"] / 1e6
    return {k.replace("_us", "_share"): (b[k] - a[k]) / 1e6 / wall for k in a}


def overdraw_round(data, name, meta, clk, rate_two):
    """One overdraw round: the balance left, the overdraw, its bound, and the counts."""
    run = data[f"od_{name}"]
    fig = run_figures(run, clk)
    user = run["db_user"]
    charge = user["charge_max_micros"] or meta["charge_seen_micros"]
    window_s = (meta["write_window_ms"] + meta["key_refresh_ms"]) / 1000.0
    conns = run["conns"]
    nodes = timeline(run["samples_file"], charge, window_s)
    wrks = [run[f"wrk_{i + 1}"] for i in range(len(fig["errors"]))]
    ok_per_node = [w["requests"] - e for w, e in zip(wrks, fig["errors"])]
    # The samples must have seen every call wrk had answered 200 (they began before the load);
    # where they did not, the node's every call of the round stands for its window.
    for n, ok in zip(nodes, ok_per_node):
        n["covers_the_round"] = abs(n["answered_200"] - ok) <= max(2, ok // 100)
        if not n["covers_the_round"]:
            n["most_200_in_window"] = max(n["most_200_in_window"], ok)
    # The other node's charges in its last sync window: which node is "the other" depends on
    # which one admitted the last call, so the larger of the two.
    window_calls = max(n["most_200_in_window"] for n in nodes)
    bound_calls = conns + window_calls
    bound_micros = int(bound_calls * charge)
    final = user["balance_micros"]
    overdraw = max(0, -final)
    reserved = None
    for n in ("a", "b"):
        m = re.search(r"reserves up to ([0-9]+\.[0-9]+)", run.get(f"probe_{n}_message", ""))
        if m:
            reserved = round(float(m.group(1)) * 1e6)
    return {
        "initial_micros": run["initial_micros"],
        "initial_calls": run["initial_micros"] / charge,
        "final_balance_micros": final,
        "overdraw_micros": overdraw,
        "overdraw_calls": overdraw / charge,
        "charge_micros": charge,
        "charge_min_micros": user["charge_min_micros"],
        "reserved_per_call_micros": reserved,
        "charges": user["charges"],
        "charges_per_node": [user["charges_node_a"], user["charges_node_b"]],
        "charged_micros": user["charged_sum_micros"],
        "answered_200_per_node": ok_per_node,
        "answered_200": sum(ok_per_node),
        "refused_after": all(run.get(f"probe_{n}_status") == 402 for n in ("a", "b")),
        "probe_messages": [run.get("probe_a_message"), run.get("probe_b_message")],
        "balance_is_ledger_sum": user["balance_micros"] == user["ledger_sum_micros"],
        "ledger_sum_micros": user["ledger_sum_micros"],
        "call_log_by_status": user["call_log"],
        "bound": {
            "other_node_in_flight_calls": conns,
            "sync_window_s": window_s,
            "other_node_calls_in_window": window_calls,
            "calls": bound_calls,
            "micros": bound_micros,
            "at_two_node_rate_micros": int((conns + rate_two * window_s) * charge),
        },
        "nodes": nodes,
        "postgres_sessions": activity(run.get("activity_file", "")),
        "pressure": pressure(run),
        "within_bound": overdraw <= bound_micros,
        "run": fig,
    }


def main():
    data = load(sys.argv[1])
    out_path = sys.argv[2]
    meta = data["meta"]
    clk = meta["clk_tck"]
    cores = meta["cores"]
    one = run_figures(data.get("one"), clk)
    two = run_figures(data.get("two"), clk)
    every = meta["db_all"]

    # PostgreSQL is the limit if one of its processes is near a core (a serial bottleneck) or it
    # takes half the machine; otherwise the nodes' own CPU (and the machine's) bounds throughput.
    def db_limit(f):
        c = f["cpu_pct_of_one_core"]
        return c["postgres_busiest"] >= 80.0 or c["postgres"] >= 50.0 * cores

    rate_two = max(two["rps_per_node"])
    rounds = {name: overdraw_round(data, name, meta, clk, rate_two) for name in meta["rounds"]}
    ledger_ok = every["mismatched_users"] == 0 and meta["ledger_verify_rc"] == 0 and all(
        r["balance_is_ledger_sum"] for r in rounds.values())
    bound_ok = all(r["within_bound"] for r in rounds.values())

    result = {
        "meta": meta,
        "one_node": one,
        "two_nodes": two,
        "two_nodes_vs_one": two["rps"] / one["rps"],
        "postgres_is_the_limit": {"one_node": db_limit(one), "two_nodes": db_limit(two)},
        "overdraw": rounds,
        "ledger": {
            "every_user_exact": every["mismatched_users"] == 0,
            "users": every["users"],
            "ledger_verify_rc": meta["ledger_verify_rc"],
            "ledger_verify": meta.get("ledger_verify"),
            "exact": ledger_ok,
        },
        "pass": bound_ok and ledger_ok,
    }

    def cpu_cells(f):
        c = f["cpu_pct_of_one_core"]
        return (f"{c['node_a']:.0f}%", f"{c['node_b']:.0f}%" if "node_b" in c else "-", f"{c['mock']:.0f}%",
                "+".join(f"{x:.0f}" for x in c["wrk"]) + "%", f"{c['postgres']:.1f}% ({c['postgres_busiest']:.1f}%)")

    def table(head, rows):
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))

    print(f"Several nodes on one PostgreSQL ({meta.get('postgres', '?')}), {meta['date']}, git {meta['git']}, "
          f"{cores} cores (busy {meta.get('busy_before_pct', '?')}% before the load), {meta['duration_s']} s per run")
    print("CPU in % of one core over the run; PostgreSQL: all its processes (its busiest one)")
    table(("", "req/s", "node A", "node B", "mock", "wrk", "PostgreSQL", "PG us/req", "errors"), [
        (f"1 node, c={one['conns_per_node']}", f"{one['rps']:,.0f}", *cpu_cells(one),
         f"{one['postgres_us_per_request']:.1f}", str(sum(one["errors"]))),
        (f"2 nodes, c={two['conns_per_node']} each", f"{two['rps']:,.0f} ({' + '.join(f'{x:,.0f}' for x in two['rps_per_node'])})",
         *cpu_cells(two), f"{two['postgres_us_per_request']:.1f}", str(sum(two["errors"]))),
    ])
    print(f"2 nodes / 1 node: {result['two_nodes_vs_one']:.2f}x; PostgreSQL the limit: "
          f"{'YES' if db_limit(two) or db_limit(one) else 'no'} (the test: one of its processes >= 80% of a core, "
          f"or all of them >= half the machine)")
    print()
    w = meta["write_window_ms"]
    k = meta["key_refresh_ms"]
    any_r = next(iter(rounds.values()))
    print(f"Overdraw: one user's balance spent through both nodes at once, c={any_r['bound']['other_node_in_flight_calls']} "
          f"each, max_tokens {meta['max_tokens']} (a call reserves {any_r['reserved_per_call_micros']} micros, "
          f"is charged {any_r['charge_micros']}).")
    print(f"Bound (README, Database): the other node's {any_r['bound']['other_node_in_flight_calls']} calls in flight "
          f"+ the calls it answered in its last sync window ({w} ms write window + {k} ms key_refresh_ms): the most "
          f"either node answered 200 in any {w + k} ms of the round (its /metrics, sampled every 100 ms)")
    rows = []
    for name, r in rounds.items():
        b = r["bound"]
        rows.append((
            name,
            f"{r['initial_micros']:,} ({r['initial_calls']:,.0f})",
            f"{r['final_balance_micros']:,}",
            f"{r['overdraw_micros']:,} ({r['overdraw_calls']:,.0f})",
            f"{b['micros']:,} ({b['calls']:,.0f})",
            f"{100.0 * r['overdraw_micros'] / b['micros']:.0f}%",
            "yes" if r["within_bound"] else "NO",
            f"{r['answered_200']:,} ({' + '.join(f'{x:,}' for x in r['answered_200_per_node'])})",
            f"{r['charges']:,} ({' + '.join(f'{x:,}' for x in r['charges_per_node'])})",
            "yes" if r["balance_is_ledger_sum"] else "NO",
            "yes" if r["refused_after"] else "NO",
        ))
    table(("round", "balance micros (calls)", "final", "overdraw (calls)", "bound (calls)", "of bound", "within",
           "200s A+B", "charges A+B", "bal=sum", "402 after"), rows)
    for name, r in rounds.items():
        ns = r["nodes"]
        print(f"  {name}: calls in a sync window A/B {ns[0]['most_200_in_window']:,}/{ns[1]['most_200_in_window']:,}; "
              f"answer -> commit at most {ns[0]['writer_lag_max_s'] * 1000:,.0f}/{ns[1]['writer_lag_max_s'] * 1000:,.0f} ms "
              f"(documented: {w} ms); call records dropped {ns[0]['records_dropped']:,}/{ns[1]['records_dropped']:,}"
              + ("" if all(n["covers_the_round"] for n in ns) else "; the samples missed calls: a node's whole round stands for its window"))
        pg = r["postgres_sessions"]
        top = ", ".join(f"{k} x{v}" for k, v in list(pg["seen"].items())[:4])
        pr = r["pressure"] or {}
        print(f"    PostgreSQL sessions seen (every 250 ms): {top or '-'}; longest transaction {pg['longest_xact_s']:.2f} s "
              f"({pg['longest_xact'][:60]}); CPU/IO pressure {100 * pr.get('cpu_some_share', 0):.0f}%/"
              f"{100 * pr.get('io_some_share', 0):.0f}%")
        if r["charges"] != r["answered_200"] or r["charges_per_node"] != r["answered_200_per_node"]:
            print(f"  note ({name}): the ledger's charges per node {r['charges_per_node']} differ from the 200s wrk "
                  f"counted {r['answered_200_per_node']}")
    print(f"Ledger: every user's balance = sum(ledger): {'yes' if every['mismatched_users'] == 0 else 'NO'} "
          f"({every['users']} users); `tollgate ledger verify` exit {meta['ledger_verify_rc']}: {meta.get('ledger_verify', '').strip()}")
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"\nwritten: {out_path}")
    print("verdict:", "PASS" if result["pass"] else "FAIL",
          "" if result["pass"] else f"(overdraw within the bound: {bound_ok}; ledger exact: {ledger_ok})")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "sample":
        sample(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5:])
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        sys.argv = [sys.argv[0], *sys.argv[2:]]
        sys.exit(main())
    else:
        sys.exit(__doc__)
