"""Drives a running Tollgate with the official `google-genai` Python SDK (and the `openai` one on
a Gemini channel).

Usage: python3 gemini_sdk_check.py BASE_URL API_KEY
The gateway serves `gemini-mock`, `gemini-cached`, `gemini-thinking` and `fail-429` on a
`gemini` channel, and `gpt-4o-mini` on an OpenAI-shaped one.
Exits non-zero (with the failing assertion) if anything a client relies on is off.
"""
import json
import sys
import urllib.error
import urllib.request

import openai
from google import genai
from google.genai import errors, types

base_url, key = sys.argv[1], sys.argv[2]
ARGS = {"city": "Paris", "days": [1, 2]}
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}),
)
NO_RETRY = types.HttpRetryOptions(attempts=1)

# The SDK's default API version (v1) and the REST docs' (v1beta).
for version in [None, "v1beta"]:
    options = types.HttpOptions(base_url=base_url, retry_options=NO_RETRY)
    if version:
        options.api_version = version
    client = genai.Client(api_key=key, http_options=options)

    r = client.models.generate_content(model="gemini-mock", contents="say:Hello there")
    assert r.text == "Hello there", (version, r)
    assert r.candidates[0].finish_reason == types.FinishReason.STOP, r
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count) == (9, 3), (version, u)

    pieces = [c.text for c in client.models.generate_content_stream(model="gemini-mock", contents="say:Streamed words arrive")]
    assert len(pieces) > 1 and "".join(pieces) == "Streamed words arrive", (version, pieces)

    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    r = client.models.generate_content(model="gemini-mock", contents="call:get_weather " + json.dumps(ARGS), config=config)
    call = r.function_calls[0]
    assert call.name == "get_weather" and call.args == ARGS, (version, r)

    r = client.models.generate_content(model="gemini-cached", contents="say:Hi")
    assert r.usage_metadata.cached_content_token_count == 6, r.usage_metadata
    r = client.models.generate_content(model="gemini-thinking", contents="say:Hi")
    thought = [p for p in r.candidates[0].content.parts if p.thought]
    assert thought and r.usage_metadata.thoughts_token_count == 4, r

# The models served on Gemini's routes, listed the SDK's way.
beta = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url, api_version="v1beta", retry_options=NO_RETRY))
names = [m.name for m in beta.models.list()]
assert "models/gemini-mock" in names and "models/gpt-4o-mini" not in names, names
assert beta.models.get(model="gemini-mock").name == "models/gemini-mock"
assert beta.models.count_tokens(model="gemini-mock", contents="hi").total_tokens == 9

# Errors are the SDK's exception classes, with Google's status names.
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url, retry_options=NO_RETRY))
try:
    wrong = genai.Client(api_key="sk-tg-wrong", http_options=types.HttpOptions(base_url=base_url, retry_options=NO_RETRY))
    wrong.models.generate_content(model="gemini-mock", contents="hi")
    raise AssertionError("a bad key was accepted")
except errors.ClientError as err:
    assert err.code == 401 and err.status == "UNAUTHENTICATED", (err.code, err.status)
try:
    client.models.generate_content(model="no-such-model", contents="hi")
    raise AssertionError("an unknown model was served")
except errors.ClientError as err:
    assert err.code == 404 and err.status == "NOT_FOUND", (err.code, err.status)
try:
    client.models.generate_content(model="fail-429", contents="hi")
    raise AssertionError("a rate limit was hidden")
except errors.ClientError as err:
    assert err.code == 429 and err.status == "RESOURCE_EXHAUSTED", (err.code, err.status)
try:
    client.models.generate_content(model="gpt-4o-mini", contents="hi")
    raise AssertionError("a model of another API was served as Gemini")
except errors.ClientError as err:
    assert err.code == 400 and "chat/completions" in err.message, err.message

# Google's REST form: the key in the query, the stream as a JSON array without alt=sse.
body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "say:Query keys work"}]}]}).encode()
url = f"{base_url}/v1beta/models/gemini-mock:streamGenerateContent?key={key}"
req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
with urllib.request.urlopen(req) as resp:
    chunks = json.loads(resp.read())
assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "Query keys work", chunks

# The OpenAI SDK on the Gemini channel: chat translated to generateContent and back.
oa = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)
r = oa.chat.completions.create(model="gemini-cached", messages=[{"role": "user", "content": "say:Hi there"}])
assert r.choices[0].message.content == "Hi there" and r.choices[0].finish_reason == "stop", r
assert r.usage.prompt_tokens == 9 and r.usage.prompt_tokens_details.cached_tokens == 6, r.usage
calls, usage, finish = {}, None, None
stream = oa.chat.completions.create(
    model="gemini-mock", stream=True, stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "call:get_weather " + json.dumps(ARGS)}],
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += (call.function and call.function.name) or ""
            entry["arguments"] += (call.function and call.function.arguments) or ""
assert finish == "tool_calls" and calls[0]["name"] == "get_weather", (finish, calls)
assert json.loads(calls[0]["arguments"]) == ARGS, calls
assert usage is not None and usage.prompt_tokens == 9, usage
# Two rounds of tool use through the OpenAI SDK on a thinking model: the call's id and its
# thought signature go back with the history as the SDK gives it, and the mock checks both.
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
ask = [{"role": "user", "content": "call:get_weather " + json.dumps(ARGS)}]
r = oa.chat.completions.create(model="gemini-thinking", messages=ask, tools=tools)
message = r.choices[0].message
assert message.tool_calls and r.choices[0].finish_reason == "tool_calls", r
history = ask + [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18 degrees"},
                 {"role": "user", "content": "call:get_weather " + json.dumps({"city": "Rome"})}]
r = oa.chat.completions.create(model="gemini-thinking", messages=history, tools=tools)
second = r.choices[0].message
assert second.tool_calls[0].id != message.tool_calls[0].id, "call ids are unique across turns"
history += [second.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": second.tool_calls[0].id, "content": "21 degrees"},
            {"role": "user", "content": "say:Warm in both."}]
r = oa.chat.completions.create(model="gemini-thinking", messages=history, tools=tools)
assert r.choices[0].message.content == "Warm in both.", r
print("gemini SDK check passed")
