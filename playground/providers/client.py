"""All outbound HTTP of the project: streaming Chat Completions from OpenAI-compatible providers.

Pure Python + httpx on purpose: nothing here reads Django settings or models, so it can be used
from views, consumers, management commands and benchmarks alike, and tested without a database.
Everything (endpoint, key, timeouts, client) comes in as arguments.

`stream()` is an async generator of typed events. It never raises for upstream problems: any
failure ends the stream with exactly one `StreamError` whose message is short, plain and safe to
show in a transcript (the API key is scrubbed from everything derived from a provider body).

Note on `django.views.decorators.debug.sensitive_variables`: it is not used. For an async
*generator* Django wraps it in a plain sync function whose frame is gone by the time the
generator body runs, so the marker would protect nothing (and importing Django here would break
the "pure Python" contract). Instead the key is never put into an exception, a dataclass or a
log line; only `build_headers()` and the local `headers` dict hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import html
import json
import logging
import math
import random
import re
import ssl
import string
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx

from playground.providers import netpolicy, readpace
from playground.providers.sse import SSEDecoder, SSEEvent
from playground.providers.storable import replaced

__all__ = [
    "DEFAULT_TIMEOUTS",
    "Endpoint",
    "Event",
    "Finish",
    "LogprobsDelta",
    "ReasoningDelta",
    "ThinkingSignature",
    "RedactedThinking",
    "ResponseId",
    "StreamError",
    "TextDelta",
    "Timeouts",
    "ToolCallDelta",
    "Unreadable",
    "UpstreamError",
    "Usage",
    "aclose_clients",
    "build_headers",
    "get_client",
    "scrub",
    "stream",
]

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
_MAX_PROVIDER_MESSAGE = 300


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingSignature:
    """The signature that closes one thinking block (Messages `signature_delta`): the
    provider's check that the thinking it is later sent back is what it wrote. It covers the
    reasoning since the previous signature."""

    signature: str


@dataclass(frozen=True, slots=True)
class RedactedThinking:
    """A thinking block the provider encrypted (Messages `redacted_thinking`): nothing to
    show, but it must go back to the provider as it came, in its place among the others."""

    data: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class LogprobsDelta:
    content: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    raw: dict[str, Any] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


class UpstreamError(Exception):
    """A provider problem, phrased for the person reading the transcript.

    `message` must already be scrubbed of the API key; `str(exc) == exc.message`.
    """

    KINDS = frozenset(
        {
            "auth",
            "not_found",
            "bad_request",
            "rate_limited",
            "server",
            "connection",
            "timeout",
            "stream",
        }
    )

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown UpstreamError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        # Seconds the provider asked us to wait (429 only); lets callers show a countdown.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Callable[..., UpstreamError], tuple[str, str, dict[str, Any]]]:
        # Keyword-only attributes would otherwise be lost (or break) when pickled.
        state = {"status": self.status, "retry_after": self.retry_after}
        return (_rebuild_upstream_error, (self.kind, self.message, state))

    def __repr__(self) -> str:
        return (
            f"UpstreamError(kind={self.kind!r}, status={self.status!r}, message={self.message!r})"
        )


def _rebuild_upstream_error(kind: str, message: str, state: dict[str, Any]) -> UpstreamError:
    return UpstreamError(kind, message, **state)


@dataclass(frozen=True, slots=True)
class StreamError:
    error: UpstreamError


@dataclass(frozen=True, slots=True)
class Unreadable:
    """One `data:` line that is not a chunk (not JSON, or the wrong shape). It is skipped and
    the stream goes on: one garbled line must not throw away the reply around it."""

    reason: str


@dataclass(frozen=True, slots=True)
class ResponseId:
    """The provider's id for this reply (its `x-request-id` header, else the chunks' `id`):
    what its support asks for. Sent once, before the reply's other events."""

    id: str


Event = (
    ResponseId
    | TextDelta
    | ReasoningDelta
    | ThinkingSignature
    | RedactedThinking
    | ToolCallDelta
    | LogprobsDelta
    | Usage
    | Finish
    | StreamError
    | Unreadable
)


# ---------------------------------------------------------------------------------------------
# Other wire formats (formats.py implements these; this module must not import it)
# ---------------------------------------------------------------------------------------------


class Decoder(Protocol):
    """Reads one response of a wire format into events; raises Done at its end marker."""

    def events(self, sse: SSEEvent, api_key: str | None, want_id: bool) -> list[Event]: ...

    def whole(self, payload: dict[str, Any], api_key: str | None = None) -> list[Event]: ...


class Wire(Protocol):
    """How a request in another wire format travels: path, headers, body, decoder."""

    @property
    def path(self) -> str: ...

    def headers(self, endpoint: Endpoint, api_key: str | None) -> dict[str, str]: ...

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def decoder(self) -> Decoder: ...


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    # Custom endpoints: every connection is checked against this (see netpolicy.py).
    policy: netpolicy.AddressPolicy | None = None

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    @property
    def server_root(self) -> str:
        """The server's own root: llama.cpp and vLLM serve /tokenize beside /v1, not in it."""
        return self.base_url.rstrip("/").removesuffix("/v1")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 120.0  # per read, so it also bounds a model's silent "thinking" pause
    write: float = 30.0
    pool: float = 10.0
    retry_after_cap: float = 20.0
    max_retries: int = 2
    backoff_base: float = 0.5
    # Idle pooled connections are closed after this long. Servers close them as well: uvicorn
    # (so vLLM), llama.cpp's server and Node after 5 s, and a request sent on a connection the
    # server has just closed fails. 4 s stays a second under those 5 s because the server's
    # clock starts when it wrote the end of a response and ours only when that arrived; turns
    # further apart pay one new connection. Servers with shorter timeouts (gunicorn's 2 s) are
    # covered by the retry on a dead reused connection in _stream().
    keepalive_expiry: float = 4.0
    # Once a reply's first text, reasoning or tool call has arrived, its connection is read
    # at most once per `pace` seconds, each read taking all that came meanwhile (readpace.py).
    # 0 reads every chunk as it comes. The first token is never held.
    pace: float = 0.0

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


DEFAULT_TIMEOUTS = Timeouts()


def scrub(text: str, secret: str | None) -> str:
    """Replace every occurrence of `secret` in `text` (providers echo keys in error bodies)."""
    if not secret or not text:
        return text
    return text.replace(secret, REDACTED)


def build_headers(endpoint: Endpoint, api_key: str | None) -> dict[str, str]:
    """Request headers; no auth header at all when there is no key (self-hosted llama.cpp)."""
    headers = {"Accept": "text/event-stream"}
    if api_key:
        scheme = endpoint.auth_scheme.strip()
        headers[endpoint.auth_header] = f"{scheme} {api_key}" if scheme else api_key
    return headers


# ---------------------------------------------------------------------------------------------
# Pooled clients
# ---------------------------------------------------------------------------------------------

# Clients per event loop: an httpx.AsyncClient's connections are bound to the loop that opened
# them, and tests (and Daphne vs. management commands) run several loops in one process.
#
# Each loop has a few clients, filled in order. httpcore's pool scans every connection it holds
# whenever a request starts or ends, so one pool of 200 streaming connections spent a fifth of
# the relay's CPU in that scan (py-spy, bench.relay with 200 streams). Quiet traffic stays on
# the first client and keeps reusing its warm connections.
SHARD_STREAMS = 32


@dataclass
class _Shards:
    keepalive_expiry: float
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    active: list[int] = field(default_factory=list)

    def lease(self) -> int:
        for index, count in enumerate(self.active):
            if count < SHARD_STREAMS and not self.clients[index].is_closed:
                self.active[index] += 1
                return index
        self.clients.append(_new_client(self.keepalive_expiry))
        self.active.append(1)
        return len(self.clients) - 1

    def release(self, index: int) -> None:
        self.active[index] -= 1


# Per loop, one set of shards per keep-alive expiry: the expiry belongs to a client's pool, so
# a request asking for another one must not borrow a pool built with the first. In practice a
# process uses one value (the setting) and this dict has one entry.
_shards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Shards]] = (
    weakref.WeakKeyDictionary()
)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Left to itself, every AsyncClient builds its own context and loads the CA bundle into it
    # (about 25 ms of CPU here, for each shard of each loop, even for http:// base URLs). This
    # is the very call httpx makes for verify=True (certifi's bundle, or SSL_CERT_FILE /
    # SSL_CERT_DIR), once per process, so verification is unchanged. httpcore sets ALPN on it
    # at each connect; every client here speaks HTTP/1.1 only, so that value never varies.
    return httpx.create_ssl_context()


def warm() -> None:
    """Build now what the first upstream request of a process would otherwise build: the
    SSL context (25-50 ms of CPU, measured), which the first send after every start waited
    for. Called at start-up (asgi.py)."""
    _ssl_context()


def _new_client(keepalive_expiry: float) -> httpx.AsyncClient:
    context = _ssl_context()
    return readpace.client(
        readpace.transport(context, keepalive_expiry),
        timeout=DEFAULT_TIMEOUTS.as_httpx(),
        follow_redirects=False,
        verify=context,
    )


def _loop_shards(keepalive_expiry: float = DEFAULT_TIMEOUTS.keepalive_expiry) -> _Shards:
    loop = asyncio.get_running_loop()
    pools = _shards.get(loop)
    if pools is None:
        # Forget clients of loops that are gone; their sockets die with the loop.
        for old in [lp for lp in _shards if lp.is_closed()]:
            _shards.pop(old, None)
        pools = _shards[loop] = {}
    shards = pools.get(keepalive_expiry)
    if shards is None:
        shards = pools[keepalive_expiry] = _Shards(keepalive_expiry)
    if not shards.clients or shards.clients[0].is_closed:
        shards.clients[:1] = [_new_client(keepalive_expiry)]
        shards.active[:1] = [0]
    return shards


def get_client() -> httpx.AsyncClient:
    """The running event loop's first shared AsyncClient (created on first use)."""
    return _loop_shards().clients[0]


async def aclose_clients() -> None:
    """Close the running loop's shared clients (call at shutdown / end of a test)."""
    pools = _shards.pop(asyncio.get_running_loop(), {})
    for shards in pools.values():
        for client in shards.clients:
            await client.aclose()
    await netpolicy.aclose_clients()


# ---------------------------------------------------------------------------------------------
# Chunk → events
# ---------------------------------------------------------------------------------------------


class Done(Exception):
    """The stream's end marker was received (`data: [DONE]`, or Messages' message_stop)."""


_Done = Done


def _events_from_chunk(chunk: dict[str, Any]) -> list[Event]:
    """Map one chat.completion.chunk (or a whole chat.completion) to events."""
    events: list[Event] = []
    choices = chunk.get("choices") or []
    if choices:
        choice = choices[0] or {}
        # A non-streamed completion carries "message" where a chunk carries "delta".
        delta = choice.get("delta") or choice.get("message") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        for position, call in enumerate(delta.get("tool_calls") or []):
            events.append(_tool_call_delta(position, call))
        # Logprobs and usage ride along with text: malformed, they are skipped on their own
        # (an Unreadable, noted), never taking the chunk's text with them.
        try:
            logprobs = (choice.get("logprobs") or {}).get("content")
            if logprobs:
                events.append(LogprobsDelta(list(logprobs)))
        except (AttributeError, TypeError, ValueError):
            events.append(Unreadable("The provider sent a malformed chunk."))
        if choice.get("finish_reason"):
            events.append(Finish(str(choice["finish_reason"])))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        try:
            events.append(_usage(usage))
        except (TypeError, ValueError, OverflowError):
            events.append(Unreadable("The provider sent a malformed chunk."))
    return events


def _tool_call_delta(position: int, call: dict[str, Any]) -> ToolCallDelta:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if arguments is None:
        arguments = ""
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments)  # a few servers send parsed objects
    index = call.get("index")
    return ToolCallDelta(
        index=index if isinstance(index, int) else position,
        id=text_or_none(call.get("id")),
        name=text_or_none(function.get("name")),
        arguments=arguments,
    )


def text_or_none(value: Any) -> str | None:
    """A tool call's id or name if it is a non-empty string, else None: the run joins names
    as text (an int there crashed it) and sends ids back to the provider as they came."""
    return value if isinstance(value, str) and value else None


def _usage(usage: dict[str, Any]) -> Usage:
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    return Usage(prompt, completion, total, usage)


MAX_RESPONSE_ID = 200


def _events_from_sse(sse: SSEEvent, api_key: str | None, *, want_id: bool = False) -> list[Event]:
    """Decode one SSE event; raises _Done at [DONE]. Errors come back as a StreamError event.
    With want_id, a chunk's `id` comes first as a ResponseId."""
    if sse.data.strip() == "[DONE]":
        raise _Done
    try:
        payload = json.loads(sse.data)
    except ValueError:
        if sse.event == "error":
            return [StreamError(UpstreamError("stream", clean(sse.data, api_key)))]
        return [Unreadable("The provider sent data that is not JSON.")]
    if not isinstance(payload, dict):
        return [Unreadable("The provider sent an unexpected chunk.")]
    # An error object ends the reply: the provider says it stopped generating.
    if payload.get("error"):
        return [StreamError(mid_stream_error(payload["error"], api_key))]
    try:
        events = _events_from_chunk(payload)
    except (AttributeError, TypeError, ValueError, LookupError, OverflowError):
        # Wrong shapes (e.g. "choices" as a string, or an object: KeyError) must not crash
        # the consumer; nor a count of 1e999, which JSON reads as inf and int() refuses.
        return [Unreadable("The provider sent a malformed chunk.")]
    chunk_id = payload.get("id")
    if want_id and isinstance(chunk_id, str) and chunk_id:
        events.insert(0, ResponseId(chunk_id[:MAX_RESPONSE_ID]))
    return events


def mid_stream_error(error: Any, api_key: str | None) -> UpstreamError:
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or "The provider reported an error."
        code = str(error.get("code") or error.get("type") or "")
    else:
        message, code = str(error), ""
    kind = "stream"
    if "rate_limit" in code or code == "429":
        kind = "rate_limited"
    elif code in {"invalid_api_key", "401", "403"}:
        kind = "auth"
    return UpstreamError(kind, clean(str(message), api_key))


# ---------------------------------------------------------------------------------------------
# HTTP errors
# ---------------------------------------------------------------------------------------------


def clean(text: str, api_key: str | None) -> str:
    """Scrubbed, single-line, truncated provider text."""
    text = " ".join(scrub(text, api_key).split())
    if len(text) > _MAX_PROVIDER_MESSAGE:
        text = text[: _MAX_PROVIDER_MESSAGE - 1].rstrip() + "…"
    return text


def _provider_message(raw: bytes, api_key: str | None) -> str:
    """The provider's own error message from an OpenAI/FastAPI/plain-text error body."""
    text = raw.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return clean(_html_text(text), api_key)
    message: Any = payload
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error
        elif error:
            message = error
        elif isinstance(payload.get("detail"), list):
            message = _validation_detail(payload["detail"])
        else:
            message = payload.get("message") or payload.get("detail") or payload
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    return clean(message, api_key)


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def _html_text(text: str) -> str:
    """A proxy's HTML error page (nginx, Cloudflare) as words: the transcript shows plain
    text, so its markup would appear as such. Its title, else its text without tags."""
    if not text.lstrip()[:15].lower().startswith(("<html", "<!doctype html")):
        return text
    title = _HTML_TITLE.search(text)
    return html.unescape(title.group(1) if title else _HTML_TAG.sub(" ", text))


def _validation_detail(items: list[Any]) -> str:
    """FastAPI's 422 list as "where: what" lines (llama-cpp-python and vLLM answer so), e.g.
    "response_format.type: Input should be 'text' or 'json_object'"."""
    said = []
    for item in items:
        if not isinstance(item, dict):
            said.append(str(item))
            continue
        where = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
        what = str(item.get("msg") or item)
        said.append(f"{where}: {what}" if where else what)
    return "; ".join(said)


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in exc's chain (httpx wraps httpcore's, which wrap OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    # httpx types Headers.get() as Any; header values are str.
    millis: str | None = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    seconds: str | None = headers.get("retry-after")
    if not seconds:
        return None
    try:
        value = float(seconds)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(seconds)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return value if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt: the error to report and, if retryable, how long to wait first."""

    error: UpstreamError
    retry_in: float | None = None
    detail: str = ""  # the provider's own words, shown after the status

    def final(self, attempts: int) -> UpstreamError:
        if self.error.kind != "server":
            return self.error
        plural = "attempt" if attempts == 1 else "attempts"
        said = f": {self.detail}" if self.detail else "."
        return UpstreamError(
            "server",
            f"The provider failed ({self.error.status}) after {attempts} {plural}{said}",
            status=self.error.status,
        )


def _backoff(timeouts: Timeouts, attempt: int) -> float:
    # Full jitter: spreads out the retries of many streams hitting the same outage.
    return random.uniform(0, timeouts.backoff_base * 2 ** (attempt - 1))


def _fmt_seconds(value: float) -> str:
    return f"{round(value, 1):g}"


@dataclass(frozen=True, slots=True)
class _StatusRule:
    """What a failed HTTP status means for the transcript, and whether to try again."""

    kind: str
    # May name {status}, {detail} (the provider's own message) and {wait} (seconds asked for).
    text: str
    # Used instead when a value `text` names is missing (an empty body, no Retry-After).
    fallback: str = ""
    # "if_told": only when Retry-After asks for a wait within the cap; "always": that wait, or
    # backoff; None: the same request would fail the same way again.
    retry: Literal["if_told", "always"] | None = None


# Exact statuses first, then "5xx", then "other": any other refusal, and redirects, which the
# client never follows.
_STATUS_RULES: dict[int | str, _StatusRule] = {
    401: _StatusRule(
        "auth", "The provider rejected the API key ({status}). Check the key on the Keys page."
    ),
    403: _StatusRule(
        "auth",
        "The provider denied access ({status}): {detail}",
        "The provider denied access ({status}). Check the key on the Keys page.",
    ),
    404: _StatusRule(
        "not_found",
        "Unknown model ({status}): {detail}",
        "Unknown model ({status}).",
    ),
    429: _StatusRule(
        "rate_limited",
        "Rate limited ({status}); retry in {wait} s.",
        "Rate limited ({status}); try again in a moment.",
        retry="if_told",
    ),
    # The number of attempts is known only at the end: _Failure.final() words that message.
    "5xx": _StatusRule("server", "The provider failed ({status}).", retry="always"),
    "other": _StatusRule(
        "bad_request",
        "The provider refused the request ({status}): {detail}",
        "The provider refused the request ({status}).",
    ),
}


def _failure_from_status(
    status: int,
    headers: httpx.Headers,
    raw: bytes,
    api_key: str | None,
    timeouts: Timeouts,
    attempt: int,
) -> _Failure:
    rule = _STATUS_RULES.get(status) or _STATUS_RULES["5xx" if status >= 500 else "other"]
    if status >= 500 and _says_request_invalid(raw):
        # Some servers (llama.cpp on a bad grammar or schema, proxies in front of FastAPI)
        # answer 500 for a request they cannot take: sending it again fails the same way.
        rule = _STATUS_RULES["other"]
    wait = _parse_retry_after(headers) if rule.retry else None
    values = {
        "status": status,
        "detail": _provider_message(raw, api_key),
        "wait": None if wait is None else max(1, math.ceil(wait)),
    }
    named = [name for _, name, _, _ in string.Formatter().parse(rule.text) if name]
    text = rule.text if all(values[name] for name in named) else rule.fallback
    error = UpstreamError(
        rule.kind,
        text.format_map(values),
        status=status,
        retry_after=wait if rule.retry == "if_told" else None,
    )
    detail = str(values["detail"] or "")
    if rule.retry is None:
        return _Failure(error, detail=detail)
    if wait is not None and wait <= timeouts.retry_after_cap:
        return _Failure(error, wait, detail)
    retry_in = _backoff(timeouts, attempt) if rule.retry == "always" else None
    return _Failure(error, retry_in, detail)


# Error types and codes that mean "this request is wrong", whatever the HTTP status says.
_INVALID_TYPES = frozenset(
    {"invalid_request_error", "badrequesterror", "bad_request", "validation_error"}
)
_INVALID_CODES = frozenset({"400", "422", "invalid_request_error"})
# Wording of validation failures in llama.cpp, llama-cpp-python (pydantic) and vLLM bodies.
_INVALID_WORDS = (
    "input should be",
    "invalid request",
    "not supported",
    "unsupported",
    "failed to parse",
    "validation error",
    "extra inputs are not permitted",
)


def _says_request_invalid(raw: bytes) -> bool:
    """Whether an error body blames the request rather than the server."""
    try:
        payload = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        if isinstance(payload.get("detail"), list):
            return True  # FastAPI's request validation error
        error = payload.get("error")
        fields = error if isinstance(error, dict) else payload
        kind = str(fields.get("type") or "").lower()
        code = str(fields.get("code") or "").lower()
        if kind in _INVALID_TYPES or code in _INVALID_CODES:
            return True
    text = raw.decode("utf-8", errors="replace").lower()
    return any(words in text for words in _INVALID_WORDS)


def _failure_from_transport(exc: Exception, timeouts: Timeouts, attempt: int) -> _Failure:
    """A transport problem before any body byte arrived (so retrying cannot duplicate output)."""
    retry = _backoff(timeouts, attempt)
    refused = _cause(exc, netpolicy.AddressRefused)
    if refused is not None:
        # The address policy said no: asking again cannot change that.
        return _Failure(UpstreamError("connection", str(refused)))
    bad_port = _cause(exc, netpolicy.InvalidPort)
    if bad_port is not None:
        return _Failure(UpstreamError("connection", str(bad_port)))  # the URL must change
    unresolved = _cause(exc, netpolicy.NameNotResolved)
    if unresolved is not None:
        return _Failure(UpstreamError("connection", str(unresolved)), retry)
    if isinstance(exc, httpx.ConnectTimeout):
        return _Failure(
            UpstreamError(
                "timeout",
                "Could not connect to the provider "
                f"(no answer in {_fmt_seconds(timeouts.connect)} s).",
            ),
            retry,
        )
    if isinstance(exc, httpx.ReadTimeout):
        # Not retried: the provider may still be working and a retry would triple the wait.
        return _Failure(UpstreamError("timeout", _silence_message(timeouts)))
    if isinstance(exc, httpx.PoolTimeout):
        return _Failure(
            UpstreamError(
                "timeout", "Too many requests to the provider are in flight; try again shortly."
            )
        )
    if isinstance(exc, httpx.TimeoutException):
        text = "The provider did not accept the request in time."
        return _Failure(UpstreamError("timeout", text))
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return _Failure(
            UpstreamError(
                "connection", "The provider URL is not valid; check the endpoint's base URL."
            )
        )
    return _Failure(UpstreamError("connection", "Could not connect to the provider."), retry)


def _silence_message(timeouts: Timeouts) -> str:
    return f"The provider stopped sending data (no data for {_fmt_seconds(timeouts.read)} s)."


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


class _BodyState:
    """What arrived so far on one response; decides between retry and partial-reply errors."""

    __slots__ = ("received", "finished", "stopped", "saw_done", "has_id", "pace")

    def __init__(self, pace: float = 0.0) -> None:
        self.pace = pace  # Timeouts.pace
        self.has_id = False  # a ResponseId was sent
        self.received = False  # any body byte: from here on, never retry
        self.finished = False  # a finish_reason was seen: the reply itself is complete
        self.stopped = False  # [DONE] or an error event: ignore anything after it
        self.saw_done = False


_DRAIN_SECONDS = 0.25
_UNDECODABLE = "The provider sent a body that could not be decoded."
# A reply has begun: from here on, reads are paced (Timeouts.pace).
_PACED_AFTER = (TextDelta, ReasoningDelta, ToolCallDelta)

# How a pooled connection the server has closed fails a request sent on it: a FIN gives h11's
# "Server disconnected without sending a response", an RST a read or write error. ConnectError
# is not here: it only happens while opening a connection, never on a reused one.
_DEAD_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _ConnectionWatch:
    """httpcore `trace` callback: learns whether a request opened a new connection.

    httpcore reports `connection.connect_tcp` (or `connect_unix_socket`, or the same under a
    SOCKS proxy) only when it opens a socket for the request; a request on a pooled
    connection goes straight to `http11.send_request_headers`.
    """

    __slots__ = ("opened", "underway")

    def __init__(self, underway: asyncio.Event | None = None) -> None:
        self.opened = False
        self.underway = underway

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        if name.endswith((".connect_tcp.started", ".connect_unix_socket.started")):
            self.opened = True
            if self.underway is not None:
                self.underway.set()  # a new connection: its connect is what takes time
        elif name == "http11.send_request_body.complete" and self.underway is not None:
            self.underway.set()

    def reused_and_dead(self, exc: Exception) -> bool:
        """The request died with the pooled connection it was sent on."""
        if self.opened or not isinstance(exc, _DEAD_CONNECTION):
            return False
        # Other protocol errors mean the server did answer, with something malformed. Matching
        # httpcore's wording fails safe: if it changes, this retry stops, nothing is duplicated.
        return not isinstance(exc, httpx.RemoteProtocolError) or "disconnected" in str(exc)


def _stream_body(body: dict[str, Any]) -> dict[str, Any]:
    payload = dict(body)
    payload["stream"] = True
    payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return payload


async def stream(
    endpoint: Endpoint,
    api_key: str | None,
    body: dict[str, Any],
    *,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    client: httpx.AsyncClient | None = None,
    wire: Wire | None = None,
    underway: asyncio.Event | None = None,
) -> AsyncGenerator[Event, None]:
    """Stream a chat completion as typed events; failures end it with one StreamError.

    `underway` is set once the request is on its way: its body sent on a pooled connection,
    or a new connection being opened (whose connect the caller need not wait for). The
    caller sets it itself if the stream ends first.

    `wire` (formats.py) sends `body`, already in that format, to the Responses or Messages
    path with that format's headers and reads that format's events; None is Chat Completions.

    Retries (429 with a short Retry-After, 5xx, connection errors) happen only before the first
    body byte. A request lost with a pooled connection the server had closed is sent once more
    whatever `max_retries` says, but only if no response head had arrived.

    Cancelling the consuming task or calling `aclose()` closes the HTTP response promptly,
    because the request lives inside `async with client.stream(...)`. A consumer that merely
    `break`s out of its loop should wrap the generator in `contextlib.aclosing()` so the
    connection is released at once rather than when the generator is garbage-collected.

    Events per chunk come in this order: ReasoningDelta, TextDelta, ToolCallDelta...,
    LogprobsDelta, Finish, Usage. Usage normally arrives once, in a final chunk after Finish;
    servers that report usage on every chunk yield several (the last one wins).
    """
    shards: _Shards | None = None
    index = 0
    if client is None and endpoint.policy is not None:
        client = netpolicy.pooled_client(endpoint.policy, timeouts.keepalive_expiry)
    if client is None:
        shards = _loop_shards(timeouts.keepalive_expiry)
        index = shards.lease()
        http = shards.clients[index]
    else:
        http = client
    # aclosing: a stop closes this generator, and that must close the upstream response now.
    try:
        async with contextlib.aclosing(
            _stream(http, endpoint, api_key, body, timeouts, wire, underway)
        ) as events:
            async for event in events:
                yield event
    finally:
        if shards is not None:
            shards.release(index)


async def _stream(
    http: httpx.AsyncClient,
    endpoint: Endpoint,
    api_key: str | None,
    body: dict[str, Any],
    timeouts: Timeouts,
    wire: Wire | None = None,
    underway: asyncio.Event | None = None,
) -> AsyncGenerator[Event, None]:
    if wire is None:
        headers = build_headers(endpoint, api_key)
        payload = _stream_body(body)
        url = endpoint.chat_url
    else:
        headers = wire.headers(endpoint, api_key)
        payload = wire.stream_body(body)
        url = endpoint.url(wire.path)
    attempts = timeouts.max_retries + 1
    attempt = 1
    # A server may close an idle keep-alive connection just as we reuse it (see Timeouts.
    # keepalive_expiry); the request then dies before any answer. It gets one more go outside
    # the retry policy, so MAX_RETRIES=0 does not turn that race into a failed turn, and
    # without a wait: the pool drops the dead connection and the next attempt opens a fresh
    # one. Only when no response head arrived: once the server answered, it is generating and
    # a retry could duplicate that. Only on a reused connection: a fresh connection that dies
    # unanswered points at the server, which the retry policy handles.
    stale_retry = True
    while True:
        watch = _ConnectionWatch(underway)
        answered = False
        try:
            # Built inside the try: httpx refuses a URL it cannot parse here (InvalidURL).
            request = http.build_request(
                "POST",
                url,
                json=payload,
                headers=headers,
                timeout=timeouts.as_httpx(),
                extensions={"trace": watch},
            )
            response = await readpace.send(http, request)
            try:
                answered = True
                if response.is_success:
                    decoder = wire.decoder() if wire is not None else None
                    async for event in _read_success(response, api_key, timeouts, decoder):
                        yield event
                    return
                try:
                    # None past the cap: an endless error page is not held; the status says
                    # enough, as it does for a body that fails to decompress.
                    raw = await _read_at_most(response, _MAX_ERROR_BODY_BYTES) or b""
                except httpx.DecodingError:
                    raw = b""
                failure = _failure_from_status(
                    response.status_code, response.headers, raw, api_key, timeouts, attempt
                )
            finally:
                await response.aclose()
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            if stale_retry and not answered and watch.reused_and_dead(exc):
                stale_retry = False
                logger.info(
                    "provider closed a pooled connection (%s); sending again", type(exc).__name__
                )
                continue
            # _read_success re-raises transport errors only when no body byte has arrived.
            failure = _failure_from_transport(exc, timeouts, attempt)
        if failure.retry_in is None or attempt == attempts:
            yield StreamError(failure.final(attempt))
            return
        logger.warning(
            "provider attempt %d/%d failed (%s, status %s); retrying in %.2f s",
            attempt,
            attempts,
            failure.error.kind,
            failure.error.status,
            failure.retry_in,
        )
        await asyncio.sleep(failure.retry_in)
        attempt += 1


async def _read_success(
    response: httpx.Response,
    api_key: str | None,
    timeouts: Timeouts,
    decoder: Decoder | None = None,
) -> AsyncIterator[Event]:
    if "application/json" in response.headers.get("content-type", ""):
        # Some servers ignore stream=true and answer with one chat.completion object.
        try:
            raw = await _read_at_most(response, _MAX_WHOLE_ANSWER_BYTES)
        except httpx.DecodingError:
            yield StreamError(UpstreamError("stream", _UNDECODABLE))
            return
        if raw is None:
            size = f"{_MAX_WHOLE_ANSWER_BYTES / 1_000_000:g} MB"
            yield StreamError(
                UpstreamError(
                    "stream", f"The provider's answer is larger than {size}; it was not read."
                )
            )
            return
        try:
            events = _whole(raw.decode("utf-8", errors="replace"), api_key, decoder)
        except _Done:
            events = []
        for event in events:
            # The whole answer in one body: nothing is left to keep going with.
            if isinstance(event, Unreadable):
                event = StreamError(UpstreamError("stream", event.reason))
            yield event
        return
    state = _BodyState(timeouts.pace)
    request_id = response.headers.get("x-request-id", "").strip()
    if request_id:
        state.has_id = True
        yield ResponseId(request_id[:MAX_RESPONSE_ID])
    try:
        async for event in _read_sse(response, api_key, state, decoder):
            yield event
    except httpx.DecodingError:
        # A bad Content-Encoding (no TransportError, so nothing else catches it): the
        # server did answer, so it is not retried; the text so far stays.
        yield StreamError(UpstreamError("stream", _UNDECODABLE))
    except httpx.TransportError as exc:
        if not state.received:
            raise  # nothing arrived yet: the caller may retry
        if state.finished:
            return  # cut after finish_reason (e.g. before usage): the reply is complete
        if isinstance(exc, httpx.TimeoutException):
            yield StreamError(UpstreamError("timeout", _silence_message(timeouts)))
        else:
            yield StreamError(
                UpstreamError("stream", "The stream was cut before the reply finished.")
            )


# A body that is read whole (not streamed) is held in memory, so it is read only up to a cap: a
# broken or hostile endpoint could otherwise send gigabytes. A whole answer holds a complete
# reply, which PLAYGROUND_MAX_REPLY_CHARS (2 million by default) allows to be long, and JSON may
# spell each character as a six-byte \uXXXX escape. An error body needs a message, not a book.
_MAX_WHOLE_ANSWER_BYTES = 16_000_000
_MAX_ERROR_BODY_BYTES = 256_000


async def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """The (decoded) body, or None as soon as it is longer than `limit` bytes."""
    raw = bytearray()
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) > limit:
            return None
    return bytes(raw)


async def _read_sse(
    response: httpx.Response,
    api_key: str | None,
    state: _BodyState,
    wire_decoder: Decoder | None = None,
) -> AsyncIterator[Event]:
    decoder = SSEDecoder()
    chunks = response.aiter_bytes()
    # Timeouts.pace: from the reply's first token on, this response's reads are paced.
    paced: readpace.PacedStream | None = None
    network = response.extensions.get("network_stream") if state.pace > 0 else None
    try:
        async for chunk in chunks:
            state.received = state.received or bool(chunk)
            for event in _decode(decoder.feed(chunk), api_key, state, wire_decoder):
                if network is not None and isinstance(event, _PACED_AFTER):
                    paced, network = readpace.paced(network, state.pace), None
                yield event
            if state.stopped:
                break
        else:
            for event in _decode(decoder.flush(), api_key, state, wire_decoder):
                yield event
    finally:
        if paced is not None:
            paced.pace = 0.0  # the connection goes back to the pool for another request
    if state.saw_done:
        await _drain(chunks)
    elif not state.stopped and not state.finished:
        yield StreamError(UpstreamError("stream", "The stream ended before the reply finished."))


def _whole(text: str, api_key: str | None, decoder: Decoder | None) -> list[Event]:
    if decoder is None:
        return _events_from_sse(SSEEvent(text), api_key, want_id=True)
    try:
        payload = json.loads(text)
    except ValueError:
        return [Unreadable("The provider sent data that is not JSON.")]
    if not isinstance(payload, dict):
        return [Unreadable("The provider sent an unexpected answer.")]
    try:
        return decoder.whole(payload, api_key)  # providers echo the key in errors
    except (AttributeError, TypeError, ValueError, LookupError, OverflowError):
        return [Unreadable("The provider sent a malformed answer.")]


def _decode(
    events: list[SSEEvent], api_key: str | None, state: _BodyState, decoder: Decoder | None = None
) -> Iterator[Event]:
    for sse in events:
        if state.stopped:
            return
        try:
            if decoder is None:
                mapped = _events_from_sse(sse, api_key, want_id=not state.has_id)
            else:
                mapped = decoder.events(sse, api_key, not state.has_id)
        except _Done:
            state.stopped = state.saw_done = True
            return
        for event in mapped:
            if isinstance(event, Finish):
                state.finished = True
            elif isinstance(event, ResponseId):
                state.has_id = True
            elif isinstance(event, StreamError):
                state.stopped = True
            yield event


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Best effort: read the tail after [DONE] so the connection returns to the pool.

    Bounded, because a server that keeps the connection open after [DONE] must not delay the
    end of the reply; on timeout the response is simply closed. No yield happens in here, so
    the deadline can never fire while the consumer holds control.
    """
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in chunks:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


# ---------------------------------------------------------------------------------------------
# One-shot requests (endpoint set-up: test, discover, probe, token counts)
# ---------------------------------------------------------------------------------------------

_MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a model listing is a few KB; never hold more than this


class ConnectionProblem(UpstreamError):
    """No HTTP answer, with the exact reason: dns, refused, tls, timeout, address, url, other."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__("timeout" if reason == "timeout" else "connection", message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer to a one-shot request, whatever its status."""

    status: int
    payload: Any  # the parsed JSON body, or None
    detail: str  # the provider's own message (scrubbed) when the status is not 2xx
    elapsed_ms: float
    location: str = ""  # where a 3xx pointed (never followed)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def request_json(
    endpoint: Endpoint,
    api_key: str | None,
    method: str,
    url: str,
    payload: dict[str, Any] | None = None,
    *,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Send one request and read a JSON answer; raises ConnectionProblem when none came.

    Not retried and not pooled: these run when an admin presses a button, and the answer
    (including how long it took) must describe one plain attempt. `headers` replaces the
    Chat Completions ones (formats.Wire.headers for the other formats)."""
    headers = dict(headers) if headers is not None else build_headers(endpoint, api_key)
    headers["Accept"] = "application/json"
    limit = httpx.Timeout(timeout)
    if endpoint.policy is not None:
        http = netpolicy.guarded_client(endpoint.policy, timeout=limit)
    else:
        http = httpx.AsyncClient(follow_redirects=False, verify=_ssl_context(), timeout=limit)
    started = time.monotonic()
    try:
        async with http, http.stream(method, url, json=payload, headers=headers) as response:
            raw = bytearray()
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > _MAX_ANSWER_BYTES:
                    break
            elapsed = (time.monotonic() - started) * 1000
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise _connection_problem(exc, timeout) from None
    try:
        parsed = json.loads(bytes(raw))
    except ValueError:
        parsed = None
    ok = 200 <= response.status_code < 300
    # Shown on the endpoint's page: a gateway may put the key it was sent in the address.
    location = response.headers.get("location", "") if response.is_redirect else ""
    return Answer(
        status=response.status_code,
        payload=parsed,
        # Shown on the page and kept with a probe's results: replaced, as storable.py says.
        detail="" if ok else replaced(_provider_message(bytes(raw), api_key)),
        elapsed_ms=round(elapsed, 1),
        location=replaced(scrub(location, api_key)),
    )


def _connection_problem(exc: Exception, timeout: float) -> ConnectionProblem:
    refused = _cause(exc, netpolicy.AddressRefused)
    if refused is not None:
        return ConnectionProblem("address", str(refused))
    bad_port = _cause(exc, netpolicy.InvalidPort)
    if bad_port is not None:
        return ConnectionProblem("url", str(bad_port))
    unresolved = _cause(exc, netpolicy.NameNotResolved)
    if unresolved is not None:
        return ConnectionProblem("dns", str(unresolved))
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectionProblem("timeout", f"Timeout: no connection within {timeout:g} s.")
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionProblem("timeout", f"Timeout: no answer within {timeout:g} s.")
    tls = _cause(exc, ssl.SSLError)
    if tls is not None:
        why = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
        return ConnectionProblem("tls", f"TLS: the secure connection failed ({why}).")
    if _cause(exc, ConnectionRefusedError) is not None:
        return ConnectionProblem("refused", "Refused: nothing accepts connections at that port.")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ConnectionProblem("url", "The base URL is not a valid http(s) URL.")
    if _cause(exc, httpx.RemoteProtocolError) is not None:
        return ConnectionProblem("other", "The server did not answer in HTTP.")
    return ConnectionProblem("other", f"Could not connect ({type(exc).__name__}).")
