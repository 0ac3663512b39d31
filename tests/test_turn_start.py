"""A send's upstream request goes out while its rows are being written, and is closed if the
write fails; the turn's rows are written in one transaction of a few statements."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from playground.chat import budgets, runs, services
from playground.chat.models import Conversation, LastSettings, Message
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "empiriolabs:gemma-4-e4b"


def prepare(conversation, user, text="Hello", **kwargs):
    return services.prepare_turn(
        conversation, user, text=text, model_key=MODEL, system_prompt="", channel="run.x", **kwargs
    )


def count_messages() -> int:
    try:
        return Message.objects.count()
    finally:
        connection.close()


@pytest.fixture
def held_write(monkeypatch):
    """write_turn waits until the test lets it go, then fails with `fail` if one is set."""
    gate = threading.Event()
    state: dict = {"fail": None}
    real = services.write_turn

    def write(prepared, user):
        assert gate.wait(5)
        if state["fail"] is not None:
            raise state["fail"]
        return real(prepared, user)

    from playground.chat import consumers

    monkeypatch.setattr(consumers, "write_turn", write)
    state["gate"] = gate
    return state


async def test_the_upstream_request_goes_out_before_the_rows_are_written(
    upstream, user, api_key, conversation, connect, held_write
):
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    await socket.send_prompt("Quick")
    assert await asyncio.to_thread(upstream.wait_for_requests, 1)
    # The database thread is held in the write: count from a thread of our own.
    assert await asyncio.to_thread(count_messages) == 0  # the request is out, no row yet
    held_write["gate"].set()
    await socket.until(lambda f: "status-complete" in f)
    reply = await Message.objects.aget(role="assistant")
    assert reply.text == "tok0 tok1 tok2 tok3 tok4"
    assert upstream.requests[0].body["messages"] == [{"role": "user", "content": "Quick"}]


async def test_a_failed_write_closes_the_upstream_request_and_says_why(
    upstream, user, api_key, conversation, connect, held_write
):
    upstream.default = Behaviour(n_tokens=200, interval=0.02)
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    held_write["fail"] = services.TurnError("A reply is still streaming: stop it first.")
    await socket.send_prompt("Too late")
    assert await asyncio.to_thread(upstream.wait_for_requests, 1)
    held_write["gate"].set()
    assert "still streaming" in await socket.until(lambda f: "composer-error" in f)
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5.0)
    assert upstream.disconnects[0].tokens_sent < 200
    assert await Message.objects.acount() == 0
    assert runs._active == {}


async def test_an_unexpected_write_error_closes_the_upstream_request_too(
    upstream, user, api_key, conversation, connect, held_write
):
    upstream.default = Behaviour(n_tokens=200, interval=0.02)
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    held_write["fail"] = RuntimeError("database on fire")
    await socket.send_prompt("Doomed")
    assert await asyncio.to_thread(upstream.wait_for_requests, 1)
    held_write["gate"].set()
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 5.0)
    assert upstream.disconnects[0].tokens_sent < 200
    assert await Message.objects.acount() == 0


def test_a_conversation_that_moved_on_since_it_was_read_refuses_the_write(
    user, api_key, conversation
):
    prepared = prepare(conversation, user)
    Message.objects.create(conversation=conversation, role="user", text="from another tab")
    with pytest.raises(services.TurnError, match="changed while you sent"):
        services.write_turn(prepared, user)
    assert Message.objects.count() == 1


def test_a_reply_streaming_meanwhile_refuses_the_write(user, api_key, conversation):
    Message.objects.create(conversation=conversation, role="user", text="first")
    prepared = prepare(conversation, user)
    Message.objects.filter(pk=prepared.seen).update(status=Message.Status.STREAMING)
    with pytest.raises(services.TurnError, match="still streaming"):
        services.write_turn(prepared, user)
    assert Message.objects.count() == 1


def test_the_run_cap_still_holds(settings, user, api_key, conversation):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "MAX_RUNS_PER_USER": 1}
    elsewhere = Conversation.objects.create(owner=user, model=MODEL)
    Message.objects.create(
        conversation=elsewhere, role="assistant", status="streaming", created_by=user
    )
    prepared = prepare(conversation, user)
    with pytest.raises(services.TurnError, match="streaming already"):
        services.write_turn(prepared, user)
    assert conversation.messages.count() == 0


def test_a_turn_is_read_in_two_statements_and_written_in_one_transaction_of_six(
    user, api_key, conversation
):
    Message.objects.create(conversation=conversation, role="user", text="earlier")
    api_key.last_used = timezone.now()  # its use is recorded once a minute, not per turn
    api_key.save()
    LastSettings.objects.create(user=user, model="an earlier model")  # has sent before
    budgets.check(user, None, None)  # which budgets exist is cached after a process's first turn
    with CaptureQueriesContext(connection) as read:
        prepared = prepare(conversation, user, text="And now?")
    with CaptureQueriesContext(connection) as written:
        turn = services.write_turn(prepared, user)
    assert [q["sql"].split()[0] for q in read.captured_queries] == ["SELECT", "SELECT"]
    kinds = [q["sql"].split()[0] for q in written.captured_queries]
    assert kinds == ["BEGIN", "SELECT", "UPDATE", "INSERT", "INSERT", "UPDATE", "COMMIT"]
    conversation.refresh_from_db()
    assert conversation.title == "And now?"
    assert [m.role for m in turn.messages] == ["user", "assistant"]
    assert turn.messages[0].parent.text == "earlier"
    assert turn.run.message_id == turn.messages[1].pk
    assert LastSettings.objects.get(user=user).model == MODEL


def test_a_title_given_meanwhile_in_another_tab_is_kept(user, api_key, conversation):
    prepared = prepare(conversation, user, text="What the title would be")
    Conversation.objects.filter(pk=conversation.pk).update(title="Renamed elsewhere")
    turn = services.write_turn(prepared, user)
    assert turn.conversation.title == "Renamed elsewhere"
    conversation.refresh_from_db()
    assert conversation.title == "Renamed elsewhere"
