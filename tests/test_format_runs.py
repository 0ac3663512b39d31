"""A conversation in each wire format, end to end: socket → run engine → fake upstream.

Streaming, stop, resume, tool calls, images, reasoning and usage in every format, the format
saved on the conversation and its replies, and Re-run in the same format.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from channels.db import database_sync_to_async

from playground.chat.models import Conversation, Message
from tests.conftest import reply_of
from tests.test_streaming import is_delta, streamed_text
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]
FORMATS = pytest.mark.parametrize("fmt", ["chat", "responses", "messages"])
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
WEATHER_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def sent_text(body: dict) -> str:
    return json.dumps(body)


@FORMATS
async def test_a_reply_streams_with_reasoning_and_usage_and_records_its_format(
    upstream, user, api_key, conversation, connect, fmt
):
    upstream.default = Behaviour(tokens=["Hel", "lo"], reasoning=["Let me think. "])
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", wire_format=fmt, system_prompt="Be brief.")
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert reply.text == "Hello" and reply.reasoning == "Let me think. "
    assert reply.wire_format == fmt
    assert reply.usage["completion_tokens"] == 3 and reply.usage["prompt_tokens"] == 3
    assert streamed_text(socket.frames, reply.pk) == "Hello"
    received = upstream.requests[-1]
    assert received.path == PATHS[fmt]
    # Saved in the playground's own shape, sent in the format's.
    assert reply.request_body["messages"][0] == {"role": "system", "content": "Be brief."}
    if fmt == "responses":
        assert received.body["instructions"] == "Be brief."
    elif fmt == "messages":
        assert received.body["system"] == "Be brief." and received.body["max_tokens"] == 4096
    await conversation.arefresh_from_db()
    assert conversation.wire_format == fmt


@FORMATS
async def test_rerun_repeats_the_same_format(upstream, user, api_key, conversation, connect, fmt):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Roll", wire_format=fmt, **{"param:temperature": "0.5"})
    await socket.until(lambda f: "status-complete" in f)
    first = await reply_of(conversation)
    # The panel moves on to another format; the re-run still asks the way the reply was.
    await Conversation.objects.filter(pk=conversation.pk).aupdate(wire_format="chat")
    await socket.send(action="rerun", message_id=first.pk)
    await socket.until(lambda f: f"msg-{first.pk}" not in f and "status-complete" in f)
    second = await reply_of(conversation)
    assert second.pk != first.pk and second.wire_format == fmt
    assert upstream.requests[-1].path == upstream.requests[-2].path == PATHS[fmt]
    assert upstream.requests[-1].body == upstream.requests[-2].body
    assert upstream.requests[-1].body["temperature"] == 0.5


@FORMATS
async def test_tool_calls_are_answered_in_the_same_format(
    upstream, user, api_key, conversation, connect, fmt
):
    upstream.script(
        Behaviour(
            tokens=[],
            tool_calls=[{"id": "call_a", "name": "get_weather", "arguments": {"city": "Oslo"}}],
        ),
        Behaviour(tokens=["Sunny."]),
    )
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Weather?", wire_format=fmt, **{"param:tools": json.dumps(WEATHER_TOOL)}
    )
    await socket.until(lambda f: "status-complete" in f)
    asking = await reply_of(conversation)
    assert asking.finish_reason == "tool_calls"
    assert asking.tool_calls == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
    ]
    await socket.send(action="tool_results", message_id=str(asking.pk), **{"result:call_a": "21C"})
    await socket.until(lambda f: "Sunny." in f and "status-complete" in f)
    answered = await reply_of(conversation)
    assert answered.wire_format == fmt
    body = upstream.requests[-1].body
    assert upstream.requests[-1].path == PATHS[fmt]
    if fmt == "chat":
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": "call_a", "content": "21C"}
    elif fmt == "responses":
        assert body["input"][-2]["type"] == "function_call"
        assert body["input"][-1] == {
            "type": "function_call_output",
            "call_id": "call_a",
            "output": "21C",
        }
        assert body["tools"][0]["name"] == "get_weather"
    else:
        assert body["messages"][-2]["content"][0]["input"] == {"city": "Oslo"}
        assert body["messages"][-1]["content"] == [
            {"type": "tool_result", "tool_use_id": "call_a", "content": "21C"}
        ]
        assert "input_schema" in body["tools"][0]


async def ask_with_thinking_and_tools(connect, user, conversation):
    """A Messages-format send with the weather tool and extended thinking, read to its end."""
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Weather?",
        wire_format="messages",
        **{
            "param:tools": json.dumps(WEATHER_TOOL),
            "param:enable_thinking": "true",
            "param:thinking_budget": "2048",
        },
    )
    await socket.until(lambda f: "status-complete" in f)
    return socket


async def test_a_messages_turn_that_thought_and_called_tools_goes_back_with_its_signed_thinking(
    upstream, user, api_key, conversation, connect
):
    """Extended thinking with tools: the assistant turn is sent back starting with its
    thinking block and the signature the stream gave it (signature_delta), before the
    tool_use; the fake, like Anthropic's API, answers 400 to a turn without it."""
    upstream.script(
        Behaviour(
            tokens=[],
            reasoning=["Oslo is ", "in Norway. "],
            tool_calls=[{"id": "call_a", "name": "get_weather", "arguments": {"city": "Oslo"}}],
        ),
        Behaviour(tokens=["Sunny."]),
    )
    socket = await ask_with_thinking_and_tools(connect, user, conversation)
    asking = await reply_of(conversation)
    assert asking.reasoning == "Oslo is in Norway. "
    assert asking.thinking_signatures == [{"chars": 19, "signature": "fake-signature"}]
    await socket.send(action="tool_results", message_id=str(asking.pk), **{"result:call_a": "21C"})
    await socket.until(lambda f: "Sunny." in f and "status-complete" in f)
    body = upstream.requests[-1].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["messages"][-2]["role"] == "assistant"
    assert body["messages"][-2]["content"] == [
        {"type": "thinking", "thinking": "Oslo is in Norway. ", "signature": "fake-signature"},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    answered = await reply_of(conversation)
    assert answered.status == "complete" and answered.text == "Sunny."


async def test_a_redacted_thinking_block_goes_back_as_it_came(
    upstream, user, api_key, conversation, connect
):
    """A block the provider redacted shows nothing, but is saved in its place (after the
    signed block it followed) and sent back with its encrypted data on the next turn."""
    upstream.script(
        Behaviour(
            tokens=[],
            reasoning=["Oslo. "],
            redacted_thinking="EmwKAhgBEgy3va3pzix/LafPsn4a",
            tool_calls=[{"id": "call_a", "name": "get_weather", "arguments": {"city": "Oslo"}}],
        ),
        Behaviour(tokens=["Sunny."]),
    )
    socket = await ask_with_thinking_and_tools(connect, user, conversation)
    asking = await reply_of(conversation)
    assert asking.reasoning == "Oslo. "
    assert asking.thinking_signatures == [
        {"chars": 6, "signature": "fake-signature"},
        {"chars": 0, "redacted": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
    ]
    await socket.send(action="tool_results", message_id=str(asking.pk), **{"result:call_a": "21C"})
    await socket.until(lambda f: "Sunny." in f and "status-complete" in f)
    assert upstream.requests[-1].body["messages"][-2]["content"] == [
        {"type": "thinking", "thinking": "Oslo. ", "signature": "fake-signature"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Oslo"}},
    ]


@pytest.mark.parametrize("fmt", ["chat", "responses"])
async def test_other_formats_send_no_thinking_blocks_back(
    upstream, user, api_key, conversation, connect, fmt
):
    upstream.script(
        Behaviour(
            tokens=[],
            reasoning=["Hmm. "],
            tool_calls=[{"id": "call_a", "name": "get_weather", "arguments": {"city": "Oslo"}}],
        ),
        Behaviour(tokens=["Sunny."]),
    )
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Weather?", wire_format=fmt, **{"param:tools": json.dumps(WEATHER_TOOL)}
    )
    await socket.until(lambda f: "status-complete" in f)
    asking = await reply_of(conversation)
    await socket.send(action="tool_results", message_id=str(asking.pk), **{"result:call_a": "21C"})
    await socket.until(lambda f: "Sunny." in f and "status-complete" in f)
    assert "thinking" not in sent_text(upstream.requests[-1].body)


@database_sync_to_async
def stored_attachment(user):
    from playground.chat import images
    from tests.test_images import image_bytes

    return images.store(user, images.clean(image_bytes("PNG", size=(8, 6))))


@FORMATS
async def test_images_go_in_the_formats_own_image_parts(
    upstream, user, api_key, conversation, connect, fmt
):
    attachment = await stored_attachment(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("What is this?", wire_format=fmt, attachment=[str(attachment.pk)])
    await socket.until(lambda f: "status-complete" in f)
    stored = await database_sync_to_async(lambda: attachment.file.open("rb").read())()
    body = upstream.requests[-1].body
    if fmt == "chat":
        url = body["messages"][-1]["content"][1]["image_url"]["url"]
        data = url.split(",", 1)[1]
    elif fmt == "responses":
        part = body["input"][-1]["content"][1]
        assert part["type"] == "input_image"
        data = part["image_url"].split(",", 1)[1]
    else:
        block = body["messages"][-1]["content"][1]
        assert block["type"] == "image" and block["source"]["type"] == "base64"
        assert block["source"]["media_type"] == "image/png"
        data = block["source"]["data"]
    assert base64.b64decode(data) == stored
    reply = await reply_of(conversation)
    assert "base64" not in str(reply.request_body)


@FORMATS
async def test_stop_closes_the_upstream_in_every_format(
    upstream, user, api_key, conversation, connect, fmt
):
    upstream.default = Behaviour(n_tokens=500, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Go on forever", wire_format=fmt)
    for _ in range(3):
        await socket.until(is_delta)
    await socket.send(action="stop")
    await socket.until(lambda f: "status-stopped" in f)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.STOPPED
    assert reply.text and len(reply.text) < len(upstream.default.text)
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5)


@FORMATS
async def test_reopening_resumes_live_in_every_format(
    upstream, user, api_key, conversation, connect, fmt
):
    upstream.default = Behaviour(n_tokens=40, interval=0.01)
    ok, first = await connect(user, conversation.pk)
    await first.send_prompt("Keep going", wire_format=fmt)
    await first.until(is_delta)
    await first.close()
    ok, again = await connect(user, conversation.pk)
    await again.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert streamed_text(again.frames, reply.pk) == upstream.default.text == reply.text


@pytest.mark.parametrize("fmt", ["responses", "messages"])
async def test_a_mid_stream_error_is_shown_in_every_format(
    upstream, user, api_key, conversation, connect, fmt
):
    upstream.default = Behaviour(tokens=["a", "b"], mid_stream_error={"message": "GPU fell over"})
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", wire_format=fmt)
    await socket.until(lambda f: "status-error" in f)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.ERROR and "GPU fell over" in reply.error


async def test_a_parameter_the_format_cannot_carry_is_refused_not_dropped(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", wire_format="responses", **{"param:seed": "7"})
    frame = await socket.until(lambda f: "param-error-seed" in f)
    assert "The Responses format has no seed." in frame
    assert not upstream.requests


async def test_a_format_the_model_is_not_served_over_is_refused(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", model="aimlapi:google/gemma-3n-e4b-it", wire_format="messages")
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "not served over Messages" in frame
    assert not upstream.requests
