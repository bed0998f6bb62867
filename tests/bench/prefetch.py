#!/usr/bin/env python3
"""Speech prefetch, measured: a streamed chat whose answer is several sentences, through the
gateway, with `tts_enabled` true and false (the same chat and speech model otherwise).

Usage: prefetch.py GATEWAY_URL GATEWAY_KEY SPEECH_MODEL ADMIN_TOKEN [--n N] [--max-secs S]

The mock answers `say:<text>` with that text, 4 characters a chunk (paced by its chunk delay),
and its T2A takes time in proportion to the text (the speech model `rtf-<ms>`: ms per
character), as real synthesis does. For each round and mode:
  first_audio_ms   from the moment the app has the chat's first sentence to the moment it
                   has that sentence's audio, asking at once (`/v1/audio/speech`)
  reply_audio_ms   from the chat's end to the moment the app has the whole reply's audio
  chat_ms          the chat itself, first byte to end
Prints one JSON line with the medians per mode. Every loop is bounded in count and by
--max-secs.
"""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

SENTENCES = [
    "The weather today is bright and calm.",
    "We could walk to the old harbour after lunch.",
    "The ferry leaves at 3.15 from pier two.",
    "Tickets are sold at ferry.example.com today.",
    "Bring a coat, the wind turns cold at sea.",
    "We should be back well before dinner.",
]


def post(url, key, body, stream=False):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", u.path, json.dumps(body), {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"POST {u.path}: {resp.status} {resp.read()[:200]!r}")
    return conn, resp


def speech(base, key, model, text):
    conn, resp = post(base + "/v1/audio/speech", key, {"model": model, "input": text})
    audio = resp.read()
    conn.close()
    if not audio:
        raise RuntimeError("no audio")
    return time.monotonic()


def clear_cache(base, admin):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("POST", "/cache/clear", headers={"Authorization": "Bearer " + admin})
    if conn.getresponse().status != 200:
        raise RuntimeError("POST /cache/clear refused")
    conn.close()


def one_round(base, key, model, admin, prefetch):
    # Each round starts with an empty cache: an earlier round's sentences would be hits.
    clear_cache(base, admin)
    reply = " ".join(SENTENCES)
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "tts_enabled": prefetch,
        "messages": [{"role": "user", "content": "say:" + reply}],
    }
    start = time.monotonic()
    conn, resp = post(base + "/v1/chat/completions", key, body)
    text, first_seen, first_done = "", None, {}

    def first_audio():
        first_done["at"] = speech(base, key, model, SENTENCES[0])

    asker = None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
        # The first sentence is the app's once the text after it has begun.
        if first_seen is None and len(text) > len(SENTENCES[0]):
            first_seen = time.monotonic()
            asker = threading.Thread(target=first_audio)
            asker.start()
    end = time.monotonic()
    conn.close()
    reply_done = speech(base, key, model, reply)
    asker.join(timeout=60)
    return {
        "first_audio_ms": (first_done["at"] - first_seen) * 1000,
        "reply_audio_ms": (reply_done - end) * 1000,
        "chat_ms": (end - start) * 1000,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gateway")
    ap.add_argument("key")
    ap.add_argument("model")
    ap.add_argument("admin")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--max-secs", type=float, default=120)
    a = ap.parse_args()
    deadline = time.monotonic() + a.max_secs
    rounds = {"prefetch": [], "no_prefetch": []}
    failed, last_error = 0, None
    for i in range(a.n):
        modes = (("prefetch", True), ("no_prefetch", False))
        for mode, on in modes if i % 2 == 0 else modes[::-1]:
            if time.monotonic() > deadline:
                break
            try:
                rounds[mode].append(one_round(a.gateway, a.key, a.model, a.admin, on))
            except Exception as e:  # counted; the other rounds are still measured
                failed, last_error = failed + 1, f"{type(e).__name__}: {e}"
    out = {"failed": failed, "last_error": last_error}
    for mode, rs in rounds.items():
        out[mode] = {k: round(statistics.median(r[k] for r in rs), 1) for k in rs[0]} if rs else None
        out[mode + "_rounds"] = len(rs)
    if not any(rounds.values()):
        out["error"] = f"every round failed: {last_error}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
