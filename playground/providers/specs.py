"""What a provider, a model and a request parameter are, and the built-in ones, as plain data.

Transcribed from the provider pages in shared/seeds/, which win where this file disagrees;
tests/test_catalog.py reads the pages and compares. Django-free on purpose, like client.py and
params.py: the specs drive the page's controls, validation, the request body and the cost under
a reply, and all of that can be used and tested without settings or a database. Looking models
up, custom endpoints and per-deployment base URLs are catalog.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

IMAGES = "images"
TOOLS = "tools"
JSON_OUTPUT = "json_output"
THINKING = "thinking"
LOGPROBS = "logprobs"
SYSTEM_ROLE = "system_role"
# json_object works on any model with JSON_OUTPUT; a schema needs a server that enforces one
# (llama-cpp-python refuses json_schema: "Input should be 'text' or 'json_object'").
JSON_SCHEMA = "json_schema"

# The wire formats a model may be served over (formats.py maps requests and streams).
CHAT = "chat"
RESPONSES = "responses"
MESSAGES = "messages"
FORMAT_LABELS = {CHAT: "Chat Completions", RESPONSES: "Responses", MESSAGES: "Messages"}


@dataclass(frozen=True)
class Param:
    """One documented request parameter.

    `min`/`max` are the documented bounds the server enforces (`None`: the page gives none);
    `ui_min`/`ui_max` bound the slider where the page is silent, and the help text says so.
    """

    name: str
    type: str  # number | integer | boolean | enum | string_list | token_bias | tools | ...
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    max_items: int | None = None
    help: str = ""
    ui_min: float | None = None
    ui_max: float | None = None
    capability: str | None = None  # the panel section it belongs to
    body_name: str | None = None  # its key in the request body, when not `name`

    @property
    def sent_as(self) -> str:
        return self.body_name or self.name

    @property
    def slider_min(self) -> float | None:
        return self.min if self.min is not None else self.ui_min

    @property
    def slider_max(self) -> float | None:
        return self.max if self.max is not None else self.ui_max

    @property
    def is_numeric(self) -> bool:
        return self.type in ("number", "integer")


@dataclass(frozen=True)
class Provider:
    slug: str
    name: str
    base_url: str  # as documented; a deployment may point elsewhere (catalog.endpoint)
    requires_key: bool = True
    custom: bool = False


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
    # The server counts tokens at /tokenize (llama.cpp, vLLM): usage it does not send is
    # estimated from there instead of from the number of streamed chunks.
    tokenize: bool = False
    # The wire formats its provider serves it over, Chat Completions first (the default).
    formats: tuple[str, ...] = (CHAT,)

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


EMPIRIOLABS = Provider(
    slug="empiriolabs", name="EmpirioLabs", base_url="https://api.empiriolabs.ai/v1"
)
AIMLAPI = Provider(slug="aimlapi", name="AI/ML API", base_url="https://api.aimlapi.com/v1")
BUILTIN_PROVIDERS = {p.slug: p for p in (EMPIRIOLABS, AIMLAPI)}

# The rows of the page's parameter table; the last two are not rows there but how its
# "function tools" and "structured JSON output" are asked for.
GEMMA_4_E4B = Model(
    provider=EMPIRIOLABS,
    id="gemma-4-e4b",
    label="Gemma 4 E4B",
    capabilities=frozenset({IMAGES, TOOLS, JSON_OUTPUT, THINKING, LOGPROBS, SYSTEM_ROLE}),
    context_window=8192,
    max_output=4096,
    price_per_message=Decimal("0.03"),
    params=(
        Param(
            name="temperature",
            type="number",
            default=0.7,
            min=0,
            max=2,
            step=0.01,
            help="Sampling temperature. Lower values are more deterministic.",
        ),
        Param(
            name="top_p",
            type="number",
            default=0.95,
            min=0,
            max=1,
            step=0.01,
            help="Nucleus sampling probability mass.",
        ),
        Param(
            name="min_p",
            type="number",
            default=0,
            min=0,
            max=1,
            step=0.01,
            help="Minimum token probability filter.",
        ),
        Param(
            name="max_tokens",
            type="integer",
            default=4096,
            min=1,
            max=4096,
            step=1,
            help="Maximum output tokens.",
        ),
        Param(
            name="stop",
            type="string_list",
            help="One or more stop strings.",
        ),
        Param(
            name="seed",
            type="integer",
            min=0,
            max=2147483647,
            step=1,
            help="Optional deterministic sampling seed.",
        ),
        Param(
            name="presence_penalty",
            type="number",
            default=0,
            min=-2,
            max=2,
            step=0.01,
            help="Penalize tokens that already appeared.",
        ),
        Param(
            name="frequency_penalty",
            type="number",
            default=0,
            min=-2,
            max=2,
            step=0.01,
            help="Penalize repeated tokens by frequency.",
        ),
        Param(
            name="repetition_penalty",
            type="number",
            default=1,
            min=0.1,
            max=2,
            step=0.01,
            help="Discourage exact repeated text.",
        ),
        Param(
            name="enable_thinking",
            type="boolean",
            default=True,
            help="Enable the model reasoning channel before final output.",
            capability=THINKING,
        ),
        Param(
            name="reasoning_effort",
            type="enum",
            choices=("low", "medium", "high"),
            help="OpenAI-compatible hint. Medium and high enable thinking mode.",
            capability=THINKING,
        ),
        Param(
            name="logprobs",
            type="boolean",
            default=False,
            help="Return token log probabilities when supported.",
            capability=LOGPROBS,
        ),
        Param(
            name="top_logprobs",
            type="integer",
            min=0,
            max=20,
            step=1,
            help="Number of alternate token log probabilities to return.",
            capability=LOGPROBS,
        ),
        Param(
            name="tools",
            type="tools",
            help="OpenAI-compatible function tool definitions (a JSON array).",
            capability=TOOLS,
        ),
        Param(
            name="tool_choice",
            type="tool_choice",
            help="auto, none, required, or the name of one function.",
            capability=TOOLS,
        ),
        Param(
            name="response_format",
            type="response_format",
            help="Structured JSON output: any JSON object, or one matching a schema.",
            capability=JSON_OUTPUT,
        ),
    ),
    notes="Billed $0.03 per successful message. Thinking is on by default.",
    # The page lists POST /v1/chat/completions, /v1/responses and /v1/messages for the model.
    formats=(CHAT, RESPONSES, MESSAGES),
)

# The page's API schema, in its order, then logit_bias from its sample request. Where it
# gives no range, ui_min/ui_max bound the control and the help text says so.
GEMMA_3N_E4B = Model(
    provider=AIMLAPI,
    id="google/gemma-3n-e4b-it",
    label="Gemma 3n E4B",
    capabilities=frozenset(),
    formats=(CHAT,),  # the page documents only POST /v1/chat/completions
    # The AI/ML API page documents no context window, output cap or price.
    params=(
        Param(
            name="max_completion_tokens",
            type="integer",
            default=512,
            min=1,
            step=1,
            help="Upper bound for visible output plus reasoning tokens. No upper bound is "
            "documented; the slider stops at 8192.",
            ui_max=8192,
        ),
        Param(
            name="max_tokens",
            type="integer",
            default=512,
            min=1,
            step=1,
            help="Maximum tokens generated. No upper bound is documented; the slider stops "
            "at 8192.",
            ui_max=8192,
        ),
        Param(
            name="temperature",
            type="number",
            min=0,
            max=2,
            step=0.01,
            help="Sampling temperature, between 0 and 2.",
        ),
        Param(
            name="top_p",
            type="number",
            min=0.01,
            max=1,
            step=0.01,
            help="Nucleus sampling probability mass.",
        ),
        Param(
            name="seed",
            type="integer",
            min=1,
            step=1,
            help="Best-effort deterministic sampling (beta). No upper bound is documented; "
            "the box takes up to 2147483647.",
            ui_max=2147483647,
        ),
        Param(
            name="min_p",
            type="number",
            min=0,
            max=1,
            step=0.01,
            help="Between 0 and 1; an alternative to top_p and top_k.",
        ),
        Param(
            name="top_k",
            type="number",
            step=1,
            help="Sample from the top K tokens. No range is documented; the slider covers "
            "0 to 200.",
            ui_min=0,
            ui_max=200,
        ),
        Param(
            name="repetition_penalty",
            type="number",
            step=0.01,
            help="Higher values reduce repetition. No range is documented; the slider "
            "covers 0 to 2.",
            ui_min=0,
            ui_max=2,
        ),
        Param(
            name="top_a",
            type="number",
            max=1,
            step=0.01,
            help="Alternate top sampling, at most 1. No lower bound is documented; the "
            "slider starts at 0.",
            ui_min=0,
        ),
        Param(
            name="stop",
            type="string_list",
            max_items=4,
            help="Up to 4 sequences where generation stops.",
        ),
        Param(
            name="logit_bias",
            type="token_bias",
            help="Token id → bias added to its logit. No range is documented; the editor "
            "takes -100 to 100.",
            ui_min=-100,
            ui_max=100,
        ),
    ),
)

BUILTIN_MODELS = (GEMMA_4_E4B, GEMMA_3N_E4B)


# ---------------------------------------------------------------------------------------------
# Custom endpoints: the parameters a team's own OpenAI-compatible server takes
# ---------------------------------------------------------------------------------------------
#
# What the servers accept in a /v1/chat/completions body, from their documentation:
# - The OpenAI Chat Completions set (temperature 0-2, top_p 0-1, max_tokens, stop (up to 4),
#   seed, presence/frequency_penalty -2..2, logprobs, top_logprobs 0-20, tools, tool_choice,
#   response_format), which vLLM and llama.cpp both implement.
# - vLLM ("Extra Parameters for Chat API" in its OpenAI-compatible server docs, fields of
#   SamplingParams): top_k (-1 or 0 turns it off, else at least 1; no upper bound), min_p
#   (0 to 1), repetition_penalty (above 0, 1 is neutral; no upper bound).
# - llama.cpp's llama-server (tools/server/README.md: "/completion-specific features such as
#   mirostat are also supported" on /v1/chat/completions): top_k (default 40, 0 turns it
#   off), min_p (default 0.05), repeat_penalty (default 1.0 in current builds, 1.1 in older
#   ones; 1 is neutral). repeat_penalty is vLLM's repetition_penalty under another name, so
#   the page shows one control, sent as the name the endpoint's server reads. llama.cpp
#   ignores a repetition_penalty it does not know, and vLLM one called repeat_penalty.
# Neither documents upper bounds for top_k or the penalty: those sliders are UI-only ranges
# and their help says so, as for the built-in models.

GROUP_OPENAI = "openai"
GROUP_VLLM = "vllm"
GROUP_LLAMACPP = "llamacpp"
PARAM_GROUPS = {
    GROUP_OPENAI: "OpenAI Chat Completions parameters",
    GROUP_VLLM: "vLLM sampling extras (top_k, min_p, repetition_penalty)",
    GROUP_LLAMACPP: "llama.cpp sampling extras (top_k, min_p, repeat_penalty)",
}
DEFAULT_GROUPS = (GROUP_OPENAI,)
UI_MAX_TOKENS = 8192

_OPENAI_SAMPLING = (
    Param(
        name="temperature",
        type="number",
        min=0,
        max=2,
        step=0.01,
        help="Sampling temperature, 0 to 2. Unset: the server's default applies.",
    ),
    Param(
        name="top_p",
        type="number",
        min=0,
        max=1,
        step=0.01,
        help="Nucleus sampling probability mass, 0 to 1.",
    ),
)
_OPENAI_AFTER_EXTRAS = (
    Param(
        name="stop",
        type="string_list",
        max_items=4,
        help="Up to 4 sequences where generation stops.",
    ),
    Param(
        name="seed",
        type="integer",
        min=0,
        step=1,
        ui_max=2147483647,
        help="Seed for reproducible sampling. No upper bound is documented; the box takes "
        "up to 2147483647.",
    ),
    Param(
        name="presence_penalty",
        type="number",
        min=-2,
        max=2,
        step=0.01,
        help="Penalize tokens that already appeared, -2 to 2.",
    ),
    Param(
        name="frequency_penalty",
        type="number",
        min=-2,
        max=2,
        step=0.01,
        help="Penalize tokens by how often they appeared, -2 to 2.",
    ),
)
_OPENAI_LOGPROBS = (
    Param(
        name="logprobs",
        type="boolean",
        default=False,
        help="Return token log probabilities.",
        capability=LOGPROBS,
    ),
    Param(
        name="top_logprobs",
        type="integer",
        min=0,
        max=20,
        step=1,
        help="Alternative tokens to return per position, 0 to 20.",
        capability=LOGPROBS,
    ),
)
_OPENAI_TOOLS = (
    Param(
        name="tools",
        type="tools",
        help="OpenAI-compatible function tool definitions (a JSON array).",
        capability=TOOLS,
    ),
    Param(
        name="tool_choice",
        type="tool_choice",
        help="auto, none, required, or the name of one function.",
        capability=TOOLS,
    ),
)


def _sampling_extras(group: str) -> tuple[Param, ...]:
    penalty_name = "repeat_penalty" if group == GROUP_LLAMACPP else "repetition_penalty"
    off = "0 turns it off" if group == GROUP_LLAMACPP else "-1 or 0 turns it off"
    return (
        Param(
            name="top_k",
            type="integer",
            min=-1,
            step=1,
            ui_min=-1,
            ui_max=200,
            help=f"Sample from the K most likely tokens; {off}. No upper bound is "
            "documented; the slider covers -1 to 200.",
        ),
        Param(
            name="min_p",
            type="number",
            min=0,
            max=1,
            step=0.01,
            help="Drop tokens less likely than this fraction of the most likely one, 0 to 1.",
        ),
        Param(
            name="repetition_penalty",
            type="number",
            # Both servers divide by it: vLLM refuses 0 or less, llama.cpp would misbehave.
            min=0.01,
            step=0.01,
            ui_max=2,
            body_name=penalty_name,
            help=f"Sent as {penalty_name}. 1 is neutral, higher discourages repeats; it must be "
            "above 0. No upper bound is documented; the slider stops at 2.",
        ),
    )


def custom_params(
    groups: tuple[str, ...] | list[str],
    capabilities: frozenset[str],
    *,
    max_output: int | None = None,
    context_window: int | None = None,
) -> tuple[Param, ...]:
    """The parameters of a custom endpoint's model: the groups its admin ticked, with the
    capability sections its model has (found by Probe or ticked by hand)."""
    found: list[Param] = []
    if GROUP_OPENAI in groups:
        found.extend(_OPENAI_SAMPLING)
        found.append(_max_tokens(max_output, context_window))
    for extra in (GROUP_VLLM, GROUP_LLAMACPP):
        if extra in groups:
            found.extend(_sampling_extras(extra))
            break  # the form refuses both; one control per name
    if GROUP_OPENAI in groups:
        found.extend(_OPENAI_AFTER_EXTRAS)
        if LOGPROBS in capabilities:
            found.extend(_OPENAI_LOGPROBS)
        if TOOLS in capabilities:
            found.extend(_OPENAI_TOOLS)
        if JSON_OUTPUT in capabilities:
            found.append(_response_format(JSON_SCHEMA in capabilities))
    return tuple(found)


def _max_tokens(max_output: int | None, context_window: int | None) -> Param:
    if max_output:
        return Param(
            name="max_tokens",
            type="integer",
            min=1,
            max=max_output,
            step=1,
            help=f"Maximum output tokens, up to {max_output} (set by the endpoint's admin).",
        )
    cap = context_window or UI_MAX_TOKENS
    return Param(
        name="max_tokens",
        type="integer",
        min=1,
        step=1,
        ui_max=cap,
        help=f"Maximum output tokens. No maximum is known for this model; the slider stops "
        f"at {cap}.",
    )


def _response_format(with_schema: bool) -> Param:
    if with_schema:
        return Param(
            name="response_format",
            type="response_format",
            choices=("json_object", "json_schema"),
            help="Structured JSON output: any JSON object, or one matching a schema.",
            capability=JSON_OUTPUT,
        )
    return Param(
        name="response_format",
        type="response_format",
        choices=("json_object",),
        help="Structured JSON output: any JSON object. This server did not accept a JSON "
        "schema when probed.",
        capability=JSON_OUTPUT,
    )
