"""Template contexts that the HTTP views and the socket both render.

The page and the socket draw the same partials, so they build the same context here: neither
side imports the other.
"""

from __future__ import annotations

import hashlib
from typing import Any

from playground.chat.models import Conversation, Message
from playground.chat.panel import settings_context
from playground.chat.services import active_branch, branch_nav, children_ids
from playground.providers import catalog
from playground.providers.specs import CHAT, Model


def transcript_context(conversation: Conversation, at: int | None = None) -> dict[str, Any]:
    """The active branch of the conversation (or, with `at`, the branch through that
    message, down to its newest turn), each message with its place among its siblings.
    `other_branch`: the shown leaf when it is not the active branch's."""
    messages = list(conversation.messages.select_related("created_by"))
    # A reply whose run died is shown as interrupted. Checked on the rows just read, so
    # the usual case (none) costs no query of its own: every socket opens through here.
    cutoff = Message.suspect_cutoff()
    if any(m.is_streaming and m.checkpoint_at and m.checkpoint_at < cutoff for m in messages):
        Message.objects.filter(conversation=conversation).mark_stale_interrupted()
        messages = list(conversation.messages.select_related("created_by"))
    by_id = {m.pk: m for m in messages}
    # Read fresh: the socket's conversation was loaded when it opened, and any tab may switch.
    active = Conversation.objects.filter(pk=conversation.pk).values_list("active_leaf_id")
    transcript = active_branch(by_id, (active.first() or (None,))[0])
    other_branch = None
    if at in by_id:
        shown = active_branch(by_id, at)
        if shown[-1] is not transcript[-1]:
            # A link to a message off the active branch (History, a diff) or a viewer's ‹ ›
            # shows that branch, and says so.
            transcript, other_branch = shown, shown[-1].pk
    children = children_ids(by_id)
    for message in transcript:
        message.branch_nav = branch_nav(children[message.parent_id], message.pk)
    latest = transcript[-1] if transcript else None
    awaiting = latest.pk if latest and latest.awaits_tool_results else None
    return {
        "conversation": conversation,
        "transcript": transcript,
        "awaiting_tools": awaiting,
        "other_branch": other_branch,
        "transcript_digest": transcript_digest(transcript, other_branch),
    }


def transcript_digest(transcript: list[Message], other_branch: int | None) -> str:
    """A short fingerprint of what the transcript partial draws, so a socket opening on a page
    that already shows this transcript can leave it alone: redrawing it would replace the
    elements under the reader's cursor and focus (the review bars among them) for nothing.

    A streaming reply counts by id and status only: its text is caught up by the run's
    snapshot whatever the page shows. A finished reply is immutable apart from its status,
    so its lengths stand for its text."""
    parts = [str(other_branch)]
    for m in transcript:
        parts.append(f"{m.pk}:{m.status}:{m.branch_nav}")
        if not m.is_streaming:
            parts.append(f"{len(m.text)}:{len(m.reasoning)}:{len(m.error)}")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def model_or_default(key: str) -> Model:
    """A conversation or form may name a model the catalog no longer has: draw the default."""
    try:
        return catalog.get_model(key)
    except catalog.UnknownModel:
        return catalog.get_model(catalog.DEFAULT_MODEL_KEY)


def conversation_settings_context(
    conversation: Conversation, errors: dict[str, str] | None = None
) -> dict[str, Any]:
    model = model_or_default(conversation.model)
    fmt = conversation.wire_format if conversation.wire_format in model.formats else CHAT
    context = settings_context(
        model, conversation.params, errors, system_prompt=conversation.system_prompt, fmt=fmt
    )
    context["conversation"] = conversation
    return context


def turn_errors_context(
    model_key: str, values: dict[str, Any], errors: dict[str, str], fmt: str = CHAT
) -> dict[str, Any]:
    """The panel redrawn with the errors of a send that was refused."""
    model = model_or_default(model_key)
    return settings_context(model, values, errors, fmt=fmt if fmt in model.formats else CHAT)
