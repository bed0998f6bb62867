"""Drives a running Tollgate with the official `openai` Python SDK.

Usage: python3 openai_sdk_check.py BASE_URL API_KEY
Exits non-zero (with the failing assertion) if anything a client relies on is off.
"""
import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)

# Non-streamed chat.
r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content == "Hello from mock", r
assert r.usage.total_tokens == 12, r.usage

# Streamed chat with usage: content arrives in pieces, usage in its own chunk.
pieces, usage = [], None
stream = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert len(pieces) >= 3 and "".join(pieces).startswith("tok0"), pieces
assert usage is not None and usage.prompt_tokens == 9, usage

# Embeddings.
e = client.embeddings.create(model="text-embedding-3-small", input="hello")
assert len(e.data[0].embedding) == 3, e

# Image generation.
img = client.images.generate(model="dall-e-3", prompt="a lighthouse at dusk", n=2)
assert len(img.data) == 2 and img.data[0].url.endswith(".png"), img

# Models, listed and retrieved.
ids = [m.id for m in client.models.list()]
assert "gpt-4o-mini" in ids, ids
assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"

# Speech: the audio's bytes as the vendor sent them.
speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello")
assert speech.content == b"Hello" * 4, speech.content
with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="Hi", response_format="wav") as r:
    assert r.headers["content-type"] == "audio/wav" and r.read() == b"Hi" * 4

# Transcriptions: the file streamed through, whole or as events.
t = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", b"the spoken words"))
assert t.text == "the spoken words", t
t = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", b"plain text"), response_format="text")
assert t.strip() == "plain text", t
events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", b"streamed words"), stream=True))
assert "".join(e.delta for e in events if e.type == "transcript.text.delta") == "streamed words", events
assert events[-1].type == "transcript.text.done" and events[-1].usage.input_tokens == 10, events[-1]

# Errors map onto the SDK's exception classes.
try:
    OpenAI(base_url=base_url + "/v1", api_key="sk-tg-wrong", max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[])
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as err:
    assert err.status_code == 401
try:
    client.chat.completions.create(model="no-such-model", messages=[])
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as err:
    assert "no-such-model" in str(err)

# A stream cut by the upstream raises instead of ending cleanly.
try:
    for _ in client.chat.completions.create(model="cut-stream", messages=[], stream=True):
        pass
    raise AssertionError("a cut stream ended cleanly")
except openai.APIError as err:
    assert "interrupted" in str(err), err

print("openai SDK: all checks passed")
