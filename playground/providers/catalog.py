"""Which models a user can pick, and where their requests go, in this deployment.

The built-in providers and models are plain data in specs.py. This module adds what needs
Django: the custom OpenAI-compatible endpoints an admin adds in the database, and the base URL
a deployment (or the test suite) points a provider at instead of the documented one.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from playground.providers import netpolicy, specs
from playground.providers.client import Endpoint
from playground.providers.specs import Model, Provider

DEFAULT_MODEL_KEY = specs.GEMMA_4_E4B.key
_BUILTIN_BY_KEY = {m.key: m for m in specs.BUILTIN_MODELS}


class UnknownModel(LookupError):
    pass


# Custom endpoints change rarely and are read on every send: keep them for a few seconds in
# each process (saving one in the admin clears this process's copy at once).
CUSTOM_MODELS_TTL = 10.0
_custom_cache: tuple[float, list[Model]] | None = None


def forget_custom_models(**kwargs: Any) -> None:
    global _custom_cache
    _custom_cache = None


def _custom_models() -> list[Model]:
    global _custom_cache
    now = time.monotonic()
    if _custom_cache is None or now - _custom_cache[0] > CUSTOM_MODELS_TTL:
        _custom_cache = (now, _load_custom_models())
    return _custom_cache[1]


def _load_custom_models() -> list[Model]:
    from playground.providers.models import EndpointModel

    found = []
    providers: dict[int, Provider] = {}
    rows = EndpointModel.objects.filter(offered=True).select_related("endpoint")
    for row in rows.order_by("endpoint__name", "model_id"):
        custom = row.endpoint
        provider = providers.get(custom.pk)
        if provider is None:
            provider = providers[custom.pk] = Provider(
                custom.slug,
                custom.name,
                custom.base_url,
                requires_key=custom.requires_key,
                custom=True,
            )
        capabilities = row.capabilities()
        found.append(
            Model(
                provider,
                row.model_id,
                f"{row.model_id} ({custom.name})",
                capabilities=capabilities,
                context_window=row.context_window,
                max_output=row.max_output,
                price_per_message=row.price_per_message,
                params=specs.custom_params(
                    custom.groups(),
                    capabilities,
                    max_output=row.max_output,
                    context_window=row.context_window,
                ),
                tokenize=bool((row.probe_results or {}).get("tokenize", {}).get("ok")),
                formats=row.formats(),
            )
        )
    return found


def all_models() -> list[Model]:
    """Every model a user can pick. Reads the database: call from sync code."""
    return [*specs.BUILTIN_MODELS, *_custom_models()]


def get_model(key: str) -> Model:
    if key in _BUILTIN_BY_KEY:
        return _BUILTIN_BY_KEY[key]
    for model in all_models():
        if model.key == key:
            return model
    raise UnknownModel(key)


def endpoint(provider: Provider) -> Endpoint:
    """Where requests for `provider` go: its documented URL unless settings point elsewhere."""
    base_url = settings.PLAYGROUND_PROVIDER_BASE_URLS.get(provider.slug, provider.base_url)
    return Endpoint(base_url=base_url, policy=address_policy() if provider.custom else None)


def address_policy() -> netpolicy.AddressPolicy:
    """What custom endpoints may connect to in this deployment (checked per connection)."""
    return netpolicy.AddressPolicy(allow_private=settings.PLAYGROUND_ENDPOINT_ALLOW_PRIVATE)


def providers() -> list[Provider]:
    seen: dict[str, Provider] = {}
    for model in all_models():
        seen.setdefault(model.provider.slug, model.provider)
    return list(seen.values())
