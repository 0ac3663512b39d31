"""A socket in use re-checks its access decision in the background, before it goes stale, so
its sends do not wait for the check's queries; the re-check still cuts the socket off when
access is gone, and a revocation that lands during it wins over its answer."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from playground.chat import access, consumers
from tests.test_access_revocation import open_socket

pytestmark = [pytest.mark.django_db(transaction=True)]

INTERVAL = 2.0  # REAUTH_INTERVAL here: the decision is refreshed once it is 1 s old


@pytest.fixture(autouse=True)
def _short_interval(settings, monkeypatch) -> None:
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "REAUTH_INTERVAL": INTERVAL}
    monkeypatch.setattr(consumers, "REFRESH_DELAY", 0.05, raising=False)


@pytest.fixture
def checks(monkeypatch) -> list[bool]:
    """Each access check the sockets make, by its `fresh` flag (True: the one at connect)."""
    made: list[bool] = []
    original = consumers.check_access

    def counting(*args, fresh: bool = False, **kwargs):
        made.append(fresh)
        return original(*args, fresh=fresh, **kwargs)

    monkeypatch.setattr(consumers, "check_access", counting)
    return made


async def ask(socket) -> None:
    """A message that needs the access decision and nothing else."""
    await socket.send(action="nothing")
    await socket.until(lambda f: "Unknown action" in f)


async def until(condition, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_socket_in_use_rechecks_after_its_message_not_before(
    user, conversation, connect, checks
):
    socket = await open_socket(connect, user, conversation.pk)
    assert checks == [True]
    await ask(socket)  # a young decision: kept, nothing checked
    await asyncio.sleep(INTERVAL / 2 + 0.1)
    await ask(socket)  # past half its life: answered on the kept decision...
    assert checks == [True]
    await until(lambda: len(checks) == 2)  # ...and checked again just after
    assert checks == [True, False]
    await asyncio.sleep(INTERVAL / 2)  # the first decision would have expired by now
    await ask(socket)
    assert checks == [True, False]  # the refreshed one is young: no check on the way


async def test_a_socket_left_idle_checks_before_it_answers(user, conversation, connect, checks):
    socket = await open_socket(connect, user, conversation.pk)
    await asyncio.sleep(INTERVAL + 0.1)
    await ask(socket)
    assert checks == [True, False]


async def test_a_background_recheck_that_finds_access_gone_cuts_the_socket_off(
    user, conversation, connect, checks
):
    socket = await open_socket(connect, user, conversation.pk)
    await asyncio.sleep(INTERVAL / 2 + 0.1)

    @database_sync_to_async
    def log_out_behind_the_signals() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM django_session")

    await log_out_behind_the_signals()
    await socket.send(action="nothing")  # answered on the kept decision, which is still young
    await socket.until(lambda f: "Unknown action" in f)
    told = await socket.communicator.receive_output(timeout=2)  # the re-check, unasked
    closed = await socket.communicator.receive_output(timeout=2)
    assert "no longer have access" in told["text"]
    assert closed == {"type": "websocket.close", "code": 4403}


async def test_a_revocation_during_the_background_recheck_wins_over_its_answer(
    user, conversation, connect, monkeypatch
):
    socket = await open_socket(connect, user, conversation.pk)
    made: list[bool] = []
    original = consumers.check_access

    def revoked_while_checking(user_, *args, fresh: bool = False, **kwargs):
        made.append(fresh)
        if len(made) == 1:
            # A revocation lands while the background check runs, and the check's answer
            # (a refusal, from before the change) must not be kept.
            access._user_epochs[user_.pk] += 1
            return None
        return original(user_, *args, fresh=fresh, **kwargs)

    monkeypatch.setattr(consumers, "check_access", revoked_while_checking)
    await asyncio.sleep(INTERVAL / 2 + 0.1)
    await ask(socket)
    await until(lambda: len(made) == 1)
    await asyncio.sleep(0.1)
    await ask(socket)  # not cut off; this use checks again, after the change
    assert made == [False, False]
