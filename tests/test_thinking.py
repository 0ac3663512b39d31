"""Thinking: the model's reasoning is asked for, saved and shown apart from the answer."""

from __future__ import annotations

import pytest

from tests.conftest import reply_of
from tests.html import find, text
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_thinking_is_shown_apart_with_its_time(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(reasoning=["Hmm", "…"], tokens=["Yes"], interval=0.02)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Think", **{"param:enable_thinking": "true", "param:reasoning_effort": "high"}
    )
    frame = await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert reply.reasoning == "Hmm…" and reply.reasoning_ms > 0
    summary = find(find(frame, "details", class_="reasoning"), "summary")
    assert text(summary).startswith("Reasoning · 0.")
    body = upstream.requests[-1].body
    assert body["enable_thinking"] is True and body["reasoning_effort"] == "high"
