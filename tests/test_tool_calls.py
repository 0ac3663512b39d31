"""Tool calls: definitions checked, calls assembled from deltas, shown, and answered with results
that go back upstream."""

from __future__ import annotations

import json

import pytest

from playground.chat import runs
from playground.providers import client as upstream_client
from playground.providers import params
from playground.providers.specs import GEMMA_4_E4B
from tests.conftest import reply_of
from tests.html import find_all, has, text
from tests.upstream import Behaviour

DEEP = "[" * 100_000


WEATHER_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.mark.django_db(transaction=True)
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
    shown = [text(call) for call in find_all(frame, "pre", class_="tool-call")]
    assert shown == ['get_weather({"city": "Paris"})', 'get_weather({"city": "Oslo"})']
    assert has(frame, "textarea", name="result:call_a")
    assert has(frame, "textarea", name="result:call_b")
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


@pytest.mark.django_db(transaction=True)
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("char", ["\x00", "\ud800"])
async def test_a_tool_result_holding_a_nul_or_lone_surrogate_is_refused(
    char, upstream, user, api_key, conversation, connect
):
    # Saved as the tool message's text, which PostgreSQL (NUL) or no database (a lone
    # surrogate) takes: the save failed and the socket closed on the error.
    upstream.default = Behaviour(tokens=[], tool_calls=[{"id": "call_a", "name": "f"}])
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Go", **{"param:tools": json.dumps([{"type": "function", "function": {"name": "f"}}])}
    )
    await socket.until(lambda f: "status-complete" in f)
    asking = await reply_of(conversation)
    await socket.send(
        action="tool_results", message_id=str(asking.pk), **{"result:call_a": f"21{char}"}
    )
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "A tool result holds a " in frame and "which cannot be stored" in frame
    assert len(upstream.requests) == 1
    assert await reply_of(conversation) == asking  # no tool message, no new reply


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


def test_deeply_nested_json_in_the_tools_box_is_a_field_error():
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"tools": DEEP})
    assert caught.value.errors["tools"] == "tools is nested too deeply"


def test_a_number_too_long_for_python_in_the_tools_box_is_a_field_error():
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"tools": "[" + "9" * 5_000 + "]"})
    assert caught.value.errors["tools"] == "tools has a number too long to read"


def test_a_tool_name_ending_in_a_newline_is_refused():
    """`$` also matches before a trailing newline: `get_weather\\n` passed as a tool name (and as
    the tool_choice naming it) and went upstream, which refuses it."""
    tools = [{**WEATHER_TOOL[0], "function": {"name": "get_weather\n"}}]
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"tools": json.dumps(tools)})
    assert "the name must be 1-64 letters" in caught.value.errors["tools"]
    choice = {"type": "function", "function": {"name": "get_weather\n"}}
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"tools": WEATHER_TOOL, "tool_choice": choice})
    assert "tool_choice" in caught.value.errors
