"""A send's upstream request goes out while its rows are being written, and is closed if the
write fails; the turn's rows are written in one transaction of a few statements."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from playground.chat import budgets, runs, services
from playground.chat.models import Conversation, LastSettings, Message
from tests.conftest import SECRET_KEY_VALUE
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


def hold_reply_row(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Writing a turn's reply row (a send's, a re-run's) waits on the database thread until
    the test sets the second event; the first says the write has begun."""
    entered, gate = threading.Event(), threading.Event()
    real = services._reply

    def reply(*args, **kwargs):
        entered.set()
        assert gate.wait(5)
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "_reply", reply)
    return entered, gate


async def settled_reply(conversation, timeout: float = 5.0) -> Message:
    """The conversation's newest reply once it is no longer streaming (the stale sweep
    would take STALE_AFTER, a minute)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
        if reply is not None and reply.status != Message.Status.STREAMING:
            return reply
        assert loop.time() < deadline, f"still streaming: {reply and reply.status}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("action", ["send", "rerun"])
async def test_a_socket_cancelled_while_the_rows_are_written_leaves_the_turn_to_run(
    upstream, user, api_key, conversation, connect, monkeypatch, action
):
    """The tab closes while the turn's rows are being written. The consumer is still in the
    turn, so the server cancels it (Daphne after application_close_timeout). The run is the
    server's, not the socket's: the rows were written, so it starts and the reply is saved,
    rather than staying "streaming" with no run until the stale sweep."""
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    if action == "rerun":
        await socket.send_prompt("Once")
        await socket.until(lambda f: "status-complete" in f)
        first = await settled_reply(conversation)
    entered, gate = hold_reply_row(monkeypatch)
    if action == "send":
        await socket.send_prompt("Bye")
    else:
        await socket.send(action="rerun", message_id=first.pk)
    assert await asyncio.to_thread(entered.wait, 5)
    await socket.communicator.disconnect(timeout=0.1)
    assert socket.communicator.future.cancelled()  # not a clean disconnect: cancelled
    gate.set()
    reply = await settled_reply(conversation)
    assert reply.status == Message.Status.COMPLETE
    assert reply.text == "tok0 tok1 tok2 tok3 tok4"
    replies = await Message.objects.filter(role="assistant").acount()
    assert replies == (2 if action == "rerun" else 1)
    assert runs._active == {}


async def test_a_socket_cancelled_in_a_handler_still_leaves_its_groups(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    """disconnect() never runs for an instance the server cancels (a handler still busy
    after the socket closed): the channel would stay in the conversation's groups (and
    the other watchers would go on listing it) until its queue's messages expired."""
    from channels.layers import get_channel_layer

    ok, watcher = await connect(user, conversation.pk)
    await watcher.drain()
    ok, leaving = await connect(user, conversation.pk)
    await leaving.drain()
    await watcher.drain()
    group = runs.group_name(conversation.pk)
    layer = get_channel_layer()
    assert len(layer.groups[group]) == 2
    entered, gate = hold_reply_row(monkeypatch)
    await leaving.send_prompt("Bye")
    assert await asyncio.to_thread(entered.wait, 5)
    await watcher.drain()
    await leaving.communicator.disconnect(timeout=0.1)
    assert leaving.communicator.future.cancelled()
    async with asyncio.timeout(5):
        while len(layer.groups[group]) != 1:
            await asyncio.sleep(0.02)
    gate.set()
    await settled_reply(conversation)


async def test_only_a_send_with_an_extensions_field_goes_to_the_extensions(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    """A plain send takes no trip to a database thread for preparing_send or turn_written;
    one carrying a field an extension connected for does, and the extension is heard."""
    from playground.chat import consumers, extensions
    from playground.chat.models import Conversation

    calls: list[str] = []
    real_prepare, real_record = consumers._prepare_by_extensions, consumers._turn_written

    def prepare(*args):
        calls.append("prepare")
        return real_prepare(*args)

    def record(*args):
        calls.append("record")
        return real_record(*args)

    monkeypatch.setattr(consumers, "_prepare_by_extensions", prepare)
    monkeypatch.setattr(consumers, "_turn_written", record)
    monkeypatch.setattr(extensions, "send_fields", set(extensions.send_fields))
    heard: list[str] = []

    def probe_prepare(sender, *, data, **kwargs):
        heard.append(f"prepare {data['probe']}")

    def probe_record(sender, *, turn, **kwargs):
        heard.append(f"record {turn.messages[-1].role}")

    extensions.connect_send(probe_prepare, probe_record, fields=["probe"], sender=Conversation)
    try:
        ok, socket = await connect(user, conversation.pk)
        await socket.drain()
        await socket.send_prompt("Plain", probe="")
        await socket.until(lambda f: "status-complete" in f)
        assert calls == [] and heard == []
        await socket.send_prompt("Probed", probe="yes")
        await socket.until(lambda f: "status-complete" in f)
        assert calls == ["prepare", "record"]
        assert heard == ["prepare yes", "record assistant"]
    finally:
        extensions.preparing_send.disconnect(probe_prepare, sender=Conversation)
        extensions.turn_written.disconnect(probe_record, sender=Conversation)


async def test_a_send_takes_no_extra_trip_to_close_old_connections(
    upstream, user, api_key, conversation, connect, monkeypatch
):
    """Channels closes old connections before every handler, a trip to the database thread;
    a send's queries all go through database_sync_to_async, which closes them itself, so its
    message skips that trip. Other actions still take it."""
    import channels.consumer

    from playground.chat import consumers

    trips: list[str] = []

    async def counted():
        trips.append("close")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    monkeypatch.setattr(consumers, "aclose_old_connections", counted)
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    trips.clear()
    await socket.send_prompt("No detour")
    await socket.until(lambda f: "status-complete" in f)
    assert trips == []
    await socket.send(action="stop")
    await socket.drain()
    assert trips == ["close"]


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
    # The conversation's UPDATE follows the INSERTs: it records the new reply as the active leaf.
    kinds = [q["sql"].split()[0] for q in written.captured_queries]
    assert kinds == ["BEGIN", "SELECT", "INSERT", "INSERT", "UPDATE", "UPDATE", "COMMIT"]
    conversation.refresh_from_db()
    assert conversation.title == "And now?"
    assert conversation.active_leaf_id == turn.messages[1].pk
    assert [m.role for m in turn.messages] == ["user", "assistant"]
    assert turn.messages[0].parent.text == "earlier"
    assert turn.run.message_id == turn.messages[1].pk
    assert LastSettings.objects.get(user=user).model == MODEL


def test_a_turns_statements_are_sent_without_building_them_through_the_orm(
    user, api_key, conversation, monkeypatch
):
    """Compiling a query cost more CPU than running it: the send's reads, its rows and the
    final save send SQL built once per process (plainsql, services' plain SQL)."""
    from django.db.models.sql import compiler

    Message.objects.create(conversation=conversation, role="user", text="earlier")
    api_key.last_used = timezone.now()
    api_key.save()
    LastSettings.objects.create(user=user, model="an earlier model")
    budgets.check(user, None, None)
    prepare(conversation, user)  # the process's first turn builds and caches its SQL
    compiled: list[str] = []
    for cls in (compiler.SQLCompiler, compiler.SQLInsertCompiler, compiler.SQLUpdateCompiler):
        real = cls.as_sql

        def spy(self, *args, real=real, **kwargs):
            compiled.append(type(self).__name__)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "as_sql", spy)
    with CaptureQueriesContext(connection) as sent:
        prepared = prepare(conversation, user, text="Again")
        turn = services.write_turn(prepared, user)
        run = runs.Run(turn.run)
        run.text.shown = "Done"
        values = async_to_sync(run._final_values)()
        assert runs._save_and_render(turn.run.reply, values)
    assert compiled == []
    assert len(sent.captured_queries) == 10  # 2 reads, 7 in the transaction, the final save
    conversation.refresh_from_db()
    assert conversation.active_leaf_id == turn.messages[-1].pk
    assert LastSettings.objects.get(user=user).model == MODEL
    reply = Message.objects.get(pk=turn.messages[-1].pk)
    assert (reply.status, reply.text) == ("complete", "Done")


def test_a_title_given_meanwhile_in_another_tab_is_kept(user, api_key, conversation):
    prepared = prepare(conversation, user, text="What the title would be")
    Conversation.objects.filter(pk=conversation.pk).update(title="Renamed elsewhere")
    turn = services.write_turn(prepared, user)
    assert turn.conversation.title == "Renamed elsewhere"
    conversation.refresh_from_db()
    assert conversation.title == "Renamed elsewhere"


def test_the_final_save_is_one_update_and_renders_the_reply_without_reading_it_back(
    user, api_key, conversation
):
    turn = services.start_turn(
        conversation, user, text="Hi", model_key=MODEL, system_prompt="", channel="run.x"
    )
    reply = turn.run.reply
    assert reply is turn.messages[-1]
    run = runs.Run(turn.run)
    run.text.shown = "**Hello** there"
    run.usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    run.finish_reason = "stop"
    run.first_token_at = run.started
    values = async_to_sync(run._final_values)()
    with CaptureQueriesContext(connection) as saved:
        html = runs._save_and_render(reply, values)
    assert [q["sql"].split()[0] for q in saved.captured_queries] == ["UPDATE"]
    # The same HTML as the row read back renders: nothing the page shows is stale.
    fresh = Message.objects.get(pk=reply.pk)
    assert fresh.status == "complete" and fresh.text == "**Hello** there"
    assert html == render_to_string("chat/playground.html#message-oob", runs._reply_context(fresh))
    assert "<strong>Hello</strong>" in html and "status-complete" in html


def test_the_final_save_of_a_reply_deleted_meanwhile_renders_nothing(user, api_key, conversation):
    turn = services.start_turn(
        conversation, user, text="Hi", model_key=MODEL, system_prompt="", channel="run.x"
    )
    run = runs.Run(turn.run)
    values = async_to_sync(run._final_values)()
    conversation.delete()
    assert runs._save_and_render(turn.run.reply, values) == ""
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("last_used", "recorded"),
    [(None, True), (timedelta(minutes=5), True), (timedelta(seconds=5), False)],
)
def test_a_keys_use_is_recorded_once_a_minute(user, api_key, conversation, last_used, recorded):
    from playground.accounts.models import ApiKey

    before = None if last_used is None else timezone.now() - last_used
    ApiKey.objects.filter(pk=api_key.pk).update(last_used=before)
    budgets.check(user, None, None)  # which budgets exist is cached after a process's first turn
    with CaptureQueriesContext(connection) as read:
        prepared = prepare(conversation, user)
    assert prepared.run.api_key == SECRET_KEY_VALUE
    kinds = [q["sql"].split()[0] for q in read.captured_queries]
    assert kinds == ["SELECT", "UPDATE", "SELECT"] if recorded else ["SELECT", "SELECT"]
    api_key.refresh_from_db()
    assert (api_key.last_used != before) is recorded


def test_without_a_key_of_ones_own_the_send_says_where_to_add_it(user, conversation):
    with pytest.raises(services.TurnError, match="API key on the Keys page"):
        prepare(conversation, user)


def test_a_request_is_built_from_the_same_branch_as_the_history(user, api_key, conversation):
    """The send reads its context in plain SQL: the same messages, in the same order, as
    history() (the newest message's branch), whatever the tree looks like."""
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    first = Message.objects.create(conversation=conversation, role="user", text="Q")
    asked = Message.objects.create(
        conversation=conversation, parent=first, role="assistant", text="", tool_calls=calls
    )
    answer = Message.objects.create(
        conversation=conversation, parent=asked, role="tool", tool_call_id="c1", text="42"
    )
    Message.objects.create(conversation=conversation, parent=answer, role="assistant", text="A")
    # A re-run: a sibling branch, newer, which is the one that counts.
    rerun = Message.objects.create(
        conversation=conversation, parent=answer, role="assistant", text="B"
    )
    Message.objects.create(conversation=conversation, parent=first, role="assistant", text="X")
    Message.objects.filter(pk=rerun.pk).update(created=timezone.now() + timedelta(hours=1))
    branch, seen = services._context_of(conversation)
    expected = services.history(conversation)
    assert (
        [m.pk for m in branch]
        == [m.pk for m in expected]
        == [first.pk, asked.pk, answer.pk, rerun.pk]
    )
    assert [services.as_openai(m) for m in branch] == [services.as_openai(m) for m in expected]
    assert seen == Message.objects.latest("pk").pk
    prepared = prepare(conversation, user, text="Next")
    assert prepared.parent.pk == rerun.pk
    assert prepared.body["messages"][-3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "Next"},
    ]


@pytest.mark.parametrize("held", ["send", "rerun", "prepare"])
async def test_a_turn_being_written_when_the_server_shuts_down_ends_interrupted(
    upstream, user, api_key, conversation, connect, monkeypatch, settings, held
):
    """SIGTERM while a turn's rows are being written (or its request read): the turn took
    its place before the shutdown looked for running replies, so the shutdown waits for it
    and interrupts its run, rather than leaving the reply "streaming" for the stale sweep."""
    from playground.chat import consumers, shutdown

    monkeypatch.setattr(shutdown, "draining", False)
    settings.PLAYGROUND_SHUTDOWN_GRACE = 0.3
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    if held == "rerun":
        await socket.send_prompt("Once")
        await socket.until(lambda f: "status-complete" in f)
        first = await settled_reply(conversation)
    upstream.default = Behaviour(n_tokens=400, interval=0.02)
    if held == "prepare":
        entered, gate = threading.Event(), threading.Event()
        real = consumers.prepare_turn

        def prepare_turn(*args, **kwargs):
            entered.set()
            assert gate.wait(5)
            return real(*args, **kwargs)

        monkeypatch.setattr(consumers, "prepare_turn", prepare_turn)
    else:
        entered, gate = hold_reply_row(monkeypatch)
    if held == "rerun":
        await socket.send(action="rerun", message_id=first.pk)
    else:
        await socket.send_prompt("Long")
    assert await asyncio.to_thread(entered.wait, 5)
    draining = asyncio.create_task(shutdown.drain())
    try:
        await asyncio.sleep(0.2)  # the shutdown has looked for the running replies
        gate.set()
        await asyncio.wait_for(asyncio.shield(draining), 15)
        reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
        assert reply is not None
        assert reply.status == Message.Status.INTERRUPTED
        assert reply.error == runs.RESTARTED
        assert runs._active == {}
    finally:
        gate.set()
        await asyncio.wait([draining], timeout=15)
        for run in list(runs._running.values()):
            run.interrupt()
        for message_id in list(runs._active):
            await runs.wait(message_id)
