"""The providers, models and parameters the playground knows, as data.

Built from the provider pages in shared/seeds/ (they win where this file disagrees), plus the
custom OpenAI-compatible endpoints an admin adds in the database. The same specs drive the
page's controls, server-side validation, the request body and the cost shown under a reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from playground.providers.client import Endpoint

IMAGES = "images"
TOOLS = "tools"
JSON_OUTPUT = "json_output"
THINKING = "thinking"
LOGPROBS = "logprobs"
SYSTEM_ROLE = "system_role"


@dataclass(frozen=True)
class Param:
    """One documented request parameter. `None` bounds mean the page documents none."""

    name: str
    type: str  # number | integer | boolean | enum | string_list | token_bias | tools
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    max_items: int | None = None
    nullable: bool = False
    help: str = ""


@dataclass(frozen=True)
class Provider:
    slug: str
    name: str
    base_url: str
    requires_key: bool = True
    custom: bool = False

    def endpoint(self) -> Endpoint:
        base_url = settings.PLAYGROUND_PROVIDER_BASE_URLS.get(self.slug, self.base_url)
        return Endpoint(base_url=base_url)


@dataclass(frozen=True)
class Model:
    provider: Provider
    id: str
    label: str
    capabilities: frozenset[str] = frozenset()
    context_window: int | None = None
    max_output: int | None = None
    price_per_message: Decimal | None = None
    params: tuple[Param, ...] = field(default=())
    notes: str = ""

    @property
    def key(self) -> str:
        """Stable id across providers: two servers may serve the same model id."""
        return f"{self.provider.slug}:{self.id}"

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def cost(self, completed: bool) -> Decimal | None:
        # EmpirioLabs bills per successful message; nothing is documented per token.
        if self.price_per_message is None:
            return None
        return self.price_per_message if completed else Decimal("0")


EMPIRIOLABS = Provider("empiriolabs", "EmpirioLabs", "https://api.empiriolabs.ai/v1")
AIMLAPI = Provider("aimlapi", "AI/ML API", "https://api.aimlapi.com/v1")
BUILTIN_PROVIDERS = {p.slug: p for p in (EMPIRIOLABS, AIMLAPI)}

GEMMA_4_E4B = Model(
    provider=EMPIRIOLABS,
    id="gemma-4-e4b",
    label="Gemma 4 E4B",
    capabilities=frozenset({IMAGES, TOOLS, JSON_OUTPUT, THINKING, LOGPROBS, SYSTEM_ROLE}),
    context_window=8192,
    max_output=4096,
    price_per_message=Decimal("0.03"),
    params=(
        Param("temperature", "number", 0.7, 0, 2, 0.01, help="Sampling temperature."),
        Param("top_p", "number", 0.95, 0, 1, 0.01, help="Nucleus sampling probability mass."),
        Param("min_p", "number", 0, 0, 1, 0.01, help="Minimum token probability filter."),
        Param("max_tokens", "integer", 4096, 1, 4096, 1, help="Maximum output tokens."),
        Param("stop", "string_list", help="One or more stop strings."),
        Param("seed", "integer", None, 0, 2147483647, 1, help="Deterministic sampling seed."),
        Param("enable_thinking", "boolean", True, help="Reasoning channel before the answer."),
        Param(
            "reasoning_effort",
            "enum",
            None,
            choices=("low", "medium", "high"),
            help="Medium and high enable thinking mode.",
        ),
        Param("presence_penalty", "number", 0, -2, 2, 0.01, help="Penalize seen tokens."),
        Param("frequency_penalty", "number", 0, -2, 2, 0.01, help="Penalize frequent tokens."),
        Param("repetition_penalty", "number", 1, 0.1, 2, 0.01, help="Discourage repeats."),
        Param("logprobs", "boolean", False, help="Return token log probabilities."),
        Param("top_logprobs", "integer", None, 0, 20, 1, help="Alternatives per token."),
        Param("tools", "tools", help="OpenAI-compatible function tool definitions."),
    ),
    notes="Billed $0.03 per successful message. Thinking is on by default.",
)

GEMMA_3N_E4B = Model(
    provider=AIMLAPI,
    id="google/gemma-3n-e4b-it",
    label="Gemma 3n E4B",
    capabilities=frozenset(),
    # The AI/ML API page documents no context window, output cap or price.
    params=(
        Param("max_completion_tokens", "integer", 512, 1, None, 1, help="Output + reasoning cap."),
        Param("max_tokens", "integer", 512, 1, None, 1, help="Maximum generated tokens."),
        Param("temperature", "number", None, None, 2, 0.01, help="0 to 2 in practice."),
        Param("top_p", "number", None, 0.01, 1, 0.01, help="Nucleus sampling."),
        Param("seed", "integer", None, 1, None, 1, help="Best-effort determinism (beta)."),
        Param("min_p", "number", None, None, 1, 0.01, help="Alternative to top_p/top_k."),
        Param("top_k", "number", None, None, None, 1, help="Sample from the top K tokens."),
        Param("repetition_penalty", "number", None, None, None, 0.01, nullable=True),
        Param("top_a", "number", None, None, 1, 0.01, help="Alternate top sampling."),
        Param("stop", "string_list", max_items=4, help="Up to 4 stop sequences."),
        Param("logit_bias", "token_bias", help="Token id → bias."),
    ),
)

BUILTIN_MODELS = (GEMMA_4_E4B, GEMMA_3N_E4B)
DEFAULT_MODEL_KEY = GEMMA_4_E4B.key


class UnknownModel(LookupError):
    pass


def _custom_models() -> list[Model]:
    from playground.providers.models import CustomEndpoint

    found = []
    for endpoint in CustomEndpoint.objects.order_by("name"):
        provider = Provider(
            endpoint.slug,
            endpoint.name,
            endpoint.base_url,
            requires_key=endpoint.requires_key,
            custom=True,
        )
        caps = frozenset({SYSTEM_ROLE} | ({IMAGES} if endpoint.supports_images else set()))
        for model_id in endpoint.model_list():
            found.append(
                Model(
                    provider,
                    model_id,
                    f"{model_id} ({endpoint.name})",
                    capabilities=caps,
                    context_window=endpoint.context_window,
                    max_output=endpoint.max_output,
                )
            )
    return found


def all_models() -> list[Model]:
    """Every model a user can pick. Reads the database: call from sync code."""
    return [*BUILTIN_MODELS, *_custom_models()]


def get_model(key: str) -> Model:
    for model in all_models():
        if model.key == key:
            return model
    raise UnknownModel(key)


def providers() -> list[Provider]:
    seen: dict[str, Provider] = {}
    for model in all_models():
        seen.setdefault(model.provider.slug, model.provider)
    return list(seen.values())
