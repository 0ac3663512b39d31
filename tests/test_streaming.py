"""A reply streams from the upstream through a run to every socket watching it."""

from __future__ import annotations

import asyncio
import html
import re
import time

import pytest
from channels.layers import get_channel_layer

from playground.chat import runs
from playground.chat.models import Message
from tests.conftest import reply_of
from tests.html import find, has, text
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]


def streamed_text(frames: list[str], message_id: int, kind: str = "text") -> str:
    """The text a browser would show: appended deltas, reset by snapshot frames."""
    shown = ""
    delta = f"+{kind[0]}{message_id}:"
    replace = re.compile(
        rf'<div id="{kind}-{message_id}" hx-swap-oob="innerHTML">(.*?)</div>', re.S
    )
    for frame in frames:
        if frame.startswith(delta):
            shown += frame[len(delta) :]
        for match in replace.finditer(frame):
            shown = html.unescape(match.group(1))
    return shown


def is_delta(frame: str) -> bool:
    return frame.startswith("+t")


async def test_it_streams_a_reply_and_saves_it(upstream, user, api_key, conversation, connect):
    upstream.default = Behaviour(tokens=["Hello", ",", " world", "!"], interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("Say hello")
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == "Hello, world!"
    assert streamed_text(socket.frames, reply.pk) == "Hello, world!"
    assert reply.finish_reason == "stop"
    assert reply.usage["completion_tokens"] == 4
    assert reply.ttft_ms is not None and reply.total_ms >= reply.ttft_ms
    assert str(reply.cost) == "0.030000"
    body = upstream.requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gemma-4-e4b"
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert reply.request_body == body
    await socket.close()


def record_deltas(monkeypatch) -> list[tuple[float, str]]:
    """(time.monotonic(), text) for every delta the run publishes, taken as it hands the frame
    to the channel layer: where the pace is set, so the receiving test's own delays don't count."""
    sent: list[tuple[float, str]] = []
    layer = get_channel_layer()
    original = layer.group_send

    async def recording(group, message):
        if message.get("type") == "run.delta" and message["text"]:
            sent.append((time.monotonic(), message["text"]))
        await original(group, message)

    monkeypatch.setattr(layer, "group_send", recording)
    return sent


async def test_it_sends_the_first_delta_at_once(
    upstream, user, api_key, conversation, connect, settings
):
    # A frame interval far longer than the upstream's pause after its first token: a run that
    # waited the interval before its first frame would send the first two tokens together.
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "FRAME_INTERVAL": 2.0}
    upstream.default = Behaviour(n_tokens=5, silence=0.5, silence_after=1)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Count")
    first = await socket.until(is_delta)
    assert upstream.requests[-1].tokens_sent <= 1, "the first frame came before the 2nd token"
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert first == f"+t{reply.pk}:tok0"
    assert streamed_text(socket.frames, reply.pk) == reply.text == upstream.default.text


async def test_frames_of_a_reply_are_never_closer_than_the_frame_interval(
    upstream, user, api_key, conversation, connect, settings, monkeypatch
):
    interval = 0.05
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "FRAME_INTERVAL": interval}
    upstream.default = Behaviour(n_tokens=60, interval=0.005)
    sent = record_deltas(monkeypatch)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    # The last frame is exempt: the end of the stream flushes what is left at once. asyncio may
    # end a pause one clock tick early (it runs timers due within its clock resolution).
    tick = time.get_clock_info("monotonic").resolution
    times = [at for at, _ in sent[:-1]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= interval - tick for gap in gaps), gaps
    assert "".join(text for _, text in sent) == upstream.default.text
    assert streamed_text(socket.frames, reply.pk) == reply.text == upstream.default.text


async def test_frames_carry_deltas_never_the_whole_message_again(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=40, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Count")
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    deltas = [f for f in socket.frames if f.startswith(f"+t{reply.pk}:")]
    assert deltas
    overhead = len(f"+t{reply.pk}:")
    assert sum(len(f) for f in deltas) == len(reply.text) + overhead * len(deltas)


async def test_closing_the_tab_mid_reply_loses_nothing(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=30, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Keep going")
    await socket.until(is_delta)
    await socket.close()
    reply = await reply_of(conversation)
    await runs.wait(reply.pk)
    await reply.arefresh_from_db()
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == upstream.default.text
    assert upstream.disconnects == []


async def test_a_second_tab_joining_mid_reply_sees_everything_exactly_once(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=60, interval=0.01)
    ok, first = await connect(user, conversation.pk)
    await first.send_prompt("Keep going")
    await first.until(is_delta)
    await first.until(is_delta)
    ok, second = await connect(user, conversation.pk)
    assert ok
    await second.until(lambda f: "status-complete" in f)
    await first.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    expected = upstream.default.text
    assert reply.text == expected
    assert streamed_text(first.frames, reply.pk) == expected
    assert streamed_text(second.frames, reply.pk) == expected
    # The late tab got a snapshot (replace) and then only what came after it.
    assert any(has(f, hx_swap_oob="innerHTML") for f in second.frames)


async def test_the_senders_rows_frame_clears_its_composer_and_no_one_elses(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(tokens=["Hi"], interval=0.01)
    ok, sender = await connect(user, conversation.pk)
    ok, other_tab = await connect(user, conversation.pk)
    await sender.send_prompt("Say hi")

    def rows(frame: str) -> bool:
        return has(frame, "div", id="transcript-list", hx_swap_oob="beforeend")

    mine, theirs = await sender.until(rows), await other_tab.until(rows)
    # One frame for the sender: the new rows, and the composer emptied for the next prompt.
    assert has(mine, "textarea", id="prompt", hx_swap_oob="true")
    assert has(mine, "div", id="attachment-tray", hx_swap_oob="true")
    # The other tab gets the same rows, but what its user is typing stays.
    assert not has(theirs, "textarea", id="prompt")
    await other_tab.until(lambda f: "status-complete" in f)
    assert not any(has(f, "textarea", id="prompt", hx_swap_oob="true") for f in other_tab.frames)
    await sender.until(lambda f: "status-complete" in f)
    await sender.close()
    await other_tab.close()


async def test_reopening_after_the_tab_closed_resumes_live(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=60, interval=0.01)
    ok, first = await connect(user, conversation.pk)
    await first.send_prompt("Keep going")
    await first.until(is_delta)
    await first.close()
    ok, again = await connect(user, conversation.pk)
    await again.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert streamed_text(again.frames, reply.pk) == upstream.default.text == reply.text


async def test_stop_closes_the_upstream_and_saves_what_was_shown(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=500, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Go on forever")
    for _ in range(3):
        await socket.until(is_delta)
    await socket.send(action="stop")
    await socket.until(lambda f: "status-stopped" in f)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.STOPPED
    assert reply.text and len(reply.text) < len(upstream.default.text)
    assert streamed_text(socket.frames, reply.pk) == reply.text
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5)
    assert upstream.disconnects[-1].tokens_sent < 500


async def test_stop_works_before_the_first_token(upstream, user, api_key, conversation, connect):
    upstream.default = Behaviour(n_tokens=5, silence=3.0)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Think hard")
    await socket.until(lambda f: "Streaming" in f)
    assert await asyncio.to_thread(upstream.wait_for_requests, 1)
    await socket.send(action="stop")
    await socket.until(lambda f: "status-stopped" in f)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.STOPPED and reply.text == ""
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5)


async def test_reasoning_streams_apart_from_the_answer(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(reasoning=["Let me ", "think."], tokens=["Four", "."])
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("2+2?")
    final = await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert reply.reasoning == "Let me think." and reply.text == "Four."
    assert streamed_text(socket.frames, reply.pk, "reasoning") == "Let me think."
    assert "Let me think." in text(find(final, "details", class_="reasoning"))


async def test_an_upstream_error_shows_a_plain_message_and_keeps_partial_text(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=10, interval=0.01, cut_after=4)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Go")
    final = await socket.until(lambda f: "status-error" in f)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.ERROR
    assert reply.text == "".join(upstream.default.token_list()[:4])
    assert reply.error and reply.error in html.unescape(final)


async def test_a_bad_key_is_a_plain_message(upstream, user, api_key, conversation, connect):
    upstream.default = Behaviour(status=401)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi")
    final = await socket.until(lambda f: "status-error" in f)
    assert "API key" in final
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.ERROR and reply.text == ""


async def test_it_refuses_to_send_without_a_key(upstream, user, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi")
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "Add your EmpirioLabs API key" in frame
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    assert upstream.requests == []


async def test_it_refuses_an_empty_message_and_an_unknown_model(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("   ")
    assert "Write a message first" in await socket.until(lambda f: "composer-error" in f)
    await socket.send_prompt("Hi", model="nope:nope")
    assert "Pick a model" in await socket.until(lambda f: "composer-error" in f)
    await socket.send(action="dance")
    assert "Unknown action" in await socket.until(lambda f: "composer-error" in f)
    await socket.communicator.send_to(text_data="{not json")
    assert "could not read" in await socket.until(lambda f: "composer-error" in f)
    assert await Message.objects.filter(conversation=conversation).acount() == 0


# What no database here can store, as the user's error names it. PostgreSQL keeps no NUL in
# text or jsonb; a lone surrogate, which a JSON escape ("\\ud800") spells, no UTF-8 holds.
UNSTORABLE = [("\x00", "a NUL character (\\u0000)"), ("\ud800", "a lone surrogate (\\ud800)")]


@pytest.mark.parametrize(("char", "named"), UNSTORABLE)
async def test_a_nul_or_lone_surrogate_in_a_message_is_refused_not_a_crash(
    char, named, upstream, user, api_key, conversation, connect
):
    # The request went upstream, then the turn's rows failed to save and the socket closed
    # on the error. Refused now like an empty message, before anything is sent.
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(f"a{char}b")
    frame = html.unescape(await socket.until(lambda f: "composer-error" in f))
    assert f"The message holds {named}, which cannot be stored: nothing was sent." in frame
    assert upstream.requests == []
    assert not await Message.objects.filter(conversation=conversation).aexists()
    # The socket is still open. A valid pair, escaped as "\\ud83d\\ude00", is one character.
    await socket.send_prompt("Hi \U0001f600")
    await socket.until(lambda f: "status-complete" in f)
    prompt = await Message.objects.aget(conversation=conversation, role="user")
    assert prompt.text == "Hi \U0001f600"
    await socket.send(action="edit", message_id=prompt.pk, text=f"Hi{char}")
    frame = html.unescape(await socket.until(lambda f: "composer-error" in f))
    assert f"The message holds {named}, which cannot be stored: nothing was sent." in frame
    assert len(upstream.requests) == 1
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    await socket.close()


async def test_a_message_id_too_large_for_an_int_is_refused_not_a_crash(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    # 1e999 reads as inf (int() raises OverflowError); the other is past any database id.
    for raw in ("1e999", "9" * 30):
        for action in ("regenerate", "rerun", "switch"):
            await socket.communicator.send_to(
                text_data=f'{{"action": "{action}", "message_id": {raw}}}'
            )
            await socket.until(lambda f: "composer-error" in f)
    await socket.send(action="dance")  # the socket is still there and answering
    assert "Unknown action" in await socket.until(lambda f: "composer-error" in f)
    assert upstream.requests == []


async def test_model_output_is_sanitized_while_streaming_and_when_done(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(
        tokens=[
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[x](javascript:alert(1))",
        ]
    )
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Be evil")
    await socket.until(lambda f: "status-complete" in f)
    for frame in socket.frames:
        if is_delta(frame):
            continue  # raw text, which app.js inserts as a text node (tests/e2e prove it)
        assert "<script>alert" not in frame
        assert "<img src=x" not in frame
        assert 'href="javascript:' not in frame


async def test_the_history_and_system_prompt_go_upstream(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(tokens=["One"])
    ok, socket = await connect(user, conversation.pk)
    await socket.send(
        action="send", text="First", model="empiriolabs:gemma-4-e4b", system_prompt="Be brief."
    )
    await socket.until(lambda f: "status-complete" in f)
    await socket.send(
        action="send", text="Second", model="empiriolabs:gemma-4-e4b", system_prompt="Be brief."
    )
    await socket.until(lambda f: "status-complete" in f)
    assert upstream.requests[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "One"},
        {"role": "user", "content": "Second"},
    ]
    await conversation.arefresh_from_db()
    assert conversation.title == "First" and conversation.system_prompt == "Be brief."


async def test_a_model_without_a_system_role_gets_it_merged_into_the_first_turn(
    upstream, user, conversation, connect
):
    from channels.db import database_sync_to_async

    from playground.accounts.models import ApiKey

    await database_sync_to_async(ApiKey.store)(
        provider="aimlapi", plaintext="aiml-key-123456", user=user
    )
    ok, socket = await connect(user, conversation.pk)
    await socket.send(
        action="send",
        text="Hi",
        model="aimlapi:google/gemma-3n-e4b-it",
        system_prompt="Answer in French.",
    )
    await socket.until(lambda f: "status-complete" in f)
    body = upstream.requests[-1].body
    assert body["model"] == "google/gemma-3n-e4b-it"
    assert body["messages"] == [{"role": "user", "content": "Answer in French.\n\nHi"}]
    assert upstream.requests[-1].headers["authorization"] == "Bearer aiml-key-123456"


async def test_a_second_send_while_streaming_is_refused(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=100, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("One")
    await socket.until(is_delta)
    await socket.send_prompt("Two")
    assert "still streaming" in await socket.until(lambda f: "composer-error" in f)
    await socket.send(action="stop")
    await socket.until(lambda f: "status-stopped" in f)


async def test_checkpoints_are_written_at_most_every_interval(
    upstream, user, api_key, conversation, connect, settings, monkeypatch
):
    interval = 0.25
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "CHECKPOINT_INTERVAL": interval}
    writes = []
    original = runs.Run._checkpoint

    async def counting(self):
        before = self.checkpointed_at
        await original(self)
        if self.checkpointed_at != before:
            writes.append((self.checkpointed_at, self.text.shown))

    monkeypatch.setattr(runs.Run, "_checkpoint", counting)
    upstream.default = Behaviour(n_tokens=100, interval=0.01)  # about one second
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Go")
    await socket.until(lambda f: "status-complete" in f)
    # The run's own clock readings as it decides to write: no tolerance needed, these are the
    # very values it compares with the interval.
    times = [at for at, _ in writes]
    assert writes, "a one-second reply is checkpointed while it streams"
    assert all(b - a >= interval for a, b in zip(times, times[1:], strict=False)), times
    # Each checkpoint holds a longer prefix of the reply; the final write holds all of it.
    texts = [text for _, text in writes]
    assert all(upstream.default.text.startswith(text) for text in texts)
    assert texts == sorted(texts, key=len)
    reply = await reply_of(conversation)
    assert reply.status == Message.Status.COMPLETE and reply.text == upstream.default.text


async def test_one_user_cannot_stream_more_than_the_cap_at_once(
    upstream, user, api_key, conversation, connect, settings
):
    from playground.chat.models import Conversation

    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "MAX_RUNS_PER_USER": 1}
    upstream.default = Behaviour(n_tokens=200, interval=0.01)
    other = await Conversation.objects.acreate(owner=user, model="empiriolabs:gemma-4-e4b")
    ok, first = await connect(user, conversation.pk)
    await first.send_prompt("One")
    await first.until(is_delta)
    ok, second = await connect(user, other.pk)
    await second.send_prompt("Two")
    assert "1 of your replies are streaming already" in await second.until(
        lambda f: "composer-error" in f
    )
    await first.send(action="stop")
    await first.until(lambda f: "status-stopped" in f)


async def test_a_dead_run_does_not_block_the_next_send(
    upstream, user, api_key, conversation, connect
):
    from datetime import timedelta

    from django.utils import timezone

    await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status="streaming",
        checkpoint_at=timezone.now() - timedelta(hours=1),
    )
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hello again")
    await socket.until(lambda f: "status-complete" in f)
    statuses = [m.status async for m in Message.objects.filter(role="assistant")]
    assert statuses == ["interrupted", "complete"]


async def test_deleting_a_conversation_stops_its_run(
    upstream, user, api_key, conversation, connect
):
    from django.test import AsyncClient

    upstream.default = Behaviour(n_tokens=500, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Go on")
    await socket.until(is_delta)
    web = AsyncClient()
    await web.aforce_login(user)
    response = await web.post(f"/c/{conversation.pk}/delete/")
    assert response.status_code == 302
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5)
    assert upstream.disconnects[-1].tokens_sent < 500


async def test_a_repeated_stop_never_stops_the_next_reply(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    from playground.chat import runs

    monkeypatch.setattr(runs, "STOP_REPEAT_AFTER", 0.3)
    upstream.default = Behaviour(n_tokens=60, interval=0.01)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("First")
    await socket.until(is_delta)
    await socket.send(action="stop")
    await socket.until(lambda f: "status-stopped" in f)
    await socket.send_prompt("Second")  # starts before the stop is said again
    await socket.until(lambda f: "status-complete" in f or "status-stopped" in f)
    replies = [m.status async for m in Message.objects.filter(role="assistant")]
    assert replies == ["stopped", "complete"]


def snapshot_timers() -> list[asyncio.Task]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name() == "ConversationConsumer._snapshot_timeout" and not task.done()
    ]


async def orphaned_reply(conversation) -> Message:
    """A reply still marked streaming whose run never answers (its process died)."""
    from django.utils import timezone

    return await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status="streaming",
        text="Half a rep",
        run_channel="run.gone",
        checkpoint_at=timezone.now(),
    )


async def run_process_dies(reply: Message) -> None:
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(hours=1)
    await Message.objects.filter(pk=reply.pk).aupdate(checkpoint_at=long_ago)


async def test_a_socket_falls_back_to_the_saved_text_when_the_run_does_not_answer(
    user, conversation, connect, settings
):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "SNAPSHOT_TIMEOUT": 0.2}
    reply = await orphaned_reply(conversation)
    ok, socket = await connect(user, conversation.pk)
    await run_process_dies(reply)
    await socket.until(lambda f: "status-interrupted" in f)
    assert streamed_text(socket.frames, reply.pk) == "Half a rep"
    assert (await Message.objects.aget(pk=reply.pk)).status == "interrupted"
    await socket.close()


async def test_a_closed_socket_leaves_no_timer_behind(user, conversation, connect, settings):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "SNAPSHOT_TIMEOUT": 0.3}
    reply = await orphaned_reply(conversation)
    ok, socket = await connect(user, conversation.pk)
    await socket.until(lambda f: 'id="transcript"' in f)
    assert len(snapshot_timers()) == 1  # the socket holds on to the timer it started
    await run_process_dies(reply)

    await socket.close()
    assert snapshot_timers() == []
    await asyncio.sleep(0.5)  # past the timeout: a timer left running would act now

    # A timer left running would have marked the reply interrupted for a socket long gone.
    assert (await Message.objects.aget(pk=reply.pk)).status == "streaming"


@pytest.mark.parametrize(
    ("expiry", "dropped"),
    [(0.2, 0), (30.0, 1)],
    ids=["expired-before-the-server-timeout", "reused-dead-then-sent-again"],
)
async def test_a_turn_after_the_providers_keepalive_timeout_succeeds_without_retries(
    upstream, user, api_key, conversation, connect, settings, expiry, dropped
):
    # uvicorn-based servers (vLLM) close idle keep-alive connections after 5 s; here after 0.5 s.
    settings.PLAYGROUND_UPSTREAM = {
        **settings.PLAYGROUND_UPSTREAM,
        "MAX_RETRIES": 0,
        "KEEPALIVE_EXPIRY": expiry,
    }
    upstream.keepalive_timeout = 0.5
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("First")
    await socket.until(lambda f: "status-complete" in f)
    await asyncio.sleep(0.8)
    await socket.send_prompt("Second")
    await socket.until(lambda f: "status-complete" in f or "status-error" in f)
    statuses = [m.status async for m in Message.objects.filter(role="assistant")]
    assert statuses == ["complete", "complete"]
    assert len(upstream.requests) == 2  # one answered request per turn
    assert len(upstream.dropped) == dropped
    await socket.close()


async def test_on_a_warm_connection_the_request_goes_out_before_the_rows_are_written(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    # Begun together, the rows' transaction (on the database thread) won the race for the
    # GIL and the provider got the request only after it. Now the turn writes once the
    # request body is sent.
    from playground.chat import consumers

    begun, underway_at_write = [], []
    write = consumers._write_and_render

    def recording_begin(request):
        run = runs.Run(request)
        run.begin_upstream()
        begun.append(run)
        return run

    def recording_write(prepared, user, early=None):
        underway_at_write.append(begun[-1]._underway.is_set())
        return write(prepared, user, early)

    monkeypatch.setattr(runs, "begin", recording_begin)
    monkeypatch.setattr(consumers, "_write_and_render", recording_write)
    ok, socket = await connect(user, conversation.pk)
    for prompt in ("Warm the pool", "Second"):
        await socket.send_prompt(prompt)
        await socket.until(lambda f: "status-complete" in f)
    assert underway_at_write == [True, True]
    await socket.close()


async def test_a_request_that_cannot_go_out_does_not_hold_up_the_rows(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    # Waiting for a free connection (or anything else before the body is sent) delays the
    # write by at most runs.UNDERWAY_WAIT: the user sees their message at once.
    from playground.providers import client

    original = client.stream
    release = asyncio.Event()

    async def stalled(*args, **kwargs):
        await release.wait()
        async for event in original(*args, **kwargs):
            yield event

    monkeypatch.setattr(client, "stream", stalled)
    ok, socket = await connect(user, conversation.pk)
    sent = time.monotonic()
    await socket.send_prompt("Hello")
    await socket.until(lambda f: 'hx-swap-oob="beforeend"' in f)
    assert time.monotonic() - sent < 0.5
    release.set()
    await socket.until(lambda f: "status-complete" in f)
    await socket.close()
