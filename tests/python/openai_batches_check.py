"""Drives SiliconFlow's files and batches through a running Tollgate with the official `openai`
Python SDK, as SiliconFlow's batch guide shows it (the upload's id is in `.data['id']`).

Usage: python3 openai_batches_check.py BASE_URL API_KEY JSONL
The gateway's channel serves SiliconFlow's files and batches from the mock, whose batches move
one state per read and whose cancel runs the first line only.
Exits non-zero (with the failing assertion) if anything a client relies on is off.
"""
import io
import sys
import time

import openai

base_url, key, jsonl = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(jsonl.encode())), purpose="batch")
file_id = uploaded.data["id"]
assert file_id.startswith("file-"), uploaded

# A replaced model would be priced as another: the gateway refuses it.
try:
    client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"replace": {"model": "deepseek-ai/DeepSeek-V3"}},
    )
    raise AssertionError("a replaced model was accepted")
except openai.BadRequestError as e:
    assert "model" in str(e), e

batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
assert batch.status == "in_queue" and batch.input_file_id == file_id, batch


def until_ended(batch_id, ended):
    """Reads the batch (at most 40 times, 0.25 s apart) until its status is in `ended`."""
    for _ in range(40):
        b = client.batches.retrieve(batch_id)
        if b.status in ended:
            return b
        time.sleep(0.25)
    raise AssertionError(f"batch {batch_id} never ended: {b}")


done = until_ended(batch.id, {"completed"})
assert done.request_counts.completed == 2 and done.output_file_id.startswith("http"), done

cancelled = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
c = client.batches.cancel(cancelled.id)
assert c.status == "cancelling", c
until_ended(cancelled.id, {"cancelled"})

listed = {b.id for b in client.batches.list()}
assert listed == {batch.id, cancelled.id}, listed
print("ok")
