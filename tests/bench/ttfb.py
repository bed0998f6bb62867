#!/usr/bin/env python3
"""Time to the first streamed byte of a chat completion (Python 3 stdlib only).

Usage: ttfb.py URL [-n 50] [--max-secs 30] [--warmup 5] [-H 'Name: value' ...] [--auth KEY]

Sends N sequential POST requests with "stream": true over one keep-alive connection and prints a
JSON object: medians (and p90) in milliseconds of
  head_ms   request sent -> response headers received,
  first_ms  request sent -> first body byte (the first SSE event),
  last_ms   request sent -> end of the body (all chunks; shows whether pacing passes through),
plus counts of ok / failed requests and each measured request's three figures ("samples", in
order), so runs in several rounds can be pooled. The loop is bounded by N and by --max-secs.
"""
import argparse
import http.client
import json
import ssl
import statistics
import sys
import time
import urllib.parse

BODY_TMPL = '{"model":"%s","stream":true,"messages":[{"role":"user","content":"hello"}]}'


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def one_request(conn, path, body, headers):
    """Returns (head_s, first_s, last_s, status, first_bytes)."""
    t0 = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    t_head = time.perf_counter()
    # read(1) returns as soon as one byte of the (possibly chunked) body is available.
    first = resp.read(1)
    t_first = time.perf_counter()
    rest = resp.read()
    t_last = time.perf_counter()
    return t_head - t0, t_first - t0, t_last - t0, resp.status, first + rest[:15]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--max-secs", type=float, default=30.0)
    ap.add_argument("--auth", default="sk-bench")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("-H", dest="headers", action="append", default=[])
    ap.add_argument("--cafile", help="for an https URL: the CA its certificate must chain to")
    a = ap.parse_args()

    u = urllib.parse.urlsplit(a.url)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + a.auth}
    for h in a.headers:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    body = (BODY_TMPL % a.model).encode()

    def connect():
        if u.scheme == "https":
            context = ssl.create_default_context(cafile=a.cafile)
            return http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=10, context=context)
        return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)

    conn = connect()
    head, first, last = [], [], []
    ok = failed = 0
    last_error = None
    deadline = time.monotonic() + a.max_secs
    for i in range(a.warmup + a.n):
        if time.monotonic() > deadline:
            break
        try:
            h, f, l, status, start = one_request(conn, u.path or "/", body, headers)
        except (OSError, http.client.HTTPException) as e:
            failed += 1
            last_error = repr(e)
            conn.close()
            conn = connect()
            continue
        if status != 200 or not start.startswith(b"data:"):
            failed += 1
            last_error = "status %d, body starts %r" % (status, start)
            continue
        if i < a.warmup:
            continue
        ok += 1
        head.append(h * 1000)
        first.append(f * 1000)
        last.append(l * 1000)
    conn.close()

    out = {"ok": ok, "failed": failed, "last_error": last_error}
    for name, vals in (("head_ms", head), ("first_ms", first), ("last_ms", last)):
        out[name] = statistics.median(vals) if vals else None
        out[name.replace("_ms", "_p90_ms")] = percentile(vals, 90)
    out["samples"] = {name: [round(v, 4) for v in vals]
                      for name, vals in (("head_ms", head), ("first_ms", first), ("last_ms", last))}
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
