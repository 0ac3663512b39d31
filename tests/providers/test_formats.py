"""The Responses and Messages wire formats: request bodies, streams and parameter gating.

Bodies are checked key by key against the published references, and then sent through the
official openai and anthropic SDKs, whose create() signatures refuse a keyword the API does not
have; the SDKs also read the fake upstream's streams, so its events are shaped as theirs.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from playground.providers import formats, params
from playground.providers.client import (
    Endpoint,
    Event,
    Finish,
    LogprobsDelta,
    ReasoningDelta,
    RedactedThinking,
    ResponseId,
    StreamError,
    TextDelta,
    ThinkingSignature,
    Timeouts,
    ToolCallDelta,
    Unreadable,
    Usage,
    stream,
)
from playground.providers.specs import CHAT, GEMMA_3N_E4B, GEMMA_4_E4B, MESSAGES, RESPONSES
from playground.providers.sse import SSEEvent
from tests.upstream import Behaviour, FakeUpstream

KEY = "sk-test-formats-0123456789"
FAST = Timeouts(connect=1.0, read=2.0, write=2.0, pool=2.0, retry_after_cap=1.0, backoff_base=0.01)
PNG = "data:image/png;base64,iVBORw0KGgo="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather for a city",
            "parameters": SCHEMA,
        },
    }
]
# A saved request: a system prompt, an image, an answered tool call, and a follow-up.
MESSAGES_SENT = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is here?"},
            {"type": "image_url", "image_url": {"url": PNG}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    {"role": "user", "content": "And tomorrow?"},
]


def saved_body(fmt: str, values: dict) -> dict:
    """A body as a reply saves it: Chat Completions names, checked for `fmt`."""
    cleaned = params.clean(GEMMA_4_E4B, values, keep_unknown=True, fmt=fmt)
    return {
        "model": "gemma-4-e4b",
        "messages": MESSAGES_SENT,
        **params.to_body(GEMMA_4_E4B, cleaned, fmt),
        "stream": True,
        "stream_options": {"include_usage": True},
    }


RESPONSES_VALUES = {
    "temperature": 0.4,
    "top_p": 0.9,
    "max_tokens": 300,
    "reasoning_effort": "high",
    "logprobs": True,
    "top_logprobs": 3,
    "tools": TOOLS,
    "tool_choice": "weather",
    "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}},
}
RESPONSES_WIRE = {
    "model": "gemma-4-e4b",
    "instructions": "Be brief.",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is here?"},
                {"type": "input_image", "image_url": PNG, "detail": "auto"},
            ],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "weather",
            "arguments": '{"city": "Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ],
    "temperature": 0.4,
    "top_p": 0.9,
    "top_logprobs": 3,
    "max_output_tokens": 300,
    "reasoning": {"effort": "high"},
    "include": ["message.output_text.logprobs"],
    "text": {"format": {"type": "json_schema", "name": "place", "schema": SCHEMA, "strict": True}},
    "tools": [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather for a city",
            "parameters": SCHEMA,
        }
    ],
    "tool_choice": {"type": "function", "name": "weather"},
    "stream": True,
}

MESSAGES_VALUES = {
    "temperature": 0.4,
    "top_p": 0.9,
    "max_tokens": 3000,
    "stop": ["END", "\\n\\n"],
    "enable_thinking": True,
    "thinking_budget": 2048,
    "reasoning_effort": "low",
    "tools": TOOLS,
    "tool_choice": "required",
    "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}},
}
MESSAGES_WIRE = {
    "model": "gemma-4-e4b",
    "max_tokens": 3000,
    "system": "Be brief.",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is here?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "temperature": 0.4,
    "top_p": 0.9,
    "stop_sequences": ["END", "\n\n"],
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": SCHEMA}},
    "tools": [{"name": "weather", "description": "Weather for a city", "input_schema": SCHEMA}],
    "tool_choice": {"type": "any"},
    "stream": True,
}


# --- catalog and gating -------------------------------------------------------------------------


def test_the_catalog_says_which_formats_each_model_is_served_over() -> None:
    assert GEMMA_4_E4B.formats == (CHAT, RESPONSES, MESSAGES)
    assert GEMMA_3N_E4B.formats == (CHAT,)


def test_every_gemma_4_parameter_is_carried_or_disabled_with_a_reason_in_each_format() -> None:
    for fmt in (CHAT, RESPONSES, MESSAGES):
        for field in formats.fields(GEMMA_4_E4B, fmt):
            if field.disabled:
                assert field.param.name in field.disabled or "format" in field.disabled
    responses = {f.param.name: f.disabled for f in formats.fields(GEMMA_4_E4B, RESPONSES)}
    assert responses["stop"] == "The Responses format has no stop sequences."
    assert responses["seed"] and responses["enable_thinking"] and not responses["tools"]
    messages = {f.param.name: f.disabled for f in formats.fields(GEMMA_4_E4B, MESSAGES)}
    assert messages["logprobs"] and messages["seed"] and not messages["stop"]
    assert "thinking_budget" in messages and "thinking_budget" not in responses
    assert not any(f.disabled for f in formats.fields(GEMMA_4_E4B, CHAT))


@pytest.mark.parametrize(
    ("fmt", "values", "field", "fragment"),
    [
        (RESPONSES, {"stop": ["x"]}, "stop", "has no stop sequences"),
        (RESPONSES, {"seed": 3}, "seed", "has no seed"),
        (RESPONSES, {"enable_thinking": False}, "enable_thinking", "reasoning.effort"),
        (MESSAGES, {"logprobs": True}, "logprobs", "no log probabilities"),
        (MESSAGES, {"temperature": 1.5}, "temperature", "between 0 and 1"),
        (MESSAGES, {"enable_thinking": True}, "thinking_budget", "needs a thinking budget"),
        (MESSAGES, {"thinking_budget": 512}, "thinking_budget", "at least 1024"),
        (MESSAGES, {"thinking_budget": 4096}, "thinking_budget", "below max_tokens (4096)"),
        (MESSAGES, {"response_format": "json_object"}, "response_format", "not accepted"),
        (CHAT, {"thinking_budget": 2048}, "thinking_budget", "not a parameter"),
    ],
)
def test_a_value_the_format_cannot_carry_is_refused_never_dropped(
    fmt, values, field, fragment
) -> None:
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, values, keep_unknown=True, fmt=fmt)
    assert fragment in caught.value.errors[field]


# --- request bodies -----------------------------------------------------------------------------


def test_every_parameter_reaches_the_responses_body_as_its_reference_says() -> None:
    body = saved_body(RESPONSES, RESPONSES_VALUES)
    assert formats.to_wire(GEMMA_4_E4B, RESPONSES, body) == RESPONSES_WIRE


def test_every_parameter_reaches_the_messages_body_as_its_reference_says() -> None:
    body = saved_body(MESSAGES, MESSAGES_VALUES)
    assert formats.to_wire(GEMMA_4_E4B, MESSAGES, body) == MESSAGES_WIRE


def test_messages_always_sends_max_tokens_and_thinking_off_as_disabled() -> None:
    body = saved_body(MESSAGES, {"enable_thinking": False})
    wire = formats.to_wire(GEMMA_4_E4B, MESSAGES, body)
    assert wire["max_tokens"] == 4096  # the page's default, which the panel's help names
    assert wire["thinking"] == {"type": "disabled"}


def test_responses_json_object_and_plain_tool_choice() -> None:
    body = saved_body(
        RESPONSES, {"response_format": "json_object", "tools": TOOLS, "tool_choice": "auto"}
    )
    wire = formats.to_wire(GEMMA_4_E4B, RESPONSES, body)
    assert wire["text"] == {"format": {"type": "json_object"}}
    assert wire["tool_choice"] == "auto"


def test_the_openai_sdk_sends_the_responses_body_unchanged(upstream: FakeUpstream) -> None:
    """responses.create() takes exactly the reference's names: an unknown one is a TypeError."""
    wire = formats.to_wire(GEMMA_4_E4B, RESPONSES, saved_body(RESPONSES, RESPONSES_VALUES))
    sdk = openai.OpenAI(base_url=upstream.base_url, api_key=KEY, max_retries=0)
    with sdk.responses.create(**wire) as events:
        list(events)
    received = upstream.requests[-1]
    assert received.path == "/v1/responses"
    assert received.body == wire
    assert received.headers["authorization"] == f"Bearer {KEY}"


def test_the_anthropic_sdk_sends_the_messages_body_unchanged(upstream: FakeUpstream) -> None:
    wire = formats.to_wire(GEMMA_4_E4B, MESSAGES, saved_body(MESSAGES, MESSAGES_VALUES))
    # anthropic-sdk-python 2.x no longer lists the sampling fields as keywords (the API
    # keeps them under anthropic-version 2023-06-01): they go as extra_body, as View code does.
    sampling = {k: wire[k] for k in ("temperature", "top_p", "top_k") if k in wire}
    kwargs = {k: v for k, v in wire.items() if k not in sampling}
    sdk = anthropic.Anthropic(
        base_url=upstream.base_url.removesuffix("/v1"),
        api_key=KEY,
        default_headers={"anthropic-version": formats.ANTHROPIC_VERSION},
    )
    with sdk.messages.create(**kwargs, extra_body=sampling) as events:
        list(events)
    received = upstream.requests[-1]
    assert received.path == "/v1/messages"
    assert received.body == wire
    assert received.headers["authorization"] == f"Bearer {KEY}"
    assert received.headers["anthropic-version"] == formats.ANTHROPIC_VERSION


# --- the fake upstream's streams, read by the official SDKs --------------------------------------


def test_the_openai_sdk_reads_the_fake_responses_stream(upstream: FakeUpstream) -> None:
    upstream.script(
        Behaviour(
            tokens=["Hel", "lo"],
            reasoning=["Think. "],
            tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
        )
    )
    sdk = openai.OpenAI(base_url=upstream.base_url, api_key=KEY, max_retries=0)
    with sdk.responses.stream(model="gemma-4-e4b", input="Hi") as events:
        kinds = [event.type for event in events]
        final = events.get_final_response()
    assert "response.reasoning_text.delta" in kinds
    assert "response.function_call_arguments.delta" in kinds
    assert final.output_text == "Hello"
    call = [item for item in final.output if item.type == "function_call"][0]
    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert final.usage is not None and final.usage.output_tokens == 3


def test_the_anthropic_sdk_reads_the_fake_messages_stream(upstream: FakeUpstream) -> None:
    upstream.script(
        Behaviour(
            tokens=["Hel", "lo"],
            reasoning=["Think. "],
            tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
        )
    )
    sdk = anthropic.Anthropic(base_url=upstream.base_url.removesuffix("/v1"), api_key=KEY)
    messages = [{"role": "user", "content": "Hi"}]
    with sdk.messages.stream(model="gemma-4-e4b", max_tokens=100, messages=messages) as events:
        final = events.get_final_message()
    kinds = [block.type for block in final.content]
    assert kinds == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "Think. "
    assert final.content[1].text == "Hello"
    assert final.content[2].input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 3


def test_the_sdks_see_a_mid_stream_error_in_each_format(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(mid_stream_error={"message": "overloaded"}, error_after=1))
    sdk = anthropic.Anthropic(
        base_url=upstream.base_url.removesuffix("/v1"), api_key=KEY, max_retries=0
    )
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded"),
        sdk.messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as events,
    ):
        list(events)


# --- client.stream() in each format -------------------------------------------------------------


async def collect(upstream: FakeUpstream, fmt: str, body: dict | None = None) -> list[Event]:
    saved = body or {"model": "gemma-4-e4b", "messages": [{"role": "user", "content": "Hi"}]}
    wire = formats.to_wire(GEMMA_4_E4B, fmt, saved)
    endpoint = Endpoint(upstream.base_url)
    return [e async for e in stream(endpoint, KEY, wire, timeouts=FAST, wire=formats.wire(fmt))]


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


BOTH = pytest.mark.parametrize("fmt", [RESPONSES, MESSAGES])


@BOTH
async def test_text_reasoning_finish_and_usage_arrive_as_typed_events(upstream, fmt) -> None:
    upstream.script(Behaviour(tokens=["a", "b", "c"], reasoning=["r1", "r2"]))
    events = await collect(upstream, fmt)
    assert isinstance(events[0], ResponseId)
    assert text_of(events) == "abc"
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["r1", "r2"]
    assert Finish("stop") in events
    usage = [e for e in events if isinstance(e, Usage)][-1]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1, 5, 6)
    assert usage.raw["prompt_tokens"] == 1  # the page reads these names in every format
    assert not any(isinstance(e, StreamError) for e in events)


@BOTH
async def test_tool_calls_arrive_as_deltas_that_join_into_arguments(upstream, fmt) -> None:
    calls = [
        {"id": "c1", "name": "weather", "arguments": {"city": "Oslo"}},
        {"id": "c2", "name": "time", "arguments": {"zone": "UTC"}},
    ]
    upstream.script(Behaviour(tokens=["ok"], tool_calls=calls))
    events = await collect(upstream, fmt)
    joined: dict[int, dict] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            call = joined.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = event.id or call["id"]
            call["name"] += event.name or ""
            call["arguments"] += event.arguments
    got = [joined[i] for i in sorted(joined)]
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in got] == [
        ("c1", "weather", {"city": "Oslo"}),
        ("c2", "time", {"zone": "UTC"}),
    ]
    assert Finish("tool_calls") in events


@BOTH
async def test_a_length_stop_is_reported_as_length(upstream, fmt) -> None:
    upstream.script(Behaviour(tokens=["a"], finish_reason="length"))
    assert Finish("length") in await collect(upstream, fmt)


@BOTH
async def test_a_mid_stream_error_ends_the_stream_with_one_error(upstream, fmt) -> None:
    upstream.script(Behaviour(tokens=["a", "b", "c"], mid_stream_error={"message": "boom"}))
    events = await collect(upstream, fmt)
    assert text_of(events) == "a"
    assert isinstance(events[-1], StreamError) and "boom" in str(events[-1].error)


@BOTH
async def test_a_cut_connection_is_a_stream_error_after_the_text_so_far(upstream, fmt) -> None:
    upstream.script(Behaviour(tokens=["a", "b", "c"], cut_after=2))
    events = await collect(upstream, fmt)
    assert text_of(events) == "ab"
    assert isinstance(events[-1], StreamError) and events[-1].error.kind == "stream"


@BOTH
async def test_an_unreadable_line_is_skipped_and_the_stream_goes_on(upstream, fmt) -> None:
    upstream.script(Behaviour(tokens=["a", "b"], bad_line_after=1))
    events = await collect(upstream, fmt)
    assert text_of(events) == "ab"
    assert any(isinstance(e, Unreadable) for e in events)


@BOTH
async def test_http_errors_keep_the_provider_message_and_429_is_retried(upstream, fmt) -> None:
    upstream.script(
        Behaviour(status=429, headers={"Retry-After": "0"}),
        Behaviour(tokens=["ok"]),
    )
    assert text_of(await collect(upstream, fmt)) == "ok"
    upstream.script(Behaviour(status=400, error_body=None))
    events = await collect(upstream, fmt)
    assert "Fake upstream error 400" in str(events[-1].error)


@BOTH
async def test_the_key_travels_in_the_formats_own_header(upstream, fmt) -> None:
    upstream.require_key = KEY
    try:
        events = await collect(upstream, fmt)
    finally:
        upstream.require_key = None
    assert text_of(events) == upstream.default.text
    headers = upstream.requests[-1].headers
    if fmt == MESSAGES:
        assert headers["x-api-key"] == KEY and headers["authorization"] == f"Bearer {KEY}"
        assert headers["anthropic-version"] == formats.ANTHROPIC_VERSION
    else:
        assert headers["authorization"] == f"Bearer {KEY}"
    assert upstream.requests[-1].path == f"/v1/{fmt}"


async def test_responses_logprobs_come_through(upstream) -> None:
    upstream.script(Behaviour(tokens=["a"], logprobs=True))
    events = await collect(upstream, RESPONSES)
    logprobs = [e for e in events if isinstance(e, LogprobsDelta)]
    assert logprobs and logprobs[0].content[0]["token"] == "a"


def test_a_failed_response_and_a_messages_error_event_become_stream_errors() -> None:
    failed = {"type": "response.failed", "response": {"error": {"code": "x", "message": "nope"}}}
    events = formats.ResponsesDecoder().events(SSEEvent(json.dumps(failed)), KEY, False)
    assert isinstance(events[0], StreamError) and "nope" in str(events[0].error)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": f"busy {KEY}"}}
    events = formats.MessagesDecoder().events(SSEEvent(json.dumps(error), "error"), KEY, False)
    assert isinstance(events[0], StreamError)
    assert KEY not in str(events[0].error) and "busy" in str(events[0].error)


@BOTH
async def test_a_key_echoed_in_an_error_body_is_scrubbed(upstream, fmt) -> None:
    upstream.script(Behaviour(status=401, echo_key_in_error=True))
    events = await collect(upstream, fmt)
    assert isinstance(events[-1], StreamError) and events[-1].error.kind == "auth"
    upstream.script(Behaviour(status=400, echo_key_in_error=True))
    events = await collect(upstream, fmt)
    assert KEY not in str(events[-1].error) and "[redacted]" in str(events[-1].error)
    upstream.script(Behaviour(tokens=["a", "b"], mid_stream_error={}, echo_key_in_error=True))
    events = await collect(upstream, fmt)
    assert KEY not in str(events[-1].error)


def test_a_server_that_ignores_stream_true_is_read_whole_in_each_format() -> None:
    from tests.upstream import _message, _response_object

    behaviour = Behaviour(
        tokens=["Hi"], reasoning=["hm"], tool_calls=[{"id": "c1", "name": "f", "arguments": {}}]
    )
    request = {"input": [{"role": "user", "content": "x y"}], "messages": []}
    for decoder, payload in [
        (formats.ResponsesDecoder(), _response_object(behaviour, request)),
        (formats.MessagesDecoder(), _message(behaviour, request)),
    ]:
        events = decoder.whole(payload)
        assert isinstance(events[0], ResponseId)
        signatures = [e for e in events if isinstance(e, ThinkingSignature)]
        assert signatures == (
            [ThinkingSignature("x")] if decoder.__class__ is formats.MessagesDecoder else []
        )
        events = [e for e in events if not isinstance(e, ThinkingSignature)]
        assert [type(e) for e in events[1:4]] == [ReasoningDelta, TextDelta, ToolCallDelta]
        assert Finish("tool_calls") in events
        assert [e for e in events if isinstance(e, Usage)][0].completion_tokens == 2


async def test_a_messages_thinking_block_ends_with_its_signature(upstream) -> None:
    upstream.script(Behaviour(tokens=["Hi"], reasoning=["Let ", "me see. "]))
    events = await collect(upstream, MESSAGES)
    kinds = [type(e) for e in events if isinstance(e, ReasoningDelta | ThinkingSignature)]
    assert kinds == [ReasoningDelta, ReasoningDelta, ThinkingSignature]
    assert ThinkingSignature("fake-signature") in events


async def test_a_redacted_thinking_block_is_kept_in_its_place(upstream) -> None:
    upstream.script(Behaviour(tokens=["Hi"], reasoning=["Hm. "], redacted_thinking="EmwKAhgB"))
    events = await collect(upstream, MESSAGES)
    kinds = [e for e in events if isinstance(e, ThinkingSignature | RedactedThinking)]
    assert kinds == [ThinkingSignature("fake-signature"), RedactedThinking("EmwKAhgB")]
    whole = formats.MessagesDecoder().whole(
        {
            "content": [
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "text", "text": "Hi"},
            ]
        }
    )
    assert RedactedThinking("EmwKAhgB") in whole


def test_a_saved_turn_goes_back_with_its_thinking_blocks_first_in_messages_only() -> None:
    turn = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
        "thinking_blocks": [
            {"thinking": "One. ", "signature": "s1"},
            {"redacted": "EmwKAhgB"},
            {"thinking": "Two. ", "signature": "s2"},
        ],
    }
    body = {"model": "gemma-4-e4b", "messages": [{"role": "user", "content": "x"}, turn]}
    model = GEMMA_4_E4B
    sent = formats.to_wire(model, MESSAGES, body)["messages"][1]["content"]
    assert sent == [
        {"type": "thinking", "thinking": "One. ", "signature": "s1"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "thinking", "thinking": "Two. ", "signature": "s2"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
    ]
    assert "thinking" not in json.dumps(formats.to_wire(model, RESPONSES, body))


def test_a_tool_call_name_or_id_that_is_not_a_string_is_treated_as_not_sent() -> None:
    block = {"type": "tool_use", "id": 1, "name": ["f"], "input": {}}
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    events = formats.MessagesDecoder().events(SSEEvent(json.dumps(start)), KEY, False)
    assert events == [ToolCallDelta(0, None, None, "")]
    item = {"type": "function_call", "call_id": "c1", "name": {"n": 1}}
    added = {"type": "response.output_item.added", "output_index": 0, "item": item}
    events = formats.ResponsesDecoder().events(SSEEvent(json.dumps(added)), KEY, False)
    assert events == [ToolCallDelta(0, "c1", None, "")]


async def test_a_count_too_large_for_an_int_is_an_unreadable_event_not_a_crash() -> None:
    start = {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1e999}}}
    events = formats.MessagesDecoder().events(SSEEvent(json.dumps(start)), KEY, True)
    assert events == [Unreadable("The provider sent a malformed event.")]
    body = b'{"type": "message", "content": [], "usage": {"output_tokens": 1e999}}'
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=body, headers={"content-type": "application/json"}
        )
    )
    events = await _collect_with(transport, MESSAGES)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].error.message == "The provider sent a malformed answer."


async def _collect_with(transport: httpx.MockTransport, fmt: str) -> list[Event]:
    async with httpx.AsyncClient(transport=transport) as http:
        wire = formats.wire(fmt)
        endpoint = Endpoint("http://x/v1")
        return [e async for e in stream(endpoint, KEY, {"model": "m"}, client=http, wire=wire)]


def test_malformed_responses_logprobs_do_not_throw_away_the_text() -> None:
    delta = {"type": "response.output_text.delta", "delta": "a", "logprobs": 5}
    events = formats.ResponsesDecoder().events(SSEEvent(json.dumps(delta)), KEY, False)
    assert events == [TextDelta("a"), Unreadable("The provider sent a malformed event.")]


def test_a_whole_responses_answer_with_parsed_arguments_gives_them_as_text() -> None:
    # The run joins argument pieces as text; an object here crashed it.
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": {"x": 1}}
    events = formats.ResponsesDecoder().whole({"output": [call], "status": "completed"})
    assert events[0] == ToolCallDelta(0, "c1", "f", '{"x": 1}')


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (RESPONSES, {"error": {"message": f"Incorrect API key provided: {KEY}"}}),
        (MESSAGES, {"type": "error", "error": {"message": f"invalid x-api-key {KEY}"}}),
    ],
)
async def test_a_key_echoed_in_a_whole_json_answer_is_scrubbed(fmt, body) -> None:
    raw = json.dumps(body).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=raw, headers={"content-type": "application/json"}
        )
    )
    events = await _collect_with(transport, fmt)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert KEY not in events[0].error.message and "[redacted]" in events[0].error.message


def test_a_null_partial_json_adds_nothing_to_the_arguments() -> None:
    delta = {"type": "input_json_delta", "partial_json": None}
    event = {"type": "content_block_delta", "index": 0, "delta": delta}
    events = formats.MessagesDecoder().events(SSEEvent(json.dumps(event)), KEY, False)
    assert events == [ToolCallDelta(0, None, None, "")]  # not the text "None"
