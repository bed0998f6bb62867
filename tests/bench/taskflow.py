#!/usr/bin/env python3
"""The task flow, through the gateway and directly against the mock vendor (stdlib only).

Usage: taskflow.py GATEWAY_URL GATEWAY_KEY MOCK_URL [--n N] [--max-secs S]

Measures, with SiliconFlow's video API on the mock (the `siliconflow` plugin on the gateway):
  submit      POST /v1/videos through the gateway vs POST /v1/video/submit direct (median us)
  poll        GET /v1/videos/{id} through the gateway (answered from its database) vs
              POST /v1/video/status direct: what a consumer's poll costs (median us)
  end_to_end  seconds from submit to completed through the gateway (the vendor's pace and the
              plugin's poll hints dominate it; shown, not compared)
  download    a 9 MiB video: the archived copy through the gateway (GET …/content) vs the
              vendor's CDN direct (one download: its URLs work once); MiB/s and the gateway's
              added ms per MiB
Prints one JSON line. Every loop is bounded in count and by --max-secs.
"""
import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse

MODEL = "Wan-AI/Wan2.2-T2V-A14B"


def request(url, method, path, key, body=None):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    t = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    elapsed = time.perf_counter() - t
    conn.close()
    return r.status, data, elapsed


def median_us(samples):
    return round(statistics.median(samples) * 1e6) if samples else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gateway")
    ap.add_argument("key")
    ap.add_argument("mock")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-secs", type=float, default=90)
    a = ap.parse_args()
    deadline = time.monotonic() + a.max_secs
    out = {}

    # Submits: the gateway holds the quote, runs the plugin, records the task.
    direct, gateway, ids = [], [], []
    for _ in range(a.n):
        s, d, t = request(a.mock, "POST", "/v1/video/submit", "sk-bench", {"model": MODEL, "prompt": "a cat", "image_size": "1280x720"})
        assert s == 200, d
        direct.append(t)
        s, d, t = request(a.gateway, "POST", "/v1/videos", a.key, {"model": MODEL, "prompt": "a cat", "size": "1280x720"})
        assert s == 200, d
        gateway.append(t)
        ids.append(json.loads(d)["id"])
    out["submit"] = {"direct_us": median_us(direct), "tollgate_us": median_us(gateway)}

    # A consumer's poll: the gateway answers from its database; the vendor from its own.
    direct, gateway = [], []
    rid = json.loads(request(a.mock, "POST", "/v1/video/submit", "sk-bench", {"model": MODEL, "prompt": "x", "image_size": "1280x720"})[1])["requestId"]
    for i in range(a.n):
        direct.append(request(a.mock, "POST", "/v1/video/status", "sk-bench", {"requestId": rid})[2])
        gateway.append(request(a.gateway, "GET", f"/v1/videos/{ids[i]}", a.key)[2])
    out["poll"] = {"direct_us": median_us(direct), "tollgate_us": median_us(gateway)}

    # A 9 MiB video end to end through the gateway.
    t0 = time.monotonic()
    s, d, _ = request(a.gateway, "POST", "/v1/videos", a.key, {"model": MODEL, "prompt": "huge", "size": "1280x720"})
    assert s == 200, d
    vid = json.loads(d)["id"]
    status = None
    while time.monotonic() < deadline:
        status = json.loads(request(a.gateway, "GET", f"/v1/videos/{vid}", a.key)[1])["status"]
        if status in ("completed", "failed"):
            break
        time.sleep(0.2)
    if status != "completed":
        print(json.dumps({**out, "error": f"the video ended {status}"}))
        return 1
    out["end_to_end_s"] = round(time.monotonic() - t0, 2)

    # The same file from the vendor's CDN, once (its URL expires after one download).
    rid = json.loads(request(a.mock, "POST", "/v1/video/submit", "sk-bench", {"model": MODEL, "prompt": "huge", "image_size": "1280x720"})[1])["requestId"]
    url = None
    while url is None and time.monotonic() < deadline:
        v = json.loads(request(a.mock, "POST", "/v1/video/status", "sk-bench", {"requestId": rid})[1])
        if v.get("status") == "Succeed":
            url = v["results"]["videos"][0]["url"]
    u = urllib.parse.urlparse(url)
    s, body, direct_s = request(a.mock, "GET", f"{u.path}?{u.query}", "none")
    assert s == 200, s
    mib = len(body) / (1 << 20)
    gateway = []
    for _ in range(5):
        s, data, t = request(a.gateway, "GET", f"/v1/videos/{vid}/content", a.key)
        assert s == 200 and len(data) == len(body), (s, len(data))
        gateway.append(t)
    gw_s = statistics.median(gateway)
    out["download"] = {
        "mib": round(mib, 2),
        "direct_mib_s": round(mib / direct_s, 1),
        "tollgate_mib_s": round(mib / gw_s, 1),
        "added_ms_per_mib": round((gw_s - direct_s) * 1000 / mib, 3),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
