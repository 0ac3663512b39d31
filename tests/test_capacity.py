"""A process holds at most PLAYGROUND_MAX_SOCKETS sockets: the next one is told so (close
code 4503, which the page shows and retries) instead of waiting for a handshake timeout."""

from __future__ import annotations

import pytest

from playground.chat import consumers

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def one_slot(settings, monkeypatch) -> consumers.SocketSlots:
    """A cap of one socket, counted from zero whatever other tests left open."""
    settings.PLAYGROUND_MAX_SOCKETS = 1
    fresh = consumers.SocketSlots()
    monkeypatch.setattr(consumers, "slots", fresh)
    return fresh


async def turned_away(socket) -> bool:
    """Accepted, then closed at once with the capacity code and nothing else sent."""
    output = await socket.communicator.receive_output(timeout=5)
    return output == {"type": "websocket.close", "code": consumers.AT_CAPACITY}


async def test_a_socket_over_capacity_is_closed_with_the_capacity_code(
    one_slot, user, conversation, connect
):
    ok, first = await connect(user, conversation.pk)
    assert ok
    await first.receive()  # the transcript
    ok, second = await connect(user, conversation.pk)
    assert ok  # accepted, so the browser sees the close code rather than a failed handshake
    assert await turned_away(second)
    assert one_slot.taken == 1


async def test_a_socket_is_admitted_once_another_has_closed(one_slot, user, conversation, connect):
    ok, first = await connect(user, conversation.pk)
    assert ok
    await first.receive()
    await first.close()
    assert one_slot.taken == 0
    ok, second = await connect(user, conversation.pk)
    assert ok
    assert "transcript" in await second.receive()
    assert one_slot.taken == 1


async def test_a_socket_refused_by_auth_gives_its_slot_back(
    one_slot, user, other_user, conversation, connect
):
    ok, _ = await connect(None, conversation.pk)
    assert not ok
    ok, _ = await connect(other_user, conversation.pk)
    assert not ok
    assert one_slot.taken == 0
    ok, socket = await connect(user, conversation.pk)
    assert ok
    assert "transcript" in await socket.receive()


async def test_a_socket_turned_away_ignores_what_it_is_sent(one_slot, user, conversation, connect):
    ok, first = await connect(user, conversation.pk)
    assert ok
    await first.receive()
    ok, second = await connect(user, conversation.pk)
    assert await turned_away(second)
    await second.send_prompt("hello")
    assert await second.communicator.receive_nothing(timeout=0.2)
    await second.close()
    assert one_slot.taken == 1  # the turned-away socket never held the slot


async def test_a_progress_socket_turned_away_closes_without_an_error(
    one_slot, user, conversation, connect
):
    """An experiment results page's socket over capacity set nothing up; closing it used to
    raise AttributeError (no redraw pending to cancel)."""
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from playground.asgi import application
    from tests.conftest import ORIGIN, session_cookie

    ok, first = await connect(user, conversation.pk)
    await first.receive()
    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN), (b"cookie", cookie)]
    progress = WebsocketCommunicator(application, "/ws/experiments/runs/1/", headers=headers)
    ok, _ = await progress.connect(timeout=5)
    assert ok
    assert await progress.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": consumers.AT_CAPACITY,
    }
    await progress.disconnect()  # raises what the consumer raised
    assert one_slot.taken == 1
