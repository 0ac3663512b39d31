"""Sockets open a few at a time (PLAYGROUND_OPENING_SOCKETS): a connect storm waits its turn
instead of crowding out the replies that are streaming."""

from __future__ import annotations

import asyncio

import pytest

from playground.chat import consumers

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def held_transcripts(monkeypatch):
    """Each socket's transcript waits until the test releases it; records who got that far."""
    reached: list[str] = []
    gate = asyncio.Event()
    real = consumers.ConversationConsumer._send_transcript

    async def held(self, *args, **kwargs):
        reached.append(self.channel_name)
        await gate.wait()
        await real(self, *args, **kwargs)

    monkeypatch.setattr(consumers.ConversationConsumer, "_send_transcript", held)
    return reached, gate


async def test_a_socket_waits_while_the_sockets_before_it_are_opening(
    settings, user, conversation, connect, held_transcripts
):
    settings.PLAYGROUND_OPENING_SOCKETS = 1
    reached, gate = held_transcripts
    first = asyncio.create_task(connect(user, conversation.pk))
    while not reached:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(connect(user, conversation.pk))
    await asyncio.sleep(0.3)
    assert len(reached) == 1  # the second has not started opening
    assert not second.done()
    gate.set()
    (ok1, socket1), (ok2, socket2) = await asyncio.gather(first, second)
    assert ok1 and ok2
    assert "transcript" in await socket1.receive()
    assert "transcript" in await socket2.receive()
    assert len(reached) == 2


async def test_a_refused_socket_lets_the_next_one_open(settings, user, conversation, connect):
    settings.PLAYGROUND_OPENING_SOCKETS = 1
    ok, _ = await connect(None, conversation.pk)
    assert not ok
    ok, socket = await connect(user, conversation.pk)
    assert ok
    assert "transcript" in await socket.receive()


async def test_sockets_open_side_by_side_up_to_the_limit(
    settings, user, conversation, connect, held_transcripts
):
    settings.PLAYGROUND_OPENING_SOCKETS = 2
    reached, gate = held_transcripts
    opening = [asyncio.create_task(connect(user, conversation.pk)) for _ in range(3)]
    while len(reached) < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert len(reached) == 2
    gate.set()
    results = await asyncio.gather(*opening)
    assert all(ok for ok, _ in results)
    assert len(reached) == 3
