"""A reply's exact request as code: curl, Python with the openai SDK, Python with httpx.

The key is always an environment-variable placeholder, never the key itself.
"""

from __future__ import annotations

import json
import pprint
import re
from typing import Any

from playground.providers import catalog
from playground.providers.specs import Provider

# Parameters the openai SDK takes as keyword arguments; anything else (enable_thinking, min_p,
# top_k, ...) has to travel in extra_body.
OPENAI_KWARGS = {
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "stop", "seed", "presence_penalty", "frequency_penalty",
    "logprobs", "top_logprobs", "tools", "tool_choice", "response_format", "logit_bias",
    "reasoning_effort", "n", "user",
}  # fmt: skip


def key_variable(provider: Provider) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", provider.slug.upper()).strip("_") + "_API_KEY"


def _url(provider: Provider) -> str:
    return catalog.endpoint(provider).base_url.rstrip("/")


def as_curl(body: dict[str, Any], provider: Provider) -> str:
    payload = json.dumps(body, indent=2, ensure_ascii=False)
    return (
        f"curl {_url(provider)}/chat/completions \\\n"
        f'  -H "Authorization: Bearer ${key_variable(provider)}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        "  -d @- <<'JSON'\n"
        f"{payload}\n"
        "JSON\n"
    )


def _literal(value: Any) -> str:
    return pprint.pformat(value, indent=4, width=88, sort_dicts=False)


def as_openai_python(body: dict[str, Any], provider: Provider) -> str:
    kwargs = {k: v for k, v in body.items() if k in OPENAI_KWARGS}
    extra = {k: v for k, v in body.items() if k not in OPENAI_KWARGS}
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
    call = "client.chat.completions.create(**request)"
    if extra:
        lines.append(f"extra_body = {_literal(extra)}")
        call = "client.chat.completions.create(**request, extra_body=extra_body)"
    lines += [
        f"stream = {call}",
        "for chunk in stream:",
        "    if chunk.choices and chunk.choices[0].delta.content:",
        '        print(chunk.choices[0].delta.content, end="", flush=True)',
        "print()",
    ]
    return "\n".join(lines) + "\n"


def as_httpx_python(body: dict[str, Any], provider: Provider) -> str:
    lines = [
        "import json",
        "import os",
        "",
        "import httpx",
        "",
        f"body = {_literal(body)}",
        "headers = {",
        f'    "Authorization": f"Bearer {{os.environ[{key_variable(provider)!r}]}}",',
        "}",
        "with httpx.stream(",
        f'    "POST", {_url(provider) + "/chat/completions"!r}, json=body, headers=headers,',
        "    timeout=httpx.Timeout(10, read=120),",
        ") as response:",
        "    response.raise_for_status()",
        "    for line in response.iter_lines():",
        '        if not line.startswith("data:") or line == "data: [DONE]":',
        "            continue",
        '        chunk = json.loads(line.removeprefix("data:"))',
        '        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):',
        '            print(chunk["choices"][0]["delta"]["content"], end="", flush=True)',
        "print()",
    ]
    return "\n".join(lines) + "\n"


def snippets(body: dict[str, Any], provider: Provider) -> list[tuple[str, str, str]]:
    """(id, label, code) for each way of sending the request."""
    return [
        ("curl", "curl", as_curl(body, provider)),
        ("openai", "Python (openai)", as_openai_python(body, provider)),
        ("httpx", "Python (httpx)", as_httpx_python(body, provider)),
    ]
