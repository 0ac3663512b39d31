"""Daphne's per-connection input queue: a layers.Mailbox in place of an asyncio.Queue."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from daphne import server

from playground import serving
from playground.layers import Mailbox
from tests.conftest import ORIGIN, session_cookie
from tests.memory import bytes_held
from tests.test_gate import awaited_frames

# Daphne 4.2.3's Server.create_application, which serving.create_application copies: a new
# Daphne that changes it fails here, so that the copy is looked at again.
DAPHNE_SOURCE_SHA256 = "f1e300b4ecf636c85e1a66250e32af2ebb67728f01919678d43e80c794a79a87"


def test_the_copy_follows_the_daphne_installed():
    source = inspect.getsource(serving.DAPHNES_CREATE_APPLICATION)
    assert hashlib.sha256(source.encode()).hexdigest() == DAPHNE_SOURCE_SHA256


def test_install_swaps_daphnes_create_application():
    serving.install()
    assert server.Server.create_application is serving.create_application


def fake_server(received: list[Any]) -> SimpleNamespace:
    async def application(scope, receive, send):
        while True:
            message = await receive()
            received.append(message)
            await send({"type": "echo", "of": message["type"]})
            if message["type"] == "websocket.disconnect":
                return

    replies: list[Any] = []

    async def handle_reply(protocol, message):
        replies.append((protocol, message))

    return SimpleNamespace(
        connections={"protocol": {}},
        application=application,
        handle_reply=handle_reply,
        replies=replies,
    )


async def test_messages_reach_the_application_in_order_and_replies_come_back():
    received: list[Any] = []
    fake = fake_server(received)
    queue = serving.create_application(fake, "protocol", {"type": "websocket"})
    assert isinstance(queue, Mailbox)
    assert queue  # Daphne's HTTP protocol tests the queue for truth
    for kind in ("websocket.connect", "websocket.receive", "websocket.disconnect"):
        queue.put_nowait({"type": kind})
    await asyncio.wait_for(fake.connections["protocol"]["application_instance"], 2)
    assert [m["type"] for m in received] == [
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
    ]
    assert [m["of"] for _, m in fake.replies] == [m["type"] for m in received]


async def test_an_idle_connections_queue_holds_a_fraction_of_an_asyncio_queue():
    def waiting_on(make):
        return lambda n: asyncio.create_task(make().get())

    ours, theirs = (
        await bytes_held(waiting_on(Mailbox)),
        await bytes_held(waiting_on(asyncio.Queue)),
    )
    assert ours < theirs / 2, (ours, theirs)


@pytest.mark.django_db(transaction=True)
async def test_a_socket_under_daphnes_code_path_waits_on_both_sources_at_once(user, conversation):
    """The real application, started as Daphne starts it: an open socket waits in
    layers.dispatch_both (one future), not in channels' await_many_dispatch (two tasks)."""
    from channels.db import database_sync_to_async

    from playground.asgi import application

    cookie = await database_sync_to_async(session_cookie)(user)
    replies: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def handle_reply(protocol, message):
        replies.append(message)
        arrived.set()

    fake = SimpleNamespace(
        connections={"protocol": {}}, application=application, handle_reply=handle_reply
    )
    scope = {
        "type": "websocket",
        "path": f"/ws/conversations/{conversation.pk}/",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN), (b"cookie", cookie)],
    }
    queue = serving.create_application(fake, "protocol", scope)
    queue.put_nowait({"type": "websocket.connect"})
    async with asyncio.timeout(5):
        while not any("transcript" in m.get("text", "") for m in replies):
            arrived.clear()
            await arrived.wait()
    assert replies[0]["type"] == "websocket.accept"
    task = fake.connections["protocol"]["application_instance"]
    frames = awaited_frames(task)
    assert "dispatch_both" in frames, frames
    assert "await_many_dispatch" not in frames, frames
    queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 5)
