"""A reply's exact request as code: curl, Python with its format's SDK, Python with httpx.

Chat Completions and Responses replies get the openai SDK (`chat.completions.create`,
`responses.create`), Messages replies the anthropic SDK (`messages.create`); each snippet sends
the body the playground sent (formats.to_wire), to the same path, with the same headers.
The key is always an environment-variable placeholder, never the key itself.
"""

from __future__ import annotations

import json
import pprint
import re
import shlex
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from playground.providers import catalog, formats
from playground.providers.specs import CHAT, MESSAGES, RESPONSES, Model, Provider

# Parameters the openai SDK takes as keyword arguments; anything else (enable_thinking, min_p,
# top_k, ...) has to travel in extra_body.
OPENAI_KWARGS = {
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "stop", "seed", "presence_penalty", "frequency_penalty",
    "logprobs", "top_logprobs", "tools", "tool_choice", "response_format", "logit_bias",
    "reasoning_effort", "n", "user",
}  # fmt: skip
# responses.create()'s keywords (openai-python, resources/responses); others go in extra_body.
RESPONSES_KWARGS = {
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p",
    "top_logprobs", "reasoning", "text", "tools", "tool_choice", "include", "stream",
    "parallel_tool_calls", "metadata", "store", "user",
}  # fmt: skip
# messages.create()'s keywords in anthropic-sdk-python 2.x. It no longer lists temperature,
# top_p and top_k (refused from anthropic-version 2026-10-21 on); the playground sends them
# under 2023-06-01, so the snippet pins that version and passes them in extra_body.
ANTHROPIC_KWARGS = {
    "model", "max_tokens", "messages", "system", "stop_sequences", "stream", "thinking",
    "tools", "tool_choice", "output_config", "metadata",
}  # fmt: skip
PRINT_TEXT = {
    CHAT: [
        "for chunk in stream:",
        "    if chunk.choices and chunk.choices[0].delta.content:",
        '        print(chunk.choices[0].delta.content, end="", flush=True)',
    ],
    RESPONSES: [
        "for event in stream:",
        '    if event.type == "response.output_text.delta":',
        '        print(event.delta, end="", flush=True)',
    ],
    MESSAGES: [
        "for event in stream:",
        '    if event.type == "content_block_delta" and event.delta.type == "text_delta":',
        '        print(event.delta.text, end="", flush=True)',
    ],
}
# The same, for the parsed `data:` payload of each event in the httpx snippet.
PRINT_DATA = {
    CHAT: [
        '        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):',
        '            print(chunk["choices"][0]["delta"]["content"], end="", flush=True)',
    ],
    RESPONSES: [
        '        if chunk.get("type") == "response.output_text.delta":',
        '            print(chunk["delta"], end="", flush=True)',
    ],
    MESSAGES: [
        '        if chunk.get("type") == "content_block_delta" and '
        'chunk["delta"].get("type") == "text_delta":',
        '            print(chunk["delta"]["text"], end="", flush=True)',
    ],
}


def key_variable(provider: Provider) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", provider.slug.upper()).strip("_") + "_API_KEY"


def _url(provider: Provider) -> str:
    """The base URL without a user:password part: a deployment may route a provider through
    a gateway whose URL carries its password (PLAYGROUND_PROVIDER_BASE_URLS), and every
    reader of a reply's code would see it. The reader's own credentials go in its place."""
    parts = urlsplit(catalog.endpoint(provider).base_url.rstrip("/"))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _headers(provider: Provider, fmt: str) -> list[str]:
    """The headers the playground sends, with the key as a shell variable."""
    key = f"${key_variable(provider)}"
    if fmt != MESSAGES:
        return [f"Authorization: Bearer {key}"]
    return [f"x-api-key: {key}", f"Authorization: Bearer {key}",
            f"anthropic-version: {formats.ANTHROPIC_VERSION}"]  # fmt: skip


def as_curl(body: dict[str, Any], provider: Provider, fmt: str = CHAT) -> str:
    payload = json.dumps(body, indent=2, ensure_ascii=False)
    headers = "".join(f'  -H "{header}" \\\n' for header in _headers(provider, fmt))
    # Quoted: an endpoint's base URL is an admin's text, and `$(…)` or `&` in it would run
    # or cut the command in the user's shell. A plain URL needs no quotes and gets none.
    url = shlex.quote(f"{_url(provider)}{formats.PATHS[fmt]}")
    return (
        f"curl {url} \\\n"
        f"{headers}"
        '  -H "Content-Type: application/json" \\\n'
        "  -d @- <<'JSON'\n"
        f"{payload}\n"
        "JSON\n"
    )


def _literal(value: Any) -> str:
    return pprint.pformat(value, indent=4, width=88, sort_dicts=False)


def as_openai_python(body: dict[str, Any], provider: Provider, fmt: str = CHAT) -> str:
    known = RESPONSES_KWARGS if fmt == RESPONSES else OPENAI_KWARGS
    method = "client.responses.create" if fmt == RESPONSES else "client.chat.completions.create"
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    lines = [
        "import os",
        "",
        "from openai import OpenAI",
        "",
        "client = OpenAI(",
        f"    base_url={_url(provider)!r},",
        f"    api_key=os.environ[{key_variable(provider)!r}],",
        ")",
        f"request = {_literal(kwargs)}",
    ]
    call = f"{method}(**request)"
    if extra:
        lines.append(f"extra_body = {_literal(extra)}")
        call = f"{method}(**request, extra_body=extra_body)"
    lines += [f"stream = {call}", *PRINT_TEXT[fmt], "print()"]
    return "\n".join(lines) + "\n"


def as_anthropic_python(body: dict[str, Any], provider: Provider) -> str:
    kwargs = {k: v for k, v in body.items() if k in ANTHROPIC_KWARGS}
    extra = {k: v for k, v in body.items() if k not in ANTHROPIC_KWARGS}
    # The SDK adds /v1/messages to its base URL itself.
    root = _url(provider).removesuffix("/v1")
    lines = [
        "import os",
        "",
        "from anthropic import Anthropic",
        "",
        "client = Anthropic(",
        f"    base_url={root!r},",
        f"    api_key=os.environ[{key_variable(provider)!r}],",
        f'    default_headers={{"anthropic-version": {formats.ANTHROPIC_VERSION!r}}},',
        ")",
        f"request = {_literal(kwargs)}",
    ]
    call = "client.messages.create(**request)"
    if extra:
        lines.append(f"extra_body = {_literal(extra)}")
        call = "client.messages.create(**request, extra_body=extra_body)"
    lines += [f"stream = {call}", *PRINT_TEXT[MESSAGES], "print()"]
    return "\n".join(lines) + "\n"


def as_httpx_python(body: dict[str, Any], provider: Provider, fmt: str = CHAT) -> str:
    variable = f"os.environ[{key_variable(provider)!r}]"
    headers = [f'    "Authorization": f"Bearer {{{variable}}}",']
    if fmt == MESSAGES:
        headers = [
            f'    "x-api-key": {variable},',
            *headers,
            f'    "anthropic-version": {formats.ANTHROPIC_VERSION!r},',
        ]
    lines = [
        "import json",
        "import os",
        "",
        "import httpx",
        "",
        f"body = {_literal(body)}",
        "headers = {",
        *headers,
        "}",
        "with httpx.stream(",
        f'    "POST", {_url(provider) + formats.PATHS[fmt]!r}, json=body, headers=headers,',
        "    timeout=httpx.Timeout(10, read=120),",
        ") as response:",
        "    response.raise_for_status()",
        "    for line in response.iter_lines():",
        '        if not line.startswith("data:") or line == "data: [DONE]":',
        "            continue",
        '        chunk = json.loads(line.removeprefix("data:"))',
        *PRINT_DATA[fmt],
        "print()",
    ]
    return "\n".join(lines) + "\n"


def snippets(body: dict[str, Any], model: Model, fmt: str = CHAT) -> list[tuple[str, str, str]]:
    """(id, label, code) for each way of sending the saved request in its wire format."""
    provider = model.provider
    wire = formats.to_wire(model, fmt, body)
    if fmt == MESSAGES:
        sdk = ("anthropic", "Python (anthropic)", as_anthropic_python(wire, provider))
    else:
        sdk = ("openai", "Python (openai)", as_openai_python(wire, provider, fmt))
    return [
        ("curl", "curl", as_curl(wire, provider, fmt)),
        sdk,
        ("httpx", "Python (httpx)", as_httpx_python(wire, provider, fmt)),
    ]
