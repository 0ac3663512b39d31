"""The embedded default's channel layer: what each recipient gets is its own copy."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc

import pytest
from channels.exceptions import ChannelFull

from playground.layers import EmbeddedChannelLayer


@pytest.fixture
def layer():
    return EmbeddedChannelLayer(capacity=2)


async def test_a_flat_message_arrives_equal_but_not_shared(layer):
    sent = {"type": "run.delta", "message_id": 7, "text": "tok0", "reasoning": None}
    await layer.send("socket.a", sent)
    sent["text"] = "changed after sending"
    got = await layer.receive("socket.a")
    assert got == {"type": "run.delta", "message_id": 7, "text": "tok0", "reasoning": None}


async def test_a_nested_message_is_copied_deeply(layer):
    sent = {"type": "chat.append", "html": "<p>", "streaming_ids": [1, 2]}
    await layer.group_add("watchers", "socket.a")
    await layer.group_add("watchers", "socket.b")
    await layer.group_send("watchers", sent)
    sent["streaming_ids"].append(3)
    first, second = await layer.receive("socket.a"), await layer.receive("socket.b")
    assert first["streaming_ids"] == second["streaming_ids"] == [1, 2]
    first["streaming_ids"].append(9)
    assert second["streaming_ids"] == [1, 2]


async def test_a_full_channel_refuses_a_send_and_a_group_send_skips_it(layer):
    await layer.group_add("watchers", "socket.slow")
    await layer.group_add("watchers", "socket.fast")
    for n in range(2):
        await layer.send("socket.slow", {"type": "x", "n": n})
    with pytest.raises(ChannelFull):
        await layer.send("socket.slow", {"type": "x", "n": 2})
    await layer.group_send("watchers", {"type": "x", "n": 3})  # no error: slow drops it
    assert (await layer.receive("socket.fast"))["n"] == 3
    assert [(await layer.receive("socket.slow"))["n"] for _ in range(2)] == [0, 1]


async def test_a_bad_channel_name_is_refused(layer):
    with pytest.raises(TypeError):
        await layer.send("not a valid name!", {"type": "x"})


async def test_a_waiting_receive_wakes_on_a_send(layer):
    waiting = asyncio.create_task(layer.receive("socket.a"))
    await asyncio.sleep(0)
    assert not waiting.done()
    await layer.send("socket.a", {"type": "x", "n": 1})
    assert (await asyncio.wait_for(waiting, 1))["n"] == 1
    assert "socket.a" not in layer.channels  # nothing waits in it or on it: forgotten


async def test_a_cancelled_receive_loses_no_message_and_leaves_no_waiter(layer):
    first = asyncio.create_task(layer.receive("socket.a"))
    second = asyncio.create_task(layer.receive("socket.a"))
    await asyncio.sleep(0)
    await layer.send("socket.a", {"type": "x", "n": 1})
    first.cancel()  # woken, but cancelled before it ran: the message is the other's
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await asyncio.wait_for(second, 1))["n"] == 1
    third = asyncio.create_task(layer.receive("socket.b"))
    await asyncio.sleep(0)
    third.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await third
    assert "socket.b" not in layer.channels


async def test_an_expired_message_is_dropped_and_its_channel_leaves_its_groups():
    layer = EmbeddedChannelLayer(expiry=0.01, clean_interval=0)
    await layer.group_add("watchers", "socket.gone")
    await layer.send("socket.gone", {"type": "x"})
    await asyncio.sleep(0.05)
    await layer.group_send("watchers", {"type": "y"})  # cleans first
    assert "socket.gone" not in layer.groups.get("watchers", {})
    assert "socket.gone" not in layer.channels


async def test_a_socket_waiting_on_its_channel_holds_little_memory():
    """Every open socket waits on its channel for as long as it is open: an asyncio.Queue
    there was about 3 KB per socket (the idle-socket figure in bench/README.md)."""
    layer = EmbeddedChannelLayer()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        waiting = [asyncio.create_task(layer.receive(f"socket.s{n}")) for n in range(200)]
        await asyncio.sleep(0)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Everything the waiting receives hold, their tasks included: about 1.3 KB here, 4.6 KB
    # with channels' InMemoryChannelLayer.
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert grown / 200 < 2000
