"""playground.providers.client.stream() against FakeUpstream over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from playground.providers import client as client_module
from playground.providers.client import (
    Endpoint,
    Event,
    Finish,
    LogprobsDelta,
    ReasoningDelta,
    ResponseId,
    StreamError,
    TextDelta,
    Timeouts,
    ToolCallDelta,
    Unreadable,
    UpstreamError,
    Usage,
    aclose_clients,
    get_client,
    request_json,
    scrub,
    stream,
)
from tests.upstream import Behaviour, FakeUpstream

KEY = "sk-test-0123456789abcdef"
BODY = {"model": "gemma-3-27b-it", "messages": [{"role": "user", "content": "Say hi"}]}
# Tiny timeouts and backoff keep the suite fast; the cap still allows the short 429 waits.
FAST = Timeouts(connect=1.0, read=2.0, write=2.0, pool=2.0, retry_after_cap=1.0, backoff_base=0.01)


async def collect(
    upstream: FakeUpstream,
    api_key: str | None = KEY,
    *,
    timeouts: Timeouts = FAST,
    endpoint: Endpoint | None = None,
    body: dict | None = None,
) -> list[Event]:
    endpoint = endpoint or Endpoint(upstream.base_url)
    return [e async for e in stream(endpoint, api_key, body or BODY, timeouts=timeouts)]


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def error_of(events: list[Event]) -> UpstreamError:
    assert isinstance(events[-1], StreamError), events
    assert sum(isinstance(e, StreamError) for e in events) == 1
    return events[-1].error


# --- the happy path ----------------------------------------------------------------------------


async def test_tokens_arrive_in_order_as_text_deltas(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(tokens=["Hel", "lo", ", wor", "ld", "!"]))
    events = await collect(upstream)
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta(", wor"),
        TextDelta("ld"),
        TextDelta("!"),
    ]
    # The role chunk's empty content is not an event.
    assert not any(isinstance(e, StreamError) for e in events)


async def test_the_stream_ends_with_finish_then_usage(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(n_tokens=3))
    events = await collect(upstream)
    assert isinstance(events[-2], Finish) and events[-2].reason == "stop"
    usage = events[-1]
    assert isinstance(usage, Usage)
    assert (usage.completion_tokens, usage.total_tokens) == (3, usage.prompt_tokens + 3)
    assert usage.raw["completion_tokens"] == 3


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_under_either_key_becomes_reasoning_deltas(
    upstream: FakeUpstream, key: str
) -> None:
    upstream.script(Behaviour(reasoning=["Let me ", "think."], reasoning_key=key, tokens=["Hi"]))
    events = await collect(upstream)
    kinds = [type(e) for e in events if isinstance(e, ReasoningDelta | TextDelta)]
    assert kinds == [ReasoningDelta, ReasoningDelta, TextDelta]
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Let me think."


async def test_tool_call_deltas_carry_index_id_name_and_argument_pieces(
    upstream: FakeUpstream,
) -> None:
    calls = [
        {"id": "call_1", "name": "get_weather", "arguments": {"city": "Zürich", "unit": "C"}},
        {"name": "get_time", "arguments": "{}"},
    ]
    upstream.script(Behaviour(tokens=[], tool_calls=calls))
    events = await collect(upstream)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    first = [d for d in deltas if d.index == 0]
    assert (first[0].id, first[0].name) == ("call_1", "get_weather")
    assert all(d.id is None and d.name is None for d in first[1:])
    assert json.loads("".join(d.arguments for d in first)) == {"city": "Zürich", "unit": "C"}
    second = [d for d in deltas if d.index == 1]
    assert second[0].name == "get_time" and second[0].id
    assert Finish("tool_calls") in events


async def test_logprobs_content_is_passed_through(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(tokens=["a", "b"], logprobs=True))
    events = await collect(upstream)
    logprobs = [e for e in events if isinstance(e, LogprobsDelta)]
    assert [lp.content[0]["token"] for lp in logprobs] == ["a", "b"]
    assert logprobs[0].content[0]["top_logprobs"][1]["token"] == "A"
    # Each content delta is followed by its logprobs.
    assert isinstance(events[events.index(logprobs[0]) - 1], TextDelta)


# --- the request -------------------------------------------------------------------------------


async def test_the_request_forces_streaming_with_usage_and_sends_the_bearer_key(
    upstream: FakeUpstream,
) -> None:
    body = {**BODY, "stream": False, "stream_options": {"foo": 1}, "temperature": 0.2}
    await collect(upstream, body=body)
    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"foo": 1, "include_usage": True}
    assert request.body["temperature"] == 0.2
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert body["stream"] is False  # the caller's dict is not modified


async def test_no_key_sends_no_authorization_header(upstream: FakeUpstream) -> None:
    for key in (None, ""):
        await collect(upstream, key)
    assert [r.headers.get("authorization") for r in upstream.requests] == [None, None]


async def test_a_custom_auth_header_without_scheme_carries_the_bare_key(
    upstream: FakeUpstream,
) -> None:
    endpoint = Endpoint(upstream.base_url + "/", auth_header="api-key", auth_scheme="")
    events = await collect(upstream, endpoint=endpoint)
    assert text_of(events) == Behaviour().text
    (request,) = upstream.requests
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    assert request.path == "/v1/chat/completions"  # trailing slash of base_url handled


# --- HTTP errors ------------------------------------------------------------------------------


NGINX_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def provider_error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


@pytest.mark.parametrize(
    ("status", "error_body", "kind", "message"),
    [
        (
            401,
            None,
            "auth",
            "The provider rejected the API key (401). Check the key on the Keys page.",
        ),
        (
            403,
            provider_error("Model not enabled"),
            "auth",
            "The provider denied access (403): Model not enabled",
        ),
        (
            404,
            provider_error("The model `gemma-9` does not exist"),
            "not_found",
            "Unknown model (404): The model `gemma-9` does not exist",
        ),
        (
            400,
            provider_error("max_tokens is too large"),
            "bad_request",
            "The provider refused the request (400): max_tokens is too large",
        ),
        (
            422,
            {"detail": "temperature must be <= 2"},
            "bad_request",
            "The provider refused the request (422): temperature must be <= 2",
        ),
        (
            400,
            {"message": "bad  \n role"},
            "bad_request",
            "The provider refused the request (400): bad role",
        ),
        (
            400,
            "plain text failure",
            "bad_request",
            "The provider refused the request (400): plain text failure",
        ),
        (  # a proxy's error page (nginx, here): its title, not its markup
            413,
            NGINX_413,
            "bad_request",
            "The provider refused the request (413): 413 Request Entity Too Large",
        ),
    ],
)
async def test_client_errors_are_reported_once_with_the_provider_message_and_not_retried(
    upstream: FakeUpstream, status: int, error_body: dict | str | None, kind: str, message: str
) -> None:
    upstream.script(Behaviour(status=status, error_body=error_body))
    error = error_of(await collect(upstream))
    assert (error.kind, error.status, error.message, str(error)) == (kind, status, message, message)
    assert len(upstream.requests) == 1


async def test_a_long_provider_message_is_truncated(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(status=400, error_body=provider_error("x" * 5000)))
    error = error_of(await collect(upstream))
    assert error.message.startswith("The provider refused the request (400): xxx")
    assert len(error.message) < 400


async def test_it_retries_429_with_a_short_retry_after_ms_then_succeeds(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(status=429, headers={"retry-after-ms": "150"}))
    started = time.monotonic()
    events = await collect(upstream)
    assert time.monotonic() - started >= 0.15  # it really waited as asked
    assert text_of(events) == Behaviour().text
    assert len(upstream.requests) == 2


async def test_it_retries_429_with_a_short_retry_after_in_seconds(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(status=429, headers={"Retry-After": "0"}))
    assert text_of(await collect(upstream)) == Behaviour().text
    assert len(upstream.requests) == 2


async def test_it_fails_fast_on_429_when_retry_after_exceeds_the_cap(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(status=429, headers={"Retry-After": "12"}))
    # A cap of seconds, not FAST's one: a busy machine has room, and a client that slept
    # the cap (or the 12 s) before giving up is still caught.
    timeouts = replace(FAST, retry_after_cap=5.0)
    started = time.monotonic()
    error = error_of(await collect(upstream, timeouts=timeouts))
    assert time.monotonic() - started < timeouts.retry_after_cap  # it did not wait at all
    assert (error.kind, error.status, error.message) == (
        "rate_limited",
        429,
        "Rate limited (429); retry in 12 s.",
    )
    assert error.retry_after == 12
    assert len(upstream.requests) == 1


async def test_a_retry_after_http_date_is_understood(upstream: FakeUpstream) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    upstream.script(Behaviour(status=429, headers={"Retry-After": when}))
    error = error_of(await collect(upstream))
    assert error.kind == "rate_limited" and 3500 < (error.retry_after or 0) <= 3600
    assert len(upstream.requests) == 1


async def test_it_fails_fast_on_429_without_a_retry_header(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(status=429))
    error = error_of(await collect(upstream))
    assert (error.kind, error.retry_after) == ("rate_limited", None)
    assert error.message.startswith("Rate limited (429)")
    assert len(upstream.requests) == 1


async def test_it_retries_503_before_first_byte_then_succeeds(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(status=503), Behaviour(status=503))
    events = await collect(upstream)
    assert text_of(events) == Behaviour().text
    assert not any(isinstance(e, StreamError) for e in events)
    assert len(upstream.requests) == 3


async def test_it_gives_up_after_three_attempts_when_503_persists(upstream: FakeUpstream) -> None:
    upstream.default = Behaviour(status=503)
    error = error_of(await collect(upstream))
    assert (error.kind, error.status) == ("server", 503)
    assert error.message == "The provider failed (503) after 3 attempts: Fake upstream error 503"
    assert len(upstream.requests) == 3


async def test_max_retries_zero_means_a_single_attempt(upstream: FakeUpstream) -> None:
    upstream.default = Behaviour(status=500)
    timeouts = Timeouts(max_retries=0, backoff_base=0.01)
    error = error_of(await collect(upstream, timeouts=timeouts))
    assert error.message == "The provider failed (500) after 1 attempt: Fake upstream error 500"
    assert len(upstream.requests) == 1


# --- transport errors --------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_refused_connection_is_a_connection_error() -> None:
    endpoint = Endpoint(f"http://127.0.0.1:{closed_port()}/v1")
    events = [e async for e in stream(endpoint, KEY, BODY, timeouts=FAST)]
    error = error_of(events)
    assert (error.kind, error.status, error.message) == (
        "connection",
        None,
        "Could not connect to the provider.",
    )


async def test_a_base_url_without_scheme_is_reported_without_retrying() -> None:
    events = [e async for e in stream(Endpoint("api.example.com/v1"), KEY, BODY, timeouts=FAST)]
    error = error_of(events)
    assert error.kind == "connection" and "base URL" in error.message


async def test_a_base_url_httpx_cannot_parse_is_reported_as_an_error_event() -> None:
    # httpx refuses it while building the request, before any connection.
    events = [e async for e in stream(Endpoint("http://[::1/v1"), KEY, BODY, timeouts=FAST)]
    error = error_of(events)
    assert error.kind == "connection" and "base URL" in error.message


async def test_a_cut_mid_stream_is_never_retried_and_keeps_the_partial_text(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(n_tokens=10, cut_after=3))
    events = await collect(upstream)
    assert text_of(events) == "tok0 tok1 tok2"
    error = error_of(events)
    assert (error.kind, error.message) == (
        "stream",
        "The stream was cut before the reply finished.",
    )
    assert len(upstream.requests) == 1


async def test_a_cut_right_after_the_role_chunk_is_not_retried(upstream: FakeUpstream) -> None:
    # Body bytes arrived (the role chunk), so a retry could duplicate a billed generation.
    upstream.script(Behaviour(cut_after=0))
    assert error_of(await collect(upstream)).kind == "stream"
    assert len(upstream.requests) == 1


async def test_silence_before_the_response_longer_than_the_read_timeout_is_a_timeout(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(silence=5.0))
    timeouts = Timeouts(read=0.2, backoff_base=0.01)
    started = time.monotonic()
    error = error_of(await collect(upstream, timeouts=timeouts))
    assert time.monotonic() - started < 5.0  # it gave up long before the provider answered
    assert (error.kind, error.message) == (
        "timeout",
        "The provider stopped sending data (no data for 0.2 s).",
    )
    assert len(upstream.requests) == 1  # a thinking provider is not hammered with retries


async def test_silence_mid_stream_longer_than_the_read_timeout_is_a_timeout(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(n_tokens=4, silence=1.0, silence_after=2))
    events = await collect(upstream, timeouts=Timeouts(read=0.2))
    assert text_of(events) == "tok0 tok1"
    assert error_of(events).kind == "timeout"
    assert upstream.wait_for_disconnect(2.0)  # and the connection was given up


async def test_giving_up_during_a_silent_start_is_seen_by_the_server_at_once(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(silence=5.0))
    events = stream(Endpoint(upstream.base_url), KEY, BODY, timeouts=FAST)
    task = asyncio.create_task(anext(events))
    assert await asyncio.to_thread(upstream.wait_for_requests, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 1.0)
    assert upstream.disconnects[0].tokens_sent == 0


@pytest.mark.parametrize("keepalive", [True, False], ids=["with-comments", "without"])
async def test_keepalive_comments_during_a_long_pause_prevent_the_read_timeout(
    upstream: FakeUpstream, keepalive: bool
) -> None:
    upstream.script(
        Behaviour(n_tokens=3, silence=0.6, silence_after=1, keepalive_comments=keepalive)
    )
    events = await collect(upstream, timeouts=Timeouts(read=0.3))
    if keepalive:
        assert text_of(events) == "tok0 tok1 tok2" and isinstance(events[-1], Usage)
    else:
        assert text_of(events) == "tok0" and error_of(events).kind == "timeout"


# --- in-stream problems ------------------------------------------------------------------------


async def test_a_json_error_mid_stream_ends_it_with_the_provider_message(
    upstream: FakeUpstream,
) -> None:
    error_event = {"message": "Model overloaded, try later", "type": "server_error"}
    upstream.script(Behaviour(n_tokens=5, mid_stream_error=error_event, error_after=2))
    events = await collect(upstream)
    assert text_of(events) == "tok0 tok1"
    error = error_of(events)
    assert (error.kind, error.message) == ("stream", "Model overloaded, try later")
    assert len(upstream.requests) == 1


async def test_a_rate_limit_error_mid_stream_is_reported_as_rate_limited(
    upstream: FakeUpstream,
) -> None:
    error_event = {"message": "Too many tokens", "code": "rate_limit_exceeded"}
    upstream.script(Behaviour(mid_stream_error=error_event, error_after=0))
    assert error_of(await collect(upstream)).kind == "rate_limited"


async def test_eof_without_done_after_a_finish_reason_is_a_normal_end(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(n_tokens=3, no_done=True))
    events = await collect(upstream)
    assert not any(isinstance(e, StreamError) for e in events)
    assert Finish("stop") in events and isinstance(events[-1], Usage)


async def test_eof_without_done_or_finish_reason_is_a_stream_error(
    upstream: FakeUpstream,
) -> None:
    # Connection: close framing, so the cut looks like a clean EOF to HTTP.
    upstream.script(Behaviour(n_tokens=5, cut_after=2, chunked=False))
    events = await collect(upstream)
    assert text_of(events) == "tok0 tok1"
    error = error_of(events)
    assert (error.kind, error.message) == ("stream", "The stream ended before the reply finished.")


async def test_a_stream_closed_normally_without_chunked_framing_works(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(n_tokens=3, chunked=False))
    assert text_of(await collect(upstream)) == "tok0 tok1 tok2"


@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("split_bytes", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "comments+multiline"])
async def test_framing_variants_give_identical_text(
    upstream: FakeUpstream, line_ending: str, split_bytes: bool, extras: bool
) -> None:
    tokens = ["Grüße", " 😀", "\n\nnaïve", " 日本", "\r\n"]
    upstream.script(
        Behaviour(
            tokens=tokens,
            reasoning=["é😀"],
            line_ending=line_ending,
            split_bytes=split_bytes,
            keepalive_comments=extras,
            multiline_data=extras,
        )
    )
    events = await collect(upstream)
    assert text_of(events) == "".join(tokens)
    assert ReasoningDelta("é😀") in events
    assert isinstance(events[-1], Usage)


async def test_a_json_answer_to_a_stream_request_is_understood() -> None:
    # Some servers ignore stream=true; a whole chat.completion must still produce events.
    completion = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=completion))
    async with httpx.AsyncClient(transport=transport) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert events[:2] == [TextDelta("Hi"), Finish("stop")]
    assert isinstance(events[2], Usage) and events[2].total_tokens == 3


def sse_client(sse: bytes) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.MockTransport(
            lambda request: httpx.Response(
                200, content=sse, headers={"content-type": "text/event-stream"}
            )
        )
    )


async def test_an_unreadable_data_line_is_skipped_and_the_stream_goes_on() -> None:
    sse = (
        b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
        b"data: {oops\n\n"
        b"data: [1, 2]\n\n"
        b'data: {"choices": "nope"}\n\n'
        b'data: {"choices": [{"delta": {"content": "b"}, "finish_reason": "stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    async with sse_client(sse) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert events == [
        TextDelta("a"),
        Unreadable("The provider sent data that is not JSON."),
        Unreadable("The provider sent an unexpected chunk."),
        Unreadable("The provider sent a malformed chunk."),
        TextDelta("b"),
        Finish("stop"),
    ]


async def test_chunks_whose_shape_raises_other_errors_are_skipped_too() -> None:
    # choices as an object fails on [0] (KeyError); 1e999 parses as inf, and int(inf) raises
    # OverflowError: both crashed the run instead of being skipped like other odd shapes.
    sse = (
        b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
        b'data: {"choices": {"text": "x"}}\n\n'
        b'data: {"choices": [], "usage": {"prompt_tokens": 1e999}}\n\n'
        b'data: {"choices": [{"delta": {"content": "b"}, "finish_reason": "stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    async with sse_client(sse) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert events == [
        TextDelta("a"),
        Unreadable("The provider sent a malformed chunk."),
        Unreadable("The provider sent a malformed chunk."),
        TextDelta("b"),
        Finish("stop"),
    ]


async def test_malformed_usage_or_logprobs_do_not_throw_away_the_chunk_s_text() -> None:
    # Some servers send usage on every chunk: a bad count there must not cost the text.
    sse = (
        b'data: {"choices": [{"delta": {"content": "a"}}], "usage": {"prompt_tokens": "many"}}\n\n'
        b'data: {"choices": [{"delta": {"content": "b"}, "logprobs": {"content": 5}}]}\n\n'
        b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    async with sse_client(sse) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert events == [
        TextDelta("a"),
        Unreadable("The provider sent a malformed chunk."),
        TextDelta("b"),
        Unreadable("The provider sent a malformed chunk."),
        Finish("stop"),
    ]


class NotGzip(httpx.AsyncByteStream):
    """A body read as it streams (content= would be decoded at once, in the transport)."""

    async def __aiter__(self):
        yield b"not gzip"


@pytest.mark.parametrize(
    ("status", "ctype"),
    [(200, "text/event-stream"), (200, "application/json"), (400, "application/json")],
)
async def test_a_body_that_fails_to_decompress_ends_the_stream_with_an_error(status, ctype) -> None:
    # httpx raises DecodingError, which is no TransportError: it escaped stream() entirely.
    headers = {"content-type": ctype, "content-encoding": "gzip"}
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, stream=NotGzip(), headers=headers)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    expected = {
        200: "The provider sent a body that could not be decoded.",
        400: "The provider refused the request (400).",
    }
    assert error_of(events).message == expected[status]


async def test_a_whole_json_answer_from_the_fake_server_is_understood(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(tokens=["Hi", "!"], whole=True))
    events = await collect(upstream)
    assert text_of(events) == "Hi!" and Finish("stop") in events


async def test_a_whole_json_answer_larger_than_the_cap_is_not_read(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read whole, an endless or huge body would be held in memory before any check.
    monkeypatch.setattr(client_module, "_MAX_WHOLE_ANSWER_BYTES", 10_000)
    upstream.script(Behaviour(tokens=[KEY, "x" * 20_000], whole=True))
    events = await collect(upstream)
    assert not any(isinstance(e, TextDelta) for e in events)
    error = error_of(events)
    assert error.kind == "stream"
    assert error.message == "The provider's answer is larger than 0.01 MB; it was not read."
    assert KEY not in str(error)


async def test_an_error_body_larger_than_the_cap_is_not_read(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "_MAX_ERROR_BODY_BYTES", 10_000)
    body = {"error": {"message": f"bad {KEY} " + "x" * 20_000, "type": "invalid_request_error"}}
    upstream.script(Behaviour(status=400, error_body=body))
    events = await collect(upstream)
    assert error_of(events).message == "The provider refused the request (400)."
    assert len(upstream.requests) == 1
    # Under the cap the provider's own words are shown, as before.
    upstream.script(Behaviour(status=400, error_body={"error": {"message": "bad model"}}))
    events = await collect(upstream)
    assert error_of(events).message == "The provider refused the request (400): bad model"


async def test_the_provider_s_id_for_the_reply_comes_first_and_once() -> None:
    sse = (
        b'data: {"id": "chatcmpl-1", "choices": [{"delta": {"content": "a"}}]}\n\n'
        b"data: {oops\n\n"
        b'data: {"id": "chatcmpl-1", "choices": [{"delta": {"content": "b"}}]}\n\n'
        b'data: {"id": "chatcmpl-1", "choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
    )
    async with sse_client(sse) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert [e for e in events if isinstance(e, ResponseId)] == [ResponseId("chatcmpl-1")]
    assert events[0] == ResponseId("chatcmpl-1") and text_of(events) == "ab"


async def test_the_x_request_id_header_is_the_reply_s_id_when_sent() -> None:
    sse = b'data: {"id": "chatcmpl-1", "choices": [{"delta": {"content": "a"}}]}\n\n'
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200,
            content=sse,
            headers={"content-type": "text/event-stream", "x-request-id": "req_42"},
        )
    )
    async with httpx.AsyncClient(transport=transport) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert [e for e in events if isinstance(e, ResponseId)] == [ResponseId("req_42")]


async def test_an_error_object_after_an_unreadable_line_still_ends_the_stream() -> None:
    sse = (
        b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
        b"data: {oops\n\n"
        b'data: {"error": {"message": "overloaded", "code": "server_error"}}\n\n'
        b'data: {"choices": [{"delta": {"content": "never"}}]}\n\n'
    )
    async with sse_client(sse) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert text_of(events) == "a"
    assert error_of(events).message == "overloaded"


async def test_an_unreadable_whole_json_answer_is_an_error() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=b"[1]", headers={"content-type": "application/json"}
        )
    )
    async with httpx.AsyncClient(transport=transport) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), KEY, BODY, client=client)]
    assert error_of(events).message == "The provider sent an unexpected chunk."


async def test_chunks_without_choices_or_with_odd_shapes_are_tolerated() -> None:
    sse = (
        b"data: {}\n\n"
        b'data: {"choices": []}\n\n'
        b'data: {"choices": [{"delta": null, "finish_reason": null}]}\n\n'
        b'data: {"choices": [{"delta": {"content": null, "reasoning": "r"}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "x"}, "finish_reason": "length"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=sse, headers={"content-type": "text/event-stream"}
        )
    )
    async with httpx.AsyncClient(transport=transport) as client:
        events = [e async for e in stream(Endpoint("http://x/v1"), None, BODY, client=client)]
    assert events == [ReasoningDelta("r"), TextDelta("x"), Finish("length")]


# --- cancellation ------------------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_upstream_response(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(n_tokens=200, interval=0.02))
    got: list[str] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for event in stream(Endpoint(upstream.base_url), KEY, BODY, timeouts=FAST):
            if isinstance(event, TextDelta):
                got.append(event.text)
                if len(got) == 3:
                    three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 2.0)
    (disconnect,) = upstream.disconnects
    assert disconnect.request_index == 0 and 3 <= disconnect.tokens_sent < 20


async def test_aclose_on_the_generator_closes_the_upstream_response(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(n_tokens=200, interval=0.02))
    events = stream(Endpoint(upstream.base_url), KEY, BODY, timeouts=FAST)
    assert isinstance(await anext(events), ResponseId)
    assert isinstance(await anext(events), TextDelta)
    await events.aclose()
    assert await asyncio.to_thread(upstream.wait_for_disconnect, 2.0)
    assert upstream.disconnects[0].tokens_sent < 20


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(status=401, echo_key_in_error=True),
        Behaviour(status=403, echo_key_in_error=True),
        Behaviour(status=400, echo_key_in_error=True),
        Behaviour(status=404, echo_key_in_error=True),
        Behaviour(mid_stream_error={"message": "bad key"}, echo_key_in_error=True),
    ],
    ids=["401", "403", "400", "404", "mid-stream"],
)
async def test_a_key_echoed_by_the_provider_never_reaches_the_error(
    upstream: FakeUpstream, behaviour: Behaviour
) -> None:
    upstream.script(behaviour)
    events = await collect(upstream)
    error = error_of(events)
    for text in (error.message, str(error), repr(error), repr(events[-1]), repr(events)):
        assert KEY not in text
    assert error.kind in {"auth", "bad_request", "not_found", "stream"}


async def test_a_key_echoed_in_a_redirect_never_reaches_the_answer(upstream: FakeUpstream) -> None:
    # Test connection shows where a server redirects; a gateway may put the key it got there.
    upstream.script(Behaviour(status=302, headers={"Location": f"https://x.test/?key={KEY}"}))
    endpoint = Endpoint(upstream.base_url)
    answer = await request_json(endpoint, KEY, "POST", endpoint.chat_url, BODY)
    assert answer.status == 302 and answer.location.startswith("https://x.test/?key=")
    assert KEY not in answer.location and KEY not in repr(answer)


def test_upstream_errors_survive_pickling() -> None:
    error = UpstreamError(
        "rate_limited", "Rate limited (429); retry in 3 s.", status=429, retry_after=3.0
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.status, copy.message, copy.retry_after) == (
        "rate_limited",
        429,
        error.message,
        3.0,
    )


def test_scrub_replaces_every_occurrence_of_the_secret() -> None:
    assert scrub(f"key {KEY} and {KEY}!", KEY) == "key [redacted] and [redacted]!"
    assert scrub("nothing here", None) == "nothing here"
    assert scrub("", KEY) == ""


# --- the shared client -------------------------------------------------------------------------


async def test_get_client_is_shared_within_a_loop_and_replaced_after_close() -> None:
    client = get_client()
    assert get_client() is client
    await aclose_clients()
    assert client.is_closed
    assert get_client() is not client


def test_each_event_loop_gets_its_own_client() -> None:
    async def grab() -> httpx.AsyncClient:
        client = get_client()
        await aclose_clients()
        return client

    assert asyncio.run(grab()) is not asyncio.run(grab())


async def test_a_cookie_one_reply_sets_never_goes_out_with_the_next_request(
    upstream: FakeUpstream,
) -> None:
    # The shared client serves every user: a provider's cookie for one would reach the next.
    upstream.script(Behaviour(headers={"set-cookie": "session=first-user; Path=/"}))
    assert text_of(await collect(upstream)) == Behaviour().text
    assert text_of(await collect(upstream, "sk-second-user-0000")) == Behaviour().text
    assert "cookie" not in upstream.requests[-1].headers
    assert not get_client().cookies


async def test_a_streaming_request_goes_straight_to_the_transport(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx's client layer (auth, redirects, hooks, cookie parsing) is skipped: a quarter
    # millisecond of CPU per turn. Headers, body and timeouts are the request's own.
    async def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("AsyncClient.send was called")

    monkeypatch.setattr(httpx.AsyncClient, "send", refuse)
    assert text_of(await collect(upstream)) == Behaviour().text
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["stream"] is True


async def test_with_a_proxy_in_the_environment_requests_go_through_the_client(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy is one of the client's mounts: only the client knows which URLs it covers.
    await aclose_clients()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    calls = []
    original = httpx.AsyncClient.send

    async def counting(self: httpx.AsyncClient, *args: object, **kwargs: object):
        calls.append(args)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", counting)
    assert text_of(await collect(upstream)) == Behaviour().text
    assert len(calls) == 1


async def test_keep_alive_connections_are_reused_across_streams(upstream: FakeUpstream) -> None:
    for _ in range(3):
        assert text_of(await collect(upstream)) == Behaviour().text
    # Draining after [DONE] returns the connection to the pool: one TCP connection, 3 requests.
    ports = {r.peer for r in upstream.requests}
    assert len(upstream.requests) == 3 and len(ports) == 1


async def test_every_shard_shares_one_ssl_context_that_verifies(
    upstream: FakeUpstream,
) -> None:
    import ssl

    from playground.providers import client as module

    upstream.default = Behaviour(n_tokens=3, interval=0.05)
    await asyncio.gather(*(collect(upstream) for _ in range(module.SHARD_STREAMS + 5)))
    clients = module._loop_shards().clients
    contexts = {id(c._transport._pool._ssl_context) for c in clients}
    assert len(clients) == 2 and len(contexts) == 1
    context = clients[0]._transport._pool._ssl_context
    assert context is module._ssl_context()
    # Verification as httpx's own default: certificates and host names are checked.
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0


# --- keep-alive connections the server has closed ------------------------------------------
# The fake drops a request arriving on a connection idle longer than its keepalive_timeout,
# as uvicorn (vLLM) does after 5 s when the request crosses its close on the wire.

IDLE_TIMEOUT = 0.5
NO_RETRIES = replace(FAST, max_retries=0)


async def two_turns_apart(upstream: FakeUpstream, timeouts: Timeouts) -> list[Event]:
    """A turn, a pause past the server's keep-alive timeout, and the second turn's events."""
    upstream.keepalive_timeout = IDLE_TIMEOUT
    assert text_of(await collect(upstream, timeouts=timeouts)) == Behaviour().text
    await asyncio.sleep(IDLE_TIMEOUT + 0.3)
    return await collect(upstream, timeouts=timeouts)


def test_idle_connections_expire_before_uvicorns_keepalive_timeout() -> None:
    assert Timeouts().keepalive_expiry < 5


async def test_the_pool_expires_idle_connections_as_timeouts_say() -> None:
    from playground.providers import client as module

    for expiry in (Timeouts().keepalive_expiry, 0.2):
        pool = module._loop_shards(expiry).clients[0]._transport._pool
        assert pool._keepalive_expiry == expiry


async def test_a_connection_idle_past_the_expiry_is_not_reused(upstream: FakeUpstream) -> None:
    events = await two_turns_apart(upstream, replace(NO_RETRIES, keepalive_expiry=0.2))
    assert text_of(events) == Behaviour().text
    assert not any(isinstance(e, StreamError) for e in events)
    # Closed on our side before the server's timeout: nothing was sent on a dead connection.
    assert upstream.dropped == []
    assert len(upstream.requests) == 2 and upstream.requests[0].peer != upstream.requests[1].peer


@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_a_request_on_a_reused_connection_the_server_closed_is_sent_again_once(
    upstream: FakeUpstream, drop: str
) -> None:
    upstream.keepalive_drop = drop
    # An expiry longer than the server's timeout, so the dead connection is reused.
    events = await two_turns_apart(upstream, replace(NO_RETRIES, keepalive_expiry=30.0))
    assert text_of(events) == Behaviour().text
    assert not any(isinstance(e, StreamError) for e in events)
    first, second = upstream.requests  # one answered request per turn: nothing generated twice
    assert upstream.dropped == [first.peer] and second.peer != first.peer


async def test_the_retry_on_a_dead_pooled_connection_leaves_the_retry_budget_alone(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Behaviour(), Behaviour(status=503))
    timeouts = replace(FAST, max_retries=1, keepalive_expiry=30.0)
    events = await two_turns_apart(upstream, timeouts)
    assert text_of(events) == Behaviour().text
    assert len(upstream.dropped) == 1
    assert [r.index for r in upstream.requests] == [0, 1, 2]  # the 503 and its one retry


@pytest.mark.parametrize(
    "cut",
    [Behaviour(cut_after_head=True), Behaviour(cut_after=0), Behaviour(cut_after=2)],
    ids=["after-the-head", "after-the-role-chunk", "after-two-tokens"],
)
async def test_a_reused_connection_cut_after_the_server_answered_is_not_retried(
    upstream: FakeUpstream, cut: Behaviour
) -> None:
    # The server answered, so it is generating: sending again would generate twice.
    upstream.script(Behaviour(), cut)
    assert text_of(await collect(upstream, timeouts=NO_RETRIES)) == Behaviour().text
    error_of(await collect(upstream, timeouts=NO_RETRIES))
    first, second = upstream.requests
    assert second.peer == first.peer  # it was the pooled connection
    assert upstream.dropped == []


async def test_a_new_connection_closed_unanswered_is_not_sent_again_without_retries() -> None:
    # Only a reused connection can have been closed for idling; a new one that dies points at
    # the server, and MAX_RETRIES=0 asked for one attempt.
    connections = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1")
        events = [e async for e in stream(endpoint, KEY, BODY, timeouts=NO_RETRIES)]
    finally:
        server.close()
        await server.wait_closed()
    assert error_of(events).kind == "connection"
    assert connections == 1


# --- the fake stays honest ---------------------------------------------------------------------


async def test_the_official_openai_sdk_assembles_the_same_reply(upstream: FakeUpstream) -> None:
    openai = pytest.importorskip("openai")
    calls = [{"id": "call_9", "name": "lookup", "arguments": {"q": "Gemma 3", "n": 2}}]
    upstream.script(
        Behaviour(tokens=["Grüße", " 😀", " done"], split_bytes=True, line_ending="\r\n"),
        Behaviour(tokens=[], tool_calls=calls),
    )
    sdk = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="x", max_retries=0)
    try:
        text, usage = "", None
        response = await sdk.chat.completions.create(
            model="gemma-3-27b-it",
            messages=BODY["messages"],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
        arguments, name, finish = "", None, None
        response = await sdk.chat.completions.create(
            model="gemma-3-27b-it",
            messages=BODY["messages"],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    name = call.function.name or name
                    arguments += call.function.arguments or ""
    finally:
        await sdk.close()

    upstream.script(
        Behaviour(tokens=["Grüße", " 😀", " done"], split_bytes=True, line_ending="\r\n"),
        Behaviour(tokens=[], tool_calls=calls),
    )
    ours = await collect(upstream)
    assert text == text_of(ours) == "Grüße 😀 done"
    (our_usage,) = [e for e in ours if isinstance(e, Usage)]
    assert usage is not None and usage.total_tokens == our_usage.total_tokens
    ours = await collect(upstream)
    deltas = [e for e in ours if isinstance(e, ToolCallDelta)]
    assert name == deltas[0].name == "lookup" and finish == "tool_calls"
    assert (
        json.loads(arguments)
        == json.loads("".join(d.arguments for d in deltas))
        == calls[0]["arguments"]
    )


async def test_concurrent_streams_spread_over_small_pools(upstream: FakeUpstream) -> None:
    # One httpcore pool rescans all its connections on every request start and end; spread
    # over several clients, each scan stays short.
    from playground.providers import client as module

    upstream.default = Behaviour(n_tokens=3, interval=0.05)
    results = await asyncio.gather(*(collect(upstream) for _ in range(module.SHARD_STREAMS + 5)))
    assert all(text_of(r) == upstream.default.text for r in results)
    shards = module._loop_shards()
    assert len(shards.clients) == 2 and shards.active == [0, 0]
    await aclose_clients()
