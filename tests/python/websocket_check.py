"""Drives a running Tollgate's speech sockets with the `websockets` Python client, as MiniMax's
own clients and the MiniMax proxy's clients do.

Usage: python3 websocket_check.py WS_BASE API_KEY PROXY_PATH
(WS_BASE like ws://127.0.0.1:8080). Exits non-zero with the failing assertion if anything a
client relies on is off.
"""
import json
import sys

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

base, key, proxy_path = sys.argv[1], sys.argv[2], sys.argv[3]


def frames(ws):
    """The next JSON frame."""
    return json.loads(ws.recv(timeout=20))


def speak(ws, text):
    """Sends a text; its audio (hex decoded) and final frame."""
    ws.send(json.dumps({"event": "task_continue", "text": text}))
    audio = b""
    while True:
        f = frames(ws)
        assert f["event"] == "task_continued", f
        audio += bytes.fromhex(f["data"]["audio"])
        if f["is_final"]:
            return audio, f


# A bad key is refused at the upgrade, as HTTP.
try:
    connect(base + "/ws/v1/t2a_v2", additional_headers={"Authorization": "Bearer sk-tg-nonsense"})
    raise AssertionError("a bad key was let in")
except InvalidStatus as e:
    assert e.response.status_code == 401, e.response.status_code

# MiniMax's own protocol, the key at the upgrade.
with connect(base + "/ws/v1/t2a_v2", additional_headers={"Authorization": "Bearer " + key}) as ws:
    assert frames(ws)["event"] == "connected_success"
    ws.send(json.dumps({"event": "task_start", "model": "speech-2.8-hd", "voice_setting": {"voice_id": "male-qn-qingse"}}))
    assert frames(ws)["event"] == "task_started"
    audio, last = speak(ws, "hello from python")
    assert audio == b"ID3mock-audio:hello from python", audio
    assert last["extra_info"]["usage_characters"] == 17, last
    ws.send(json.dumps({"event": "task_finish"}))
    assert frames(ws)["event"] == "task_finished"
    try:
        ws.recv(timeout=10)
        raise AssertionError("the session stayed open after task_finished")
    except ConnectionClosed:
        pass

# The MiniMax proxy's dialect: the key in the first frame, usage_summary after each synthesis.
with connect(base + proxy_path) as ws:
    ws.send(json.dumps({"bearer_token": key}))
    hello = frames(ws)
    assert hello["event"] == "connected_success" and hello["user_id"], hello
    ws.send(json.dumps({"event": "task_start", "model": "speech-2.8-hd", "voice_setting": {"voice_id": "v1"}}))
    assert frames(ws)["event"] == "task_started"
    audio, _ = speak(ws, "你好")
    assert audio == "ID3mock-audio:你好".encode(), audio
    summary = frames(ws)
    assert summary["event"] == "usage_summary" and summary["char_count"] == 4, summary
    assert abs(summary["total_cost"] - 0.04) < 1e-9, summary

print("websocket checks passed")
