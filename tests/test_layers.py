"""The embedded default's channel layer: what each recipient gets is its own copy."""

from __future__ import annotations

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
