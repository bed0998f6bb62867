#!/usr/bin/env python3
"""Time to the first byte of chat completions sent one at a time, a gap apart (Python 3
stdlib only): a sparse load, where each request finds the machine idle and its caches cold.

Usage: sparse.py URL [--auth KEY] [--gap-ms 40] [-n 100] [--stream]

Sends N+3 sequential POST /v1/chat/completions over one keep-alive connection, sleeping GAP
ms before each, and prints the median time from sending a request to its first body byte in
microseconds (the first 3 are not counted). Bounded by N and by 60 s of gaps.
"""
import argparse
import http.client
import json
import statistics
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--auth", default="sk-bench")
    ap.add_argument("--gap-ms", type=float, default=40.0)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--stream", action="store_true")
    a = ap.parse_args()
    n = min(a.n, int(60_000 / max(a.gap_ms, 1.0)))
    u = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
    body = json.dumps({"model": "gpt-4o-mini", "stream": a.stream, "messages": [{"role": "user", "content": "hello"}]})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + a.auth}
    times = []
    for i in range(n + 3):
        time.sleep(a.gap_ms / 1000)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(1)
        t1 = time.perf_counter()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"status {resp.status}")
        if i >= 3:
            times.append((t1 - t0) * 1e6)
    print(json.dumps({"gap_ms": a.gap_ms, "requests": len(times), "first_byte_us": round(statistics.median(times))}))


if __name__ == "__main__":
    main()
