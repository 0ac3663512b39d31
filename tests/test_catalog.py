"""The catalog matches the provider pages in shared/seeds/, and admins add endpoints."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from playground.chat.models import Message
from playground.providers import catalog, specs
from playground.providers.models import CustomEndpoint
from tests.upstream import Behaviour


def test_the_builtin_models_match_the_provider_pages():
    gemma4 = specs.GEMMA_4_E4B
    assert gemma4.id == "gemma-4-e4b"
    assert gemma4.provider.base_url == "https://api.empiriolabs.ai/v1"
    assert gemma4.context_window == 8192 and gemma4.max_output == 4096
    assert gemma4.price_per_message == Decimal("0.03")
    assert {
        specs.IMAGES,
        specs.TOOLS,
        specs.JSON_OUTPUT,
        specs.THINKING,
    } <= gemma4.capabilities
    gemma3n = specs.GEMMA_3N_E4B
    assert gemma3n.id == "google/gemma-3n-e4b-it"
    assert gemma3n.provider.base_url == "https://api.aimlapi.com/v1"


def test_cost_is_charged_only_for_a_completed_message():
    assert specs.GEMMA_4_E4B.cost(completed=True) == Decimal("0.03")
    assert specs.GEMMA_4_E4B.cost(completed=False) == Decimal("0")
    assert specs.GEMMA_3N_E4B.cost(completed=True) is None


def test_tests_never_point_at_the_real_hosts():
    for provider in specs.BUILTIN_PROVIDERS.values():
        assert catalog.endpoint(provider).base_url.startswith("http://127.0.0.1:")


@pytest.mark.django_db
def test_an_endpoint_cannot_take_a_builtin_providers_id():
    endpoint = CustomEndpoint(slug="empiriolabs", name="x", base_url="http://h/v1", model_ids="m")
    with pytest.raises(ValidationError):
        endpoint.full_clean()


@pytest.mark.django_db(transaction=True)
async def test_an_admin_added_endpoint_is_listed_and_streams_without_a_key(
    upstream, user, conversation, connect
):
    await CustomEndpoint.objects.acreate(
        slug="lab-vllm",
        name="Lab vLLM",
        base_url=upstream.base_url,
        model_ids="google/gemma-3-4b-it\nother-model\n",
    )
    from channels.db import database_sync_to_async

    keys = [m.key for m in await database_sync_to_async(catalog.all_models)()]
    assert "lab-vllm:google/gemma-3-4b-it" in keys and "lab-vllm:other-model" in keys
    upstream.default = Behaviour(tokens=["local"])
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", model="lab-vllm:google/gemma-3-4b-it")
    await socket.until(lambda f: "status-complete" in f)
    request = upstream.requests[-1]
    assert request.body["model"] == "google/gemma-3-4b-it"
    assert "authorization" not in request.headers
    reply = await Message.objects.filter(role="assistant").alast()
    assert reply.text == "local" and reply.cost is None
