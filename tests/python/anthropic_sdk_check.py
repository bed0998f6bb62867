"""Drives a running Tollgate with the official `anthropic` Python SDK (and the `openai` one on
an Anthropic channel).

Usage: python3 anthropic_sdk_check.py BASE_URL API_KEY
The gateway serves `gpt-4o-mini` and `gpt-cached` on an OpenAI-shaped channel (translated) and
`claude-mock`, `claude-cached` and `overload-stream` on an `anthropic` channel (native).
Exits non-zero (with the failing assertion) if anything a client relies on is off.
"""
import json
import sys

import anthropic
import openai

base_url, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ARGS = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}


def user(text):
    return [{"role": "user", "content": text}]


for model, native in [("gpt-4o-mini", False), ("claude-mock", True)]:
    where = f"{model} ({'native' if native else 'translated'})"
    # A whole message.
    m = client.messages.create(model=model, max_tokens=64, system="Be brief.", messages=user("say:Hello there"))
    assert m.type == "message" and m.role == "assistant", (where, m)
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "Hello there", (where, m)
    assert m.stop_reason == "end_turn", (where, m.stop_reason)
    assert m.usage.input_tokens == 9 and m.usage.output_tokens == 3, (where, m.usage)

    # A stream: text deltas, then the final message with its usage.
    with client.messages.stream(model=model, max_tokens=64, messages=user("say:Streamed words arrive")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Streamed words arrive", (where, text)
    assert final.content[0].text == text and final.stop_reason == "end_turn", (where, final)
    assert final.usage.output_tokens == 6 and final.usage.input_tokens == 9, (where, final.usage)

    # Tool use, whole and streamed: the arguments arrive whole, the stop reason is tool_use.
    ask = user("call:get_weather " + json.dumps(ARGS))
    m = client.messages.create(model=model, max_tokens=64, messages=ask, tools=[WEATHER])
    uses = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and len(uses) == 1, (where, m)
    assert uses[0].name == "get_weather" and uses[0].input == ARGS, (where, uses)
    partial = []
    with client.messages.stream(model=model, max_tokens=64, messages=ask, tools=[WEATHER]) as s:
        for event in s:
            if event.type == "input_json":
                partial.append(event.partial_json)
        final = s.get_final_message()
    assert len(partial) > 1 and json.loads("".join(partial)) == ARGS, (where, partial)
    use = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and use.input == ARGS, (where, final)

    # The tool's result goes back, and the conversation goes on.
    follow = ask + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": "18 degrees"},
            {"type": "text", "text": "say:It is 18 degrees in Paris."},
        ]},
    ]
    m = client.messages.create(model=model, max_tokens=64, messages=follow, tools=[WEATHER])
    assert m.content[0].text == "It is 18 degrees in Paris.", (where, m)

# Counting tokens: the vendor's count natively, an estimate when translated; free either way.
assert client.messages.count_tokens(model="claude-mock", messages=user("hi")).input_tokens == 9
assert client.messages.count_tokens(model="gpt-4o-mini", messages=user("hi there")).input_tokens > 0

# Cache reads are reported, never 0, whole and streamed.
m = client.messages.create(model="gpt-cached", max_tokens=8, messages=user("say:Hi"))
assert (m.usage.input_tokens, m.usage.cache_read_input_tokens) == (3, 6), m.usage
with client.messages.stream(model="gpt-cached", max_tokens=8, messages=user("say:Hi")) as s:
    final = s.get_final_message()
assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (3, 6), final.usage
m = client.messages.create(model="claude-cached", max_tokens=8, messages=user("say:Hi"))
u = m.usage
assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (1, 6, 2), u

# Errors are the SDK's exception classes.
try:
    anthropic.Anthropic(base_url=base_url, api_key="sk-tg-wrong", max_retries=0).messages.create(
        model="claude-mock", max_tokens=8, messages=user("hi"))
    raise AssertionError("a bad key was accepted")
except anthropic.AuthenticationError as err:
    assert err.body["type"] == "error" and err.body["error"]["type"] == "authentication_error", err.body
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=user("hi"))
    raise AssertionError("an unknown model was served")
except anthropic.NotFoundError as err:
    assert "no-such-model" in err.body["error"]["message"], err.body
try:
    client.messages.create(model="gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])
    raise AssertionError("a document was dropped instead of refused")
except anthropic.BadRequestError as err:
    assert "document" in err.body["error"]["message"], err.body
try:
    with client.messages.stream(model="overload-stream", max_tokens=64, messages=user("say:Hello there")) as s:
        for _ in s:
            pass
    raise AssertionError("a failed stream ended cleanly")
except anthropic.APIStatusError as err:
    assert "Overloaded" in str(err), err

# The OpenAI SDK on the Anthropic channel: chat translated to Messages and back.
oa = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)
r = oa.chat.completions.create(model="claude-cached", messages=[{"role": "user", "content": "say:Hi there"}])
assert r.choices[0].message.content == "Hi there" and r.choices[0].finish_reason == "stop", r
assert r.usage.prompt_tokens == 9 and r.usage.prompt_tokens_details.cached_tokens == 6, r.usage
calls, usage = {}, None
stream = oa.chat.completions.create(
    model="claude-mock", stream=True, stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "call:get_weather " + json.dumps(ARGS)}],
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}],
)
finish = None
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
print("anthropic SDK check passed")
