"""A reply's first text that arrives before its turn's rows are written (while the turn waits
up to EARLY_TEXT_WAIT for it, or during the write) is shown to its sender at once, in
provisional rows that the real rows then replace (runs.EarlyText).

The fake upstream answers in a millisecond or two, about as long as the write takes, so
these tests order the race themselves: a long wait, a write held back on the database
thread, or a provider that waits before its first token."""

from __future__ import annotations

import asyncio
import html
import re
import threading
import time

import pytest

from bench.client import View
from playground.chat import consumers
from playground.chat.models import Message
from playground.chat.services import TurnError
from tests.conftest import reply_of
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]

PROVISIONAL = 'id="msg-sending-reply"'


def early_wait(settings, seconds: float) -> None:
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "EARLY_TEXT_WAIT": seconds}


@pytest.fixture(autouse=True)
def _early_text(settings) -> None:
    """Long enough for the fake's first token, however slow the machine: it comes first."""
    early_wait(settings, 2.0)


def slow_write(monkeypatch, *, fail: bool = False) -> threading.Event:
    """Hold the turn's write on the database thread until the returned event is set (or
    0.5 s pass): the reply's first text arrives meanwhile. `fail`: the write then refuses
    the turn, as when another tab sent first."""
    release = threading.Event()
    write = consumers.write_turn

    def held(prepared, user, **kwargs):
        release.wait(0.5)
        if fail:
            raise TurnError("The conversation changed while you sent: send again.")
        return write(prepared, user, **kwargs)

    monkeypatch.setattr(consumers, "write_turn", held)
    return release


def shown_text(frames: list[str], message_id: int) -> str:
    """What a browser shows as the reply's text: the rows' text, then appended deltas."""
    shown = ""
    row = re.compile(rf'<div class="body stream" id="text-{message_id}">(.*?)</div>', re.S)
    delta = f"+t{message_id}:"
    for frame in frames:
        for match in row.finditer(frame):
            shown = html.unescape(match.group(1))
        if frame.startswith(delta):
            shown += frame[len(delta) :]
    return shown


async def test_the_first_text_is_shown_to_the_sender_before_the_rows_are_written(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    upstream.default = Behaviour(tokens=["Hello", ",", " world", "!"], interval=0.05)
    release = slow_write(monkeypatch)
    ok, socket = await connect(user, conversation.pk)
    ok, other_tab = await connect(user, conversation.pk)
    await socket.send_prompt("Say <b>hello</b>")
    early = await socket.until(lambda f: PROVISIONAL in f)
    # The prompt and the reply's first text, before any row exists (the write is held); the
    # composer keeps the prompt until the rows are written (a failed write loses nothing).
    assert not re.search(r'id="msg-\d+"', "".join(socket.frames))
    assert 'id="msg-sending-prompt"' in early and "Say &lt;b&gt;hello&lt;/b&gt;" in early
    assert '<div class="body stream" id="text-sending-reply">Hello</div>' in early
    assert 'name="text"' not in early  # no Edit form for a prompt without an id
    assert 'id="prompt"' not in early
    release.set()
    rows = await socket.until(lambda f: 'class="message assistant streaming"' in f)
    # The sender's copy of the rows removes the provisional ones, in the same frame.
    reply = await reply_of(conversation)
    assert rows.startswith(consumers.PROVISIONAL_GONE)
    assert f'<div class="body stream" id="text-{reply.pk}">Hello</div>' in rows
    assert 'id="prompt"' in rows  # the composer is cleared with the real rows
    await socket.until(lambda f: "status-complete" in f)
    await other_tab.until(lambda f: "status-complete" in f)
    await reply.arefresh_from_db()
    assert reply.text == "Hello, world!"
    # Each socket shows every piece exactly once: the rows carry "Hello", deltas the rest.
    assert shown_text(socket.frames, reply.pk) == "Hello, world!"
    assert shown_text(other_tab.frames, reply.pk) == "Hello, world!"
    assert not any(f.startswith(f"+t{reply.pk}:Hello") for f in socket.frames)
    # The other tab never sees provisional rows: only the sender had them.
    assert not any(PROVISIONAL in f or "msg-sending-prompt" in f for f in other_tab.frames)
    # The bench's client times the reply's first text from the provisional frame.
    view = View()
    for index, frame in enumerate(socket.frames):
        view.feed(frame, now=float(index))
    assert view.first_text_at[reply.pk] == float(socket.frames.index(early))
    assert view.texts[reply.pk] == "Hello, world!"
    await socket.close()
    await other_tab.close()


async def test_reasoning_that_arrives_first_is_shown_early_too(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    upstream.default = Behaviour(reasoning=["Let me think"], tokens=["Done"], interval=0.05)
    release = slow_write(monkeypatch)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Think")
    early = await socket.until(lambda f: PROVISIONAL in f)
    assert 'id="reasoning-sending-reply">Let me think</div>' in early
    release.set()
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert (reply.reasoning, reply.text) == ("Let me think", "Done")
    reasoning_deltas = [f for f in socket.frames if f.startswith(f"+r{reply.pk}:")]
    assert reasoning_deltas == []  # shown once, in the rows
    await socket.close()


async def test_a_write_that_fails_after_the_early_text_takes_it_back_and_keeps_the_prompt(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    upstream.default = Behaviour(tokens=["Hello", " there"], interval=0.2)
    release = slow_write(monkeypatch, fail=True)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hello")
    await socket.until(lambda f: PROVISIONAL in f)
    release.set()
    error = await socket.until(lambda f: "changed while you sent" in f)
    assert consumers.PROVISIONAL_GONE in "".join(socket.frames[-2:])
    # Nothing was written, the composer was never cleared, and the upstream request closed.
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    assert not any('id="prompt"' in f for f in socket.frames)
    assert not any('id="empty-state" hx-swap-oob="delete"' in f for f in socket.frames)
    assert 'role="alert"' in error
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 2.0)
    await socket.close()


async def test_text_that_arrives_during_the_write_is_shown_early_too(
    upstream, user, api_key, conversation, connect, monkeypatch, settings
):
    # The turn stops waiting after 1 ms; the first token comes 50 ms later, while the write
    # (held for up to 0.5 s) is still going on.
    early_wait(settings, 0.001)
    upstream.default = Behaviour(tokens=["Late", " start"], silence=0.05, interval=0.1)
    release = slow_write(monkeypatch)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hello")
    early = await socket.until(lambda f: PROVISIONAL in f)
    assert '<div class="body stream" id="text-sending-reply">Late</div>' in early
    release.set()
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert shown_text(socket.frames, reply.pk) == "Late start"
    await socket.close()


async def test_the_provisional_rows_reach_the_socket_before_the_write_starts(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    """Daphne writes a sent frame on a later turn of the event loop; a write started at once
    on the database thread takes the GIL first and the frame waits (consumers.socket_written).
    Here: the turn lets the loop write the frame before it hands the rows to the thread."""
    upstream.default = Behaviour(tokens=["Hello", " you"], interval=0.05)
    order: list[str] = []
    written, write = consumers.socket_written, consumers.write_turn

    async def flushed() -> None:
        await written()
        order.append("frame written")

    def writing(prepared, user, **kwargs):
        order.append("write started")
        return write(prepared, user, **kwargs)

    monkeypatch.setattr(consumers, "socket_written", flushed)
    monkeypatch.setattr(consumers, "write_turn", writing)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hello")
    await socket.until(lambda f: "status-complete" in f)
    assert any(PROVISIONAL in f for f in socket.frames)
    assert order == ["frame written", "write started"]
    await socket.close()


async def test_a_provider_slower_than_the_wait_gets_the_rows_first(
    upstream, user, api_key, conversation, connect, settings
):
    early_wait(settings, 0.005)
    upstream.default = Behaviour(tokens=["Hi"], silence=0.3)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hello")
    await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert not any(PROVISIONAL in f for f in socket.frames)
    assert shown_text(socket.frames, reply.pk) == "Hi"
    await socket.close()


async def test_it_can_be_turned_off(
    upstream, user, api_key, conversation, connect, monkeypatch, settings
):
    early_wait(settings, 0)
    upstream.default = Behaviour(tokens=["Hello", " you"], interval=0.05)
    release = slow_write(monkeypatch)
    release.set()  # not waited for: the rows come first whatever the timing
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hello")
    await socket.until(lambda f: "status-complete" in f)
    assert not any(PROVISIONAL in f for f in socket.frames)
    await socket.close()


async def test_an_edit_makes_a_branch_without_provisional_rows(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    # A sibling branch is redrawn whole by every watcher: there is no place for early rows.
    upstream.default = Behaviour(tokens=["One"])
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("First")
    await socket.until(lambda f: "status-complete" in f)
    prompt = await Message.objects.filter(conversation=conversation, role="user").afirst()
    release = slow_write(monkeypatch)
    upstream.default = Behaviour(tokens=["Two"], interval=0.05)
    before = len(socket.frames)
    await socket.send(action="edit", message_id=prompt.pk, text="Second")
    await asyncio.sleep(0.1)
    release.set()
    await socket.until(lambda f: "status-complete" in f and "Two" in f)
    assert not any(PROVISIONAL in f for f in socket.frames[before:])
    await socket.close()


async def test_an_answer_without_text_does_not_hold_up_the_rows(
    upstream, user, api_key, conversation, connect
):
    # The turn waits for the first text (2 s here), or for the response to end without one.
    upstream.default = Behaviour(status=401)
    ok, socket = await connect(user, conversation.pk)
    sent = time.monotonic()
    await socket.send_prompt("Hello")
    await socket.until(lambda f: 'class="message assistant streaming"' in f)
    assert time.monotonic() - sent < 1.0
    await socket.until(lambda f: "status-error" in f)
    assert not any(PROVISIONAL in f for f in socket.frames)
    await socket.close()


async def test_a_prompt_versions_example_turns_come_before_the_reply(
    upstream, user, api_key, connect
):
    # The example turns are written and sent through the group before the turn: provisional
    # rows sent straight to the socket would overtake them, so such a send shows none.
    from channels.db import database_sync_to_async

    from playground.prompts import play
    from playground.prompts.models import Prompt

    def opened():
        prompt = Prompt.objects.create(owner=user, name="support")
        version = prompt.add_version(
            user,
            system_prompt="",
            messages=[
                {"role": "user", "content": "Example question"},
                {"role": "assistant", "content": "Example answer"},
                {"role": "user", "content": "Ticket: {{ticket}}"},
            ],
            model="empiriolabs:gemma-4-e4b",
            params={},
        )
        return version, play.open_in_playground(version, user)

    version, conversation = await database_sync_to_async(opened)()
    upstream.default = Behaviour(tokens=["Reply"])
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("", prompt_version=str(version.pk), **{"var:ticket": "late"})
    # The example reply is complete too: wait for the new one.
    await socket.until(lambda f: "status-complete" in f and "Example answer" not in f)
    assert not any(PROVISIONAL in f for f in socket.frames)
    frames = "".join(socket.frames)
    assert frames.index("Example answer") < frames.index('class="message assistant streaming"')
    await socket.close()
