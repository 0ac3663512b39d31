"""Re-run: a reply is asked for again with exactly the request that produced it."""

from __future__ import annotations

import pytest

from tests.conftest import reply_of

pytestmark = [pytest.mark.django_db(transaction=True)]
GEMMA_4 = "empiriolabs:gemma-4-e4b"


async def test_rerun_sends_the_same_request_again(upstream, user, api_key, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Roll a die", **{"param:seed": "42", "param:temperature": "1.2"})
    await socket.until(lambda f: "status-complete" in f)
    first = await reply_of(conversation)
    await socket.send(action="rerun", message_id=first.pk)
    await socket.until(lambda f: f"msg-{first.pk}" not in f and "status-complete" in f)
    second = await reply_of(conversation)
    assert second.pk != first.pk and second.parent_id == first.parent_id
    assert upstream.requests[-1].body == upstream.requests[-2].body == first.request_body
    assert upstream.requests[-1].body["seed"] == 42


async def test_rerun_of_another_conversations_reply_is_refused(
    upstream, user, api_key, conversation, connect
):
    from playground.chat.models import Conversation

    other = await Conversation.objects.acreate(owner=user, model=GEMMA_4)
    ok, socket = await connect(user, other.pk)
    await socket.send_prompt("Hi")
    await socket.until(lambda f: "status-complete" in f)
    foreign = await reply_of(other)
    ok, socket = await connect(user, conversation.pk)
    await socket.send(action="rerun", message_id=foreign.pk)
    assert "cannot be re-run" in await socket.until(lambda f: "composer-error" in f)
