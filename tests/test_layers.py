"""The embedded default's channel layer: what each recipient gets is its own copy."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import pytest
from channels.exceptions import ChannelFull, StopConsumer
from channels.utils import await_many_dispatch

from playground.layers import EmbeddedChannelLayer, Mailbox, dispatch_both
from tests.memory import bytes_held


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
    # Everything the waiting receives hold, their tasks included: about 1.3 KB here, 4.6 KB
    # with channels' InMemoryChannelLayer.
    held = await bytes_held(lambda n: asyncio.create_task(layer.receive(f"socket.s{n}")))
    assert held < 2000


def waiting_dispatch(layer, channel, dispatch):
    inbox: Mailbox = Mailbox()
    task = asyncio.create_task(dispatch_both(inbox, layer, channel, dispatch))
    return inbox, task


async def test_dispatch_both_passes_on_both_sources_in_order_and_in_turns(layer):
    layer = EmbeddedChannelLayer(capacity=10)
    seen: list[str] = []

    async def dispatch(message):
        seen.append(message["n"])

    inbox, task = waiting_dispatch(layer, "socket.a", dispatch)
    await asyncio.sleep(0)
    for n in ("i1", "i2", "i3"):
        inbox.put_nowait({"n": n})
    for n in ("c1", "c2"):
        await layer.send("socket.a", {"n": n})
    await asyncio.sleep(0.01)
    assert seen == ["i1", "c1", "i2", "c2", "i3"]  # neither source holds the other up
    inbox.put_nowait({"n": "i4"})
    await asyncio.sleep(0.01)
    await layer.send("socket.a", {"n": "c3"})
    await asyncio.sleep(0.01)
    assert seen[-2:] == ["i4", "c3"]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert "socket.a" not in layer.channels
    assert not inbox.waiters


async def test_dispatch_both_stops_with_its_dispatch_and_leaves_nothing_waiting(layer):
    async def dispatch(message):
        raise StopConsumer

    inbox, task = waiting_dispatch(layer, "socket.a", dispatch)
    await asyncio.sleep(0)
    await layer.send("socket.a", {"type": "x"})
    with pytest.raises(StopConsumer):
        await asyncio.wait_for(task, 1)
    assert "socket.a" not in layer.channels
    assert not inbox.waiters


async def test_dispatch_both_holds_a_fraction_of_await_many_dispatch():
    async def dispatch(message):
        pass

    layer = EmbeddedChannelLayer()

    def ours(n):
        return asyncio.create_task(dispatch_both(Mailbox(), layer, f"socket.a{n}", dispatch))

    def channels_own(n):
        receive = Mailbox().get
        channel = functools.partial(layer.receive, f"socket.b{n}")
        return asyncio.create_task(await_many_dispatch([receive, channel], dispatch))

    light, stock = await bytes_held(ours), await bytes_held(channels_own)
    assert light < stock / 2, (light, stock)


async def test_a_cancelled_getter_is_cancelled_even_after_a_woken_one_was():
    """Two getters: one woken by a put and cancelled before it ran, the other cancelled while
    waiting. Both end cancelled, and the item stays for the next get."""
    box: Mailbox = Mailbox()
    woken = asyncio.create_task(box.get())
    waiting = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put_nowait("item")
    waiting.cancel()
    woken.cancel()
    results = await asyncio.gather(woken, waiting, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert box.get_nowait() == "item"
    assert box.idle
