"""The baseline: a plain httpx client streaming straight from the fake upstream.

It posts the very body the playground sent upstream (taken from the upstream's records, with
the stream tag swapped) to the same /v1/chat/completions, with the same pacing as the
playground streams it is compared with, and times the first content delta the same way the
WebSocket client does (`time.time()` before the request, `time.time()` when the first chunk
with non-empty `content` is parsed). It reads every reply to its end, like the playground.

One shared `httpx.AsyncClient` with keep-alive: the best a client can do, so connection set-up
the playground pays and a pooled client would not shows up as added latency.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

_TAG = re.compile(r"\[bench-[\w-]+\]")


@dataclass
class DirectResult:
    tag: str
    sent_at: float = 0.0  # time.time() just before the request
    first_text_at: float | None = None  # time.time() when the first content delta was parsed
    done_at: float | None = None
    text: str = ""
    error: str = ""

    @property
    def ttft_ms(self) -> float | None:
        if self.first_text_at is None:
            return None
        return (self.first_text_at - self.sent_at) * 1000


def body_for(template: dict[str, Any], tag: str) -> dict[str, Any]:
    """The playground's upstream request body with its `[bench-…]` tag replaced by `[tag]`
    (the upstream attributes only `bench-` tags to playground streams)."""
    body = copy.deepcopy(template)
    for message in body.get("messages") or []:
        if isinstance(message.get("content"), str):
            message["content"] = _TAG.sub(f"[{tag}]", message["content"])
    return body


def new_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0), proxy=None)


async def stream_once(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    tag: str,
    *,
    delay: float = 0.0,
) -> DirectResult:
    result = DirectResult(tag=tag)
    if delay:
        await asyncio.sleep(delay)
    try:
        result.sent_at = time.time()
        async with http.stream("POST", url, json=body, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if result.first_text_at is None:
                            result.first_text_at = time.time()
                        result.text += content
        result.done_at = time.time()
    except Exception as exc:  # noqa: BLE001 - reported per request
        result.error = repr(exc)
    return result


async def run_direct(
    http: httpx.AsyncClient,
    chat_url: str,
    template: dict[str, Any],
    api_key: str,
    n: int,
    *,
    tag_prefix: str,
    ramp: float = 0.0,
) -> list[DirectResult]:
    """n requests, started spread evenly over `ramp` seconds (0: all at once), as run_streams
    spreads the playground's sends."""
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {api_key}"}
    tasks = [
        stream_once(
            http,
            chat_url,
            body_for(template, f"{tag_prefix}-{i}"),
            headers,
            f"{tag_prefix}-{i}",
            delay=ramp * i / n if n > 1 else 0.0,
        )
        for i in range(n)
    ]
    return list(await asyncio.gather(*tasks))
