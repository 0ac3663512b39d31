"""Daphne's per-connection input queue: a layers.Mailbox in place of an asyncio.Queue."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import tracemalloc
from types import SimpleNamespace
from typing import Any

from daphne import server

from playground import serving
from playground.layers import Mailbox

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
    async def measure(make) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            queues = [make() for _ in range(200)]
            waiting = [asyncio.create_task(q.get()) for q in queues]
            await asyncio.sleep(0)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return sum(s.size_diff for s in after.compare_to(before, "filename")) / 200

    ours, theirs = await measure(Mailbox), await measure(asyncio.Queue)
    assert ours < theirs / 2, (ours, theirs)
