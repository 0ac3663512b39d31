"""A conversation as JSON (everything), OpenAI fine-tuning JSONL (one line per path through the
reply tree) and Markdown, written a message at a time for StreamingHttpResponse.

No database id leaves in an export: messages are numbered 1..n in the file, and images are
named by their SHA-256 (in `attachments`, in `content_parts` and in a saved request's
`attachment:` references), so the file means the same on another server. Nothing secret is in
a conversation's rows (keys live in accounts.ApiKey). User names appear only where the
review needs a who: each annotation's and comment's author, the people a comment mentions and
who set the review status (review/imports.py keeps only what the importer wrote, as theirs).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch

from playground.chat.models import Attachment, Conversation, Message
from playground.chat.services import ATTACHMENT_SCHEME
from playground.review.models import Annotation, Comment, Mention, ReviewStatus

FORMAT = "playground.conversation"
VERSION = 1
HASH_SCHEME = "sha256:"  # how an exported request names an image instead of its row id
# Message fields copied as they are (JSON-safe values).
PLAIN_FIELDS = (
    "role", "text", "reasoning", "tool_calls", "tool_call_id", "logprobs", "reasoning_ms",
    "schema_check", "status", "finish_reason", "error", "notes", "response_id", "model",
    "usage", "ttft_ms", "total_ms", "tokens_per_second", "wire_format", "thinking_signatures",
)  # fmt: skip
# wire_format: the API shape the reply was asked in (a re-run repeats it); thinking_signatures:
# the Messages format's signed thinking blocks, which a later turn must send back as written.
CONVERSATION_FIELDS = ("title", "model", "system_prompt", "params", "wire_format")
ACTIVE_LEAF = "active_leaf"
BATCH = 200  # messages read per query: memory stays flat however long the conversation


def _messages(conversation: Conversation) -> Iterator[Message]:
    images = Prefetch("attachments", queryset=Attachment.objects.order_by("pk"))
    judged = Prefetch(
        "annotations",
        queryset=Annotation.objects.select_related("author")
        .prefetch_related("labels")
        .order_by("created", "pk"),
    )
    mentions = Prefetch("mention_rows", queryset=Mention.objects.select_related("user"))
    discussed = Prefetch(
        "comments",
        queryset=Comment.objects.select_related("author")
        .prefetch_related(mentions)
        .order_by("created", "pk"),
    )
    query = conversation.messages.order_by("created", "pk").prefetch_related(
        images, judged, discussed
    )
    yield from query.iterator(chunk_size=BATCH)


def _request_with_hashes(body: Any, hashes: dict[int, str]) -> Any:
    """A saved request whose `attachment:<id>` image references name the image's hash."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return body
    body = copy.deepcopy(body)
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            url = part.get("image_url", {}).get("url", "") if isinstance(part, dict) else ""
            if isinstance(url, str) and url.startswith(ATTACHMENT_SCHEME):
                pk = url.removeprefix(ATTACHMENT_SCHEME)
                part["image_url"]["url"] = HASH_SCHEME + hashes.get(int(pk), "unknown")
    return body


def image_hashes(conversation: Conversation) -> dict[int, str]:
    """Every image of the conversation by row id: a reply's saved request names its prompt's."""
    rows = Attachment.objects.filter(messages__conversation=conversation)
    return dict(rows.values_list("pk", "sha256").distinct())


def message_record(
    message: Message, number: int, parent: int | None, hashes: dict[int, str]
) -> dict[str, Any]:
    attached = list(message.attachments.all())
    record: dict[str, Any] = {"id": number, "parent": parent}
    record.update({field: getattr(message, field) for field in PLAIN_FIELDS})
    record["content_parts"] = [
        {**part, "attachment": hashes.get(part["attachment"], "unknown")}
        if isinstance(part, dict) and "attachment" in part
        else part
        for part in message.content_parts
    ]
    record["request_body"] = _request_with_hashes(message.request_body, hashes)
    record["cost"] = str(message.cost) if isinstance(message.cost, Decimal) else None
    record["created"] = message.created.isoformat()
    record["attachments"] = [
        {
            "sha256": a.sha256,
            "content_type": a.content_type,
            "size": a.size,
            "width": a.width,
            "height": a.height,
        }
        for a in attached
    ]
    record["annotations"] = [annotation_record(a) for a in message.annotations.all()]
    record["comments"] = [comment_record(c) for c in message.comments.all()]
    return record


def annotation_record(annotation: Annotation) -> dict[str, Any]:
    return {
        "author": annotation.author.get_username(),
        "thumbs": {1: "up", -1: "down"}.get(annotation.thumbs or 0),
        "score": annotation.score,
        "labels": [
            {"name": label.name, "colour": label.colour}
            for label in sorted(annotation.labels.all(), key=lambda label: label.name)
        ],
        "created": annotation.created.isoformat(),
        "updated": annotation.updated.isoformat(),
    }


def comment_record(comment: Comment) -> dict[str, Any]:
    return {
        "author": comment.author.get_username(),
        "text": comment.text,
        "mentions": sorted(row.user.get_username() for row in comment.mention_rows.all()),
        "created": comment.created.isoformat(),
    }


def review_record(conversation: Conversation) -> dict[str, Any] | None:
    row = ReviewStatus.objects.select_related("set_by").filter(conversation=conversation).first()
    if row is None:
        return None
    return {
        "status": row.status,
        "set_by": row.set_by.get_username() if row.set_by else None,
        "set_at": row.set_at.isoformat(),
    }


def as_json(conversation: Conversation) -> Iterator[str]:
    """One JSON document, a message per line (so an error on import can name the line)."""
    head = {
        "format": FORMAT,
        "version": VERSION,
        "conversation": {
            **{field: getattr(conversation, field) for field in CONVERSATION_FIELDS},
            "created": conversation.created.isoformat(),
            "updated": conversation.updated.isoformat(),
            "review": review_record(conversation),
        },
    }
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "messages": [\n'
    numbers: dict[int, int] = {}
    hashes = image_hashes(conversation)
    for number, message in enumerate(_messages(conversation), start=1):
        numbers[message.pk] = number
        parent = numbers.get(message.parent_id) if message.parent_id else None
        record = message_record(message, number, parent, hashes)
        yield ("" if number == 1 else ",\n") + json.dumps(record, ensure_ascii=False)
    # The branch its transcript shows and continues (‹ ›), by its leaf's number in this file;
    # null: the newest message's, as for a conversation that never switched.
    active = numbers.get(conversation.active_leaf_id) if conversation.active_leaf_id else None
    yield f"\n], {json.dumps(ACTIVE_LEAF)}: {json.dumps(active)}}}\n"


def _openai_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def as_jsonl(conversation: Conversation) -> Iterator[str]:
    """OpenAI chat fine-tuning lines: {"messages": [...]} for each root-to-leaf path.

    The tree's shape (ids and parents) is kept in memory, the texts are not: each path is
    read back when its line is written."""
    rows = list(conversation.messages.order_by("created", "pk").values_list("pk", "parent_id"))
    children: dict[int | None, list[int]] = {}
    for pk, parent in rows:
        children.setdefault(parent, []).append(pk)
    system = (
        [{"role": "system", "content": conversation.system_prompt}]
        if conversation.system_prompt
        else []
    )
    # Depth-first, iteratively: a long conversation is a deep tree.
    stack: list[list[int]] = [[pk] for pk in reversed(children.get(None, []))]
    while stack:
        path = stack.pop()
        below = children.get(path[-1], [])
        if below:
            stack.extend(path + [pk] for pk in reversed(below))
            continue
        found = {m.pk: m for m in Message.objects.filter(pk__in=path)}
        line = {"messages": system + [_openai_message(found[pk]) for pk in path]}
        yield json.dumps(line, ensure_ascii=False) + "\n"


def as_markdown(conversation: Conversation) -> Iterator[str]:
    """The transcript as the page shows it, in order; other branches are marked as such."""
    yield f"# {conversation.display_title}\n\n"
    yield f"Model: `{conversation.model}`\n\n"
    review = review_record(conversation)
    if review:
        yield f"Review status: {review['status'].replace('_', ' ')}\n\n"
    if conversation.system_prompt:
        yield "## System prompt\n\n" + _quote(conversation.system_prompt) + "\n\n"
    seen_parents: set[int | None] = set()
    for message in _messages(conversation):
        branch = " (another branch)" if message.parent_id in seen_parents else ""
        seen_parents.add(message.parent_id)
        yield f"## {message.get_role_display()}{branch}\n\n"
        if message.reasoning:
            yield (
                "<details><summary>Reasoning</summary>\n\n"
                + message.reasoning
                + "\n\n</details>\n\n"
            )
        yield (message.text or "") + "\n\n"
        if message.tool_calls:
            yield "```json\n" + json.dumps(message.tool_calls, indent=2) + "\n```\n\n"
        for attachment in message.attachments.all():
            yield f"*Image `sha256:{attachment.sha256}`*\n\n"
        yield from _markdown_review(message)


def _markdown_review(message: Message) -> Iterator[str]:
    for annotation in message.annotations.all():
        record = annotation_record(annotation)
        parts = [f"thumbs {record['thumbs']}" if record["thumbs"] else ""]
        parts.append(f"score {record['score']}/5" if record["score"] else "")
        parts.append(", ".join(label["name"] for label in record["labels"]))
        yield f"*Review by {record['author']}: {' · '.join(p for p in parts if p) or '—'}*\n\n"
    for comment in message.comments.all():
        yield f"**{comment.author.get_username()}** commented:\n\n{_quote(comment.text)}\n\n"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())


def selection(conversations: list[Conversation], fmt: str) -> Iterator[str]:
    """Several conversations in one file: JSON wraps each conversation's document in a list,
    JSONL and Markdown put them one after another."""
    write = FORMATS[fmt][0]
    if fmt == "json":
        yield f'{{"format": "{SELECTION_FORMAT}", "version": {VERSION}, "conversations": [\n'
    for index, conversation in enumerate(conversations):
        if index:
            yield {"json": ",\n", "md": "\n---\n\n"}.get(fmt, "")
        yield from write(conversation)
    if fmt == "json":
        yield "]}\n"


SELECTION_FORMAT = "playground.conversations"

FORMATS = {
    "json": (as_json, "application/json", "json"),
    "jsonl": (as_jsonl, "application/jsonl", "jsonl"),
    "md": (as_markdown, "text/markdown; charset=utf-8", "md"),
}
