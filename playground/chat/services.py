"""Turning "send this" into database rows and a run request, in one transaction."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from playground.accounts.crypto import KeyDecryptionError
from playground.accounts.models import ApiKey
from playground.chat import budgets, extensions, images, plainsql
from playground.chat.keys import owner_kind, paying_key
from playground.chat.models import Attachment, Conversation, LastSettings, Message
from playground.chat.runs import RunRequest
from playground.providers import catalog, params
from playground.providers.specs import (
    CHAT,
    FORMAT_LABELS,
    IMAGES,
    MESSAGES,
    SYSTEM_ROLE,
    Model,
    Provider,
)
from playground.providers.storable import unstorable

MAX_PROMPT_CHARS = 200_000
MAX_SYSTEM_CHARS = 50_000
SYSTEM_PROMPT = "system_prompt"  # its key among the settings' field errors
SYSTEM_PROMPT_TOO_LONG = f"The system prompt is too long: at most {MAX_SYSTEM_CHARS:,} characters."
MAX_TOOL_RESULT_CHARS = 200_000
ATTACHMENT_SCHEME = "attachment:"


class TurnError(Exception):
    """A plain message for the person who pressed Send; nothing was saved."""


@dataclass
class Turn:
    """What a send created: rows to show, and the run to start."""

    messages: list[Message]
    run: RunRequest
    conversation: Conversation


@sensitive_variables("plaintext")
def resolve_api_key(
    user, conversation: Conversation, provider: Provider
) -> tuple[str | None, ApiKey | None]:
    """The plaintext of the key that pays (see keys.paying_key for the rule), and the key.

    The team key is the team's money: only a member who may run in the team spends it,
    checked in paying_key so that no caller can skip it."""
    key = paying_key(user, conversation, provider.slug)
    if key is None:
        if provider.requires_key:
            raise TurnError(f"Add your {provider.name} API key on the Keys page first.")
        return None, None
    try:
        plaintext = key.reveal()
    except KeyDecryptionError as exc:
        raise TurnError(f"{provider.name}: {exc}") from None
    now = timezone.now()
    if key.last_used is None or now - key.last_used > timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used=now)  # to the minute is enough
    return plaintext, key


def get_model(model_key: str) -> Model:
    try:
        return catalog.get_model(model_key)
    except catalog.UnknownModel:
        raise TurnError("Pick a model from the list.") from None


def history(conversation: Conversation) -> list[Message]:
    """The active branch (see active_branch): what the model sees as context. The caller's
    `conversation` must be fresh (its active_leaf_id is used)."""
    return active_branch(_messages_of(conversation), conversation.active_leaf_id)


def _messages_of(conversation: Conversation) -> dict[int, Message]:
    # Saved requests and logprobs are the bulk of a long conversation and never context.
    return {m.pk: m for m in conversation.messages.defer("request_body", "logprobs")}


# The functions below take `by_id` in Message.Meta.ordering (created, id), as every query of a
# conversation's messages returns them: the order is the age, and `created` need not be read.


def _newest(by_id: dict[int, Message], messages) -> Message:
    rank = {pk: i for i, pk in enumerate(by_id)}
    return max(messages, key=lambda m: rank[m.pk])


def newest_below(by_id: dict[int, Message], node: Message) -> Message:
    """The newest message in `node`'s subtree: a leaf, since a child is always newer than its
    parent. Switching to a branch shows it down to its latest turn."""
    children: dict[int, list[Message]] = {}
    for message in by_id.values():
        if message.parent_id is not None:
            children.setdefault(message.parent_id, []).append(message)
    subtree, stack = [], [node]
    while stack:  # iteratively: a long conversation is a deep tree
        current = stack.pop()
        subtree.append(current)
        stack.extend(children.get(current.pk, ()))
    return _newest(by_id, subtree)


def active_branch(by_id: dict[int, Message], active_id: int | None) -> list[Message]:
    """Root to leaf through the conversation's active leaf, the branch the transcript shows
    and the next turn continues. No active leaf (an imported conversation) or one deleted
    since: the newest message's branch. A leaf that has since got replies (written by code
    that set no leaf) continues down to the newest of them."""
    if not by_id:
        return []
    end = by_id.get(active_id) if active_id is not None else None
    newest = by_id[next(reversed(by_id))]  # the usual case: the latest turn's branch
    end = newest if end is None or end is newest else newest_below(by_id, end)
    return _walk(by_id, end)


def children_ids(by_id: dict[int, Message]) -> dict[int | None, list[int]]:
    """Each parent's children ids (None: the roots), oldest first: a message's siblings are
    its parent's children (edits, regenerations, re-runs)."""
    children: dict[int | None, list[int]] = {}
    for message in by_id.values():
        children.setdefault(message.parent_id, []).append(message.pk)
    return children


def _walk(by_id: dict[int, Message], newest: Message) -> list[Message]:
    node: Message | None = newest
    branch = []
    while node is not None:
        branch.append(node)
        node = by_id.get(node.parent_id) if node.parent_id is not None else None
    return branch[::-1]


# What a request is built from (as_openai) and the branch walked by.
CONTEXT_FIELDS = (
    "id",
    "parent_id",
    "role",
    "text",
    "reasoning",
    "thinking_signatures",
    "content_parts",
    "tool_calls",
    "tool_call_id",
)


def _context_of(conversation: Conversation) -> tuple[list[Message], int]:
    """history() for building a request, and the newest message id: the messages hold only
    CONTEXT_FIELDS (any other field is read when first used, as with defer())."""
    by_id, active_id = _context_rows(conversation)
    if not by_id:
        return [], 0
    return active_branch(by_id, active_id), max(by_id)


def _context_rows(conversation: Conversation) -> tuple[dict[int, Message], int | None]:
    """Every message of the conversation (CONTEXT_FIELDS only) by id, and its active leaf id,
    read in one query (the leaf fresh: another tab may have switched branches).

    Plain SQL: every send runs it before its upstream request goes out, and the ORM's query
    (a related manager, defer(), model rows) cost more CPU than SQLite took to run it. JSON
    columns go through the field's own from_db_value(), as the ORM does."""
    sql, names, decoders = _context_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [conversation.pk, conversation.pk])
        rows = cursor.fetchall()
    by_id = {}
    for row in rows:
        values = [
            v if d is None else d(v, None, connection)
            for v, d in zip(row[:-1], decoders, strict=True)
        ]
        by_id[row[0]] = Message.from_db(connection.alias, names, values)
    return by_id, (rows[0][-1] if rows else None)


@functools.cache
def _context_sql(vendor: str) -> tuple[str, list[str], list]:
    """The query, its columns' names and their decoders, in the model's field order (which
    Model.from_db() expects); the id first."""
    quote = connection.ops.quote_name
    fields = [f for f in Message._meta.concrete_fields if f.attname in CONTEXT_FIELDS]
    columns = ", ".join(quote(f.column) for f in fields)
    leaf = (
        f"(SELECT {quote('active_leaf_id')} FROM {quote(Conversation._meta.db_table)}"
        f" WHERE {quote('id')} = %s)"
    )
    sql = (
        f"SELECT {columns}, {leaf} FROM {quote(Message._meta.db_table)}"
        f" WHERE {quote('conversation_id')} = %s ORDER BY {quote('created')}, {quote('id')}"
    )
    names = [f.attname for f in fields]
    return sql, names, [getattr(f, "from_db_value", None) for f in fields]


def as_openai(message: Message, fmt: str = CHAT) -> dict[str, Any] | None:
    if message.role == Message.Role.ASSISTANT:
        if message.tool_calls:
            turn = {
                "role": "assistant",
                "content": message.text or None,
                "tool_calls": message.tool_calls,
            }
            if fmt == MESSAGES and message.thinking_signatures:
                # The playground's own key, read by formats.to_wire for Messages only.
                turn["thinking_blocks"] = thinking_blocks(message)
            return turn
        # A failed or stopped-before-any-token reply adds no context.
        return {"role": "assistant", "content": message.text} if message.text else None
    if message.role == Message.Role.TOOL:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if message.role == Message.Role.USER:
        images = [p["attachment"] for p in message.content_parts if p.get("type") == "image"]
        if not images:
            return {"role": "user", "content": message.text}
        # The saved request refers to each image; the run sends it as a data URL.
        parts: list[dict[str, Any]] = []
        if message.text:
            parts.append({"type": "text", "text": message.text})
        parts += [
            {"type": "image_url", "image_url": {"url": f"{ATTACHMENT_SCHEME}{pk}"}} for pk in images
        ]
        return {"role": "user", "content": parts}
    return None


def thinking_blocks(message: Message) -> list[dict[str, str]]:
    """The reply's thinking blocks as the model wrote them, each with its signature, or
    (redacted by the provider) with its encrypted data."""
    blocks, at = [], 0
    for saved in message.thinking_signatures:
        if isinstance(saved, dict) and isinstance(saved.get("redacted"), str):
            blocks.append({"redacted": saved["redacted"]})
            continue
        if not isinstance(saved, dict) or not isinstance(saved.get("signature"), str):
            continue  # not one the run saved
        chars = saved["chars"] if isinstance(saved.get("chars"), int) else 0
        blocks.append(
            {"thinking": message.reasoning[at : at + chars], "signature": saved["signature"]}
        )
        at += chars
    return blocks


def with_image_data(body: dict[str, Any]) -> dict[str, Any]:
    """The body as sent: each `attachment:<id>` reference replaced by the image's data URL."""
    refs = [
        part
        for message in body.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
        and str(part["image_url"].get("url", "")).startswith(ATTACHMENT_SCHEME)
    ]
    if not refs:
        return body
    ids = {int(part["image_url"]["url"].removeprefix(ATTACHMENT_SCHEME)) for part in refs}
    found = {a.pk: a for a in Attachment.objects.filter(pk__in=ids)}
    if len(found) != len(ids):
        raise TurnError("An image in this conversation is no longer stored.")
    sent = copy.deepcopy(body)
    for message in sent["messages"]:
        if not isinstance(message.get("content"), list):
            continue
        for part in message["content"]:
            url = part.get("image_url", {}).get("url", "")
            if url.startswith(ATTACHMENT_SCHEME):
                part["image_url"]["url"] = images.data_url(found[int(url.split(":", 1)[1])])
    return sent


def attachments_for(user, model: Model, ids: list[int]) -> list[Attachment]:
    if not ids:
        return []
    if not model.supports(IMAGES):
        raise TurnError(f"{model.label} does not accept images: remove them or pick another model.")
    limit = settings.PLAYGROUND_IMAGES["MAX_PER_MESSAGE"]
    if len(ids) > limit:
        raise TurnError(f"Attach at most {limit} images to one message.")
    # An id past the database's integers is no row's: SQLite raises OverflowError on it.
    stored = [pk for pk in ids if 0 < pk < 2**63]
    found = {a.pk: a for a in Attachment.objects.filter(owner=user, pk__in=stored)}
    if len(found) != len(set(ids)):
        raise TurnError("An attached image is no longer available: attach it again.")
    return [found[pk] for pk in dict.fromkeys(ids)]


def build_messages(
    model: Model, system_prompt: str, branch: list[Message], fmt: str = CHAT
) -> list[dict]:
    messages = [m for m in (as_openai(message, fmt) for message in branch) if m is not None]
    system_prompt = system_prompt.strip()
    if system_prompt:
        if model.supports(SYSTEM_ROLE):
            messages.insert(0, {"role": "system", "content": system_prompt})
        else:
            # Some Gemma deployments reject a system role: fold it into the first user turn.
            for message in messages:
                if message["role"] == "user":
                    message["content"] = f"{system_prompt}\n\n{message['content']}"
                    break
    return messages


def build_body(
    model: Model, messages: list[dict], cleaned: dict[str, Any], fmt: str = CHAT
) -> dict[str, Any]:
    """The request in Chat Completions shape, whatever format it goes in: what a reply saves.
    formats.to_wire() turns it into the Responses or Messages body when it is sent."""
    body: dict[str, Any] = {
        "model": model.id,
        "messages": messages,
        **params.to_body(model, cleaned, fmt),
    }
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def pick_format(model: Model, fmt: str) -> str:
    """The wire format asked for, if the model is served over it; unnamed, Chat Completions."""
    fmt = fmt or CHAT
    if fmt not in model.formats:
        served = ", ".join(FORMAT_LABELS[f] for f in model.formats)
        label = FORMAT_LABELS.get(fmt, "that format")
        raise TurnError(f"{model.label} is not served over {label} here (only {served}).")
    return fmt


def clean_settings(
    model: Model, system_prompt: str, values: dict[str, Any], fmt: str = CHAT
) -> dict[str, Any]:
    """The parameters, typed and within bounds, or InvalidParams naming every field to fix.

    A system prompt over MAX_SYSTEM_CHARS is refused (error key SYSTEM_PROMPT), never cut short:
    whoever saves or sends it would not know its end was gone. So is one holding what cannot
    be stored (a NUL, a lone surrogate: storable.py), rather than failing the save."""
    errors: dict[str, str] = {}
    if len(system_prompt) > MAX_SYSTEM_CHARS:
        errors[SYSTEM_PROMPT] = SYSTEM_PROMPT_TOO_LONG
    elif what := unstorable(system_prompt):
        errors[SYSTEM_PROMPT] = f"The system prompt holds {what}, which cannot be stored."
    try:
        # A name the model does not document is refused, not dropped: it is a typo or a
        # client out of date, and leaving it out silently would change the run unseen.
        cleaned = params.clean(model, values, keep_unknown=True, fmt=fmt)
    except params.InvalidParams as exc:
        errors = {**exc.errors, **errors}
    if errors:
        raise params.InvalidParams(errors)
    return cleaned


# A seed is sampling's, but carried into a new chat it would repeat the last one's replies.
NOT_CARRIED = frozenset({"seed"})


def sampling_values(model_key: str, values: dict[str, Any]) -> dict[str, Any]:
    """The numeric sampling parameters among `values` (temperature, top_p, penalties, …):
    what a new conversation keeps of the last one. Stop strings, logit bias, thinking, tools,
    logprobs and structured output describe one task, not a taste, and stay behind."""
    try:
        model = catalog.get_model(model_key)
    except catalog.UnknownModel:
        return {}
    kept = {
        p.name
        for p in model.params
        if p.capability is None and p.is_numeric and p.name not in NOT_CARRIED
    }
    return {name: value for name, value in values.items() if name in kept}


def apply_settings(
    conversation: Conversation,
    user,
    *,
    model_key: str,
    system_prompt: str,
    values: dict,
    wire_format: str | None = None,
) -> Model:
    """Validate and store the conversation's model, format, system prompt and parameters.
    No format named (a client that predates them) keeps the conversation's own."""
    model = get_model(model_key)
    fmt = pick_format(model, conversation.wire_format if wire_format is None else wire_format)
    conversation.params = clean_settings(model, system_prompt, values, fmt)
    conversation.wire_format = fmt
    conversation.model = model.key
    conversation.system_prompt = system_prompt
    return model


@sensitive_variables("api_key", "run")
def _turn(
    conversation: Conversation,
    user,
    created: list[Message],
    model: Model,
    body: dict[str, Any],
    channel: str,
    api_key: str | None,
    parent: Message | None = None,
    fmt: str = CHAT,
    *,
    key: ApiKey | None,
) -> Turn:
    """The streaming reply after the rows a turn `created` (or under `parent`), and its run.

    Inside the turn's transaction: a missing image or a budget aborts the whole turn."""
    within_budget(user, conversation, model)
    parent = created[-1] if created else parent
    reply = _reply(conversation, user, parent, model, body, channel, fmt, key)
    conversation.active_leaf = reply  # a re-run's new branch is the one shown
    if parent is not None and parent.role != Message.Role.TOOL:
        with_branch_nav(reply)
    conversation.save()  # bumps `updated`: the sidebar is newest first
    sent = with_image_data(body)
    run = RunRequest(
        reply.pk,
        conversation.pk,
        channel,
        model,
        sent,
        api_key,
        wire_format=fmt,
        team_id=conversation.team_id,
        reply=reply,
    )
    return Turn([*created, reply], run, conversation)


def within_budget(user, conversation: Conversation, model: Model) -> None:
    """TurnError if this run would go over a budget of its space or its sender. Every turn
    checks here before its upstream request starts: a send in prepare_turn(), tool results
    and re-runs in _turn()."""
    try:
        budgets.check(user, conversation.team_id, model.cost(completed=True))
    except budgets.BudgetExceeded as exc:
        raise TurnError(str(exc)) from None


def _reply(
    conversation: Conversation,
    user,
    parent: Message | None,
    model: Model,
    body,
    channel,
    fmt: str = CHAT,
    key: ApiKey | None = None,
):
    return _insert(
        key_id=key.pk if key else None,
        key_owner=owner_kind(key),
        key_last_four=key.last_four if key else "",
        conversation=conversation,
        team_id=conversation.team_id,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model.key,
        wire_format=fmt,
        request_body=body,
        created_by=user,
        run_channel=channel,
        checkpoint_at=timezone.now(),
    )


def _insert(**values: Any) -> Message:
    """Message.objects.create(**values) with the INSERT's SQL built once per process.

    Every turn inserts two messages; building each INSERT through the ORM's compiler cost
    more CPU than SQLite took to run it. The values still go through each field's own
    pre_save() and get_db_prep_save(), as the ORM does: defaults, `created`, JSON encoding
    and every backend's adapters are the same. No pre_save/post_save signal is sent;
    nothing listens for Message's."""
    message = Message(**values)
    sql, returning = _insert_sql(connection.vendor)
    params = [f.get_db_prep_save(f.pre_save(message, True), connection) for f in _INSERT_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            pk = cursor.fetchone()[0]
        else:
            pk = connection.ops.last_insert_id(cursor, Message._meta.db_table, "id")
    message.pk = pk
    message._state.adding = False
    message._state.db = connection.alias
    return message


_INSERT_FIELDS = [f for f in Message._meta.concrete_fields if not f.primary_key]


@functools.cache
def _insert_sql(vendor: str) -> tuple[str, bool]:
    """The INSERT for this database, and whether it returns the new id itself."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in _INSERT_FIELDS)
    placeholders = ", ".join(["%s"] * len(_INSERT_FIELDS))
    sql = f"INSERT INTO {quote(Message._meta.db_table)} ({columns}) VALUES ({placeholders})"
    returning = bool(connection.features.can_return_columns_from_insert)
    if returning:
        sql += f" RETURNING {quote(Message._meta.pk.column)}"
    return sql, returning


def _locked(conversation: Conversation, user) -> Conversation:
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    streaming = conversation.messages.filter(status=Message.Status.STREAMING)
    if streaming.exists():
        # A run whose process died must not block the conversation until someone reloads.
        streaming.mark_stale_interrupted()
        if streaming.exists():
            raise TurnError("A reply is still streaming: stop it or wait for it to finish.")
    limit = settings.PLAYGROUND_RUN["MAX_RUNS_PER_USER"]
    running = Message.objects.filter(created_by=user, status=Message.Status.STREAMING).count()
    if running >= limit:
        raise TurnError(
            f"{running} of your replies are streaming already: stop one or wait for it."
        )
    return conversation


@dataclass
class PreparedTurn:
    """A send checked and its request built from what was read, before any row is written:
    the run can start its upstream request while write_turn() saves the rows."""

    conversation: Conversation
    model: Model
    text: str
    attached: list[Attachment]
    parent: Message | None
    seen: int  # the newest message id read: a newer one means the conversation moved on
    body: dict[str, Any]  # as saved, images by reference
    run: RunRequest  # as sent; message_id is 0 until write_turn() makes the reply
    key: ApiKey | None = None  # the key that pays, recorded on the reply (never its text)
    new_prompt: bool = True  # False: a regeneration, only a reply is written under `parent`
    branching: bool = False  # an edit or a regeneration: a sibling branch, not the next turn


@sensitive_variables("api_key", "paid_by")
def prepare_turn(
    conversation: Conversation,
    user,
    *,
    text: str,
    channel: str,
    model_key: str = "",
    system_prompt: str = "",
    values: dict[str, Any] | None = None,
    attachment_ids: list[int] | None = None,
    wire_format: str | None = None,
    edit_of: int | None = None,
    regenerate_of: int | None = None,
    paid_by: tuple[str | None, ApiKey | None] | None = None,
) -> PreparedTurn:
    """Validate a send and build its request: reads only (the key, the history).

    `edit_of` (a user message): the new text goes in as its sibling, with its images, and
    the reply below it. `regenerate_of` (a reply): a new reply as its sibling, `text` unused.
    Both take the conversation's saved settings (the panel saves each change) and the
    branch above the message as context, whatever branch is shown.

    `paid_by`: resolve_api_key()'s answer for this user, space and provider, when the caller
    has it already (a compare's columns share one: reading it once per column cost most of
    a column's preparation)."""
    if edit_of is not None or regenerate_of is not None:
        conversation.refresh_from_db(fields=["model", "wire_format", "params", "system_prompt"])
        model = get_model(conversation.model)
        system_prompt = conversation.system_prompt
    else:
        text = text.strip()
        if not text and not attachment_ids:
            raise TurnError("Write a message first.")
        _check_message(text)
        model = apply_settings(
            conversation,
            user,
            model_key=model_key,
            system_prompt=system_prompt,
            values=values or {},
            wire_format=wire_format,
        )
    fmt = conversation.wire_format
    branching = edit_of is not None or regenerate_of is not None
    text = "" if regenerate_of is not None else text.strip()
    attached: list[Attachment] = []
    if not branching:
        attached = attachments_for(user, model, attachment_ids or [])
    within_budget(user, conversation, model)  # before the key: a refused send spends nothing
    if paid_by is None:
        paid_by = resolve_api_key(user, conversation, model.provider)
    api_key, key = paid_by
    by_id, active_id = _context_rows(conversation)
    seen = max(by_id, default=0)
    if regenerate_of is not None:
        original = by_id.get(regenerate_of)
        if original is None or original.role != Message.Role.ASSISTANT or not original.parent_id:
            raise TurnError("That reply cannot be regenerated.")
        branch = _walk(by_id, by_id[original.parent_id])
    elif edit_of is not None:
        original = by_id.get(edit_of)
        if original is None or original.role != Message.Role.USER:
            raise TurnError("Only a sent message of this conversation can be edited.")
        image_ids = [p["attachment"] for p in original.content_parts if p.get("type") == "image"]
        if not text and not image_ids:
            raise TurnError("Write a message first.")
        _check_message(text)
        attached = _attachments_of(model, image_ids)
        parent = by_id.get(original.parent_id) if original.parent_id else None
        branch = _walk(by_id, parent) if parent is not None else []
    else:
        branch = active_branch(by_id, active_id)
    context = list(branch)
    if regenerate_of is None:
        context.append(
            Message(
                role=Message.Role.USER,
                text=text,
                content_parts=[{"type": "image", "attachment": a.pk} for a in attached],
            )
        )
    messages = build_messages(model, system_prompt, context, fmt)
    body = build_body(model, messages, conversation.params, fmt)
    run = RunRequest(
        0,
        conversation.pk,
        channel,
        model,
        with_image_data(body),
        api_key,
        wire_format=fmt,
        team_id=conversation.team_id,
    )
    parent = branch[-1] if branch else None
    return PreparedTurn(
        conversation,
        model,
        text,
        attached,
        parent,
        seen,
        body,
        run,
        key,
        new_prompt=regenerate_of is None,
        branching=branching,
    )


def _check_message(text: str) -> None:
    """TurnError for a message too long, or holding what no database here can store (it would
    fail the turn's rows after its request had gone upstream)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise TurnError(f"The message is too long (over {MAX_PROMPT_CHARS:,} characters).")
    what = unstorable(text)
    if what:
        raise TurnError(f"The message holds {what}, which cannot be stored: nothing was sent.")


def _attachments_of(model: Model, ids: list[int]) -> list[Attachment]:
    """An edited message's images, kept: whoever sent them, they are the conversation's."""
    if not ids:
        return []
    if not model.supports(IMAGES):
        raise TurnError(f"{model.label} does not accept images: the edited message has some.")
    found = {a.pk: a for a in Attachment.objects.filter(pk__in=ids)}
    if len(found) != len(set(ids)):
        raise TurnError("An image of this message is no longer stored.")
    return [found[pk] for pk in dict.fromkeys(ids)]


def write_turn(prepared: PreparedTurn, user, *, batch: bool = False, remember: bool = True) -> Turn:
    """Save a prepared send: the prompt, the streaming reply, the conversation's settings and
    the user's last settings, in one transaction of six statements. TurnError (nothing saved)
    if a reply is streaming, the conversation moved on since it was read, or the user has
    too many replies streaming. `batch` (an experiment item): the per-user cap does not
    apply, the experiment's per-endpoint concurrency does instead, and the user's last
    settings are left as they were. `remember=False` (a compare column, a sweep cell): the
    last settings, which a new conversation starts from, are left as they were too."""
    conversation = prepared.conversation
    with transaction.atomic():
        title = _lock_for_turn(conversation, user, prepared.seen, batch=batch)
        conversation.title = title
        conversation.title_from(prepared.text or "Image")
        conversation.updated = timezone.now()
        created = []
        if prepared.new_prompt:
            prompt = _insert(
                conversation=conversation,
                parent=prepared.parent,
                role=Message.Role.USER,
                text=prepared.text,
                content_parts=[{"type": "image", "attachment": a.pk} for a in prepared.attached],
                created_by=user,
            )
            if prepared.attached:
                prompt.attachments.set(prepared.attached)
            created.append(prompt)
        reply = _reply(
            conversation,
            user,
            created[-1] if created else prepared.parent,
            prepared.model,
            prepared.body,
            prepared.run.channel,
            prepared.run.wire_format,
            prepared.key,
        )
        # The new reply's branch is the one shown and continued, in every tab.
        conversation.active_leaf_id = reply.pk
        plainsql.update(
            Conversation,
            {"id": conversation.pk},
            {
                "title": conversation.title,
                "model": conversation.model,
                "wire_format": conversation.wire_format,
                "params": conversation.params,
                "system_prompt": conversation.system_prompt,
                "updated": conversation.updated,
                "active_leaf_id": reply.pk,
            },
        )
        if remember and not batch:
            LastSettings.remember_now(user, conversation)
        if not prepared.new_prompt:
            with_branch_nav(reply)
    return Turn(
        [*created, reply], replace(prepared.run, message_id=reply.pk, reply=reply), conversation
    )


def _lock_for_turn(conversation: Conversation, user, seen: int, *, batch: bool = False) -> str:
    """Lock the conversation's row and check, in one query, that a turn may start; its
    current title (another tab may have renamed it).

    Plain SQL: built with the ORM (three subqueries), this query cost a seventh of a turn's
    CPU in the profile, more than running it."""
    quote = connection.ops.quote_name
    conversations, messages = (quote(Conversation._meta.db_table), quote(Message._meta.db_table))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = (
        f"SELECT title,"
        f" EXISTS(SELECT 1 FROM {messages} WHERE conversation_id = %s AND status = %s),"
        f" EXISTS(SELECT 1 FROM {messages} WHERE conversation_id = %s AND id > %s),"
        f" (SELECT COUNT(*) FROM {messages} WHERE created_by_id = %s AND status = %s)"
        f" FROM {conversations} WHERE id = %s{lock}"
    )
    streaming = Message.Status.STREAMING.value
    pk = conversation.pk
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk, streaming, pk, seen, user.pk, streaming, pk])
        row = cursor.fetchone()
    if row is None:
        raise TurnError("This conversation no longer exists.")
    title, busy, moved, running = row
    if busy:
        _locked(conversation, user)  # interrupts a dead run's reply, or says one is streaming
    elif running >= settings.PLAYGROUND_RUN["MAX_RUNS_PER_USER"] and not batch:
        _locked(conversation, user)  # says so, in the same words as every other turn
    if moved:
        raise TurnError("The conversation changed while you sent: send again.")
    return title


@sensitive_variables("api_key")
def start_turn(
    conversation: Conversation,
    user,
    *,
    text: str,
    channel: str,
    model_key: str = "",
    system_prompt: str = "",
    values: dict[str, Any] | None = None,
    attachment_ids: list[int] | None = None,
    wire_format: str | None = None,
    edit_of: int | None = None,
    regenerate_of: int | None = None,
    batch: bool = False,
) -> Turn:
    """prepare_turn() and write_turn() in one go, for callers that need not start the
    upstream request before the rows are saved (`batch`: see write_turn)."""
    prepared = prepare_turn(
        conversation,
        user,
        text=text,
        model_key=model_key,
        system_prompt=system_prompt,
        channel=channel,
        values=values,
        attachment_ids=attachment_ids,
        wire_format=wire_format,
        edit_of=edit_of,
        regenerate_of=regenerate_of,
    )
    return write_turn(prepared, user, batch=batch)


@sensitive_variables("api_key")
def submit_tool_results(
    conversation: Conversation, user, *, message_id: int, results: dict[str, str], channel: str
) -> Turn:
    """The user's result for each tool call of a reply, sent back to continue it."""
    with transaction.atomic():
        locked = _locked(conversation, user)
        branch = history(locked)
        asking = branch[-1] if branch else None
        if asking is None or asking.pk != message_id or not asking.tool_calls:
            raise TurnError("Only the latest reply's tool calls can be answered.")
        model = get_model(asking.model)
        missing = [c["function"]["name"] for c in asking.tool_calls if not results.get(c["id"])]
        if missing:
            raise TurnError(f"Give a result for every tool call ({', '.join(missing)}).")
        if any(len(r) > MAX_TOOL_RESULT_CHARS for r in results.values()):
            raise TurnError("A tool result is too long.")
        what = unstorable(list(results.values()))
        if what:
            raise TurnError(f"A tool result holds {what}, which cannot be stored.")
        api_key, key = resolve_api_key(user, locked, model.provider)
        parent, created = asking, []
        for call in asking.tool_calls:
            parent = Message.objects.create(
                conversation=locked,
                parent=parent,
                role=Message.Role.TOOL,
                tool_call_id=call["id"],
                text=results[call["id"]],
                created_by=user,
            )
            created.append(parent)
        fmt = asking.wire_format  # the results go back in the format that asked for them
        messages = build_messages(model, locked.system_prompt, [*branch, *created], fmt)
        body = build_body(model, messages, _params_of(asking, model), fmt)
        return _turn(locked, user, created, model, body, channel, api_key, fmt=fmt, key=key)


def _params_of(message: Message, model: Model) -> dict[str, Any]:
    return params.from_body(model, message.request_body or {}, message.wire_format)


@sensitive_variables("api_key")
def rerun(conversation: Conversation, user, *, message_id: int, channel: str) -> Turn:
    """Ask again with exactly the request a reply came from: same parameters, same seed.
    The new reply is a sibling of the old one, so both branches are kept."""
    with transaction.atomic():
        locked = _locked(conversation, user)
        original = locked.messages.filter(pk=message_id, role=Message.Role.ASSISTANT).first()
        if original is None or not original.request_body:
            raise TurnError("That reply cannot be re-run.")
        model = get_model(original.model)
        api_key, key = resolve_api_key(user, locked, model.provider)
        turn = _turn(
            locked,
            user,
            [],
            model,
            original.request_body,
            channel,
            api_key,
            original.parent,
            fmt=original.wire_format,
            key=key,
        )
        extensions.reply_repeated.send(Conversation, original=original, reply=turn.messages[-1])
        return turn


def switch_branch(conversation: Conversation, message_id: int) -> Message:
    """Make the branch through `message_id` (a message of this conversation) the active one,
    down to its newest turn: the transcript shows it and the next send continues it. The
    new active leaf; TurnError for a message not in the conversation."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        by_id = _messages_of(locked)
        target = by_id.get(message_id)
        if target is None:
            raise TurnError("That message is not in this conversation.")
        leaf = newest_below(by_id, target)
        Conversation.objects.filter(pk=locked.pk).update(active_leaf_id=leaf.pk)
    conversation.active_leaf_id = leaf.pk
    return leaf


def branch_nav(sibling_ids: list[int], message_id: int) -> dict[str, Any] | None:
    """ "‹ 2 / 3 ›": where a message stands among its siblings (ids oldest first)."""
    if len(sibling_ids) < 2:
        return None
    index = sibling_ids.index(message_id)
    return {
        "index": index + 1,
        "count": len(sibling_ids),
        "prev": sibling_ids[index - 1] if index > 0 else None,
        "next": sibling_ids[index + 1] if index + 1 < len(sibling_ids) else None,
    }


def with_branch_nav(reply: Message) -> None:
    """A new sibling's "‹ n / n ›", kept on the row object the run renders when it ends (no
    sibling can appear meanwhile: one reply streams at a time)."""
    ids = list(
        Message.objects.filter(conversation_id=reply.conversation_id, parent_id=reply.parent_id)
        .order_by("created", "pk")
        .values_list("pk", flat=True)
    )
    reply.branch_nav = branch_nav(ids, reply.pk)
