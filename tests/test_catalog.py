"""The catalog matches the provider pages in shared/seeds/, and admins add endpoints."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from playground.chat.models import Message
from playground.providers import catalog, specs
from playground.providers.models import CustomEndpoint, EndpointModel
from playground.providers.specs import Model
from tests.scaleout import service_unavailable
from tests.seed_pages import (
    AIMLAPI_PAGE,
    EMPIRIOLABS_PAGE,
    SEEDS,
    ProviderPage,
    read_aimlapi,
    read_empiriolabs,
)
from tests.upstream import Behaviour

# The request itself and what client.stream() sets on every call: nothing a person picks.
SET_BY_THE_CLIENT = {"model", "messages", "stream", "stream_options"}
# Not rows on a page, but how the capability the page states is asked for.
ASKED_FOR_BY_CAPABILITY = {"tool_choice": specs.TOOLS, "response_format": specs.JSON_OUTPUT}
# The pages' words for what a model supports.
SUPPORTS = {
    "image input": specs.IMAGES,
    "function tools": specs.TOOLS,
    "structured JSON output": specs.JSON_OUTPUT,
    "thinking mode": specs.THINKING,
}
# The catalog types that take what a page's type describes.
TYPES = {
    "number": {"number", "integer"},  # a token count typed loosely as number is still whole
    "integer": {"integer"},
    "boolean": {"boolean"},
    "enum": {"enum"},
    "string": {"string_list"},  # stop: "One or more stop strings."
    "any of": {"string_list"},  # stop: a string or a list of strings
    "array": {"tools"},
    "object": {"token_bias"},
}


def read_page(filename: str, read: Callable[[str], ProviderPage]) -> ProviderPage:
    path = SEEDS / filename
    if not path.is_file():
        service_unavailable(f"the provider pages belong in {SEEDS}, beside the repository clone")
    return read(path.read_text(encoding="utf-8"))


def stated_capabilities(page: ProviderPage) -> set[str]:
    return {capability for words, capability in SUPPORTS.items() if words in page.supports}


each_builtin_model = pytest.mark.parametrize(
    ("model", "filename", "read"),
    [
        (specs.GEMMA_4_E4B, EMPIRIOLABS_PAGE, read_empiriolabs),
        (specs.GEMMA_3N_E4B, AIMLAPI_PAGE, read_aimlapi),
    ],
    ids=["empiriolabs", "aimlapi"],
)


@each_builtin_model
def test_a_builtin_model_has_the_id_url_limits_and_price_of_its_page(model: Model, filename, read):
    page = read_page(filename, read)
    assert (model.id, model.provider.base_url) == (page.model_id, page.base_url)
    assert (model.context_window, model.max_output, model.price_per_message) == (
        page.context_window,
        page.max_output,
        page.price_per_message,
    )


@each_builtin_model
def test_a_builtin_model_has_the_capabilities_its_page_states(model: Model, filename, read):
    page = read_page(filename, read)
    assert stated_capabilities(page) <= model.capabilities
    # A control shows only under a capability the model has (logprobs: from its table row).
    assert {p.capability for p in model.params if p.capability} <= model.capabilities


@each_builtin_model
def test_a_builtin_model_takes_each_parameter_of_its_page_with_its_range_and_default(
    model: Model, filename, read
):
    page = read_page(filename, read)
    documented = {n: p for n, p in page.params.items() if n not in SET_BY_THE_CLIENT}
    ours = {p.name: p for p in model.params}
    # A parameter the page does not list is there only to ask for a capability it states.
    stated = stated_capabilities(page)
    unexplained = {
        name
        for name in set(ours) - set(documented)
        if ASKED_FOR_BY_CAPABILITY.get(name) not in stated
    }
    assert unexplained == set()

    def row(p) -> tuple:
        return (p.default, isinstance(p.default, bool), p.min, p.max, p.choices, p.max_items)

    assert {n: row(ours[n]) if n in ours else None for n in documented} == {
        n: row(p) for n, p in documented.items()
    }
    mistyped = {
        n: (p.type, ours[n].type)
        for n, p in documented.items()
        if ours[n].type not in TYPES[p.type]
    }
    assert mistyped == {}


def test_each_empiriolabs_control_explains_itself_in_the_pages_words():
    page = read_page(EMPIRIOLABS_PAGE, read_empiriolabs)
    reworded = {
        p.name: (p.help, page.params[p.name].description)
        for p in specs.GEMMA_4_E4B.params
        if p.name in page.params
        and not p.help.startswith(page.params[p.name].description.rstrip("."))
    }
    assert reworded == {}


def test_cost_is_charged_only_for_a_completed_message():
    assert specs.GEMMA_4_E4B.cost(completed=True) == Decimal("0.03")
    assert specs.GEMMA_4_E4B.cost(completed=False) == Decimal("0")
    assert specs.GEMMA_3N_E4B.cost(completed=True) is None


def test_tests_never_point_at_the_real_hosts():
    for provider in specs.BUILTIN_PROVIDERS.values():
        assert catalog.endpoint(provider).base_url.startswith("http://127.0.0.1:")


@pytest.mark.django_db
def test_an_endpoint_cannot_take_a_builtin_providers_id():
    endpoint = CustomEndpoint(slug="empiriolabs", name="x", base_url="http://h/v1")
    with pytest.raises(ValidationError):
        endpoint.full_clean()


@pytest.mark.django_db(transaction=True)
async def test_an_admin_added_endpoint_is_listed_and_streams_without_a_key(
    upstream, user, conversation, connect
):
    lab = await CustomEndpoint.objects.acreate(
        slug="lab-vllm", name="Lab vLLM", base_url=upstream.base_url
    )
    await EndpointModel.objects.acreate(endpoint=lab, model_id="google/gemma-3-4b-it")
    await EndpointModel.objects.acreate(endpoint=lab, model_id="other-model")
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


# The request path each wire format is served at, as a provider page lists it.
FORMAT_PATHS = {
    specs.CHAT: "POST /v1/chat/completions",
    specs.RESPONSES: "POST /v1/responses",
    specs.MESSAGES: "POST /v1/messages",
}


def served_formats(text: str) -> tuple[str, ...]:
    return tuple(fmt for fmt, path in FORMAT_PATHS.items() if path in text)


@pytest.mark.parametrize(
    ("model", "filename"),
    [(specs.GEMMA_4_E4B, EMPIRIOLABS_PAGE), (specs.GEMMA_3N_E4B, AIMLAPI_PAGE)],
    ids=["empiriolabs", "aimlapi"],
)
def test_a_builtin_model_is_served_over_the_formats_its_page_lists(model: Model, filename):
    path = SEEDS / filename
    if not path.is_file():
        service_unavailable(f"the provider pages belong in {SEEDS}, beside the repository clone")
    assert model.formats == served_formats(path.read_text(encoding="utf-8"))
