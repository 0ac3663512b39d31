"""What the compare page draws, for the HTTP view and the socket alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from playground.chat.diffing import params_diff, word_diff
from playground.chat.models import Conversation, Message, RunGroup
from playground.chat.services import Turn
from playground.compare import drivers, setup
from playground.prompts import library
from playground.prompts import variables as syntax
from playground.prompts.models import PromptSession
from playground.providers import catalog
from playground.providers.specs import FORMAT_LABELS, IMAGES

TEMPLATE = "compare/group.html"
CHAT_TEMPLATE = "chat/playground.html"


def members(group: RunGroup) -> list[Conversation]:
    return list(group.conversations.order_by("position", "pk"))


def latest_reply(conversation: Conversation) -> Message | None:
    return (
        conversation.messages.filter(role=Message.Role.ASSISTANT).order_by("created", "pk").last()
    )


def _column(conversation: Conversation, transcript: Sequence[Message | None]) -> dict[str, Any]:
    replies = [m for m in transcript if m is not None and m.role == Message.Role.ASSISTANT]
    try:
        model = catalog.get_model(conversation.model)
    except catalog.UnknownModel:
        model = None
    return {
        "c": conversation,
        "messages": transcript,
        "latest": replies[-1] if replies else None,
        "model": model,
        "format": FORMAT_LABELS.get(conversation.wire_format, conversation.wire_format),
        "params": sorted(conversation.params.items()),
        # "… · column 2 · prompt greet v3": the prompt version a column came from, if any.
        "source": conversation.title.partition(setup.SOURCE)[2],
    }


def variable_fields(group: RunGroup, user) -> list[dict[str, str]]:
    """The compare's Variables panel: one field per {{variable}} of the system prompts of its
    columns set up from prompt versions (one value for all of them, filled in at each send),
    with the user's last values for those prompts."""
    sessions = PromptSession.objects.filter(conversation__group=group).order_by(
        "conversation__position"
    )
    rows = list(sessions.values_list("conversation__system_prompt", "version__prompt_id"))
    if not rows:
        return []
    values = library.last_values(user, list(dict.fromkeys(p for _, p in rows)))
    names = syntax.names_in_all(template for template, _ in rows)
    return [{"name": name, "value": values.get(name, "")} for name in names]


def group_context(group: RunGroup, baseline: int = 0) -> dict[str, Any]:
    conversations = members(group)
    by_conversation: dict[int, list[Message]] = {c.pk: [] for c in conversations}
    mine = Message.objects.filter(conversation__group=group).select_related("created_by")
    Message.objects.filter(conversation__group=group).mark_stale_interrupted()
    for message in mine.order_by("created", "pk"):
        by_conversation.setdefault(message.conversation_id, []).append(message)
    context: dict[str, Any] = {"group": group, "baseline": baseline}
    if group.kind == RunGroup.Kind.SWEEP:
        context["rows"] = _rows(group, conversations, by_conversation, baseline)
        context["pending"] = sum(1 for c in conversations if not by_conversation[c.pk])
        context["concurrency"] = drivers.concurrency()
        context["axes"] = group.spec.get("axes", [])
    else:
        context["columns"] = [_column(c, by_conversation[c.pk]) for c in conversations]
        context["model_accepts_images"] = any(
            col["model"] is not None and col["model"].supports(IMAGES) for col in context["columns"]
        )
    context["streaming"] = [
        (m.pk, m.run_channel) for ms in by_conversation.values() for m in ms if m.is_streaming
    ]
    if group.kind == RunGroup.Kind.SWEEP:
        # Its driver may outlive its last cell by a moment: running while a cell is.
        busy = bool(context["pending"] or context["streaming"])
        context["running"] = drivers.is_running(group.pk) and busy or bool(context["streaming"])
    return context


def _rows(group, conversations, by_conversation, baseline: int) -> list[dict[str, Any]]:
    base = next((c for c in conversations if c.position == baseline), None)
    if base is None and conversations:
        base = conversations[0]
    base_reply = _last_reply(by_conversation.get(base.pk, [])) if base else None
    return [_row(c, _last_reply(by_conversation[c.pk]), base, base_reply) for c in conversations]


def _last_reply(transcript: list[Message]) -> Message | None:
    replies = [m for m in transcript if m.role == Message.Role.ASSISTANT]
    return replies[-1] if replies else None


def _row(cell, reply, base, base_reply) -> dict[str, Any]:
    """A sweep cell against the baseline cell: which parameters differ, and how its text
    differs (word diff), once both have finished."""
    is_base = base is not None and cell.pk == base.pk
    changed = {p.name for p in params_diff(base.params, cell.params)} if base else set()
    diff = None
    if (
        not is_base
        and reply is not None
        and base_reply is not None
        and not reply.is_streaming
        and not base_reply.is_streaming
    ):
        diff = word_diff(base_reply.text, reply.text)
    return {
        "cell": cell,
        "label": cell.title.rsplit(" · ", 1)[-1],
        "reply": reply,
        "is_base": is_base,
        "params": [(name, value, name in changed) for name, value in sorted(cell.params.items())],
        "diff": diff,
        "length": len(reply.text) if reply else None,
    }


def member_html(group: RunGroup, message_id: int, done_html: str, baseline: int) -> str:
    """What the compare page redraws for a member whose reply ended (or changed elsewhere):
    a column's reply and figures, or a sweep's row against its baseline."""
    message = (
        Message.objects.filter(pk=message_id, conversation__group=group)
        .select_related("conversation")
        .first()
    )
    if message is None:
        return ""
    conversation = message.conversation
    if group.kind == RunGroup.Kind.SWEEP:
        return _sweep_member_html(group, conversation, baseline)
    if not done_html:
        awaiting = message.pk if message.awaits_tool_results else None
        context = {"message": message, "awaiting_tools": awaiting}
        done_html = render_to_string(f"{CHAT_TEMPLATE}#message-oob", context)
    column = _column(conversation, [latest_reply(conversation)])
    return done_html + render_to_string(f"{TEMPLATE}#column-stats-oob", {"col": column})


def member_redrawn_html(group: RunGroup, message_id: int, baseline: int) -> str:
    """A member whose rows changed outside this page (a send from the conversation's own
    page): a column's whole transcript, or a sweep's row, drawn again from the database."""
    message = Message.objects.filter(pk=message_id, conversation__group=group).first()
    if message is None:
        return ""
    conversation = Conversation.objects.get(pk=message.conversation_id)
    if group.kind == RunGroup.Kind.SWEEP:
        return _sweep_member_html(group, conversation, baseline)
    transcript = list(conversation.messages.select_related("created_by").order_by("created", "pk"))
    column = _column(conversation, transcript)
    return render_to_string(f"{TEMPLATE}#column-redrawn", {"col": column})


def _sweep_member_html(group: RunGroup, cell: Conversation, baseline: int) -> str:
    """The finished cell's row against the baseline and the sweep's status line; when the
    baseline itself finished, every row (each one's differences are from it)."""
    cells = members(group)
    base = next((c for c in cells if c.position == baseline), cells[0] if cells else None)
    if base is not None and base.pk == cell.pk:
        return render_to_string(f"{TEMPLATE}#body-oob", group_context(group, baseline))
    base_reply = latest_reply(base) if base is not None else None
    row = _row(cell, latest_reply(cell), base, base_reply)
    streaming = Message.objects.filter(
        conversation__group=group, status=Message.Status.STREAMING
    ).exists()
    pending = group.conversations.filter(messages__isnull=True).count()
    status = {
        "pending": pending,
        "running": streaming or (drivers.is_running(group.pk) and pending > 0),
        "concurrency": drivers.concurrency(),
    }
    html = render_to_string(f"{TEMPLATE}#sweep-row-oob", {"row": row})
    return html + render_to_string(f"{TEMPLATE}#sweep-status-oob", status)


def body_oob(group: RunGroup, baseline: int) -> tuple[str, list[tuple[int, str]]]:
    """The page's live part as it is now, for a socket that (re)connects."""
    context = group_context(group, baseline)
    html = render_to_string(f"{TEMPLATE}#body-oob", context)
    return html, context["streaming"]


def append_event(turn: Turn, kind: str | None = None) -> dict[str, Any]:
    """chat.append for the conversation's group: the playground's rows for a socket on the
    conversation itself, and the compare page's (a column's new rows, or a sweep's row)."""
    conversation = turn.conversation
    reply = turn.messages[-1]
    if kind is None and conversation.group_id is not None:
        kind = RunGroup.objects.values_list("kind", flat=True).get(pk=conversation.group_id)
    chat_html: str
    if kind == RunGroup.Kind.SWEEP:
        chat_html = render_to_string(f"{CHAT_TEMPLATE}#appended", {"transcript": turn.messages})
        row = _row(conversation, reply, None, None)
        compare_html = render_to_string(f"{TEMPLATE}#sweep-row-oob", {"row": row})
    else:
        # Both pages draw the same rows: each is rendered once, for both (a compare send
        # renders six columns' before any of them streams).
        rows = mark_safe("".join(map(message_html, turn.messages)))
        chat_html = CHAT_APPENDED.format(rows)
        column = _column(conversation, [reply])
        context = {"col": column, "rows": rows}  # rows: message_html's, of the new messages
        compare_html = render_to_string(f"{TEMPLATE}#column-appended", context)
    return {
        "type": "chat.append",
        "html": chat_html,
        "streaming_ids": [reply.pk],
        "conversation_id": conversation.pk,
        "compare_html": compare_html,
    }


# chat/playground.html#appended around rows drawn already (tests/test_compare.py checks
# that the two agree).
CHAT_APPENDED = (
    '<div id="empty-state" hx-swap-oob="delete"></div>'
    '<div id="transcript-list" hx-swap-oob="beforeend">{}</div>'
)


def message_html(message: Message) -> str:
    """One row of a transcript, as the playground and the compare page both draw it."""
    return render_to_string(f"{CHAT_TEMPLATE}#message", {"message": message})
