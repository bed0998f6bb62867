#!/usr/bin/env python3
"""The gateway at scale: many idle keep-alive connections, then many slow streams held at once
(Python 3 stdlib only; asyncio raw sockets, HTTP/1.1 written and chunked bodies read by hand).

Usage: scale.py HOST PORT KEY GW_PID [--streams 10000] [--idle 5000] [--idle-secs 20]
                [--max-secs 170] [--connects 200] [--model gpt-4o-mini]

1. Idle (first, on the fresh gateway: after thousands of streams the allocator keeps memory that
   idle connections would reuse unseen): after a warm-up (the same requests, as many at once, on
   short-lived connections, so the baseline holds the memory of calls in flight), opens IDLE
   keep-alive connections and makes one (non-streamed) chat request on each, leaves them all
   idle for --idle-secs while reading the gateway's RSS (VmRSS of GW_PID), then makes a second
   request on every one: each must still be open and answer 200.
2. Streams: opens STREAMS connections, each sending one streamed chat request ("stream": true)
   that the mock paces slowly (its --chunk-delay-ms: the gateway does not forward the consumer's
   x-mock-* headers), and holds them all open at once. The RSS is read before the first
   connection and every 0.25 s until 3 s after the last stream ended; every stream must answer
   200 and end cleanly with `data: [DONE]` (no `event: error`, a complete chunked body).
   At most --connects connections are being opened at once (the listen backlog).

Prints one JSON object (sizes in MiB, "durations" in seconds). Every loop is bounded: by the
number of connections, and by one global deadline (--max-secs) that each read and each phase
waits on; whatever is still running at the deadline counts as an error ("deadline").
"""
import argparse
import asyncio
import collections
import json
import os
import sys
import time

# max_tokens keeps each call's billing reservation small, so that thousands at once fit in the
# bench key's balance.
STREAM_BODY = '{"model":"%s","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"hello"}]}'
PLAIN_BODY = '{"model":"%s","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}'
# The most bytes one response may have before it counts as an error (a bound on every read loop).
MAX_BODY = 256 << 10
MAX_HEAD_LINES = 100
DONE = b"data: [DONE]"


class Fail(Exception):
    """A request that did not succeed; the text is its kind, counted in the report."""


def status_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def human(n):
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d KiB" % (n >> 10)


def smaps_breakdown(pid, top=8):
    """Where the resident memory is: MiB per kind of mapping, the largest first. Anonymous
    mappings are grouped by their size (one per call in flight: the wasm pool's fiber stacks,
    2 MiB each, and its per-instance pieces; single large ones: the allocator's arenas), others
    by their name ([heap], /memfd:wasm-memory-image, other files)."""
    rss = collections.Counter()
    try:
        with open("/proc/%d/smaps" % pid) as f:
            label = None
            for line in f:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):
                    parts = line.split()
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    name = parts[5] if len(parts) > 5 else ""
                    if not name:
                        label = "anon %s each" % human(hi - lo)
                    elif name.startswith("[") or name.startswith("/memfd:"):
                        label = name  # /memfd:wasm-memory-image: the plugins' copy-on-write images
                    else:
                        label = "files"
                elif head == "Rss:" and label:
                    rss[label] += int(line.split()[1])
    except (OSError, ValueError):
        return None
    out = {k: round(v / 1024.0, 1) for k, v in rss.most_common(top) if v >= 1024}
    rest = sum(rss.values()) - sum(v for _, v in rss.most_common(top))
    out["other"] = round(rest / 1024.0, 1)
    return out


def mib(kib):
    return None if kib is None else round(kib / 1024.0, 2)


class Sampler:
    """Reads the gateway's VmRSS (every `every` s) and open descriptors (every 1 s) until stopped."""

    def __init__(self, pid, every=0.25):
        self.pid, self.every = pid, every
        self.peak_kib = 0
        self.peak_fds = 0
        self.samples = 0
        self.task = None

    async def run(self):
        last_fd = 0.0
        while True:
            rss = status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
                self.samples += 1
            now = time.monotonic()
            if now - last_fd >= 1.0:
                last_fd = now
                n = fd_count(self.pid)
                if n is not None:
                    self.peak_fds = max(self.peak_fds, n)
            await asyncio.sleep(self.every)

    def start(self):
        self.task = asyncio.ensure_future(self.run())
        return self

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


def left(deadline):
    t = deadline - time.monotonic()
    if t <= 0:
        raise Fail("deadline")
    return t


async def bounded(aw, deadline):
    try:
        return await asyncio.wait_for(aw, left(deadline))
    except asyncio.TimeoutError:
        raise Fail("deadline")


def request_bytes(host, port, key, body):
    return (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        "Host: %s:%d\r\n"
        "Authorization: Bearer %s\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream, application/json\r\n"
        "Content-Length: %d\r\n"
        "\r\n%s" % (host, port, key, len(body), body)
    ).encode()


async def read_head(reader, deadline):
    """(status, headers): the status line and headers (names lower-cased)."""
    line = await bounded(reader.readline(), deadline)
    if not line:
        raise Fail("closed before the response")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise Fail("bad status line")
    status = int(parts[1])
    headers = {}
    for _ in range(MAX_HEAD_LINES):
        line = await bounded(reader.readline(), deadline)
        if not line:
            raise Fail("closed in the headers")
        if line in (b"\r\n", b"\n"):
            return status, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise Fail("too many header lines")


async def read_body(reader, headers, deadline, on_chunk=None):
    """The whole body (chunked or with a length), at most MAX_BODY bytes."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:  # bounded: each chunk adds to `out`, which is capped at MAX_BODY
            line = await bounded(reader.readline(), deadline)
            if not line:
                raise Fail("closed mid-body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise Fail("bad chunk size")
            if size == 0:
                for _ in range(MAX_HEAD_LINES):  # trailers, then the blank line
                    line = await bounded(reader.readline(), deadline)
                    if not line:
                        raise Fail("closed in the trailer")
                    if line in (b"\r\n", b"\n"):
                        return bytes(out)
                raise Fail("too many trailer lines")
            if len(out) + size > MAX_BODY:
                raise Fail("body too large")
            try:
                data = await bounded(reader.readexactly(size + 2), deadline)
            except asyncio.IncompleteReadError:
                raise Fail("closed mid-chunk")
            out += data[:size]
            if on_chunk:
                on_chunk()
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n > MAX_BODY:
            raise Fail("body too large")
        try:
            return await bounded(reader.readexactly(n), deadline)
        except asyncio.IncompleteReadError:
            raise Fail("closed mid-body")
    raise Fail("response with neither length nor chunks")


async def refused(status, reader, headers, deadline):
    """The Fail of a non-200 answer, named by its status and the error code in its body."""
    code = ""
    try:
        data = await read_body(reader, headers, min(deadline, time.monotonic() + 5))
        err = json.loads(data).get("error") or {}
        code = " " + str(err.get("code") or err.get("type") or "")[:60]
    except Exception:
        pass
    return Fail("status %d%s" % (status, code.rstrip()))


def kind_of(e):
    if isinstance(e, Fail):
        return str(e)
    return type(e).__name__ + (": " + str(e)[:80] if str(e) else "")


async def close(writer):
    if writer is None:
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:
        pass


async def run_bounded(coros, deadline, errors):
    """Runs the coroutines at once; those still running 5 s past the deadline (each read in them
    already waits on it) are cancelled and counted as errors."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic() + 5))
    for t in pending:
        t.cancel()
    if pending:
        errors["deadline (cancelled)"] += len(pending)
        await asyncio.wait(pending, timeout=5)


# ---------------------------------------------------------------------------------------------


async def streams_phase(a, deadline):
    body = STREAM_BODY % a.model
    req = request_bytes(a.host, a.port, a.key, body)
    connects = asyncio.Semaphore(a.connects)
    errors = collections.Counter()
    state = {"open": 0, "peak_open": 0, "ok": 0, "all_open_at": None, "chunks": 0, "answered": 0}
    t0 = time.monotonic()

    def answered():
        # Every stream has its answer's head (open, or refused): the memory held at that moment.
        state["answered"] += 1
        if state["answered"] == a.streams:
            state["all_answered_at"] = time.monotonic()
            state["open_when_answered"] = state["open"]
            state["rss_all_answered_kib"] = status_kib(a.pid, "VmRSS")
            state["smaps"] = smaps_breakdown(a.pid)

    def count_chunk():
        state["chunks"] += 1

    async def one():
        writer = None
        opened = False
        try:
            # The connect, request and response head are limited to a.connects at a time (the
            # listen backlog); the stream itself is not.
            async with connects:
                reader, writer = await bounded(asyncio.open_connection(a.host, a.port, limit=MAX_BODY), deadline)
                writer.write(req)
                await bounded(writer.drain(), deadline)
                status, headers = await read_head(reader, deadline)
            if status != 200:
                raise await refused(status, reader, headers, deadline)
            state["open"] += 1
            opened = True
            state["peak_open"] = max(state["peak_open"], state["open"])
            if state["peak_open"] == a.streams and state["all_open_at"] is None:
                state["all_open_at"] = time.monotonic()
            answered()
            data = await read_body(reader, headers, deadline, count_chunk)
            if b"event: error" in data:
                raise Fail("error event in the stream")
            if not data.rstrip().endswith(DONE):
                raise Fail("stream did not end with [DONE]")
            state["ok"] += 1
        except Exception as e:  # every failure is counted by kind
            errors[kind_of(e)] += 1
            if not opened:
                answered()
        finally:
            if opened:
                state["open"] -= 1
            await close(writer)

    rss_before = status_kib(a.pid, "VmRSS")
    smaps_before = smaps_breakdown(a.pid)
    sampler = Sampler(a.pid).start()
    await run_bounded([one() for _ in range(a.streams)], deadline, errors)
    elapsed = time.monotonic() - t0
    # The streams' ends (billing, the call log) are still settling: the peak is read for 3 s
    # more, then the memory left (what the allocator did not give back).
    await asyncio.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
    await sampler.stop()
    rss_after = status_kib(a.pid, "VmRSS")
    peak = sampler.peak_kib
    n_err = sum(errors.values())
    return {
        "streams": a.streams,
        "streams_ok": state["ok"],
        "stream_errors": n_err,
        "stream_error_kinds": dict(errors.most_common(8)),
        "peak_open_streams": state["peak_open"],
        "stream_chunks_read": state["chunks"],
        "rss_before_mib": mib(rss_before),
        "rss_peak_mib": mib(peak),
        "open_when_all_answered": state.get("open_when_answered"),
        "rss_when_all_answered_mib": mib(state.get("rss_all_answered_kib")),
        "rss_breakdown_before_mib": smaps_before,
        "rss_breakdown_when_all_answered_mib": state.get("smaps"),
        "rss_after_streams_mib": mib(rss_after),
        # Per stream held at once (all of them when none failed).
        "mib_per_stream": round((peak - rss_before) / 1024.0 / state["peak_open"], 4)
        if rss_before and peak and state["peak_open"]
        else None,
        "gateway_fds_peak_streams": sampler.peak_fds,
        "durations": {
            "streams_all_open_after": round(state["all_open_at"] - t0, 2) if state["all_open_at"] else None,
            "streams_all_answered_after": round(state["all_answered_at"] - t0, 2)
            if state.get("all_answered_at")
            else None,
            "streams": round(elapsed, 2),
        },
    }


async def idle_phase(a, deadline):
    req = request_bytes(a.host, a.port, a.key, PLAIN_BODY % a.model)
    connects = asyncio.Semaphore(a.connects)
    errors = collections.Counter()
    conns = [None] * a.idle  # (reader, writer) of each connection whose first request succeeded

    async def ask(reader, writer):
        writer.write(req)
        await bounded(writer.drain(), deadline)
        status, headers = await read_head(reader, deadline)
        if status != 200:
            raise await refused(status, reader, headers, deadline)
        data = await read_body(reader, headers, deadline)
        if b'"choices"' not in data:
            raise Fail("answer without choices")
        if headers.get("connection", "").lower() == "close":
            raise Fail("server closes the connection")

    async def first(i):
        writer = None
        try:
            async with connects:
                reader, writer = await bounded(asyncio.open_connection(a.host, a.port, limit=MAX_BODY), deadline)
                await ask(reader, writer)
            conns[i] = (reader, writer)
        except Exception as e:
            errors["first: " + kind_of(e)] += 1
            await close(writer)

    async def second(i):
        if conns[i] is None:
            return
        reader, writer = conns[i]
        try:
            async with connects:
                await ask(reader, writer)
        except Exception as e:
            kind = kind_of(e)
            if kind in ("closed before the response",) or "Reset" in kind or "BrokenPipe" in kind:
                kind = "closed while idle (%s)" % kind
            errors["second: " + kind] += 1

    # Warm-up: the same requests at the same concurrency on short-lived connections, so that the
    # memory of calls in flight (plugin slots, buffers) is in the baseline and only what the
    # idle connections hold is counted.
    warm_errors = collections.Counter()

    async def warm():
        writer = None
        try:
            reader, writer = await bounded(asyncio.open_connection(a.host, a.port, limit=MAX_BODY), deadline)
            for _ in range(5):
                await ask(reader, writer)
        except Exception as e:
            warm_errors[kind_of(e)] += 1
        finally:
            await close(writer)

    await run_bounded([warm() for _ in range(min(a.connects, a.idle))], deadline, warm_errors)
    await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic() - a.idle_secs - 10)))
    rss_before = status_kib(a.pid, "VmRSS")
    sampler = Sampler(a.pid).start()
    t0 = time.monotonic()
    await run_bounded([first(i) for i in range(a.idle)], deadline, errors)
    t_opened = time.monotonic()
    first_peak = sampler.peak_kib
    # The idle hold: nothing sent on any connection; the RSS read every 0.25 s.
    hold = Sampler(a.pid).start()
    idle_for = min(a.idle_secs, max(0.0, deadline - time.monotonic() - 10))
    await asyncio.sleep(idle_for)
    await hold.stop()
    rss_idle = status_kib(a.pid, "VmRSS")
    held = sum(1 for c in conns if c is not None)
    t1 = time.monotonic()
    await run_bounded([second(i) for i in range(a.idle)], deadline, errors)
    t_second = time.monotonic() - t1
    await sampler.stop()
    for c in conns:
        if c is not None:
            await close(c[1])
    n_err = sum(errors.values())
    return {
        "idle": a.idle,
        "idle_held": held,
        "idle_errors": n_err,
        "idle_error_kinds": dict(errors.most_common(8)),
        "idle_warmup_errors": sum(warm_errors.values()),
        "idle_secs": round(idle_for, 1),
        "idle_rss_before_mib": mib(rss_before),
        "idle_rss_first_requests_peak_mib": mib(first_peak),
        "idle_rss_held_peak_mib": mib(hold.peak_kib),
        "idle_rss_held_end_mib": mib(rss_idle),
        "idle_rss_peak_mib": mib(sampler.peak_kib),
        "mib_per_idle_connection": round((hold.peak_kib - rss_before) / 1024.0 / a.idle, 4)
        if rss_before and hold.peak_kib
        else None,
        "gateway_fds_peak_idle": hold.peak_fds,
        "durations": {
            "idle_first_requests": round(t_opened - t0, 2),
            "idle_hold": round(idle_for, 1),
            "idle_second_requests": round(t_second, 2),
        },
    }


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("key")
    ap.add_argument("pid", type=int, help="the gateway's PID (its RSS is read from /proc)")
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--idle-secs", type=float, default=20.0)
    ap.add_argument("--max-secs", type=float, default=170.0)
    ap.add_argument("--connects", type=int, default=200, help="connections being opened at once")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between the two phases")
    a = ap.parse_args()

    start = time.monotonic()
    deadline = start + a.max_secs
    out = {"durations": {}}

    def add(phase):
        out["durations"].update(phase.pop("durations"))
        out.update(phase)

    # The idle connections first, on a fresh gateway: after thousands of streams the allocator
    # keeps memory that idle connections would reuse unseen. Their deadline leaves the rest of
    # the time to the streams.
    if a.idle:
        idle = await idle_phase(a, min(deadline, start + a.idle_secs + 60))
        await asyncio.sleep(min(a.pause, max(0.0, deadline - time.monotonic() - 30)))
    if a.streams:
        add(await streams_phase(a, deadline))
    if a.idle:
        add(idle)
    out["rss_hwm_mib"] = mib(status_kib(a.pid, "VmHWM"))
    out["durations"]["total"] = round(time.monotonic() - start, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
