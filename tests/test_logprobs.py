"""Logprobs: saved with the reply and shown as shaded tokens, whatever numbers come upstream."""

from __future__ import annotations

import pytest

from playground.chat.models import Message
from tests.conftest import reply_of
from tests.html import attr, find, find_all, text
from tests.upstream import Behaviour


@pytest.mark.django_db(transaction=True)
async def test_logprobs_are_saved_and_shown_as_shaded_tokens(
    upstream, user, api_key, conversation, connect
):
    upstream.default = Behaviour(tokens=["Hi", " there"], logprobs=True)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", **{"param:logprobs": "true", "param:top_logprobs": "2"})
    frame = await socket.until(lambda f: "status-complete" in f)
    reply = await reply_of(conversation)
    assert [e["token"] for e in reply.logprobs] == ["Hi", " there"]
    tokens = find_all(frame, "span", class_="tok", tabindex="0")
    hi = next(t for t in tokens if t.children[0] == "Hi")
    assert "p7" in attr(hi, "class").split()
    assert text(find(hi, "span", class_="alts", role="tooltip")).startswith("77.9%")


def test_out_of_range_and_non_numeric_logprobs_are_shown_without_error():
    message = Message(
        logprobs=[
            {"token": "a", "logprob": 1000},
            {"token": "b", "logprob": "x"},
            {"token": "c", "logprob": float("nan")},
        ]
    )
    tokens = message.token_view()
    assert [t["token"] for t in tokens] == ["a", "b", "c"]
    assert tokens[0]["percent"] == "100.0" and tokens[0]["bucket"] == 9
    assert tokens[1]["percent"] == tokens[2]["percent"] == "?"


def test_non_numeric_alternatives_are_shown_without_error():
    message = Message(
        logprobs=[
            {
                "token": "a",
                "logprob": -0.1,
                "top_logprobs": [{"token": "b", "logprob": 800}, {"token": "c", "logprob": None}],
            }
        ]
    )
    alternatives = message.token_view()[0]["alternatives"]
    assert [a["percent"] for a in alternatives] == ["100.0", "?"]


def test_alternatives_that_are_not_a_list_are_left_out_without_error():
    # Saved as the upstream sent them: a number there made every render of the page fail.
    message = Message(
        logprobs=[
            {"token": "a", "logprob": -0.1, "top_logprobs": 5},
            {"token": "b", "logprob": -0.2, "top_logprobs": {"token": "c"}},
            {"token": "d", "logprob": -0.3, "top_logprobs": None},
        ]
    )
    tokens = message.token_view()
    assert [t["token"] for t in tokens] == ["a", "b", "d"]
    assert all(t["alternatives"] == [] for t in tokens)
