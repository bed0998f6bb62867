#!/usr/bin/env python3
"""Speech sockets, through the gateway and directly against the mock vendor (needs the
`websockets` package; .ci/run installs it).

Usage: wsflow.py GATEWAY_WS GATEWAY_KEY MOCK_WS GATEWAY_PID [--n N] [--sessions K] [--max-secs S]

Measures, with MiniMax's speech socket on the mock (the `minimax` plugin on the gateway):
  first_audio  ms from a `task_continue` to its first audio frame, on one session through the
               gateway vs one direct (median and p90 of N texts)
  held         K sessions opened at once through the gateway (each started: `task_start`
               answered), and the gateway's resident memory before and with them (KiB per
               session); they are closed before the script ends
Prints one JSON line. Every loop is bounded in count and by --max-secs.
"""
import argparse
import asyncio
import json
import statistics
import time

from websockets.asyncio.client import connect

PATH = "/ws/v1/t2a_v2"
START = {"event": "task_start", "model": "speech-2.8-hd", "voice_setting": {"voice_id": "male-qn-qingse"}}


async def started(uri, key):
    ws = await connect(uri + PATH, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=30)
    assert json.loads(await ws.recv())["event"] == "connected_success"
    await ws.send(json.dumps(START))
    assert json.loads(await ws.recv())["event"] == "task_started"
    return ws


async def first_audio(uri, key, n, deadline):
    ws = await started(uri, key)
    times = []
    try:
        for i in range(n):
            if time.monotonic() > deadline:
                break
            t = time.perf_counter()
            await ws.send(json.dumps({"event": "task_continue", "text": f"sentence number {i} of the benchmark"}))
            first = None
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if first is None:
                    first = time.perf_counter() - t
                if f.get("is_final"):
                    break
            times.append(first * 1000)
    finally:
        await ws.close()
    times.sort()
    if not times:
        return {"n": 0}
    return {"n": len(times), "median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))]}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def held(uri, key, pid, k, deadline):
    before = rss_kib(pid)
    gate = asyncio.Semaphore(64)
    sockets, failed, last_error = [], 0, None

    async def one():
        nonlocal failed, last_error
        async with gate:
            if time.monotonic() > deadline:
                failed += 1
                return
            try:
                sockets.append(await started(uri, key))
            except Exception as e:  # counted and reported, never hidden
                failed += 1
                last_error = repr(e)[:200]

    await asyncio.gather(*(one() for _ in range(k)))
    await asyncio.sleep(0.5)
    during = rss_kib(pid)
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    opened = len(sockets)
    return {
        "sessions": opened,
        "failed": failed,
        "last_error": last_error,
        "rss_before_mib": before / 1024,
        "rss_held_mib": during / 1024,
        "kib_per_session": (during - before) / opened if opened else None,
    }


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("gateway")
    p.add_argument("key")
    p.add_argument("mock")
    p.add_argument("pid", type=int)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--max-secs", type=float, default=90)
    a = p.parse_args()
    deadline = time.monotonic() + a.max_secs
    out = {
        "first_audio": {
            "direct": await first_audio(a.mock, "mm-bench", a.n, deadline),
            "tollgate": await first_audio(a.gateway, a.key, a.n, deadline),
        },
        "held": await held(a.gateway, a.key, a.pid, a.sessions, deadline),
    }
    print(json.dumps(out))


asyncio.run(main())
