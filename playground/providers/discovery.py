"""Setting up a custom endpoint: test the connection, list its models, probe what they accept,
and count tokens the server did not report.

Pure Python like client.py (which sends every request): the views pass in the endpoint and
key, and store what comes back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from playground.providers import formats, specs
from playground.providers.client import (
    Answer,
    ConnectionProblem,
    Endpoint,
    request_json,
)

# Where the servers put a model's context window and output cap in their /v1/models entries:
# vLLM sends max_model_len; others (LM Studio, OpenRouter-style proxies) context_length.
_CONTEXT_KEYS = ("max_model_len", "context_length", "context_window")
_OUTPUT_KEYS = ("max_output_tokens", "max_completion_tokens")

# A 1×1 transparent PNG: the smallest image a vision model's processor accepts.
_PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class Verdict:
    """What one GET /models said about an endpoint."""

    ok: bool
    reason: str  # "" when ok; dns, refused, tls, timeout, address, url, 401, 403, http, ...
    message: str
    reachable: bool = False
    auth_ok: bool | None = None
    models: int | None = None
    rtt_ms: float | None = None


@dataclass(frozen=True)
class Listed:
    id: str
    context_window: int | None = None
    max_output: int | None = None


@dataclass
class ProbeReport:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.results[name] = {"ok": ok, "detail": detail}


async def test_connection(endpoint: Endpoint, api_key: str | None) -> Verdict:
    """One request (GET /models) and a verdict naming exactly what worked or failed."""
    try:
        answer = await request_json(endpoint, api_key, "GET", endpoint.url("models"))
    except ConnectionProblem as problem:
        return Verdict(False, problem.reason, problem.message)
    reached: dict[str, Any] = {"reachable": True, "rtt_ms": answer.elapsed_ms}
    if answer.status in (401, 403):
        said = f": {answer.detail}" if answer.detail else "."
        return Verdict(
            False,
            str(answer.status),
            f"Reachable, but the server refused the key ({answer.status}){said}",
            auth_ok=False,
            **reached,
        )
    if answer.location:
        return Verdict(
            False,
            "redirect",
            f"The server redirects ({answer.status}) to {answer.location}; redirects are not "
            "followed: give that URL instead.",
            **reached,
        )
    if not answer.ok:
        said = f": {answer.detail}" if answer.detail else "."
        return Verdict(False, "http", f"The server answered {answer.status}{said}", **reached)
    listed = _listing(answer)
    if listed is None:
        return Verdict(
            False,
            "listing",
            "Reachable, but the answer is not a model list: does the base URL end in /v1?",
            auth_ok=True,
            **reached,
        )
    return Verdict(
        True,
        "",
        f"Reachable, auth ok, {len(listed)} model{'s' if len(listed) != 1 else ''} listed, "
        f"{answer.elapsed_ms:.0f} ms round trip.",
        auth_ok=True,
        models=len(listed),
        **reached,
    )


async def discover(endpoint: Endpoint, api_key: str | None) -> list[Listed]:
    """The models GET /models lists, with context window and output cap where given.

    Raises ConnectionProblem, or ValueError with the reason the list could not be read."""
    answer = await request_json(endpoint, api_key, "GET", endpoint.url("models"))
    if not answer.ok:
        said = f": {answer.detail}" if answer.detail else "."
        raise ValueError(f"The server answered {answer.status}{said}")
    listed = _listing(answer)
    if listed is None:
        raise ValueError("The answer is not a model list: does the base URL end in /v1?")
    return listed


def _listing(answer: Answer) -> list[Listed] | None:
    payload = answer.payload
    data = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(data, list):
        return None
    found: dict[str, Listed] = {}
    for entry in data:
        if isinstance(entry, str):
            entry = {"id": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        model_id = entry["id"].strip()[:200]
        if model_id and model_id not in found:
            found[model_id] = Listed(
                model_id, _first_int(entry, _CONTEXT_KEYS), _first_int(entry, _OUTPUT_KEYS)
            )
    return list(found.values())


def _first_int(entry: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
            return value
    return None


def _probe_bodies(model_id: str) -> dict[str, dict[str, Any]]:
    """Tiny requests, each adding one feature to a plain one-token request."""
    hello = [{"role": "user", "content": "Say OK."}]
    base = {"model": model_id, "messages": hello, "max_tokens": 1, "stream": False}
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    tool = {
        "type": "function",
        "function": {
            "name": "ping",
            "description": "Answers pong.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    image = [
        {"type": "text", "text": "Say OK."},
        {"type": "image_url", "image_url": {"url": _PIXEL}},
    ]
    return {
        "basic": base,
        specs.IMAGES: {**base, "messages": [{"role": "user", "content": image}]},
        specs.TOOLS: {**base, "tools": [tool], "tool_choice": "auto"},
        specs.JSON_SCHEMA: {
            **base,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "probe", "schema": schema},
            },
        },
        specs.LOGPROBS: {**base, "logprobs": True, "top_logprobs": 1},
        # A reasoning model starts with its thoughts: a few tokens show whether they come
        # back as reasoning_content (vLLM, llama.cpp) or reasoning.
        specs.THINKING: {**base, "max_tokens": 16},
    }


async def probe(endpoint: Endpoint, api_key: str | None, model_id: str) -> dict[str, Any]:
    """Send the tiny requests one by one and report what the server accepted.

    One at a time on purpose: a llama.cpp server has few slots, and people are using it."""
    report = ProbeReport()
    bodies = _probe_bodies(model_id)
    try:
        basic = await request_json(endpoint, api_key, "POST", endpoint.chat_url, bodies["basic"])
    except ConnectionProblem as problem:
        report.add("basic", False, problem.message)
        return report.results
    if not basic.ok:
        report.add("basic", False, _refusal(basic))
        return report.results
    report.add("basic", True, f"answered in {basic.elapsed_ms:.0f} ms")
    for name in (specs.IMAGES, specs.TOOLS, specs.JSON_SCHEMA, specs.LOGPROBS, specs.THINKING):
        try:
            answer = await request_json(endpoint, api_key, "POST", endpoint.chat_url, bodies[name])
        except ConnectionProblem as problem:
            report.add(name, False, problem.message)
            continue
        if not answer.ok:
            report.add(name, False, _refusal(answer))
        elif name == specs.LOGPROBS and not _choice(answer).get("logprobs"):
            report.add(name, False, "accepted, but no log probabilities came back")
        elif name == specs.THINKING and not _reasoning(answer):
            report.add(name, False, "no reasoning in a short reply")
        else:
            report.add(name, True, "accepted")
    for fmt, body in _format_bodies(model_id).items():
        report.add(fmt, *await _probe_format(endpoint, api_key, fmt, body))
    count = await count_tokens(endpoint, api_key, model_id, "Hello there")
    if count is None:
        report.add("tokenize", False, "no /tokenize: token counts are estimated from chunks")
    else:
        report.add("tokenize", True, f"/tokenize counted {count} tokens in 'Hello there'")
    return report.results


def _format_bodies(model_id: str) -> dict[str, dict[str, Any]]:
    """One tiny non-streamed request in each other wire format, as its reference shapes it."""
    return {
        # Responses: max_output_tokens must be at least 16 in OpenAI's reference.
        specs.RESPONSES: {"model": model_id, "input": "Say OK.", "max_output_tokens": 16},
        specs.MESSAGES: {
            "model": model_id,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "Say OK."}],
        },
    }


async def _probe_format(
    endpoint: Endpoint, api_key: str | None, fmt: str, body: dict[str, Any]
) -> tuple[bool, str]:
    wire = formats.WIRES[fmt]
    headers = wire.headers(endpoint, api_key)
    try:
        answer = await request_json(
            endpoint, api_key, "POST", endpoint.url(wire.path), body, headers=headers
        )
    except ConnectionProblem as problem:
        return False, problem.message
    if not answer.ok:
        return False, _refusal(answer)
    payload = answer.payload if isinstance(answer.payload, dict) else {}
    # A server may answer any path with a chat completion, or a page: only the format's own
    # object counts (a Response with "output", a Message with "content").
    speaks = (
        payload.get("object") == "response" and isinstance(payload.get("output"), list)
        if fmt == specs.RESPONSES
        else payload.get("type") == "message" and isinstance(payload.get("content"), list)
    )
    if not speaks:
        return False, f"answered, but not with a {wire.label} object"
    return True, f"answered in {answer.elapsed_ms:.0f} ms"


def _refusal(answer: Answer) -> str:
    return f"refused ({answer.status})" + (f": {answer.detail}" if answer.detail else "")


def _choice(answer: Answer) -> dict[str, Any]:
    payload = answer.payload if isinstance(answer.payload, dict) else {}
    choices = payload.get("choices") or [{}]
    first = choices[0] if isinstance(choices, list) and choices else {}
    return first if isinstance(first, dict) else {}


def _reasoning(answer: Answer) -> bool:
    message = _choice(answer).get("message") or {}
    return isinstance(message, dict) and bool(
        message.get("reasoning_content") or message.get("reasoning")
    )


async def count_tokens(
    endpoint: Endpoint, api_key: str | None, model_id: str, text: str, *, timeout: float = 3.0
) -> int | None:
    """Tokens in `text` by the server's own tokenizer, or None where it has no /tokenize.

    One body serves both servers: llama.cpp's POST /tokenize reads "content" and answers
    {"tokens": [...]}; vLLM's reads "model" and "prompt" and answers {"count", "tokens",
    "max_model_len"}. Each ignores the other's fields."""
    body = {"model": model_id, "prompt": text, "content": text}
    try:
        async with asyncio.timeout(timeout):
            answer = await request_json(
                endpoint, api_key, "POST", endpoint.server_root + "/tokenize", body
            )
    except (ConnectionProblem, TimeoutError):
        return None
    payload = answer.payload if answer.ok and isinstance(answer.payload, dict) else {}
    if isinstance(payload.get("count"), int):
        return int(payload["count"])
    tokens = payload.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None
