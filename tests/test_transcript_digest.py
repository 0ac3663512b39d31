"""A socket opening on a page that already shows the current transcript leaves it alone.

Redrawing it would replace every element under the reader's cursor and keyboard focus (the
review bars' buttons among them) with equal copies, and make the page fetch its review bars a
second time. The page puts a fingerprint of what it drew in the socket's URL (?v=); the socket
draws the transcript only when its own differs."""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async

from playground.chat.contexts import transcript_context
from playground.chat.models import Message
from tests.conftest import reply_of
from tests.test_streaming import is_delta, streamed_text
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]


def is_transcript(frame: str) -> bool:
    return 'id="transcript"' in frame


def page_digest(client, user, conversation) -> str:
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    match = re.search(rf'ws-connect="/ws/conversations/{conversation.pk}/\?v=(\w+)"', page)
    assert match, "the page's socket carries the digest of the transcript it drew"
    return match.group(1)


@pytest.fixture
def answered(user, conversation):
    ask = Message.objects.create(conversation=conversation, role="user", text="Hi", created_by=user)
    Message.objects.create(conversation=conversation, role="assistant", parent=ask, text="Hello.")
    return conversation


async def test_an_unchanged_transcript_is_not_drawn_again(client, user, answered, connect):
    digest = await database_sync_to_async(page_digest)(client, user, answered)
    ok, socket = await connect(user, answered.pk, query=f"?v={digest}")
    assert ok
    first = await socket.receive()
    assert not is_transcript(first) and 'id="presence"' in first  # still one frame: live
    await socket.drain()
    assert not any(is_transcript(f) for f in socket.frames)


async def test_a_transcript_changed_since_the_page_is_drawn(client, user, answered, connect):
    digest = await database_sync_to_async(page_digest)(client, user, answered)
    # Another tab's turn lands between the page and its socket.
    await Message.objects.acreate(conversation=answered, role="user", text="Again", created_by=user)
    ok, socket = await connect(user, answered.pk, query=f"?v={digest}")
    first = await socket.receive()
    assert is_transcript(first) and "Again" in first
    ok, other = await connect(user, answered.pk, query="?v=0123456789abcdef")
    assert is_transcript(await other.receive())
    ok, bare = await connect(user, answered.pk)  # no digest (a script, the bench): drawn
    assert is_transcript(await bare.receive())


def test_the_digest_follows_what_the_transcript_draws(user, answered):
    before = transcript_context(answered)["transcript_digest"]
    assert transcript_context(answered)["transcript_digest"] == before  # stable
    reply = Message.objects.get(conversation=answered, role="assistant")
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.INTERRUPTED)
    interrupted = transcript_context(answered)["transcript_digest"]
    assert interrupted != before
    Message.objects.filter(pk=reply.pk).update(text="Hello there.")
    assert transcript_context(answered)["transcript_digest"] != interrupted
    # A sibling branch changes the ‹ › of the shown reply.
    Message.objects.create(conversation=answered, role="assistant", parent=reply.parent, text="Yo")
    assert transcript_context(answered, at=reply.pk)["transcript_digest"] != before


async def test_a_reply_still_streaming_is_caught_up_without_a_redraw(
    client, upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(n_tokens=60, interval=0.01)
    ok, first = await connect(user, conversation.pk)
    await first.send_prompt("Keep going")
    await first.until(is_delta)
    await first.until(is_delta)
    # The page drawn now shows part of the reply; its socket opens a moment later.
    context = await database_sync_to_async(transcript_context)(conversation)
    ok, late = await connect(user, conversation.pk, query=f"?v={context['transcript_digest']}")
    await late.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert not any(is_transcript(f) for f in late.frames)
    # The run's snapshot replaced the partial text, then only what came after it.
    assert streamed_text(late.frames, reply.pk) == upstream.default.text == reply.text
