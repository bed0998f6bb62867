"""instructions.sh's two halves.

  instructions.py load URL KEY N [stream]  N small chats, one after another on one keep-alive
                                          connection (streamed: "stream"); fails if any is not
                                          answered 200
  instructions.py report MAP N TOP DUMP...  callgrind's DUMPs (one per thread) per request:
                                          the total, by kind of thread, by part, and the TOP
                                          functions by their own instructions, the plugin's
                                          code named from wasmtime's perf MAP
"""

import bisect
import collections
import http.client
import json
import re
import subprocess
import sys


def load(url, key, n, stream=False):
    host = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=60)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        chat["stream"] = True
    body = json.dumps(chat)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
    for i in range(n):
        conn.request("POST", "/v1/chat/completions", body, headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            sys.exit(f"request {i}: {answer.status} {data[:300]!r}")


def perf_map(path):
    """(starts, entries) of the map's functions, sorted by address."""
    entries = []
    try:
        with open(path) as f:
            for line in f:
                address, size, name = line.rstrip("\n").split(" ", 2)
                entries.append((int(address, 16), int(size, 16), name))
    except FileNotFoundError:
        pass
    entries.sort()
    return [e[0] for e in entries], entries


def jit_name(address, starts, entries):
    i = bisect.bisect_right(starts, address) - 1
    if i >= 0 and address < entries[i][0] + entries[i][1]:
        # "wasm[0]::function[640]::dlmalloc" → "plugin: dlmalloc"
        return "plugin: " + entries[i][2].split("::", 2)[-1]
    return "plugin: ?"


# The part a function is counted in, by the first of these its name holds.
PARTS = [
    ("memcpy", ("memcpy", "memmove")),
    ("memset", ("memset",)),
    ("mimalloc", ("mi_",)),
    ("SQLite", ("sqlite3", "yy_", "walChecksum", "balance_nonroot", "btree", "vdbe", "tokenExpr", "getPage", "pager", "whereLoop", "expr", "strAccum")),
]


def part_of(name):
    if name.startswith("plugin: "):
        return "the plugin's code"
    for part, needles in PARTS:
        if any(n in name for n in needles):
            return part
    crate = re.split(r"::|<| as |\[", name.lstrip("<"))[0]
    return crate or name


def own_counts(dump, starts, entries):
    """(total, {function: own instructions}) of one dump."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", dump], capture_output=True, text=True, check=True)
    total = 0
    rows = collections.Counter()
    for line in out.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if not m:
            continue
        count, where = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in where:
            total = count
            continue
        name = where.split(":", 1)[1] if ":" in where else where
        name = re.sub(r" \[[^\]]*\]$", "", name)
        if re.match(r"0x[0-9a-f]+$", name):
            name = jit_name(int(name, 16), starts, entries)
        rows[name] += count
    return total, rows


def thread_kind(rows):
    if any("sqlite3_step" in name for name in rows):
        return "SQLite's connection threads (the call log's inserts, key and balance reads)"
    if any("hyper::proto::h1" in name for name in rows):
        return "request workers"
    return "other threads (the main runtime: the call log's batching, timers)"


def cache_misses(dumps):
    """(I1 misses, D1 misses) summed over the dumps, when callgrind simulated the caches."""
    i1 = d1 = 0
    for dump in dumps:
        with open(dump) as f:
            head = [line.split() for line in f if line.startswith(("events:", "summary:"))]
        events = next((h[1:] for h in head if h[0] == "events:"), [])
        summary = next((h[1:] for h in head if h[0] == "summary:"), [])
        if "I1mr" not in events:
            return None
        got = dict(zip(events, map(int, summary)))
        i1 += got.get("I1mr", 0)
        d1 += got.get("D1mr", 0) + got.get("D1mw", 0)
    return (i1, d1) if dumps else None


def report(map_path, n, top, dumps):
    starts, entries = perf_map(map_path)
    total = 0
    rows = collections.Counter()
    kinds = collections.Counter()
    workers = []
    for dump in dumps:
        t, r = own_counts(dump, starts, entries)
        total += t
        rows.update(r)
        kinds[thread_kind(r)] += t
        if thread_kind(r) == "request workers":
            workers.append(dump)
    parts = collections.Counter()
    for name, count in rows.items():
        parts[part_of(name)] += count
    print(f"instructions per request: {total / n:,.0f} ({n} requests)")
    for kind, count in kinds.most_common():
        print(f"  {count / n:9,.0f}  {kind}")
    misses = cache_misses(workers)
    if misses:
        i1, d1 = misses
        print(f"cache misses per request of the request workers (simulated: CACHE=1): I1 {i1 / n:,.0f}, D1 {d1 / n:,.0f}")
    print("\nby part (own instructions per request):")
    for part, count in parts.most_common(16):
        print(f"  {count / n:9,.0f}  {100 * count / total:5.1f}%  {part}")
    print(f"\nthe {top} functions with the most own instructions per request:")
    for name, count in rows.most_common(top):
        print(f"  {count / n:9,.0f}  {100 * count / total:5.1f}%  {name[:150]}")


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "load" and sys.argv[5:] in ([], ["stream"]):
        load(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:] == ["stream"])
    elif len(sys.argv) >= 6 and sys.argv[1] == "report":
        report(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(__doc__)
