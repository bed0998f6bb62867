#!/usr/bin/env python3
"""Turn the raw figures run.sh collected into the printed table and a JSON file (stdlib only).

Usage: report.py METRICS_TSV OUT_JSON

METRICS_TSV has one figure per line: TARGET <tab> KEY <tab> VALUE, where TARGET is "meta",
"direct", "nginx", "tollgate" or a peer name, and VALUE is a number, a string, or a JSON object (the
WRK_JSON line of post.lua, the output of ttfb.py). Keys per target:
  wrk_c1, wrk_c32     post.lua's done() output for the c=1 (--latency) and c=32 runs
  cpu_ticks_self      utime+stime ticks of the target's own process(es) during the c=32 run
  cpu_ticks_mock      ticks of mock-vendor during the same run (the upstream's share)
  rss_hwm_kb          VmHWM after the load
  stream.<round>      ttfb.py output of one round of streamed requests (pooled per target)
  chunks              ttfb.py output for the 500-chunk unpaced streams (model burst-500)
  chunks_cpu_ticks    ticks of the target's own process(es) during those streams (warm-up included)
  upstream, note      free text
"""
import json
import statistics
import sys
from collections import defaultdict

from ttfb import percentile


def load(path, text_keys=("git",)):
    """The figures by target and key; the values of `text_keys` stay text."""
    data = defaultdict(dict)
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            target, key, value = line.split("\t", 2)
            # A commit hash is text even when its digits read as a number.
            if key not in text_keys:
                try:
                    value = json.loads(value)
                except ValueError:
                    pass  # plain string
            data[target][key] = value
    return data


def rps(w):
    return w["requests"] / (w["duration_us"] / 1e6) if w and w.get("duration_us") else None


def errors(w):
    if not w:
        return None
    return sum(w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))


def pooled_stream(t):
    """A target's streamed requests over its rounds (keys stream.<round>): the medians and p90s
    of all rounds' requests together, the counts summed (a round that gave no output counts as
    one failure), and each round's own median first byte by round."""
    rounds = sorted((int(k.split(".", 1)[1]), v) for k, v in t.items()
                    if k.startswith("stream.") and isinstance(v, dict))
    if not rounds:
        return {}
    out = {"ok": sum(r.get("ok") or 0 for _, r in rounds),
           "failed": sum(1 if r.get("failed") is None else r["failed"] for _, r in rounds),
           "first_by_round": {n: r.get("first_ms") for n, r in rounds}}
    for name in ("head_ms", "first_ms", "last_ms"):
        vals = [v for _, r in rounds for v in (r.get("samples") or {}).get(name, [])]
        out[name] = statistics.median(vals) if vals else None
        out[name.replace("_ms", "_p90_ms")] = percentile(vals, 90)
    return out


def summarize(t, clk_tck):
    """Figures of one target, in the units the table uses."""
    c1, c32, st = t.get("wrk_c1"), t.get("wrk_c32"), pooled_stream(t)
    us_per_tick = 1e6 / clk_tck
    n32 = c32["requests"] if c32 else 0

    def per_req(ticks):
        return ticks * us_per_tick / n32 if (ticks is not None and n32) else None

    ch = t.get("chunks") or {}
    # Warm-up streams (2) run too, and count in the ticks.
    n_chunks = ((ch.get("ok") or 0) + 2) * 500
    cpu_per_chunk = (t["chunks_cpu_ticks"] * us_per_tick / n_chunks
                     if t.get("chunks_cpu_ticks") is not None and ch.get("ok") else None)
    return {
        "chunks_ms": ch.get("last_ms"),
        "cpu_us_per_chunk": cpu_per_chunk,
        "chunks_failed": ch.get("failed"),
        "p50_us": c1["p50_us"] if c1 else None,
        "p99_us": c1["p99_us"] if c1 else None,
        "requests_c1": c1["requests"] if c1 else None,
        "rps_c32": rps(c32),
        "requests_c32": n32 or None,
        "cpu_us_per_req": per_req(t.get("cpu_ticks_self")),
        "mock_cpu_us_per_req": per_req(t.get("cpu_ticks_mock")),
        "peak_rss_mib": t["rss_hwm_kb"] / 1024 if "rss_hwm_kb" in t else None,
        "first_byte_ms": st.get("first_ms"),
        "first_byte_p90_ms": st.get("first_p90_ms"),
        "headers_ms": st.get("head_ms"),
        "last_byte_ms": st.get("last_ms"),
        "stream_ok": st.get("ok"),
        "stream_failed": st.get("failed"),
        "first_byte_by_round_ms": st.get("first_by_round"),
        "errors_c1": errors(c1),
        "errors_c32": errors(c32),
        "upstream": t.get("upstream"),
        "note": t.get("note"),
    }


def diff(a, b):
    return b - a if (a is not None and b is not None) else None


def per_chunk(d, t):
    """Time a proxy adds per chunk of the 500-chunk stream, in microseconds."""
    added = diff(d["chunks_ms"], t["chunks_ms"])
    return added * 1000 / 500 if added is not None else None


def fmt(v, nd=0, sign=False):
    if v is None:
        return "-"
    s = f"{v:+,.{nd}f}" if sign else f"{v:,.{nd}f}"
    return s


def pct(a, b):
    """b relative to a, as a signed percentage."""
    if not a or b is None:
        return "-"
    return f"{(b / a - 1) * 100:+.0f}%"


def targets(d, n, g):
    """The performance issue's targets: (what, met?) with None where a figure is missing."""
    def check(ok, a, b):
        return None if a is None or b is None else ok

    added_g, added_n = diff(d["p50_us"], g["p50_us"]), diff(d["p50_us"], n["p50_us"])
    p50_bound = max(60, 2 * added_n) if added_n is not None else 60
    fb = diff(d["first_byte_ms"], g["first_byte_ms"])
    failed = sum(x or 0 for x in (g["errors_c1"], g["errors_c32"], g["stream_failed"], g["chunks_failed"]))
    ratio = g["rps_c32"] / n["rps_c32"] if g["rps_c32"] and n["rps_c32"] else None
    return [
        (f"req/s c=32 at least 50% of nginx's: {fmt(ratio * 100 if ratio else None)}%",
         check(ratio is not None and ratio >= 0.5, ratio, ratio)),
        (f"p50 added at c=1 at most {fmt(p50_bound)} us: {fmt(added_g, sign=True)} us",
         check(added_g is not None and added_g <= p50_bound, added_g, added_g)),
        (f"CPU per request at most 50 us: {fmt(g['cpu_us_per_req'], 1)} us",
         check(g["cpu_us_per_req"] is not None and g["cpu_us_per_req"] <= 50, g["cpu_us_per_req"], 0)),
        (f"peak RSS at most 60 MiB: {fmt(g['peak_rss_mib'], 1)} MiB",
         check(g["peak_rss_mib"] is not None and g["peak_rss_mib"] <= 60, g["peak_rss_mib"], 0)),
        (f"first streamed byte added at most 0.2 ms: {fmt(fb, 2, sign=True)} ms",
         check(fb is not None and fb <= 0.2, fb, fb)),
        (f"no failed request: {failed} failed", failed == 0),
    ]


def rounded(v):
    """Floats to 3 decimals, so the JSON is readable and diffs stay small."""
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return v


def main():
    data = load(sys.argv[1])
    out_path = sys.argv[2]
    meta = data.pop("meta", {})
    clk = int(meta.get("clk_tck", 100))
    d = summarize(data.pop("direct", {}), clk)
    n = summarize(data.pop("nginx", {}), clk)
    g = summarize(data.pop("tollgate", {}), clk)
    peers = {name: summarize(t, clk) for name, t in data.items()}

    overhead = {
        "p50_us": diff(d["p50_us"], g["p50_us"]),
        "p99_us": diff(d["p99_us"], g["p99_us"]),
        "rps_c32_ratio": (g["rps_c32"] / d["rps_c32"]) if d["rps_c32"] and g["rps_c32"] else None,
        "gateway_cpu_us_per_req": g["cpu_us_per_req"],
        "first_byte_ms": diff(d["first_byte_ms"], g["first_byte_ms"]),
        "last_byte_ms": diff(d["last_byte_ms"], g["last_byte_ms"]),
        "us_per_chunk": per_chunk(d, g),
        "gateway_cpu_us_per_chunk": g["cpu_us_per_chunk"],
    }

    rows = [
        ("p50 latency c=1 (us)", d["p50_us"], n["p50_us"], g["p50_us"], 0, True),
        ("p99 latency c=1 (us)", d["p99_us"], n["p99_us"], g["p99_us"], 0, True),
        ("req/s c=32", d["rps_c32"], n["rps_c32"], g["rps_c32"], 0, False),
        ("CPU per request (us)", d["cpu_us_per_req"], n["cpu_us_per_req"], g["cpu_us_per_req"], 1, False),
        ("  mock CPU per req (us)", d["mock_cpu_us_per_req"], n["mock_cpu_us_per_req"], g["mock_cpu_us_per_req"], 1,
         None),
        ("peak RSS (MiB)", None, n["peak_rss_mib"], g["peak_rss_mib"], 1, None),
        ("first streamed byte (ms)", d["first_byte_ms"], n["first_byte_ms"], g["first_byte_ms"], 2, True),
        ("last streamed byte (ms)", d["last_byte_ms"], n["last_byte_ms"], g["last_byte_ms"], 2, True),
        ("500-chunk stream (ms)", d["chunks_ms"], n["chunks_ms"], g["chunks_ms"], 2, True),
        ("  per chunk added (us)", None, per_chunk(d, n), per_chunk(d, g), 2, None),
        ("  CPU per chunk (us)", d["cpu_us_per_chunk"], n["cpu_us_per_chunk"], g["cpu_us_per_chunk"], 2, None),
    ]
    cores = meta.get("cores", "?")
    print(f"Tollgate benchmark ({cores} cores shared by wrk, mock and gateway)  {meta.get('date', '')}")
    print(f"git {meta.get('git', '?')}   wrk -t1, {meta.get('duration_s', '?')} s per run, "
          f"stream: median of {meta.get('stream_n', '?')} in {meta.get('stream_rounds', 1)} rounds"
          f"   CPU busy just before: "
          f"{meta.get('busy_before_pct', '?')}%")
    print(f"{'':28}{'direct':>12}{'nginx':>12}{'tollgate':>12}{'nginx ovh':>12}{'tollgate ovh':>14}")
    for name, a, b, c, nd, added in rows:
        if added is None:
            ovh = ("", "")
        elif added:
            ovh = (fmt(diff(a, b), nd, sign=True), fmt(diff(a, c), nd, sign=True))
        elif name.startswith("req/s"):
            ovh = (pct(a, b), pct(a, c))
        else:
            ovh = (fmt(b, nd, sign=True), fmt(c, nd, sign=True))
        print(f"{name:28}{fmt(a, nd):>12}{fmt(b, nd):>12}{fmt(c, nd):>12}{ovh[0]:>12}{ovh[1]:>14}")
    print("CPU per request: direct = mock-vendor process; nginx, tollgate = the proxy's processes only")
    print("(the mock's share is the line below). CPU ticks are 1/%d s; overhead = minus direct." % clk)
    rounds_d, rounds_g = d["first_byte_by_round_ms"] or {}, g["first_byte_by_round_ms"] or {}
    by_round = [diff(rounds_d.get(r), rounds_g[r]) for r in sorted(rounds_g)]
    if len(by_round) > 1 and None not in by_round:
        print("first streamed byte added, round by round (ms): " + " ".join(fmt(x, 2, sign=True) for x in by_round))
    verdict = targets(d, n, g)
    print()
    print("Targets (issue 11), tollgate beside nginx in this run:")
    for line, ok in verdict:
        print(f"  {'met    ' if ok else ('NOT MET' if ok is False else 'n/a    ')}  {line}")

    warnings = []
    busy = meta.get("busy_before_pct")
    if isinstance(busy, (int, float)) and busy > 20:
        warnings.append(f"the CPUs were {busy}% busy just before the load (other jobs?): "
                        "figures are noisy, rerun on a quiet machine")
    for name, s in [("direct", d), ("nginx", n), ("tollgate", g)] + sorted(peers.items()):
        for k in ("errors_c1", "errors_c32", "stream_failed", "chunks_failed"):
            if s.get(k):
                warnings.append(f"{name}: {s[k]} {k.replace('_', ' ')}")
    if peers:
        print()
        print("Peers (same wrk settings; overhead vs their upstream measured directly in this run)")
        print(f"{'':22}{'p50 c=1':>10}{'p99 c=1':>10}{'ovh p50':>10}{'req/s c32':>11}"
              f"{'CPU/req':>10}{'RSS MiB':>9}{'1st byte':>10}")
        print(f"{'':22}{'(us)':>10}{'(us)':>10}{'(us)':>10}{'':>11}{'(us)':>10}{'':>9}{'(ms)':>10}")
        base_by_upstream = {"mock-vendor": d, "peer-mock": peers.get("peer-mock")}
        for name, s in sorted(peers.items()):
            base = base_by_upstream.get(s.get("upstream") or "mock-vendor") or d
            s["overhead_p50_us"] = diff(base["p50_us"], s["p50_us"]) if name != "peer-mock" else None
            s["overhead_p99_us"] = diff(base["p99_us"], s["p99_us"]) if name != "peer-mock" else None
            print(f"{name:22}{fmt(s['p50_us']):>10}{fmt(s['p99_us']):>10}"
                  f"{fmt(s['overhead_p50_us'], sign=True):>10}{fmt(s['rps_c32']):>11}"
                  f"{fmt(s['cpu_us_per_req'], 1):>10}{fmt(s['peak_rss_mib'], 1):>9}"
                  f"{fmt(s['first_byte_ms'], 2):>10}")
            if s.get("note"):
                print(f"  note: {s['note']}")
    if meta.get("peers_note"):
        print()
        print("Peers: " + meta["peers_note"])
    flow = meta.get("task_flow") if isinstance(meta.get("task_flow"), dict) else {}
    if flow:
        print()
        print("Task flow (the mock's SiliconFlow video API; the gateway holds, records, archives)")
        if flow.get("error"):
            warnings.append("task flow: " + str(flow["error"]))
        for name, label in (("submit", "submit (us)"), ("poll", "a consumer's poll (us)")):
            f = flow.get(name) or {}
            print(f"{label:28}{fmt(f.get('direct_us')):>12}{fmt(f.get('tollgate_us')):>12}"
                  f"{fmt(diff(f.get('direct_us'), f.get('tollgate_us')), sign=True):>12}")
        dl = flow.get("download") or {}
        print(f"{'download (MiB/s)':28}{fmt(dl.get('direct_mib_s'), 1):>12}{fmt(dl.get('tollgate_mib_s'), 1):>12}"
              f"{fmt(dl.get('added_ms_per_mib'), 3, sign=True):>12}  ms per MiB, {dl.get('mib', '-')} MiB")
        print(f"{'9 MiB video end to end (s)':28}{'':>12}{fmt(flow.get('end_to_end_s'), 2):>12}"
              "  (the vendor's pace and poll hints)")
    sock = meta.get("socket_flow") if isinstance(meta.get("socket_flow"), dict) else {}
    if sock:
        print()
        print("Socket flow (MiniMax's speech socket on the mock; the gateway reserves and bills each text)")
        if sock.get("error"):
            warnings.append("socket flow: " + str(sock["error"]))
        fa = sock.get("first_audio") or {}
        dm, tm = (fa.get("direct") or {}).get("median_ms"), (fa.get("tollgate") or {}).get("median_ms")
        print(f"{'first audio frame (ms)':28}{fmt(dm, 2):>12}{fmt(tm, 2):>12}{fmt(diff(dm, tm), 2, sign=True):>12}"
              f"  median of {(fa.get('tollgate') or {}).get('n', '-')}")
        h = sock.get("held") or {}
        print(f"{'sessions held at once':28}{'':>12}{fmt(h.get('sessions')):>12}"
              f"  failed {h.get('failed', '-')}, {fmt(h.get('kib_per_session'), 1)} KiB RSS per session"
              f" ({fmt(h.get('rss_before_mib'), 1)} → {fmt(h.get('rss_held_mib'), 1)} MiB)")
        if h.get("failed"):
            warnings.append(f"socket flow: {h['failed']} sessions failed: {h.get('last_error')}")
    pf = meta.get("prefetch_flow") if isinstance(meta.get("prefetch_flow"), dict) else {}
    if pf:
        print()
        print("Prefetch flow (a 6-sentence chat; the mock synthesizes 5 ms a character)")
        if pf.get("error"):
            warnings.append("prefetch flow: " + str(pf["error"]))
        on, off = pf.get("prefetch") or {}, pf.get("no_prefetch") or {}
        print(f"{'':28}{'without':>12}{'with':>12}{'change':>12}")
        for k, label in (("first_audio_ms", "first sentence → audio (ms)"), ("reply_audio_ms", "chat end → reply audio (ms)"),
                         ("chat_ms", "chat (ms)")):
            a, b = off.get(k), on.get(k)
            print(f"{label:28}{fmt(a, 1):>12}{fmt(b, 1):>12}{fmt(diff(a, b), 1, sign=True):>12}")
        print(f"  medians of {pf.get('prefetch_rounds', '-')} rounds each, alternated")
        if pf.get("failed"):
            warnings.append(f"prefetch flow: {pf['failed']} rounds failed: {pf.get('last_error')}")
    for w in warnings:
        print("WARNING: " + w)

    result = {
        "date": meta.get("date"),
        "cores": cores,
        "git": meta.get("git"),
        "duration_s": meta.get("duration_s"),
        "stream_requests": meta.get("stream_n"),
        "clk_tck": clk,
        "busy_before_pct": meta.get("busy_before_pct"),
        "direct": d,
        "nginx": n,
        "tollgate": g,
        "targets": [{"target": line, "met": ok} for line, ok in verdict],
        "overhead": overhead,
        "peers": peers,
        "peers_note": meta.get("peers_note"),
        "task_flow": meta.get("task_flow"),
        "socket_flow": meta.get("socket_flow"),
        "prefetch_flow": meta.get("prefetch_flow"),
        "warnings": warnings,
    }
    with open(out_path, "w") as f:
        json.dump(rounded(result), f, indent=2)
        f.write("\n")
    print(f"\nJSON written to {out_path}")


if __name__ == "__main__":
    main()
