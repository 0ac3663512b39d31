"""Faults inside a run: garbled stream lines, runaway replies, a channel layer that fails."""

from __future__ import annotations

import asyncio
import html
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.test import Client

from playground.chat import runs
from playground.chat.models import Message
from tests.conftest import reply_of
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_an_unreadable_stream_line_is_skipped_and_noted_under_the_reply(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(tokens=["one", " two", " three"], bad_line_after=1)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    frame = await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == "one two three"  # the chunks after the bad line are kept
    assert reply.error == "" and reply.finish_reason == "stop"
    note = "The provider sent 1 line the playground could not read; skipped."
    assert reply.notes == [note]
    assert note in frame  # shown under the reply
    assert reply.response_id.startswith("chatcmpl-")  # the provider's id is kept
    assert f"id {reply.response_id}" in frame
    await socket.close()


async def test_a_reply_past_the_size_cap_ends_with_finish_reason_length_and_a_note(
    upstream, user, api_key, conversation, connect, settings
):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "MAX_REPLY_CHARS": 50}
    upstream.default = Behaviour(tokens=["0123456789"] * 200, interval=0.001)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Go on forever")
    frame = await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert reply.text == "0123456789" * 5
    assert reply.finish_reason == "length"
    note = "The reply reached the playground's limit of 50 characters and was cut off."
    assert reply.notes == [note]
    assert "limit of 50 characters" in frame
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5.0)  # the upstream was closed
    assert upstream.disconnects[-1].tokens_sent < 200
    await socket.close()


class FlakyLayer:
    """Wraps the test's channel layer: while `down`, every send and group_send raises, as
    channels_redis does while Redis restarts."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.down = False
        self.failed = 0

    def wrap(self, method):
        async def flaky(*args, **kwargs):
            if self.down:
                self.failed += 1
                raise ConnectionError("Redis is restarting")
            return await method(*args, **kwargs)

        return flaky


@pytest.fixture
def flaky(monkeypatch) -> FlakyLayer:
    layer = get_channel_layer()
    wrapper = FlakyLayer(layer)
    monkeypatch.setattr(layer, "send", wrapper.wrap(layer.send))
    monkeypatch.setattr(layer, "group_send", wrapper.wrap(layer.group_send))
    monkeypatch.setattr(runs, "PUBLISH_RETRIES", (0.01,))
    return wrapper


async def test_the_final_save_does_not_depend_on_the_channel_layer(
    upstream, user, api_key, conversation, connect, flaky, monkeypatch
):
    monkeypatch.setattr(runs, "DONE_RETRIES", (0.01,))
    upstream.default = Behaviour(n_tokens=30, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: f.startswith("+t"))
    flaky.down = True  # and it never comes back
    reply = await reply_of(conversation)
    await runs.wait(reply.pk)
    await reply.arefresh_from_db()
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == Behaviour(n_tokens=30).text
    assert flaky.failed > 0
    await socket.close()


async def test_a_watcher_that_missed_deltas_resyncs_when_the_layer_comes_back(
    upstream, user, api_key, conversation, connect, flaky
):
    upstream.default = Behaviour(n_tokens=60, interval=0.02)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: f.startswith("+t"))
    flaky.down = True
    await asyncio.sleep(0.3)  # deltas published meanwhile are lost
    flaky.down = False
    # The next delta shows a gap; the socket asks the run for a snapshot and goes on from it.
    await socket.until(lambda f: 'hx-swap-oob="innerHTML"' in f)
    await socket.until(lambda f: "status-complete" in f, timeout=10)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == Behaviour(n_tokens=60).text
    assert flaky.failed > 0
    from tests.test_streaming import streamed_text

    assert streamed_text(socket.frames, reply.pk) == reply.text  # nothing lost, nothing twice
    await socket.close()


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("text", {"content": "hi"}, "an object"),
        ("text", ["hi"], "a list"),
        ("system_prompt", 3, "a number"),
        ("model", True, "true or false"),
    ],
)
async def test_a_field_of_the_wrong_type_is_refused_not_stringified(
    upstream, user, api_key, conversation, connect, field, value, kind
):
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.drain()
    data = {"action": "send", "text": "hi", "model": "empiriolabs:gemma-4-e4b"}
    data[field] = value
    await socket.send(**data)
    frame = await socket.until(lambda f: "composer-error" in f)
    assert f"“{field}” must be text, not {kind}: nothing was sent." in html.unescape(frame)
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert upstream.requests == []
    await socket.close()


async def test_an_unknown_parameter_name_is_refused_not_dropped(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.drain()
    await socket.send_prompt("hi", **{"param:temprature": "0.5", "param:temperature": "0.5"})
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "Unknown parameter temprature: nothing was sent." in frame
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert upstream.requests == []
    await socket.close()


async def test_a_tool_result_that_is_not_text_is_refused(user, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.drain()
    await socket.send(action="tool_results", message_id=1, **{"result:call_1": {"t": 21}})
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "“result:call_1” must be text, not an object" in html.unescape(frame)
    await socket.close()


async def test_usage_counts_sent_as_strings_do_not_fail_the_final_save(
    upstream, user, api_key, conversation, connect
):
    # int() in the client reads "5" as 5, but the raw usage keeps the string.
    upstream.default = Behaviour(
        tokens=["one", " two"], interval=0.01, usage_fields={"completion_tokens": "5"}
    )
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-complete" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == "one two" and reply.error == ""
    assert reply.output_tokens is None and reply.tokens_per_second is None
    await socket.close()


async def test_a_tool_call_whose_name_and_id_are_not_strings_does_not_crash_the_run(
    upstream, user, api_key, conversation, connect
):
    odd = {"index": 0, "id": 7, "function": {"name": 5, "arguments": "{}"}}
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [odd]}}]}
    upstream.default = Behaviour(tokens=["one", " two"], raw_data=[json.dumps(chunk)])
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-complete" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == "one two" and reply.error == ""
    call = reply.tool_calls[0]  # what is not a string is treated as not sent
    assert call["id"] == "" and call["function"] == {"name": "", "arguments": "{}"}
    await socket.close()


async def test_a_nul_character_in_the_reply_does_not_fail_its_saves(
    upstream, user, api_key, conversation, connect
):
    # PostgreSQL refuses NUL in text and jsonb: every checkpoint and the final save failed.
    upstream.default = Behaviour(tokens=["one\x00", " two"], reasoning=["th\x00ink"])
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-complete" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == "one\ufffd two" and reply.reasoning == "th\ufffdink"
    await socket.close()


async def test_a_nul_character_in_a_tool_call_does_not_fail_its_saves(
    upstream, user, api_key, conversation, connect
):
    # The tool calls are saved in a jsonb column, which refuses \u0000 like text does.
    calls = [
        {"id": "call\x00a", "name": "look\x00up", "arguments": '{"q": "a\x00b"}'},
        {"id": "call_b", "name": "echo", "arguments": {"q": "c\x00d"}},  # sent as \\u0000
    ]
    upstream.default = Behaviour(tokens=["Calling"], tool_calls=calls)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Look it up")
    await socket.until(lambda f: "status-complete" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE and reply.error == ""
    assert reply.text == "Calling" and reply.finish_reason == "tool_calls"
    first, second = reply.tool_calls
    assert first["id"] == "call\ufffda"
    assert first["function"] == {"name": "look\ufffdup", "arguments": '{"q": "a\ufffdb"}'}
    # An escaped NUL inside the arguments' JSON is no NUL character: it is kept as it came.
    assert json.loads(second["function"]["arguments"]) == {"q": "c\x00d"}


async def test_a_nul_character_in_logprobs_usage_tool_calls_or_the_id_does_not_fail_the_save(
    upstream, user, api_key, conversation, connect
):
    # PostgreSQL refuses \u0000 in jsonb (logprobs, usage, tool_calls) and NUL in text
    # (response_id): the final save failed every time and the reply ended as a saving error.
    top = [{"token": "\x00", "logprob": -2}]
    logprobs = [{"token": "a\x00", "logprob": -0.1, "top_logprobs": top}]
    choice = {"index": 0, "delta": {"content": "a"}, "logprobs": {"content": logprobs}}
    upstream.default = Behaviour(
        tokens=["one"],
        raw_data=[json.dumps({"id": "chatcmpl-x", "choices": [choice]})],
        raw_after=1,
        usage_fields={"details\x00": {"note": "n\x00"}},
        tool_calls=[{"name": "f\x00", "arguments": '{"q": "a\x00"}'}],
        chunk_id="chatcmpl-\x00x",
    )
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-complete" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE, reply.error
    assert reply.logprobs[0]["token"] == "a\ufffd"
    assert reply.logprobs[0]["top_logprobs"][0]["token"] == "\ufffd"
    assert reply.usage["details\ufffd"] == {"note": "n\ufffd"}
    function = reply.tool_calls[0]["function"]
    assert function == {"name": "f\ufffd", "arguments": '{"q": "a\ufffd"}'}
    assert reply.response_id == "chatcmpl-\ufffdx"
    await socket.close()


async def test_a_nul_character_in_a_mid_stream_error_does_not_fail_the_save(
    upstream, user, api_key, conversation, connect
):
    # PostgreSQL refuses NUL in the error column: the provider's own message was lost.
    upstream.default = Behaviour(
        tokens=["one", " two"], mid_stream_error={"message": "bro\x00ken"}, error_after=1
    )
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-error" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.ERROR
    assert "bro\ufffdken" in reply.error and "\x00" not in reply.error
    await socket.close()


async def test_a_finish_reason_longer_than_its_column_does_not_fail_the_save(
    upstream, user, api_key, conversation, connect
):
    # On PostgreSQL the column is a varchar(40): a longer reason failed every final save.
    upstream.default = Behaviour(tokens=["one"], finish_reason="r" * 60)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-complete" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE and reply.text == "one"
    assert reply.finish_reason == "r" * 40
    await socket.close()


def _sendable(frames: list[str]) -> bool:
    """Whether every frame could go out on a real WebSocket, which sends text as UTF-8 (the
    test communicator hands the str over as it is)."""
    try:
        for frame in frames:
            frame.encode()
    except UnicodeEncodeError:
        return False
    return True


async def test_a_lone_surrogate_in_the_reply_does_not_fail_its_saves_or_frames(
    upstream, user, api_key, conversation, connect, settings, caplog
):
    # "\ud800" is valid JSON and reads as a str no UTF-8 can hold: SQLite and PostgreSQL
    # refused every checkpoint and the final save, the reply stayed "streaming", and its
    # frames could not be sent. The fake's own JSON would not escape one: these go raw.
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "CHECKPOINT_INTERVAL": 0}
    call = {
        "index": 0,
        "id": "call\ud800",
        "type": "function",
        "function": {"name": "look\udc00up", "arguments": '{"q": "a\udbffb"}'},
    }
    top = [{"token": "\udfff", "logprob": -2}]
    logprobs = [{"token": "a\ud800", "logprob": -0.1, "top_logprobs": top}]
    deltas = [
        {"delta": {"reasoning_content": "th\udfffink"}},
        # A valid pair (escaped "\\ud83d\\ude00") reads as one character and is kept.
        {"delta": {"content": "a\ud800b\U0001f600"}, "logprobs": {"content": logprobs}},
        {"delta": {"tool_calls": [call]}},
    ]
    chunks = [{"id": "chatcmpl-x", "choices": [{"index": 0, **d}]} for d in deltas]
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "n\ud800": "\udc00"}
    chunks.append({"id": "chatcmpl-x", "choices": [], "usage": usage})
    raw = [json.dumps(chunk) for chunk in chunks]
    assert all("\\ud" in line and line.isascii() for line in raw)  # escaped, as JSON allows
    upstream.default = Behaviour(tokens=["one", " two"], raw_data=raw, usage=False)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Count")
    frame = await socket.until(lambda f: "status-complete" in f, timeout=5)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE, reply.error
    assert reply.text == "onea\ufffdb\U0001f600 two" and reply.reasoning == "th\ufffdink"
    assert "onea\ufffdb\U0001f600 two" in frame
    first = reply.tool_calls[0]
    assert first["id"] == "call\ufffd"
    assert first["function"] == {"name": "look\ufffdup", "arguments": '{"q": "a\ufffdb"}'}
    assert reply.logprobs[0]["token"] == "a\ufffd"
    assert reply.logprobs[0]["top_logprobs"][0]["token"] == "\ufffd"
    assert reply.usage["n\ufffd"] == "\ufffd"
    assert _sendable(socket.frames)
    failed = [r.getMessage() for r in caplog.records if r.name == "playground.chat.runs"]
    assert not failed  # no checkpoint (nor save) failed on the way
    await socket.close()
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    page = await database_sync_to_async(client.get)(f"/c/{conversation.pk}/")
    assert page.status_code == 200 and "onea\ufffdb\U0001f600 two" in page.content.decode()


async def test_a_nul_or_lone_surrogate_in_a_schema_checks_path_does_not_fail_the_save(
    upstream, user, api_key, conversation, connect
):
    # The reply's text is plain ASCII, but the check names the key it read from the escapes:
    # the schema_check column (jsonb) refused both.
    schema = {"type": "object", "additionalProperties": {"type": "string"}}
    upstream.script(Behaviour(tokens=['{"a\\u0000": 1}']), Behaviour(tokens=['{"b\\ud800": 1}']))
    fields = {
        "param:response_format:type": "json_schema",
        "param:response_format:schema": json.dumps(schema),
    }
    ok, socket = await connect(user, conversation.pk)
    assert ok
    for key in ("a", "b"):
        await socket.send_prompt("Count", **fields)
        await socket.until(lambda f: "status-complete" in f and "Does not match" in f, timeout=5)
        reply = await reply_of(conversation)
        assert reply.status == Message.Status.COMPLETE, reply.error
        assert reply.schema_check["path"] == f"$['{key}\ufffd']"
    assert _sendable(socket.frames)
    await socket.close()
