"""The three wire formats a model may serve: Chat Completions, Responses and Messages.

The playground keeps one request shape of its own, a Chat Completions body (the messages, and
the parameters under the names the model's page gives them); that is what a reply saves and
what Re-run repeats. This module says which of those parameters each format can carry (and
why not, for the rest), turns the saved body into the format's own body, and reads the
format's stream into the typed events of client.py.

Sources, not memory: the OpenAI Responses API reference and openai-python's
`types/responses/` (ResponseCreateParams, FunctionToolParam, ResponseInputImageParam,
ResponseTextDeltaEvent, ResponseFunctionCallArgumentsDeltaEvent, ResponseCompletedEvent,
ResponseFailedEvent, ResponseErrorEvent) and the Anthropic Messages API reference and
anthropic-sdk-python's `types/` (MessageCreateParams, ToolParam, ImageBlockParam,
ThinkingConfigEnabledParam, RawMessageStartEvent, RawContentBlockStartEvent,
RawContentBlockDeltaEvent, RawMessageDeltaEvent, RawMessageStopEvent).

Pure Python like client.py, specs.py and params.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from playground.providers import client
from playground.providers.specs import (
    CHAT,
    FORMAT_LABELS,
    MESSAGES,
    RESPONSES,
    THINKING,
    Model,
    Param,
)
from playground.providers.sse import SSEEvent

__all__ = [
    "ANTHROPIC_VERSION",
    "Field",
    "Wire",
    "fields",
    "params_for",
    "to_wire",
    "wire",
]

# The Messages API refuses a request without this header. 2023-06-01 is the version the
# Messages API was published under, with temperature, top_p and top_k; anthropic-sdk-python
# 2.x sends 2026-10-21 by default, under which those sampling fields are refused.
ANTHROPIC_VERSION = "2023-06-01"
# thinking.budget_tokens: "Must be ≥1024 and less than max_tokens" (Messages reference).
MIN_THINKING_BUDGET = 1024
# What a Messages request sends as max_tokens (which it requires) when the panel leaves it
# unset and the model documents no default or maximum.
FALLBACK_MAX_TOKENS = 4096

THINKING_BUDGET = Param(
    name="thinking_budget",
    type="integer",
    min=MIN_THINKING_BUDGET,
    step=1,
    ui_max=8192,
    help="Messages: thinking.budget_tokens, the tokens the model may think for; at least "
    f"{MIN_THINKING_BUDGET} and below max_tokens. Needed when thinking is on.",
    capability=THINKING,
)

_MAX_TOKENS_NAMES = ("max_tokens", "max_completion_tokens")

# Why a format cannot carry a parameter; the panel shows the text next to the disabled control
# and validation refuses a value with it, so nothing set is ever left out of a request unseen.
_NOT_IN_RESPONSES = {
    "stop": "The Responses format has no stop sequences.",
    "seed": "The Responses format has no seed.",
    "presence_penalty": "The Responses format has no presence penalty.",
    "frequency_penalty": "The Responses format has no frequency penalty.",
    "min_p": "The Responses format has no min_p.",
    "repetition_penalty": "The Responses format has no repetition penalty.",
    "top_k": "The Responses format has no top_k.",
    "top_a": "The Responses format has no top_a.",
    "logit_bias": "The Responses format has no logit bias.",
    "enable_thinking": "The Responses format has no thinking switch: reasoning effort "
    "(reasoning.effort) sets it.",
}
_NOT_IN_MESSAGES = {
    "seed": "The Messages format has no seed.",
    "presence_penalty": "The Messages format has no presence penalty.",
    "frequency_penalty": "The Messages format has no frequency penalty.",
    "min_p": "The Messages format has no min_p.",
    "repetition_penalty": "The Messages format has no repetition penalty.",
    "top_a": "The Messages format has no top_a.",
    "logit_bias": "The Messages format has no logit bias.",
    "logprobs": "The Messages format returns no log probabilities.",
    "top_logprobs": "The Messages format returns no log probabilities.",
}
_NOT_CARRIED = {CHAT: {}, RESPONSES: _NOT_IN_RESPONSES, MESSAGES: _NOT_IN_MESSAGES}


@dataclass(frozen=True)
class Field:
    """One control of the panel in a format: the parameter, and why it is off (if it is)."""

    param: Param
    disabled: str = ""


def _max_tokens_default(param: Param, model: Model) -> int:
    value = param.default or param.max or model.max_output or param.ui_max
    return int(value or FALLBACK_MAX_TOKENS)


def _narrowed(param: Param, model: Model, fmt: str) -> Param:
    """The parameter as the format takes it: other bounds, or other words in its help."""
    if fmt == MESSAGES and param.name == "temperature":
        # Messages: "Ranges from 0.0 to 1.0".
        high = 1 if param.max is None else min(param.max, 1)
        return dataclasses.replace(
            param, max=high, help=f"{param.help} The Messages format takes 0 to 1."
        )
    if fmt == MESSAGES and param.name in _MAX_TOKENS_NAMES:
        sent = _max_tokens_default(param, model)
        return dataclasses.replace(
            param,
            help=f"{param.help} Sent as max_tokens, which the Messages format requires: "
            f"unset, {sent} is sent.",
        )
    if fmt == MESSAGES and param.name == "reasoning_effort":
        return dataclasses.replace(param, help=f"{param.help} Sent as output_config.effort.")
    if fmt == RESPONSES and param.name == "reasoning_effort":
        return dataclasses.replace(param, help=f"{param.help} Sent as reasoning.effort.")
    if fmt == MESSAGES and param.name == "stop":
        return dataclasses.replace(param, help=f"{param.help} Sent as stop_sequences.")
    if fmt == MESSAGES and param.name == "response_format":
        return dataclasses.replace(
            param,
            choices=("json_schema",),
            help="Structured JSON output matching a schema (output_config.format). The "
            "Messages format has no plain JSON mode.",
        )
    if fmt == RESPONSES and param.name in _MAX_TOKENS_NAMES:
        return dataclasses.replace(param, help=f"{param.help} Sent as max_output_tokens.")
    if fmt == RESPONSES and param.name == "response_format":
        return dataclasses.replace(param, help=f"{param.help} Sent as text.format.")
    return param


def fields(model: Model, fmt: str) -> list[Field]:
    """Every control the panel shows for `model` in `fmt`, in order, with the disabled ones."""
    not_carried = _NOT_CARRIED[fmt]
    found = []
    for param in model.params:
        reason = not_carried.get(param.name, "")
        if param.sent_as != param.name and not reason:
            reason = not_carried.get(param.sent_as, "")
        found.append(Field(_narrowed(param, model, fmt), reason))
        if fmt == MESSAGES and param.name == "enable_thinking":
            found.append(Field(THINKING_BUDGET))
    return found


def params_for(model: Model, fmt: str) -> dict[str, Field]:
    """The model's parameters in `fmt` by name: what validation checks values against."""
    return {f.param.name: f for f in fields(model, fmt)}


def served(model: Model, fmt: str) -> bool:
    return fmt in model.formats


# ---------------------------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------------------------


def to_wire(model: Model, fmt: str, body: dict[str, Any]) -> dict[str, Any]:
    """The saved Chat Completions body as the format's own body (stream on, as always)."""
    if fmt == RESPONSES:
        return _responses_body(model, body)
    if fmt == MESSAGES:
        return _messages_body(model, body)
    return body


def _split_max_tokens(body: dict[str, Any]) -> int | None:
    for name in _MAX_TOKENS_NAMES:
        if body.get(name) is not None:
            return int(body[name])
    return None


def _parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return ""


def _responses_body(model: Model, body: dict[str, Any]) -> dict[str, Any]:
    instructions = []
    items: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            instructions.append(_parts_text(content))
        elif role == "user":
            items.append({"role": "user", "content": _responses_content(content)})
        elif role == "assistant":
            if content:
                items.append({"role": "assistant", "content": _parts_text(content)})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "arguments": function.get("arguments") or "",
                    }
                )
        elif role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id", ""),
                    "output": _parts_text(content),
                }
            )
    wire: dict[str, Any] = {"model": body.get("model", model.id)}
    if instructions:
        wire["instructions"] = "\n\n".join(instructions)
    wire["input"] = items
    for name in ("temperature", "top_p", "top_logprobs"):
        if name in body:
            wire[name] = body[name]
    max_tokens = _split_max_tokens(body)
    if max_tokens is not None:
        wire["max_output_tokens"] = max_tokens
    if "reasoning_effort" in body:
        wire["reasoning"] = {"effort": body["reasoning_effort"]}
    if body.get("logprobs"):
        # Responses returns log probabilities only when asked to include them.
        wire["include"] = ["message.output_text.logprobs"]
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema") or {}
            text_format = {"type": "json_schema", "name": spec.get("name", "reply")}
            text_format["schema"] = spec.get("schema") or {}
            if "strict" in spec:
                text_format["strict"] = spec["strict"]
            wire["text"] = {"format": text_format}
        else:
            wire["text"] = {"format": {"type": "json_object"}}
    if body.get("tools"):
        wire["tools"] = [_responses_tool(tool) for tool in body["tools"]]
    if "tool_choice" in body:
        choice = body["tool_choice"]
        if isinstance(choice, dict):
            choice = {"type": "function", "name": (choice.get("function") or {}).get("name")}
        wire["tool_choice"] = choice
    wire["stream"] = True
    return wire


def _responses_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if part.get("type") == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append(
                {
                    "type": "input_image",
                    "image_url": image.get("url", ""),
                    "detail": image.get("detail", "auto"),
                }
            )
    return parts


def _responses_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """Chat's nested {"type", "function": {...}} as the Responses API's flat function tool."""
    function = tool.get("function") or {}
    flat: dict[str, Any] = {"type": "function", "name": function.get("name", "")}
    if "description" in function:
        flat["description"] = function["description"]
    flat["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
    if "strict" in function:
        flat["strict"] = function["strict"]
    return flat


_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def _messages_image(url: str) -> dict[str, Any]:
    match = _DATA_URL.match(url)
    if match:
        source = {"type": "base64", "media_type": match["type"], "data": match["data"]}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def _messages_content(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_messages_image(str((part.get("image_url") or {}).get("url", ""))))
    return blocks


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    # tool_use.input is an object; arguments a model wrote as broken JSON go as they came.
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _messages_body(model: Model, body: dict[str, Any]) -> dict[str, Any]:
    system = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Messages alternates user and assistant turns: tool results after tool calls, or a
        # system prompt folded in, would otherwise give two turns of one role in a row.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(_parts_text(content))
        elif role == "user":
            add("user", _messages_content(content))
        elif role == "assistant":
            # Thinking first, each block with its signature (or, redacted, its encrypted data),
            # as the model wrote them: a turn that called tools must send its thinking back so
            # (Messages, extended thinking).
            blocks = [
                {"type": "redacted_thinking", "data": b["redacted"]}
                if b.get("redacted")
                else {
                    "type": "thinking",
                    "thinking": b.get("thinking", ""),
                    "signature": b["signature"],
                }
                for b in message.get("thinking_blocks") or []
                if b.get("signature") or b.get("redacted")
            ]
            blocks += _messages_content(content)
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": _tool_input(function.get("arguments")),
                    }
                )
            if blocks:
                add("assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": _parts_text(content),
            }
            add("user", [result])
    # A turn of plain text goes as a string, the shorter form the reference shows first.
    for turn in turns:
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            turn["content"] = blocks[0]["text"]
    max_tokens = _split_max_tokens(body)
    if max_tokens is None:
        spec = next((p for p in model.params if p.name in _MAX_TOKENS_NAMES), None)
        max_tokens = _max_tokens_default(spec, model) if spec else FALLBACK_MAX_TOKENS
    wire: dict[str, Any] = {"model": body.get("model", model.id), "max_tokens": max_tokens}
    if system:
        wire["system"] = "\n\n".join(system)
    wire["messages"] = turns
    for name in ("temperature", "top_p", "top_k"):
        if name in body:
            wire[name] = body[name]
    if body.get("stop"):
        stop = body["stop"]
        wire["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("enable_thinking") is False:
        wire["thinking"] = {"type": "disabled"}
    elif "thinking_budget" in body:
        wire["thinking"] = {"type": "enabled", "budget_tokens": body["thinking_budget"]}
    output_config: dict[str, Any] = {}
    if "reasoning_effort" in body:
        output_config["effort"] = body["reasoning_effort"]
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        output_config["format"] = {"type": "json_schema", "schema": schema}
    if output_config:
        wire["output_config"] = output_config
    if body.get("tools"):
        wire["tools"] = [_messages_tool(tool) for tool in body["tools"]]
    if "tool_choice" in body:
        wire["tool_choice"] = _messages_tool_choice(body["tool_choice"])
    wire["stream"] = True
    return wire


def _messages_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    converted: dict[str, Any] = {"name": function.get("name", "")}
    if "description" in function:
        converted["description"] = function["description"]
    converted["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return converted


def _messages_tool_choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    return {"type": {"required": "any"}.get(choice, choice)}


def check(model: Model, fmt: str, cleaned: dict[str, Any]) -> dict[str, str]:
    """Errors of values that are each valid but do not go together in `fmt`."""
    errors: dict[str, str] = {}
    if fmt != MESSAGES:
        return errors
    budget = cleaned.get("thinking_budget")
    if cleaned.get("enable_thinking") is True and budget is None:
        errors["thinking_budget"] = (
            "thinking_budget: the Messages format needs a thinking budget when thinking is on"
        )
    if budget is not None:
        if cleaned.get("enable_thinking") is False:
            errors["thinking_budget"] = "thinking_budget: thinking is off"
        else:
            spec = next((p for p in model.params if p.name in _MAX_TOKENS_NAMES), None)
            limit = _split_max_tokens(cleaned)
            if limit is None:
                limit = _max_tokens_default(spec, model) if spec else FALLBACK_MAX_TOKENS
            if budget >= limit:
                errors["thinking_budget"] = (
                    f"thinking_budget must be below max_tokens ({limit}) in the Messages format"
                )
    return errors


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class Decoder:
    """Reads one response's SSE events into client events; one instance per response."""

    def events(self, sse: SSEEvent, api_key: str | None, want_id: bool) -> list[client.Event]:
        """The client events in one SSE event; a payload that is not a JSON object, or one
        whose fields have the wrong types, is an Unreadable event, never an exception."""
        payload = _payload(sse, api_key)
        if isinstance(payload, list):
            return payload
        try:
            return self._events(payload, api_key, want_id)
        except (AttributeError, TypeError, ValueError, LookupError, OverflowError):
            # OverflowError: a count of 1e999 reads as inf, which int() refuses.
            return [client.Unreadable("The provider sent a malformed event.")]

    def _events(
        self, payload: dict[str, Any], api_key: str | None, want_id: bool
    ) -> list[client.Event]:
        raise NotImplementedError

    def whole(self, payload: dict[str, Any], api_key: str | None = None) -> list[client.Event]:
        """A server that ignored stream: true and answered with one object. `api_key` is
        scrubbed from an error in it, as from the stream's."""
        raise NotImplementedError


def _payload(sse: SSEEvent, api_key: str | None) -> dict[str, Any] | list[client.Event]:
    try:
        payload = json.loads(sse.data)
    except ValueError:
        if sse.event == "error":
            return [
                client.StreamError(client.UpstreamError("stream", client.clean(sse.data, api_key)))
            ]
        return [client.Unreadable("The provider sent data that is not JSON.")]
    if not isinstance(payload, dict):
        return [client.Unreadable("The provider sent an unexpected event.")]
    return payload


def _usage(prompt: int, completion: int, total: int | None, raw: dict[str, Any]) -> client.Usage:
    # Chat Completions' names first: the page reads those whatever the format, and the
    # format's own names stay beside them in the saved usage.
    total = total if total is not None else prompt + completion
    named = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return client.Usage(prompt, completion, total, {**named, **raw})


def _arguments(value: Any) -> str:
    """Tool call arguments as text, which the run joins: a few servers send them parsed."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class ResponsesDecoder(Decoder):
    """Responses stream events (`type` in each payload; the `event:` field repeats it)."""

    INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}

    def __init__(self) -> None:
        self.calls: dict[int, str] = {}  # output_index → call_id of function_call items

    def _events(
        self, payload: dict[str, Any], api_key: str | None, want_id: bool
    ) -> list[client.Event]:
        kind = payload.get("type") or ""
        if kind in ("response.output_text.delta",):
            events: list[client.Event] = []
            if payload.get("delta"):
                events.append(client.TextDelta(str(payload["delta"])))
            if payload.get("logprobs"):
                # Malformed, the logprobs are skipped on their own: the text stays.
                if isinstance(payload["logprobs"], list):
                    events.append(client.LogprobsDelta(payload["logprobs"]))
                else:
                    events.append(client.Unreadable("The provider sent a malformed event."))
            return events
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            return [client.ReasoningDelta(str(payload["delta"]))] if payload.get("delta") else []
        if kind == "response.output_item.added":
            item = payload.get("item") or {}
            if item.get("type") != "function_call":
                return []
            index = _int(payload.get("output_index"))
            self.calls[index] = str(item.get("call_id") or item.get("id") or "")
            return [
                client.ToolCallDelta(
                    index, self.calls[index] or None, client.text_or_none(item.get("name")), ""
                )
            ]
        if kind == "response.function_call_arguments.delta":
            index = _int(payload.get("output_index"))
            return [client.ToolCallDelta(index, None, None, str(payload.get("delta") or ""))]
        if kind == "response.created":
            response_id = (payload.get("response") or {}).get("id")
            if want_id and isinstance(response_id, str) and response_id:
                return [client.ResponseId(response_id[: client.MAX_RESPONSE_ID])]
            return []
        if kind in ("response.completed", "response.incomplete"):
            return self._end(payload.get("response") or {})
        if kind == "response.failed":
            error = (payload.get("response") or {}).get("error") or {}
            return [client.StreamError(client.mid_stream_error(error or "failed", api_key))]
        if kind == "error":
            return [client.StreamError(client.mid_stream_error(payload, api_key))]
        return []

    def _end(self, response: dict[str, Any]) -> list[client.Event]:
        if response.get("status") == "incomplete":
            why = str((response.get("incomplete_details") or {}).get("reason") or "incomplete")
            reason = self.INCOMPLETE.get(why, why)
        else:
            reason = "tool_calls" if self.calls else "stop"
        events: list[client.Event] = [client.Finish(reason)]
        usage = response.get("usage")
        if isinstance(usage, dict):
            prompt, completion = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
            total = usage.get("total_tokens")
            events.append(
                _usage(prompt, completion, total if isinstance(total, int) else None, usage)
            )
        return events

    def whole(self, payload: dict[str, Any], api_key: str | None = None) -> list[client.Event]:
        events: list[client.Event] = []
        if isinstance(payload.get("id"), str):
            events.append(client.ResponseId(payload["id"][: client.MAX_RESPONSE_ID]))
        if payload.get("error"):
            return [client.StreamError(client.mid_stream_error(payload["error"], api_key))]
        for index, item in enumerate(payload.get("output") or []):
            if item.get("type") == "reasoning":
                for part in [*(item.get("content") or []), *(item.get("summary") or [])]:
                    if part.get("text"):
                        events.append(client.ReasoningDelta(str(part["text"])))
            elif item.get("type") == "message":
                for part in item.get("content") or []:
                    if part.get("type") == "output_text" and part.get("text"):
                        events.append(client.TextDelta(str(part["text"])))
            elif item.get("type") == "function_call":
                self.calls[index] = str(item.get("call_id") or "")
                events.append(
                    client.ToolCallDelta(
                        index,
                        self.calls[index],
                        client.text_or_none(item.get("name")),
                        _arguments(item.get("arguments")),
                    )
                )
        return events + self._end(payload)


class MessagesDecoder(Decoder):
    """Messages stream events: message_start, content_block_start/delta/stop, message_delta,
    message_stop, ping and error, each named in the `event:` field and in the payload's type."""

    STOP_REASONS = {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    }

    def __init__(self) -> None:
        self.input_tokens = 0
        self.start_usage: dict[str, Any] = {}

    def _events(
        self, payload: dict[str, Any], api_key: str | None, want_id: bool
    ) -> list[client.Event]:
        kind = payload.get("type") or ""
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            which = delta.get("type")
            if which == "text_delta" and delta.get("text"):
                return [client.TextDelta(str(delta["text"]))]
            if which == "thinking_delta" and delta.get("thinking"):
                return [client.ReasoningDelta(str(delta["thinking"]))]
            if which == "input_json_delta":
                index = _int(payload.get("index"))
                # _arguments: null is no piece (str() made it "None"), an object is JSON.
                piece = _arguments(delta.get("partial_json"))
                return [client.ToolCallDelta(index, None, None, piece)]
            if which == "signature_delta" and delta.get("signature"):
                # Saved with the reply: a thinking block goes back with its signature.
                return [client.ThinkingSignature(str(delta["signature"]))]
            return []  # citations carry nothing the page shows
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            index = _int(payload.get("index"))
            if block.get("type") == "tool_use":
                # input arrives as input_json_delta pieces; the start holds an empty object.
                id_, name = block.get("id"), block.get("name")
                return [
                    client.ToolCallDelta(
                        index, client.text_or_none(id_), client.text_or_none(name), ""
                    )
                ]
            if block.get("type") == "text" and block.get("text"):
                return [client.TextDelta(str(block["text"]))]
            if block.get("type") == "thinking":
                events: list[client.Event] = []
                if block.get("thinking"):
                    events.append(client.ReasoningDelta(str(block["thinking"])))
                if block.get("signature"):  # usually "" here, the signature_delta follows
                    events.append(client.ThinkingSignature(str(block["signature"])))
                return events
            if block.get("type") == "redacted_thinking" and block.get("data"):
                return [client.RedactedThinking(str(block["data"]))]
            return []
        if kind == "message_start":
            message = payload.get("message") or {}
            self.start_usage = message.get("usage") or {}
            self.input_tokens = _int(self.start_usage.get("input_tokens"))
            message_id = message.get("id")
            if want_id and isinstance(message_id, str) and message_id:
                return [client.ResponseId(message_id[: client.MAX_RESPONSE_ID])]
            return []
        if kind == "message_delta":
            events = []
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                events.append(client.Finish(self.STOP_REASONS.get(reason, str(reason))))
            usage = payload.get("usage")
            if isinstance(usage, dict):
                # Counts in message_delta are cumulative; input_tokens may come again here.
                prompt = _int(usage.get("input_tokens")) or self.input_tokens
                completion = _int(usage.get("output_tokens"))
                raw = {**self.start_usage, **{k: v for k, v in usage.items() if v is not None}}
                events.append(_usage(prompt, completion, None, raw))
            return events
        if kind == "message_stop":
            raise client.Done
        if kind == "error":
            return [
                client.StreamError(client.mid_stream_error(payload.get("error") or {}, api_key))
            ]
        return []  # ping, content_block_stop

    def whole(self, payload: dict[str, Any], api_key: str | None = None) -> list[client.Event]:
        if payload.get("type") == "error":
            error = payload.get("error") or {}
            return [client.StreamError(client.mid_stream_error(error, api_key))]
        events: list[client.Event] = []
        if isinstance(payload.get("id"), str):
            events.append(client.ResponseId(payload["id"][: client.MAX_RESPONSE_ID]))
        for index, block in enumerate(payload.get("content") or []):
            if block.get("type") == "thinking":
                if block.get("thinking"):
                    events.append(client.ReasoningDelta(str(block["thinking"])))
                if block.get("signature"):
                    events.append(client.ThinkingSignature(str(block["signature"])))
            elif block.get("type") == "redacted_thinking" and block.get("data"):
                events.append(client.RedactedThinking(str(block["data"])))
            elif block.get("type") == "text" and block.get("text"):
                events.append(client.TextDelta(str(block["text"])))
            elif block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {})
                events.append(
                    client.ToolCallDelta(
                        index,
                        client.text_or_none(block.get("id")),
                        client.text_or_none(block.get("name")),
                        arguments,
                    )
                )
        self.start_usage = {}
        events += self._events(
            {"type": "message_delta", "delta": payload, "usage": payload.get("usage")}, None, False
        )
        return events


@dataclass(frozen=True)
class Wire:
    """How one format travels: its path under the base URL, its headers and its decoder."""

    format: str
    path: str

    @property
    def label(self) -> str:
        return FORMAT_LABELS[self.format]

    def headers(self, endpoint: client.Endpoint, api_key: str | None) -> dict[str, str]:
        if self.format != MESSAGES:
            return client.build_headers(endpoint, api_key)
        # The Messages reference authenticates with x-api-key, and anthropic-sdk-python 2.x
        # sends the same key as a Bearer token: servers speaking Messages read one or the
        # other (the provider page documents only the Bearer header), so both go, to the
        # same host. The version pins the request fields this module sends (top_k and the
        # other sampling fields belong to 2023-06-01).
        headers = {"Accept": "text/event-stream", "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "stream": True}

    def decoder(self) -> Decoder:
        return ResponsesDecoder() if self.format == RESPONSES else MessagesDecoder()


WIRES = {RESPONSES: Wire(RESPONSES, "/responses"), MESSAGES: Wire(MESSAGES, "/messages")}


def wire(fmt: str) -> Wire | None:
    """The Wire for `fmt`; None for Chat Completions, which client.py speaks by itself."""
    return WIRES.get(fmt)


PATHS = {CHAT: "/chat/completions", RESPONSES: "/responses", MESSAGES: "/messages"}
