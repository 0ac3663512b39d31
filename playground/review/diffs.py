"""Two replies side by side: their texts word by word, their requests' differences above.

The diff itself is chat/diffing.py's (one implementation for every diff in the product); this
module loads the replies the user may see and says what differed in how they were asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.http import Http404

from playground.chat.diffing import ParamChange, TextDiff, params_diff, word_diff
from playground.chat.models import Conversation, Message
from playground.review import search

# Request keys that are plumbing, not a choice the user made.
NOT_PARAMS = frozenset({"messages", "stream", "stream_options"})
MAX_CANDIDATES = 200  # replies offered in the "Diff with…" picker
FOUND_CONVERSATIONS = 20  # a picker search lists the replies of this many conversations
FOUND_REPLIES = 100


def get_reply_for_user(user, pk: Any) -> Message:
    """A reply in a conversation `user` may see, else 404: the same answer for one that does
    not exist and one of someone else's, so ids cannot be probed."""
    try:
        return Message.objects.select_related("conversation").get(
            pk=int(pk),
            role=Message.Role.ASSISTANT,
            conversation__in=Conversation.objects.visible_to(user),
        )
    except (Message.DoesNotExist, ValueError, TypeError):
        raise Http404("No such reply") from None


def request_settings(message: Message) -> dict[str, Any]:
    """What the reply was asked with: model, format, system prompt, the last user message
    and every parameter of its saved request (left out: the provider's default applied)."""
    body = message.request_body if isinstance(message.request_body, dict) else {}
    settings: dict[str, Any] = {k: v for k, v in body.items() if k not in NOT_PARAMS}
    settings["model"] = message.model or body.get("model")
    settings["wire format"] = message.get_wire_format_display()
    raw = body.get("messages")
    sent: list[Any] = raw if isinstance(raw, list) else []
    system = [m.get("content") for m in sent if isinstance(m, dict) and m.get("role") == "system"]
    users = [m.get("content") for m in sent if isinstance(m, dict) and m.get("role") == "user"]
    settings["system prompt"] = system[0] if system else None
    settings["last user message"] = users[-1] if users else None
    return settings


def shown(value: Any) -> str:
    if value is None:
        return "unset (provider default)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class ReplyDiff:
    left: Message
    right: Message
    text: TextDiff
    params: list[ParamChange]

    @property
    def param_rows(self) -> list[tuple[str, str, str]]:
        return [(c.name, shown(c.left), shown(c.right)) for c in self.params]


def diff(left: Message, right: Message) -> ReplyDiff:
    return ReplyDiff(
        left,
        right,
        word_diff(left.text, right.text),
        params_diff(request_settings(left), request_settings(right)),
    )


def candidates(user, reply: Message) -> list[Message]:
    """Replies to offer beside `reply`: its siblings first (edits, regenerations, re-runs),
    then the rest of its conversation and of its compare or sweep (the group's other
    conversations, the user's to see like any), newest first."""
    where = Message.objects.filter(role=Message.Role.ASSISTANT)
    group = reply.conversation.group_id
    if group is None:
        where = where.filter(conversation_id=reply.conversation_id)
    else:
        visible = Conversation.objects.visible_to(user).filter(group_id=group)
        where = where.filter(conversation__in=visible)
    rows = list(
        where.exclude(pk=reply.pk)
        .select_related("conversation")
        .defer("request_body", "logprobs")
        .order_by("-created", "-pk")[:MAX_CANDIDATES]
    )
    return sorted(rows, key=lambda m: m.parent_id != reply.parent_id)


def found_elsewhere(user, reply: Message, raw: str) -> list[Message]:
    """Replies of the other conversations the user may see that match a History search
    (the same query syntax and backend): any two replies can be set side by side.
    search.InvalidQuery for a query that cannot be searched for."""
    query = search.Query.parse(raw)
    others = Conversation.objects.visible_to(user).exclude(pk=reply.conversation_id)
    matching = search.backend().matching(query, others, FOUND_CONVERSATIONS)
    ids = list(matching.values_list("pk", flat=True)[:FOUND_CONVERSATIONS])
    return list(
        Message.objects.filter(conversation_id__in=ids, role=Message.Role.ASSISTANT)
        .select_related("conversation")
        .defer("request_body", "logprobs")
        .order_by("-created", "-pk")[:FOUND_REPLIES]
    )
