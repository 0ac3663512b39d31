"""Turns against a custom endpoint: its parameters in the body, usage it did not send, its
price only when entered, and the server's own words when it refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from playground.chat.models import Message
from playground.providers import catalog
from playground.providers.models import CustomEndpoint, EndpointModel
from tests.conftest import reply_of
from tests.upstream import Behaviour, FakeUpstream

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "lab:gemma-3-4b-it"


async def lab_model(upstream: FakeUpstream, groups: list[str], **fields) -> EndpointModel:
    catalog.forget_custom_models()
    lab = await CustomEndpoint.objects.acreate(
        slug="lab", name="Lab", base_url=upstream.base_url, param_groups=groups
    )
    return await EndpointModel.objects.acreate(endpoint=lab, model_id="gemma-3-4b-it", **fields)


async def turn(connect, user, conversation, **params) -> Message:
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("one two three", model=MODEL, **params)
    await socket.until(lambda f: "status-complete" in f or "status-error" in f)
    await socket.close()
    return await reply_of(conversation)


@pytest.mark.parametrize(
    ("groups", "penalty_key"),
    [(["openai", "llamacpp"], "repeat_penalty"), (["openai", "vllm"], "repetition_penalty")],
)
async def test_sampling_extras_reach_the_body_under_the_servers_names(
    upstream, user, conversation, connect, groups, penalty_key
) -> None:
    await lab_model(upstream, groups)
    await turn(
        connect,
        user,
        conversation,
        **{
            "param:temperature": "0.3",
            "param:seed": "42",
            "param:top_k": "20",
            "param:min_p": "0.05",
            "param:repetition_penalty": "1.1",
        },
    )
    body = upstream.requests[-1].body
    assert (body["temperature"], body["seed"], body["top_k"], body["min_p"]) == (0.3, 42, 20, 0.05)
    assert body[penalty_key] == 1.1
    other = {"repeat_penalty", "repetition_penalty"} - {penalty_key}
    assert not other & set(body)


async def test_the_openai_set_alone_refuses_the_extras(upstream, user, conversation, connect):
    # Refused rather than dropped: a name the server does not take is never sent, and the
    # person sending learns it instead of getting a run without it.
    await lab_model(upstream, ["openai"])
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt(
        "one two three", model=MODEL, **{"param:top_k": "20", "param:temperature": "1"}
    )
    assert "Unknown parameter top_k" in await socket.until(lambda f: "composer-error" in f)
    await socket.close()
    assert not [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert not await Message.objects.filter(conversation=conversation).aexists()
    await turn(connect, user, conversation, **{"param:temperature": "1"})
    assert upstream.requests[-1].body["temperature"] == 1


@pytest.mark.parametrize("group", ["vllm", "llamacpp"])
async def test_a_penalty_of_zero_or_less_is_refused_before_sending(
    group, upstream, user, conversation, connect
):
    # vLLM answers 400 to a repetition_penalty of 0 or less; the page says so first.
    await lab_model(upstream, ["openai", group])
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("hi", model=MODEL, **{"param:repetition_penalty": "0"})
    assert "repetition_penalty" in await socket.until(lambda f: "composer-error" in f)
    await socket.close()
    assert not [r for r in upstream.requests if r.path.endswith("/chat/completions")]


async def test_usage_the_server_did_not_send_is_counted_by_its_tokenize(
    upstream, user, conversation, connect
) -> None:
    await lab_model(upstream, ["openai"], probe_results={"tokenize": {"ok": True}})
    upstream.default = Behaviour(n_tokens=4, usage=False)  # like llama.cpp
    reply = await turn(connect, user, conversation)
    assert reply.usage == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "estimated": "tokenize",
    }
    assert [r.path for r in upstream.requests].count("/tokenize") == 2
    assert reply.cost is None  # no price entered: none shown


async def test_without_tokenize_usage_is_the_chunk_count_and_shown_as_estimate(
    upstream, user, conversation, connect
) -> None:
    await lab_model(upstream, ["openai"])
    upstream.default = Behaviour(n_tokens=6, usage=False)
    reply = await turn(connect, user, conversation)
    assert reply.usage["completion_tokens"] == 6 and reply.usage["estimated"] == "chunks"
    assert not any(r.path == "/tokenize" for r in upstream.requests)
    from django.template.loader import render_to_string

    html = await database_sync_to_async(render_to_string)(
        "chat/playground.html#message", {"message": reply}
    )
    assert "≈ 6 tokens" in html


async def test_usage_the_server_sent_is_kept_as_is(upstream, user, conversation, connect):
    await lab_model(upstream, ["openai"])
    reply = await turn(connect, user, conversation)
    assert "estimated" not in reply.usage and reply.usage["completion_tokens"] == 5


async def test_a_price_is_charged_only_when_the_admin_entered_one(
    upstream, user, conversation, connect
) -> None:
    await lab_model(upstream, ["openai"], price_per_message=Decimal("0.002"))
    reply = await turn(connect, user, conversation)
    assert reply.cost == Decimal("0.002")


async def test_the_servers_refusal_is_shown_in_the_transcript(
    upstream, user, conversation, connect
) -> None:
    await lab_model(upstream, ["openai"])
    upstream.refuse = {"top_p": "Input should be less than or equal to 1"}
    upstream.refuse_status = 422
    reply = await turn(connect, user, conversation, **{"param:top_p": "0.5"})
    assert reply.status == Message.Status.ERROR
    assert "top_p: Input should be less than or equal to 1" in reply.error
    assert "422" in reply.error


async def test_a_500_that_blames_the_request_is_not_retried(
    upstream, user, conversation, connect
) -> None:
    await lab_model(upstream, ["openai"], json_schema=False)
    upstream.refuse = {"temperature": "Failed to parse grammar: invalid request"}
    upstream.refuse_status = 500
    reply = await turn(connect, user, conversation, **{"param:temperature": "0.5"})
    assert reply.status == Message.Status.ERROR
    assert "Failed to parse grammar" in reply.error
    chats = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 1


async def test_json_schema_is_refused_before_sending_when_the_probe_found_it_unsupported(
    upstream, user, conversation, connect
) -> None:
    await lab_model(upstream, ["openai"], json_schema=False)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "hi",
        model=MODEL,
        **{
            "param:response_format:type": "json_schema",
            "param:response_format:schema": '{"type": "object"}',
        },
    )
    frame = await socket.until(lambda f: "json_schema is not accepted" in f)
    assert "json_schema is not accepted by this model" in frame
    await socket.close()
    assert not [r for r in upstream.requests if r.path.endswith("/chat/completions")]


def test_the_endpoints_link_is_shown_to_admins_only(client, user, django_user_model) -> None:
    client.force_login(user)
    assert "/endpoints/" not in client.get("/keys/").content.decode()
    admin = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(admin)
    assert 'href="/endpoints/"' in client.get("/keys/").content.decode()
