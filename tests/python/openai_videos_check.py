"""Drives Tollgate's Videos API with the official `openai` Python SDK.

Usage: python3 openai_videos_check.py BASE_URL API_KEY MOCK_URL
The gateway serves `sora-2` with the `faulty` fixture against the mock vendor's job API,
whose video file is `200_000 + seconds asked` bytes and which reports one second less than
asked as rendered. Exits non-zero with the failing assertion if anything is off.
"""
import json
import sys
import urllib.request

import openai
from openai import OpenAI

base_url, key, mock_url = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)

# The SDK sends a form; create_and_poll follows the gateway's poll hint to the end.
video = client.videos.create_and_poll(model="sora-2", prompt="a cat on a skateboard", seconds="4", size="720x1280")
assert video.status == "completed", video
assert (video.progress, video.seconds, video.size, video.model) == (100, "4", "720x1280", "sora-2"), video
assert video.prompt == "a cat on a skateboard" and video.error is None, video
assert video.completed_at and video.completed_at >= video.created_at, video

# The video comes from the gateway's archive.
content = client.videos.download_content(video.id)
data = content.read()
assert len(data) == 200_004 and data[4:8] == b"ftyp", (len(data), data[:16])

# An input reference image goes to the vendor intact (multipart, streamed by the gateway).
png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
ref = client.videos.create(model="sora-2", prompt="animate this", seconds="8", input_reference=("ref.png", png, "image/png"))
assert ref.status == "queued" and ref.seconds == "8", ref
last = json.load(urllib.request.urlopen(mock_url + "/_mock/last?path=/v1/video/jobs"))
assert png.hex() in last["body_hex"], "the reference image reached the vendor"
assert 'name="input_reference"; filename="ref.png"' in last["body"], last["body"][:400]
ref = client.videos.poll(ref.id)
assert ref.status == "completed", ref

# A job the vendor fails is a failed video with OpenAI's error object.
failed = client.videos.create_and_poll(model="sora-2", prompt="fail", seconds="4")
assert failed.status == "failed" and failed.error.code == "content_filtered", failed

# The caller's videos, newest first, paged by cursor (the SDK follows `after`).
first = client.videos.list(limit=1)
assert len(first.data) == 1 and first.has_more and first.data[0].id == failed.id, first
ids = [v.id for v in client.videos.list(limit=1)]
assert ids == [failed.id, ref.id, video.id], ids
oldest = client.videos.list(order="asc", limit=10)
assert [v.id for v in oldest.data] == [video.id, ref.id, failed.id], oldest

# Errors in OpenAI's shape, as the SDK's exceptions.
for call, exc, code in [
    (lambda: client.videos.retrieve("task_" + "0" * 32), openai.NotFoundError, "video_not_found"),
    (lambda: client.videos.create(model="no-such-model", prompt="x", seconds="4"), openai.NotFoundError, "model_not_found"),
    (lambda: client.videos.create(model="sora-2", prompt="x"), openai.BadRequestError, None),
    (lambda: client.videos.download_content(failed.id), openai.NotFoundError, "output_not_found"),
    (lambda: client.videos.remix(video.id, prompt="again"), openai.NotFoundError, "unsupported"),
]:
    try:
        call()
        raise AssertionError("no error for %s" % code)
    except exc as e:
        assert code is None or e.code == code, (code, e)

# Deleting a video deletes it and its file.
deleted = client.videos.delete(video.id)
assert deleted.deleted and deleted.id == video.id, deleted
try:
    client.videos.retrieve(video.id)
    raise AssertionError("a deleted video is gone")
except openai.NotFoundError:
    pass
print("videos ok")
