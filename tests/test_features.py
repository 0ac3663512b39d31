"""The features behind the parameters, end to end through the socket and the fake upstream:
every control to the request body, tools, structured output, thinking, logprobs, re-run."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from playground.accounts.models import ApiKey
from playground.chat import runs
from playground.chat.models import Message
from playground.chat.structured import check_reply
from playground.providers import client as upstream_client
from playground.providers.specs import GEMMA_4_E4B
from tests.test_params import IN_RANGE
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]
GEMMA_4 = "empiriolabs:gemma-4-e4b"
GEMMA_3N = "aimlapi:google/gemma-3n-e4b-it"


def as_form_fields(values: dict) -> dict:
    """Values as the panel's controls submit them."""
    fields = {}
    for name, value in values.items():
        if name == "logit_bias":
            fields["param:logit_bias:token"] = list(value)
            fields["param:logit_bias:bias"] = list(value.values())
        elif name == "response_format":
            fields["param:response_format:type"] = value["type"]
        else:
            fields[f"param:{name}"] = value
    return fields


async def reply_of(conversation) -> Message:
    return await Message.objects.filter(conversation=conversation, role="assistant").alast()


@pytest.mark.parametrize("model_key", [GEMMA_4, GEMMA_3N])
async def test_every_control_reaches_the_request_body(
    model_key, upstream, user, api_key, conversation, connect
):
    await database_sync_to_async(ApiKey.store)(
        provider="aimlapi", plaintext="aiml-key-123456", user=user
    )
    model = next(m for m in IN_RANGE if m.key == model_key)
    cases = IN_RANGE[model]
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Hi", model=model_key, **as_form_fields({n: raw for n, (raw, _) in cases.items()})
    )
    await socket.until(lambda f: "status-" in f and "streaming" not in f)
    body = upstream.requests[-1].body
    for name, (_, expected) in cases.items():
        assert body[name] == expected, name
    # Nothing else: the untouched parameters are absent, so the provider's defaults apply.
    assert set(body) == {"model", "messages", "stream", "stream_options", *cases}


async def test_unset_parameters_are_absent_from_the_body(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Hi",
        **{
            "param:temperature": "",
            "param:stop": ["", ""],
            "param:enable_thinking": "",
            "param:tools": "",
        },
    )
    await socket.until(lambda f: "status-complete" in f)
    assert set(upstream.requests[-1].body) == {"model", "messages", "stream", "stream_options"}


async def test_an_out_of_range_value_is_refused_over_the_socket(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", **{"param:temperature": "2.01", "param:max_tokens": "4097"})
    frame = await socket.until(lambda f: "param-error-temperature" in f)
    assert "temperature must be between 0 and 2 (got 2.01)" in frame
    assert "max_tokens must be between 1 and 4096 (got 4097)" in frame
    assert "nothing was sent" in frame
    assert upstream.requests == []
    assert await Message.objects.acount() == 0


WEATHER_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def test_tool_calls_are_assembled_shown_and_answered(
    upstream, user, api_key, conversation, connect
):
    upstream.script(
        Behaviour(
            tokens=[],
            tool_calls=[
                {"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "call_b", "name": "get_weather", "arguments": {"city": "Oslo"}},
            ],
        ),
        Behaviour(tokens=["Paris is warmer."]),
    )
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Weather?", **{"param:tools": json.dumps(WEATHER_TOOL), "param:tool_choice": "auto"}
    )
    frame = await socket.until(lambda f: "status-complete" in f)
    assert "get_weather({&quot;city&quot;: &quot;Paris&quot;})" in frame
    assert 'name="result:call_a"' in frame and 'name="result:call_b"' in frame
    asking = await reply_of(conversation)
    assert asking.finish_reason == "tool_calls"
    assert [c["function"]["arguments"] for c in asking.tool_calls] == [
        '{"city": "Paris"}',
        '{"city": "Oslo"}',
    ]

    await socket.send(
        action="tool_results",
        message_id=str(asking.pk),
        **{"result:call_a": '{"c": 21}', "result:call_b": '{"c": 4}'},
    )
    await socket.until(lambda f: "Paris is warmer." in f and "status-complete" in f)
    sent = upstream.requests[-1].body["messages"]
    assert sent[-3]["tool_calls"] == asking.tool_calls
    assert sent[-2:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": '{"c": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": '{"c": 4}'},
    ]
    assert upstream.requests[-1].body["tools"] == WEATHER_TOOL


async def test_every_tool_call_needs_a_result(upstream, user, api_key, conversation, connect):
    upstream.default = Behaviour(tokens=[], tool_calls=[{"id": "call_a", "name": "f"}])
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Go", **{"param:tools": json.dumps([{"type": "function", "function": {"name": "f"}}])}
    )
    await socket.until(lambda f: "status-complete" in f)
    asking = await reply_of(conversation)
    await socket.send(action="tool_results", message_id=str(asking.pk), **{"result:call_a": ""})
    assert "Give a result for every tool call (f)" in await socket.until(
        lambda f: "composer-error" in f
    )
    assert len(upstream.requests) == 1


def test_tool_calls_are_assembled_from_interleaved_and_out_of_order_deltas():
    run = runs.Run(runs.RunRequest(1, 1, "run.x", GEMMA_4_E4B, {}, None))
    deltas = [
        upstream_client.ToolCallDelta(1, "call_b", "lookup", ""),
        upstream_client.ToolCallDelta(0, "call_a", "get_weather", '{"ci'),
        upstream_client.ToolCallDelta(1, None, None, '{"q": '),
        upstream_client.ToolCallDelta(0, None, None, 'ty": "Oslo"}'),
        upstream_client.ToolCallDelta(1, None, None, '"x"}'),
    ]
    for delta in deltas:
        run._apply(delta)
    calls = [run.tool_calls[i] for i in sorted(run.tool_calls)]
    assert calls == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        },
    ]


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_the_schema_check_passes_and_names_the_failing_path():
    rf = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}
    assert check_reply('{"n": 3}', rf) == {"valid": True}
    failed = check_reply('{"n": "three"}', rf)
    assert failed["valid"] is False and failed["path"] == "$.n" and "integer" in failed["message"]
    assert check_reply("not json", rf)["message"].startswith("Not JSON")
    assert check_reply("[1]", {"type": "json_object"})["valid"] is False
    assert check_reply("anything", None) is None


async def test_a_structured_reply_is_checked_and_the_page_says_so(
    upstream, user, api_key, conversation, connect
):
    upstream.script(Behaviour(tokens=['{"n": ', "3}"]), Behaviour(tokens=['{"n": ', '"x"}']))
    fields = {
        "param:response_format:type": "json_schema",
        "param:response_format:schema": json.dumps(SCHEMA),
    }
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Count", **fields)
    assert "Valid JSON" in await socket.until(lambda f: "status-complete" in f)
    assert upstream.requests[-1].body["response_format"]["json_schema"]["schema"] == SCHEMA
    await socket.send_prompt("Again", **fields)
    frame = await socket.until(lambda f: "status-complete" in f and "Does not match" in f)
    assert "<code>$.n</code>" in frame


async def test_logprobs_are_saved_and_shown_as_shaded_tokens(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(tokens=["Hi", " there"], logprobs=True)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", **{"param:logprobs": "true", "param:top_logprobs": "2"})
    frame = await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert [e["token"] for e in reply.logprobs] == ["Hi", " there"]
    assert 'class="tok p7" tabindex="0">Hi<span class="alts" role="tooltip">77.9%' in frame


async def test_thinking_is_shown_apart_with_its_time(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(reasoning=["Hmm", "…"], tokens=["Yes"], interval=0.02)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Think", **{"param:enable_thinking": "true", "param:reasoning_effort": "high"}
    )
    frame = await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert reply.reasoning == "Hmm…" and reply.reasoning_ms > 0
    assert "<summary>Reasoning · 0." in frame
    body = upstream.requests[-1].body
    assert body["enable_thinking"] is True and body["reasoning_effort"] == "high"


async def test_rerun_sends_the_same_request_again(upstream, user, api_key, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Roll a die", **{"param:seed": "42", "param:temperature": "1.2"})
    await socket.until(lambda f: "status-complete" in f)
    first = await reply_of(conversation)
    await socket.send(action="rerun", message_id=first.pk)
    await socket.until(lambda f: f"msg-{first.pk}" not in f and "status-complete" in f)
    second = await reply_of(conversation)
    assert second.pk != first.pk and second.parent_id == first.parent_id
    assert upstream.requests[-1].body == upstream.requests[-2].body == first.request_body
    assert upstream.requests[-1].body["seed"] == 42


async def test_rerun_of_another_conversations_reply_is_refused(
    upstream, user, api_key, conversation, connect
):
    from playground.chat.models import Conversation

    other = await Conversation.objects.acreate(owner=user, model=GEMMA_4)
    ok, socket = await connect(user, other.pk)
    await socket.send_prompt("Hi")
    await socket.until(lambda f: "status-complete" in f)
    foreign = await reply_of(other)
    ok, socket = await connect(user, conversation.pk)
    await socket.send(action="rerun", message_id=foreign.pk)
    assert "cannot be re-run" in await socket.until(lambda f: "composer-error" in f)
