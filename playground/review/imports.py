"""Import a conversation: the JSON export of review/exports.py (one conversation's, or a
History selection's), or OpenAI chat JSONL.

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
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from playground.accounts.models import Team
from playground.chat.models import FORMAT_LABELS, Attachment, Conversation, Message
from playground.chat.services import ATTACHMENT_SCHEME, clean_settings
from playground.providers import catalog
from playground.providers.params import NOT_A_PARAMETER, InvalidParams
from playground.providers.specs import CHAT
from playground.providers.storable import unstorable
from playground.review import exports
from playground.review.models import Annotation, Comment, Label, Mention, ReviewStatus

MAX_BYTES = 10 * 1024 * 1024
MAX_MESSAGES = 5000
MAX_DEPTH = 32
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Tuples, not sets: `x in` a set raises TypeError for a list or object from the file.
ROLES = tuple(choice.value for choice in Message.Role)
STATUSES = tuple(choice.value for choice in Message.Status)


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
    "cost": (str,), "created": (str,), "attachments": (list,), "wire_format": (str,),
    "thinking_signatures": (list,),
}  # fmt: skip
_REQUIRED_BLANK = {"text", "reasoning", "tool_call_id", "finish_reason", "error", "response_id",
                   "model"}  # fmt: skip
_LENGTHS = {"tool_call_id": 200, "finish_reason": 40, "response_id": 200, "model": 200}
_MESSAGE_KEYS = {"id", "parent", "role", "status", "annotations", "comments", *_TYPES}
_CONVERSATION_KEYS = {
    "title", "model", "system_prompt", "params", "created", "updated", "review", "wire_format",
}  # fmt: skip
_ANNOTATION_KEYS = {"author", "thumbs", "score", "labels", "created", "updated"}
_COMMENT_KEYS = {"author", "text", "mentions", "created"}
_SELECTION_KEYS = {"format", "version", "conversations"}
_COLOUR = re.compile(r"#[0-9a-f]{6}")
_FORMATS = ", ".join(FORMAT_LABELS)
_THUMBS = {"up": 1, "down": -1, None: None}


@dataclass
class _Plan:
    conversation: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)  # in file order
    hashes: set[str] = field(default_factory=set)
    active_leaf: int | None = None  # the file's number of the shown branch's leaf
    # Where its parts are, to word a refusal: the file's text, this conversation's number in a
    # selection (None: a file of one), how many messages of the file come before its own, and
    # how many the file has in all.
    text: str = ""
    number: int | None = None
    offset: int = 0
    total: int = 0

    @property
    def at(self) -> str:
        """Where the conversation's own fields are."""
        return "line 1" if self.number is None else f"conversation {self.number}"

    def where(self, index: int) -> str:
        """Where its message `index` is: its line, for a file laid out as the export writes
        it (a message a line), else its place in the file."""
        lines = _message_lines(self.text)
        if len(lines) == self.total:
            return f"line {lines[self.offset + index]}"
        return ("" if self.number is None else f"{self.at}, ") + f"message {index + 1}"


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


def parse_export(text: str) -> list[_Plan]:
    """A conversation's export, or a History selection's (its conversations' exports in a
    list): a plan per conversation, in file order."""
    data = _loads(text)
    if isinstance(data, dict) and data.get("format") == exports.SELECTION_FORMAT:
        if data.get("version") != exports.VERSION:
            raise Refused(f"line 1: export version {data.get('version')!r} is not supported.")
        documents = data.get("conversations")
        if not isinstance(documents, list) or not documents or set(data) - _SELECTION_KEYS:
            raise Refused('line 1: "conversations" must be a list of conversation exports.')
        numbered: list[tuple[int | None, Any]] = list(enumerate(documents, start=1))
    else:
        numbered = [(None, data)]
    counts = [
        len(d["messages"]) if isinstance(d, dict) and isinstance(d.get("messages"), list) else 0
        for _, d in numbered
    ]
    if sum(counts) > MAX_MESSAGES:
        raise Refused(f"line 1: more than {MAX_MESSAGES} messages.")
    plans: list[_Plan] = []
    for (number, document), offset in zip(numbered, _running(counts), strict=True):
        plan = _Plan(conversation={}, text=text, number=number, offset=offset, total=sum(counts))
        plans.append(_parse_document(document, plan))
    return plans


def _running(counts: list[int]) -> list[int]:
    """How many messages come before each conversation's."""
    offsets, before = [], 0
    for count in counts:
        offsets.append(before)
        before += count
    return offsets


def _parse_document(data: Any, plan: _Plan) -> _Plan:
    at = plan.at
    if not isinstance(data, dict) or data.get("format") != exports.FORMAT:
        raise Refused(f'{at}: not a Playground export (no "format": "{exports.FORMAT}").')
    if data.get("version") != exports.VERSION:
        raise Refused(f"{at}: export version {data.get('version')!r} is not supported.")
    head = data.get("conversation")
    if not isinstance(head, dict) or set(head) - _CONVERSATION_KEYS:
        raise Refused(f'{at}: "conversation" must be an object with the exported fields only.')
    for key, limit in (("title", 200), ("model", 200), ("system_prompt", None)):
        value = head.get(key, "")
        if not isinstance(value, str) or (limit and len(value) > limit):
            raise Refused(f'{at}: conversation "{key}" must be text of at most {limit} chars.')
    if not isinstance(head.get("params", {}), dict):
        raise Refused(f'{at}: conversation "params" must be an object.')
    if head.get("wire_format", "chat") not in tuple(FORMAT_LABELS):  # a dict: see ROLES
        raise Refused(f'{at}: conversation "wire_format" must be one of {_FORMATS}.')
    _check_settings(head, at)
    review = head.get("review")
    if review is not None and (
        not isinstance(review, dict)
        or set(review) - {"status", "set_by", "set_at"}
        or review.get("status") not in ReviewStatus.Status.values
        or not isinstance(review.get("set_by"), str | None)
        or _when(review.get("set_at")) is None
    ):
        raise Refused(f'{at}: conversation "review" must have a known "status" and "set_at".')
    try:
        _check_storable(head)
    except Refused as exc:
        raise Refused(f"{at}: the conversation: {exc}") from None
    records = data.get("messages")
    if not isinstance(records, list):
        raise Refused(f'{at}: "messages" must be a list.')
    if len(records) > MAX_MESSAGES:
        raise Refused(f"{at}: more than {MAX_MESSAGES} messages.")
    plan.conversation = head
    active = data.get(exports.ACTIVE_LEAF)
    if active is not None and (not isinstance(active, int) or isinstance(active, bool)):
        raise Refused(f'{at}: "{exports.ACTIVE_LEAF}" must be a message id or null.')
    plan.active_leaf = active
    seen: set[int] = set()
    for index, record in enumerate(records):
        try:
            _check_message(record, seen, plan)
        except Refused as exc:
            raise Refused(f"{plan.where(index)}: {exc}") from None
    if active is not None and active not in seen:
        raise Refused(f'{at}: "{exports.ACTIVE_LEAF}" names no message of the file.')
    return plan


def _check_settings(head: dict[str, Any], at: str) -> None:
    """The model's parameters and the system prompt, checked as the settings panel checks
    them: regenerating or editing a reply sends the saved parameters as they are, so an
    unchecked name such as "model" or "n" would reach the provider on this space's key. A
    model this server does not offer has no parameters to check them against, so it comes
    in with none."""
    key = head.get("model") or catalog.DEFAULT_MODEL_KEY
    values = head.get("params", {})
    try:
        model = catalog.get_model(key)
    except catalog.UnknownModel:
        if values:
            raise Refused(
                f"{at}: conversation settings: the model {key!r} is not offered here, so "
                'its parameters cannot be checked (empty "params" to import it).'
            ) from None
        return
    try:
        head["params"] = clean_settings(
            model, head.get("system_prompt", ""), values, head.get("wire_format") or CHAT
        )
    except InvalidParams as exc:
        first = sorted(exc.errors)[0]
        error = exc.errors[first]
        error = f"{first} {error}" if error == NOT_A_PARAMETER else error
        raise Refused(f"{at}: conversation settings: {error}") from None


def _check_message(record: Any, seen: set[int], plan: _Plan) -> None:
    if not isinstance(record, dict):
        raise Refused("a message must be an object.")
    unknown = set(record) - _MESSAGE_KEYS
    if unknown:
        raise Refused(f"unknown field {sorted(unknown)[0]!r}.")
    _check_storable(record)
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
    if record.get("wire_format", "chat") not in FORMAT_LABELS:
        raise Refused(f'"wire_format" must be one of {_FORMATS}.')
    for block in record.get("thinking_signatures") or []:
        if (
            not isinstance(block, dict)
            or set(block) not in ({"chars", "signature"}, {"chars", "redacted"})
            or not isinstance(block.get("signature", block.get("redacted")), str)
            or not isinstance(block["chars"], int)
            or isinstance(block["chars"], bool)
            or block["chars"] < 0
        ):
            raise Refused(
                'each of "thinking_signatures" needs "chars" (≥ 0) and "signature" or "redacted".'
            )
    _check_request(record.get("request_body"))
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
    shape = 'each content part must be an image part {"type": "image", "attachment": sha256}.'
    for part in record.get("content_parts") or []:
        # The playground writes only image parts, and the transcript draws every part as
        # one: any other part crashed the page.
        if not isinstance(part, dict) or part.get("type", "image") != "image":
            raise Refused(shape)
        # An image part without its image too: the transcript links every image part's.
        if not isinstance(part.get("attachment"), str) or part["attachment"] not in plan.hashes:
            raise Refused("an image part names an image not in this message's attachments.")
        if part.get("type") != "image" or len(part) != 2:
            raise Refused(shape)
    _check_review(record)
    seen.add(ident)
    plan.messages.append(record)


def _check_storable(value: Any) -> None:
    """No database (nor any later export or page) can hold a lone surrogate, and PostgreSQL
    no NUL: refused here, not met as a failed save (see storable.py)."""
    what = unstorable(value)
    if what is not None:
        raise Refused(f"it holds {what}, which cannot be stored.")


def _check_request(body: Any) -> None:
    """A saved request as the playground writes it (Chat Completions shape), which View code
    and re-runs read without checking: messages are objects, a list content holds objects,
    and an image part's image_url is an object. Its images are named by sha256, as an export
    names them: those code loads whatever row `attachment:<id>` names, whoever's it is, so
    such a file could read another person's image."""
    if body is None:
        return
    messages = body.get("messages", [])
    if not isinstance(messages, list):
        raise Refused('"request_body" is not a saved chat request.')
    for message in messages:
        if not isinstance(message, dict):
            raise Refused('"request_body" is not a saved chat request.')
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                raise Refused('"request_body" is not a saved chat request.')
            if part.get("type") != "image_url" and "image_url" not in part:
                continue
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise Refused('"request_body" is not a saved chat request.')
            if image["url"].startswith(ATTACHMENT_SCHEME):
                raise Refused(
                    f'"request_body" names an image by row id ({ATTACHMENT_SCHEME}), not by sha256.'
                )


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
        # The database stores UTC: a time that has none (0001-01-01 at +01:00) is refused
        # here, not met as an OverflowError while saving.
        when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return when if when.tzinfo else None


def _check_review(record: dict[str, Any]) -> None:
    """Annotations and comments: their shape only; authors and labels are matched to this
    server's accounts and label sets when writing (_Review)."""
    notes = record.get("annotations") or []
    comments = record.get("comments") or []
    if not isinstance(notes, list) or not isinstance(comments, list):
        raise Refused('"annotations" and "comments" must be lists.')
    authors: set[str] = set()
    for note in notes:
        if not isinstance(note, dict) or set(note) - _ANNOTATION_KEYS:
            raise Refused("an annotation has unknown fields.")
        if not isinstance(note.get("author"), str) or note["author"] in authors:
            raise Refused("each annotation needs an author, one annotation per author.")
        authors.add(note["author"])
        if note.get("thumbs") not in tuple(_THUMBS):  # a dict: see ROLES
            raise Refused('an annotation\'s "thumbs" is "up", "down" or null.')
        score = note.get("score")
        if score is not None and (
            not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5
        ):
            raise Refused('an annotation\'s "score" is 1 to 5 or null.')
        for label in note.get("labels") or []:
            if (
                not isinstance(label, dict)
                or not isinstance(label.get("name"), str)
                or not 0 < len(label["name"]) <= 40
                or not _COLOUR.fullmatch(str(label.get("colour", "")))
            ):
                raise Refused('each label needs a "name" (1-40 chars) and a "colour" #rrggbb.')
        if _when(note.get("created")) is None or _when(note.get("updated")) is None:
            raise Refused('an annotation needs "created" and "updated" times with a zone.')
    for comment in comments:
        if not isinstance(comment, dict) or set(comment) - _COMMENT_KEYS:
            raise Refused("a comment has unknown fields.")
        text = comment.get("text")
        if not isinstance(comment.get("author"), str) or not isinstance(text, str):
            raise Refused('a comment needs an "author" and a "text".')
        if not text.strip() or len(text) > 5000:
            raise Refused("a comment's text has 1 to 5000 characters.")
        mentions = comment.get("mentions") or []
        if not isinstance(mentions, list) or not all(isinstance(m, str) for m in mentions):
            raise Refused('a comment\'s "mentions" is a list of user names.')
        if _when(comment.get("created")) is None:
            raise Refused('a comment needs a "created" time with a zone.')


class _Review:
    """Matches the file's user names and labels to this server. An import writes in no one's
    name but the importer's: their own ratings and comments come back as theirs, anyone
    else's are left out (counted, so the page can say so), and the review status keeps who
    set it only when that is the importer. People a kept comment mentions must be able to
    see the target space (else the import is refused, naming the line); a label missing
    from the space's set is added when the importer may manage the set, else refused."""

    def __init__(self, user, team: Team | None) -> None:
        self.user, self.team = user, team
        self.me = user.get_username()
        self.ratings_left_out = self.comments_left_out = 0
        people = get_user_model().objects.filter(is_active=True)
        if team is None:
            people = people.filter(pk=user.pk)
        else:
            people = people.filter(memberships__team=team)
        self.people = {p.get_username(): p for p in people}
        # By lower-cased name: a space has one label of a name whatever its case, as the
        # labels page (annotating.create_label) makes sure.
        self.labels = {
            label.name.lower(): label
            for label in Label.objects.in_space(team.pk if team else None, user.pk)
        }

    def person(self, name: str | None, plan: _Plan, index: int | None):
        if name is None:
            return None
        if name not in self.people:
            where = plan.where(index) if index is not None else plan.at
            raise Refused(f"{where}: {name!r} has no account in the space imported into.")
        return self.people[name]

    def label(self, found: dict[str, str], plan: _Plan, index: int) -> Label:
        name = found["name"]
        if name.lower() not in self.labels:
            from playground.review.annotating import MAX_LABELS, can_manage_labels

            if not can_manage_labels(self.user, self.team):
                raise Refused(
                    f"{plan.where(index)}: the label {name!r} is not in this space's label set "
                    "(its admins can add it)."
                )
            if len(self.labels) >= MAX_LABELS:
                raise Refused(f"{plan.where(index)}: a space has at most {MAX_LABELS} labels.")
            self.labels[name.lower()] = Label.objects.create(
                team=self.team, owner=self.user, name=name, colour=found["colour"]
            )
        return self.labels[name.lower()]

    def check(self, plan: _Plan) -> None:
        """Every name of what is kept resolves, before anything is written."""
        for index, record in enumerate(plan.messages):
            for comment in self.mine(record.get("comments")):
                for name in comment.get("mentions") or []:
                    self.person(name, plan, index)

    def mine(self, rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [row for row in rows or [] if row["author"] == self.me]

    def write(self, plan: _Plan, conversation: Conversation, made: dict[int, Message]) -> None:
        now = timezone.now()
        review = plan.conversation.get("review")
        if review:
            ReviewStatus.objects.create(
                conversation=conversation,
                status=review["status"],
                set_by=self.user if review.get("set_by") == self.me else None,
                set_at=_when(review["set_at"]) or now,
            )
        for index, record in enumerate(plan.messages):
            message = made[record["id"]]
            notes, comments = (
                self.mine(record.get("annotations")),
                self.mine(record.get("comments")),
            )
            self.ratings_left_out += len(record.get("annotations") or []) - len(notes)
            self.comments_left_out += len(record.get("comments") or []) - len(comments)
            for note in notes:
                annotation = Annotation.objects.create(
                    message=message,
                    author=self.user,
                    thumbs=_THUMBS[note.get("thumbs")],
                    score=note.get("score"),
                )
                annotation.labels.set(
                    [self.label(x, plan, index) for x in note.get("labels") or []]
                )
                # auto_now(_add) set the import time; the file's times are the real ones.
                Annotation.objects.filter(pk=annotation.pk).update(
                    created=_when(note["created"]), updated=_when(note["updated"])
                )
            for found in comments:
                comment = Comment.objects.create(
                    message=message,
                    author=self.user,
                    text=found["text"],
                )
                Comment.objects.filter(pk=comment.pk).update(created=_when(found["created"]))
                # Imported mentions are old news: kept, but not put in anyone's inbox again.
                Mention.objects.bulk_create(
                    Mention(comment=comment, user=self.person(name, plan, index), read_at=now)
                    for name in dict.fromkeys(found.get("mentions") or [])
                )


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


@dataclass
class Imported:
    conversations: list[Conversation]
    # Ratings and comments the file says someone else wrote: not written (see _Review).
    ratings_left_out: int = 0
    comments_left_out: int = 0

    def notice(self) -> str:
        """What was left out, in words; empty when nothing was."""
        parts = [
            f"{count} {what}{'s' if count != 1 else ''}"
            for count, what in ((self.ratings_left_out, "rating"),
                                (self.comments_left_out, "comment"))
            if count
        ]  # fmt: skip
        if not parts:
            return ""
        return (
            f"{' and '.join(parts)} by other people were left out: an import brings back "
            "only your own."
        )


def import_export(user, team: Team | None, text: str) -> Imported:
    """A conversation's export, or every conversation of a History selection's, in one
    transaction: all of them or none."""
    plans = parse_export(text)
    review = _Review(user, team)
    for plan in plans:
        review.check(plan)
    with transaction.atomic():
        ids = _images(user, set().union(*(plan.hashes for plan in plans)))
        made = [_write(user, team, plan, ids, review) for plan in plans]
    return Imported(made, review.ratings_left_out, review.comments_left_out)


def _write(user, team: Team | None, plan: _Plan, ids: dict[str, int], review: _Review):
    head = plan.conversation
    conversation = Conversation.objects.create(
        owner=user,
        team=team,
        title=head.get("title", ""),
        model=head.get("model") or catalog.DEFAULT_MODEL_KEY,
        system_prompt=head.get("system_prompt", ""),
        params=head.get("params", {}),
        wire_format=head.get("wire_format") or "chat",
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
                {**part, "attachment": ids[part["attachment"]]} if "attachment" in part else part
                for part in record.get("content_parts") or []
            ],
            # A reply keeps the figures it had where it ran, but no space or author:
            # it spent nothing here, so no Usage page or budget counts it.
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
    review.write(plan, conversation, made)
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
            _check_storable(line)
            turns: list[dict[str, Any]] = []
            prompt = ""
            for index, message in enumerate(line["messages"]):
                if not isinstance(message, dict) or set(message) - _OPENAI_KEYS:
                    raise Refused(f"message {index + 1} is not an OpenAI chat message.")
                role = message.get("role")
                if role == "system" and index == 0:
                    prompt = _content(message.get("content"))
                    continue
                if role not in ("user", "assistant", "tool"):  # see ROLES
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
