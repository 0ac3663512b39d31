"""Stopping runs: one function for Stop, delete and whatever stops runs next."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from channels.layers import get_channel_layer
from django.test import AsyncClient

from playground.chat import runs
from playground.chat.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


async def told(channel: str, within: float = 0.6) -> list[str]:
    """The message types a run channel gets within `within` seconds (no run reads them)."""
    layer = get_channel_layer()
    types: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while True:
                types.append((await layer.receive(channel))["type"])
    return types


async def reply(conversation: Conversation, channel: str, status: str = "streaming") -> Message:
    return await Message.objects.acreate(
        conversation=conversation, role="assistant", status=status, run_channel=channel
    )


async def test_it_stops_only_the_streaming_runs_of_the_given_conversations(
    user, conversation, monkeypatch
):
    monkeypatch.setattr(runs, "STOP_REPEAT_AFTER", 60)  # the repeat is another test
    other = await Conversation.objects.acreate(owner=user, model=conversation.model)
    await reply(conversation, "run.a")
    await reply(conversation, "run.done", status="complete")
    await reply(conversation, "")  # not started yet: nothing to tell
    await reply(other, "run.other")

    channels = await runs.stop(Conversation.objects.filter(pk=conversation.pk))

    assert channels == ["run.a"]
    assert await told("run.a", within=0.2) == ["run.stop"]
    assert await told("run.done", within=0.05) == []
    assert await told("run.other", within=0.05) == []
    statuses = {m.run_channel: m.status async for m in Message.objects.all()}
    assert statuses["run.a"] == "streaming"  # the run itself decides when it has stopped


async def test_the_stop_is_said_once_more_only_to_runs_still_streaming(conversation, monkeypatch):
    monkeypatch.setattr(runs, "STOP_REPEAT_AFTER", 0.2)
    await reply(conversation, "run.a")
    finishing = await reply(conversation, "run.b")

    await runs.stop(Message.objects.filter(conversation=conversation))
    await Message.objects.filter(pk=finishing.pk).aupdate(status="stopped")

    assert await told("run.a") == ["run.stop", "run.stop"]
    assert await told("run.b", within=0.1) == ["run.stop"]
    assert not runs._repeats  # nothing left behind once the repeat was said


async def test_deleting_a_conversation_says_stop_twice_though_its_rows_are_gone(
    user, conversation, monkeypatch
):
    monkeypatch.setattr(runs, "STOP_REPEAT_AFTER", 0.2)
    await reply(conversation, "run.deleted")
    web = AsyncClient()
    await web.aforce_login(user)

    response = await web.post(f"/c/{conversation.pk}/delete/")

    assert response.status_code == 302
    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    assert await told("run.deleted") == ["run.stop", "run.stop"]
