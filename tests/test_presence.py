"""Presence: a conversation shows who else is watching it, by initials, updated live."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from playground.accounts.models import Membership, Team
from playground.chat.consumers import initials
from playground.chat.models import Conversation
from tests.html import find_all, parse

pytestmark = [pytest.mark.django_db(transaction=True)]
MODEL = "empiriolabs:gemma-4-e4b"


@database_sync_to_async
def team_conversation(user, other_user) -> Conversation:
    team = Team.create(name="Lab", owner=other_user)
    team.add_member(user, Membership.Role.VIEWER)
    return Conversation.objects.create(owner=other_user, team=team, model=MODEL)


def watchers(frame: str) -> list[str]:
    return [str(span.children[0]) for span in find_all(parse(frame), "span", class_="initials")]


def is_presence(frame: str) -> bool:
    return 'id="presence"' in frame


async def test_each_watcher_sees_the_other_come_and_go(user, other_user, connect):
    shared = await team_conversation(user, other_user)
    ok, ada = await connect(user, shared.pk)
    await ada.drain()
    ok, eve = await connect(other_user, shared.pk)
    assert watchers(await ada.until(is_presence)) == ["EV"]
    assert watchers(await eve.until(is_presence)) == ["AD"]
    await eve.close()
    assert watchers(await ada.until(is_presence)) == []


async def test_ones_own_other_tab_is_not_someone_else(user, conversation, connect):
    ok, first = await connect(user, conversation.pk)
    await first.drain()
    ok, second = await connect(user, conversation.pk)
    await second.drain()
    # Nobody else came: the first tab is not even sent a presence frame.
    assert await first.communicator.receive_nothing(timeout=0.3)
    assert not any(is_presence(f) for f in first.frames + second.frames)


async def test_presence_never_crosses_conversations(user, other_user, connect):
    shared = await team_conversation(user, other_user)
    elsewhere = await Conversation.objects.acreate(owner=other_user, model=MODEL)
    ok, ada = await connect(user, shared.pk)
    await ada.drain()
    ok, eve = await connect(other_user, elsewhere.pk)
    await eve.drain()
    assert await ada.communicator.receive_nothing(timeout=0.3)
    assert not any(is_presence(f) for f in ada.frames + eve.frames)


def test_initials_tell_teammates_apart():
    assert initials("ada.lovelace") == "AL"
    assert initials("eve") == "EV"
    assert initials("grace hopper") == "GH"


async def test_a_channel_layer_outage_never_fails_a_socket_over_presence(
    user, other_user, connect, monkeypatch
):
    """Presence is a courtesy: joining and leaving while the layer is down still work."""
    from channels.layers import get_channel_layer

    shared = await team_conversation(user, other_user)
    ok, ada = await connect(user, shared.pk)
    await ada.drain()
    layer = get_channel_layer()

    async def down(*args, **kwargs):
        raise ConnectionError("Redis is restarting")

    monkeypatch.setattr(layer, "group_send", down)
    monkeypatch.setattr(layer, "send", down)
    await ada.close()  # the leave cannot be told: the socket still closes cleanly
    ok, eve = await connect(other_user, shared.pk)
    assert ok
    assert "transcript" in await eve.receive()
    await eve.close()
