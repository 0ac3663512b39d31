"""Import a conversation: the JSON export of review/exports.py, or OpenAI chat JSONL.

Everything is checked before anything is written, and the writing is one transaction: a file
is imported whole or not at all. A refusal names the line it is about.

Caps (README "Export and import"): MAX_BYTES per file, MAX_MESSAGES messages, MAX_DEPTH levels
of JSON nesting (the parser's own recursion limit is far above, and a tool call's arguments
never need more).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from playground.accounts.models import Team
from playground.chat.models import Attachment, Conversation, Message
from playground.chat.services import ATTACHMENT_SCHEME
from playground.providers import catalog
from playground.review import exports

MAX_BYTES = 10 * 1024 * 1024
MAX_MESSAGES = 5000
MAX_DEPTH = 32
_SHA256 = re.compile(r"[0-9a-f]{64}")
ROLES = {choice.value for choice in Message.Role}
STATUSES = {choice.value for choice in Message.Status}


class Refused(ValueError):
    """The file cannot be imported; the message says where and why."""


def _depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _loads(text: str, line: int | None = None) -> Any:
    where = f"line {line}" if line is not None else "line {lineno}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        lineno = line if line is not None else exc.lineno
        raise Refused(f"line {lineno}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
    except RecursionError:
        raise Refused(f"{where.format(lineno=1)}: nested deeper than {MAX_DEPTH} levels.") from None
    if not _depth_ok(value):
        raise Refused(f"{where.format(lineno=1)}: nested deeper than {MAX_DEPTH} levels.")
    return value


def decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise Refused(f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise Refused(f"line {line}: not UTF-8 text.") from None


# --- the JSON export ------------------------------------------------------------------------

# Optional message fields and the types they may have (None is allowed for each).
_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,), "reasoning": (str,), "tool_calls": (list,), "tool_call_id": (str,),
    "logprobs": (list,), "reasoning_ms": (int, float), "schema_check": (dict,),
    "finish_reason": (str,), "error": (str,), "notes": (list,), "response_id": (str,),
    "model": (str,), "request_body": (dict,), "usage": (dict,), "ttft_ms": (int, float),
    "total_ms": (int, float), "tokens_per_second": (int, float), "content_parts": (list,),
    "cost": (str,), "created": (str,), "attachments": (list,),
}  # fmt: skip
_REQUIRED_BLANK = {"text", "reasoning", "tool_call_id", "finish_reason", "error", "response_id",
                   "model"}  # fmt: skip
_LENGTHS = {"tool_call_id": 200, "finish_reason": 40, "response_id": 200, "model": 200}
_MESSAGE_KEYS = {"id", "parent", "role", "status", *_TYPES}
_CONVERSATION_KEYS = {"title", "model", "system_prompt", "params", "created", "updated"}


@dataclass
class _Plan:
    conversation: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)  # in file order
    hashes: set[str] = field(default_factory=set)
    active_leaf: int | None = None  # the file's number of the shown branch's leaf


def _message_lines(text: str) -> list[int]:
    """The line of each message, for files laid out as the export writes them (a message a
    line); only used to word a refusal."""
    found: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            value = json.loads(line.strip().rstrip(","))
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict) and "role" in value:
            found.append(number)
    return found


def parse_export(text: str) -> _Plan:
    data = _loads(text)
    if not isinstance(data, dict) or data.get("format") != exports.FORMAT:
        raise Refused(f'line 1: not a Playground export (no "format": "{exports.FORMAT}").')
    if data.get("version") != exports.VERSION:
        raise Refused(f"line 1: export version {data.get('version')!r} is not supported.")
    head = data.get("conversation")
    if not isinstance(head, dict) or set(head) - _CONVERSATION_KEYS:
        raise Refused('line 1: "conversation" must be an object with the exported fields only.')
    for key, limit in (("title", 200), ("model", 200), ("system_prompt", None)):
        value = head.get(key, "")
        if not isinstance(value, str) or (limit and len(value) > limit):
            raise Refused(f'line 1: conversation "{key}" must be text of at most {limit} chars.')
    if not isinstance(head.get("params", {}), dict):
        raise Refused('line 1: conversation "params" must be an object.')
    records = data.get("messages")
    if not isinstance(records, list):
        raise Refused('line 1: "messages" must be a list.')
    if len(records) > MAX_MESSAGES:
        raise Refused(f"line 1: more than {MAX_MESSAGES} messages.")
    plan = _Plan(conversation=head)
    active = data.get(exports.ACTIVE_LEAF)
    if active is not None and (not isinstance(active, int) or isinstance(active, bool)):
        raise Refused(f'line 1: "{exports.ACTIVE_LEAF}" must be a message id or null.')
    plan.active_leaf = active
    seen: set[int] = set()
    lines: list[int] | None = None
    for index, record in enumerate(records):
        try:
            _check_message(record, seen, plan)
        except Refused as exc:
            if lines is None:
                lines = _message_lines(text)
            laid_out = len(lines) == len(records)
            where = f"line {lines[index]}" if laid_out else f"message {index + 1}"
            raise Refused(f"{where}: {exc}") from None
    if active is not None and active not in seen:
        raise Refused(f'line 1: "{exports.ACTIVE_LEAF}" names no message of the file.')
    return plan


def _check_message(record: Any, seen: set[int], plan: _Plan) -> None:
    if not isinstance(record, dict):
        raise Refused("a message must be an object.")
    unknown = set(record) - _MESSAGE_KEYS
    if unknown:
        raise Refused(f"unknown field {sorted(unknown)[0]!r}.")
    ident, parent = record.get("id"), record.get("parent")
    if not isinstance(ident, int) or isinstance(ident, bool) or ident in seen:
        raise Refused('"id" must be a whole number not used before in the file.')
    if parent is not None and (
        not isinstance(parent, int) or isinstance(parent, bool) or parent not in seen
    ):
        raise Refused(f'"parent" {parent!r} is not an earlier message of this file.')
    if record.get("role") not in ROLES:
        raise Refused(f'"role" must be one of {", ".join(sorted(ROLES))}.')
    if record.get("status", "complete") not in STATUSES:
        raise Refused(f'"status" must be one of {", ".join(sorted(STATUSES))}.')
    for key, types in _TYPES.items():
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            raise Refused(f'"{key}" has the wrong type.')
        if key in _LENGTHS and len(str(value)) > _LENGTHS[key]:
            raise Refused(f'"{key}" is longer than {_LENGTHS[key]} characters.')
    if record.get("cost") is not None:
        try:
            cost = Decimal(record["cost"])
        except InvalidOperation:
            raise Refused('"cost" must be a decimal number.') from None
        if not cost.is_finite() or abs(cost) >= 10_000:
            raise Refused('"cost" is out of range.')
    for image in record.get("attachments") or []:
        if not isinstance(image, dict) or not _SHA256.fullmatch(str(image.get("sha256", ""))):
            raise Refused('each of "attachments" needs a "sha256" of 64 hex digits.')
        plan.hashes.add(image["sha256"])
    for part in record.get("content_parts") or []:
        if not isinstance(part, dict):
            raise Refused('"content_parts" must hold objects.')
        if "attachment" in part and part["attachment"] not in plan.hashes:
            raise Refused("an image part names an image not in this message's attachments.")
    seen.add(ident)
    plan.messages.append(record)


def _request_with_ids(body: Any, ids: dict[str, int]) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return body
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            url = part.get("image_url", {}).get("url", "") if isinstance(part, dict) else ""
            if isinstance(url, str) and url.startswith(exports.HASH_SCHEME):
                sha = url.removeprefix(exports.HASH_SCHEME)
                # An image the file does not carry stays named by hash; re-running that
                # reply then says the image is not stored, as for a deleted one.
                part["image_url"]["url"] = f"{ATTACHMENT_SCHEME}{ids[sha]}" if sha in ids else url
    return body


def _images(user, hashes: set[str]) -> dict[str, int]:
    """The importer's own (or visible) images with these hashes; every one must exist."""
    found: dict[str, int] = {}
    for pk, sha in (
        Attachment.objects.visible_to(user).filter(sha256__in=hashes).values_list("pk", "sha256")
    ):
        found.setdefault(sha, pk)
    missing = sorted(hashes - set(found))
    if missing:
        raise Refused(
            f"image sha256:{missing[0]} is not stored here: upload it first, then import again."
        )
    return found


def import_export(user, team: Team | None, text: str) -> Conversation:
    plan = parse_export(text)
    head = plan.conversation
    with transaction.atomic():
        ids = _images(user, plan.hashes)
        conversation = Conversation.objects.create(
            owner=user,
            team=team,
            title=head.get("title", ""),
            model=head.get("model") or catalog.DEFAULT_MODEL_KEY,
            system_prompt=head.get("system_prompt", ""),
            params=head.get("params", {}),
        )
        made: dict[int, Message] = {}
        for record in plan.messages:
            values = {
                key: record[key]
                for key in _TYPES
                if record.get(key) is not None
                and key not in {"attachments", "content_parts", "created", "cost"}
            }
            values.update({k: "" for k in _REQUIRED_BLANK if values.get(k) is None})
            status = record.get("status", Message.Status.COMPLETE)
            if status == Message.Status.STREAMING:  # no run behind it here
                status = Message.Status.INTERRUPTED
            values["request_body"] = _request_with_ids(record.get("request_body"), ids)
            message = Message.objects.create(
                conversation=conversation,
                parent=made[record["parent"]] if record.get("parent") is not None else None,
                role=record["role"],
                status=status,
                cost=Decimal(record["cost"]) if record.get("cost") is not None else None,
                content_parts=[
                    {**part, "attachment": ids[part["attachment"]]}
                    if "attachment" in part
                    else part
                    for part in record.get("content_parts") or []
                ],
                created_by=user if record["role"] == Message.Role.USER else None,
                **values,
            )
            hashes = [image["sha256"] for image in record.get("attachments") or []]
            if hashes:
                message.attachments.set([ids[sha] for sha in hashes])
            made[record["id"]] = message
        if plan.active_leaf is not None:
            conversation.active_leaf = made[plan.active_leaf]
            conversation.save(update_fields=["active_leaf"])
    return conversation


# --- OpenAI chat JSONL ----------------------------------------------------------------------

_LINE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
_OPENAI_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}


def _content(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise Refused("only text content parts can be imported (no images or audio).")
            if not isinstance(part.get("text"), str):
                raise Refused('a text part needs a "text" string.')
            texts.append(part["text"])
        return "".join(texts)
    raise Refused('"content" must be text, a list of text parts, or null.')


def parse_jsonl(text: str) -> tuple[str, list[tuple[int, list[dict[str, Any]]]]]:
    """The shared system prompt and each line's turns (role, text, tool fields)."""
    system: str | None = None
    paths: list[tuple[int, list[dict[str, Any]]]] = []
    total = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _loads(raw, number)
        try:
            if not isinstance(line, dict) or not isinstance(line.get("messages"), list):
                raise Refused('each line must be an object with a "messages" list.')
            if set(line) - _LINE_KEYS:
                raise Refused(f"unknown field {sorted(set(line) - _LINE_KEYS)[0]!r}.")
            turns: list[dict[str, Any]] = []
            prompt = ""
            for index, message in enumerate(line["messages"]):
                if not isinstance(message, dict) or set(message) - _OPENAI_KEYS:
                    raise Refused(f"message {index + 1} is not an OpenAI chat message.")
                role = message.get("role")
                if role == "system" and index == 0:
                    prompt = _content(message.get("content"))
                    continue
                if role not in {"user", "assistant", "tool"}:
                    raise Refused(f'message {index + 1}: "role" {role!r} is not supported here.')
                calls = message.get("tool_calls") or []
                call_id = message.get("tool_call_id") or ""
                if not isinstance(calls, list) or not isinstance(call_id, str):
                    raise Refused(f"message {index + 1}: malformed tool fields.")
                turns.append(
                    {
                        "role": role,
                        "text": _content(message.get("content")),
                        "tool_calls": calls,
                        "tool_call_id": call_id[:200],
                    }
                )
            if not turns:
                raise Refused("no user, assistant or tool message.")
            if system is None:
                system = prompt
            elif prompt != system:
                raise Refused("its system prompt differs from the first line's.")
        except Refused as exc:
            raise Refused(f"line {number}: {exc}") from None
        total += len(turns)
        if total > MAX_MESSAGES:
            raise Refused(f"line {number}: more than {MAX_MESSAGES} messages in the file.")
        paths.append((number, turns))
    if not paths:
        raise Refused("line 1: the file has no lines.")
    return system or "", paths


def import_jsonl(user, team: Team | None, text: str) -> Conversation:
    """Lines that begin alike share those messages: the file becomes one reply tree."""
    system, paths = parse_jsonl(text)
    with transaction.atomic():
        conversation = Conversation(
            owner=user, team=team, model=catalog.DEFAULT_MODEL_KEY, system_prompt=system
        )
        first_user = next((t["text"] for t in paths[0][1] if t["role"] == "user"), "")
        conversation.title_from(first_user or "Imported conversation")
        conversation.save()
        nodes: dict[tuple, Message] = {}
        for _, turns in paths:
            parent: Message | None = None
            for turn in turns:
                key = (
                    parent.pk if parent else None,
                    turn["role"],
                    turn["text"],
                    json.dumps(turn["tool_calls"], sort_keys=True),
                    turn["tool_call_id"],
                )
                if key not in nodes:
                    nodes[key] = Message.objects.create(
                        conversation=conversation,
                        parent=parent,
                        created_by=user if turn["role"] == "user" else None,
                        **turn,
                    )
                parent = nodes[key]
    return conversation
