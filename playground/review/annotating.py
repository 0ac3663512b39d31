"""Annotations, comments with @mentions, labels and review status: the domain rules.

Who may do what follows docs/permissions.md: whoever may see a conversation reads its
annotations and comments; whoever may run in it (not a viewer) annotates, comments and sets
its review status; a space's label set is changed by the team's owners and admins (a personal
space: its owner). Views load objects through chat.access / accounts.access and then call
these, so every decision is in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Prefetch
from django.http import Http404
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from playground.accounts.models import Membership, Team
from playground.chat.access import get_conversation_for_user
from playground.chat.models import Conversation, Message
from playground.providers.storable import refusal
from playground.review import live
from playground.review.models import Annotation, Comment, Label, Mention, ReviewStatus

MAX_COMMENT = 5000
# The largest row id (a signed 64-bit integer). A larger one in an `__in` list is not just
# missing: SQLite raises OverflowError, so ids from a request are checked against it first.
MAX_ID = 2**63 - 1
MAX_LABELS = 100  # per space: the picker shows them all
# @name, not inside a word or an e-mail address; Django usernames allow letters, digits, _.+-
MENTION = re.compile(r"(?<![\w@])@([\w.+-]{1,150})")


class AnnotationError(ValueError):
    """A change that was refused; the message says why, for the person who asked."""


# --- loading --------------------------------------------------------------------------------


def get_reply_for_user(user, pk: int | str, *, annotate: bool = False) -> Message:
    """An assistant reply of a conversation `user` may see (and annotate, with annotate=True).

    The conversation is authorized by chat.access's helper, the one the chat views use; a
    reply that is not there and a reply the user may not see both answer 404."""
    try:
        message = Message.objects.get(pk=int(pk), role=Message.Role.ASSISTANT)
    except (Message.DoesNotExist, ValueError, TypeError):
        raise Http404("No such reply") from None
    message.conversation = get_conversation_for_user(user, message.conversation_id, run=annotate)
    return message


def can_annotate(user, conversation: Conversation) -> bool:
    """Annotate, comment, set the review status: the `send` rule (viewers only read)."""
    return conversation.can_run(user)


# --- labels ---------------------------------------------------------------------------------


def can_manage_labels(user, team: Team | None) -> bool:
    if team is None:
        return True  # a personal space's owner, who is the only one to reach it
    membership = team.membership_of(user)
    return bool(membership and membership.can_manage())


def create_label(user, team: Team | None, name: str, colour: str) -> Label:
    name = " ".join(name.split())
    if not name:
        raise AnnotationError("Give the label a name.")
    if len(name) > 40:
        raise AnnotationError("A label name has at most 40 characters.")
    if refused := refusal("The label name", name):
        raise AnnotationError(refused)
    colour = colour.strip().lower()
    if not re.fullmatch(r"#[0-9a-f]{6}", colour):
        raise AnnotationError("Pick a colour (#rrggbb).")
    labels = Label.objects.in_space(team.pk if team else None, user.pk)
    with transaction.atomic():
        if labels.filter(name__iexact=name).exists():
            raise AnnotationError(f"There is already a label called {name}.")
        if labels.count() >= MAX_LABELS:
            raise AnnotationError(f"A space has at most {MAX_LABELS} labels.")
        return Label.objects.create(team=team, owner=user, name=name, colour=colour)


def update_label(label: Label, name: str, colour: str) -> None:
    name = " ".join(name.split())
    colour = colour.strip().lower()
    if not name or len(name) > 40:
        raise AnnotationError("A label name has 1 to 40 characters.")
    if refused := refusal("The label name", name):
        raise AnnotationError(refused)
    if not re.fullmatch(r"#[0-9a-f]{6}", colour):
        raise AnnotationError("Pick a colour (#rrggbb).")
    same = Label.objects.in_space(label.team_id, label.owner_id).filter(name__iexact=name)
    if same.exclude(pk=label.pk).exists():
        raise AnnotationError(f"There is already a label called {name}.")
    label.name, label.colour = name, colour
    label.save(update_fields=["name", "colour"])


# --- annotating -----------------------------------------------------------------------------


def annotate(
    user,
    message: Message,
    *,
    thumbs: int | None | object = ...,
    score: int | None | object = ...,
    label_ids: list[int] | None = None,
) -> Annotation:
    """Change `user`'s annotation of `message`: each argument given is set (None clears it);
    `...` leaves it as it was. Labels must come from the conversation's space."""
    if thumbs is not ... and thumbs not in (None, 1, -1):
        raise AnnotationError("Thumbs are up or down.")
    if score is not ... and score is not None and score not in range(1, 6):
        raise AnnotationError("A score is a whole number from 1 to 5.")
    labels: list[Label] | None = None
    if label_ids is not None:
        if any(abs(pk) > MAX_ID for pk in label_ids):
            raise AnnotationError("Pick labels from this space's label set.")
        labels = list(Label.objects.for_conversation(message.conversation).filter(pk__in=label_ids))
        if len(labels) != len(set(label_ids)):
            raise AnnotationError("Pick labels from this space's label set.")
    with transaction.atomic():
        annotation, _ = Annotation.objects.get_or_create(message=message, author=user)
        if thumbs is not ...:
            annotation.thumbs = thumbs  # type: ignore[assignment]
        if score is not ...:
            annotation.score = score  # type: ignore[assignment]
        annotation.save()  # `updated` says when, even for a labels-only change
        if labels is not None:
            annotation.labels.set(labels)
        live.announce(message.conversation_id, user.pk, message_id=message.pk)
    return annotation


# --- comments and mentions ------------------------------------------------------------------


def teammates(conversation: Conversation):
    """Who may be mentioned: the people who can see the conversation."""
    users = get_user_model().objects.filter(is_active=True)
    if conversation.team_id is None:
        return users.filter(pk=conversation.owner_id)
    return users.filter(memberships__team_id=conversation.team_id)


def mentioned_names(text: str) -> list[str]:
    names: list[str] = []
    for match in MENTION.finditer(text):
        name = match.group(1).rstrip(".")  # "ask @ada." mentions ada
        if name and name not in names:
            names.append(name)
    return names


def add_comment(user, message: Message, text: str) -> Comment:
    text = text.strip()
    if not text:
        raise AnnotationError("Write a comment first.")
    if len(text) > MAX_COMMENT:
        raise AnnotationError(f"A comment has at most {MAX_COMMENT} characters.")
    if refused := refusal("The comment", text):
        raise AnnotationError(refused)
    names = mentioned_names(text)
    people = list(teammates(message.conversation).filter(username__in=names).exclude(pk=user.pk))
    with transaction.atomic():
        comment = Comment.objects.create(message=message, author=user, text=text)
        Mention.objects.bulk_create(Mention(comment=comment, user=person) for person in people)
        live.announce(message.conversation_id, user.pk, message_id=message.pk)
    return comment


def render_comment(text: str, mentioned: set[str]) -> SafeString:
    """The comment as HTML: every character escaped, line breaks kept, and the @names that
    became mentions marked. Nothing the author typed becomes markup."""
    out: list[str] = []
    last = 0
    for match in MENTION.finditer(text):
        name = match.group(1).rstrip(".")
        if name not in mentioned:
            continue
        end = match.start(1) + len(name)
        out.append(escape(text[last : match.start()]))
        out.append(f'<span class="mention">@{escape(name)}</span>')
        last = end
    out.append(escape(text[last:]))
    return mark_safe("".join(out).replace("\n", "<br>"))  # noqa: S308 (escaped above)


def inbox(user):
    """The user's mentions in conversations they can still see, newest first."""
    seen = Conversation.objects.visible_to(user)
    return Mention.objects.filter(user=user, comment__message__conversation__in=seen)


def unread_count(user) -> int:
    if not user.is_authenticated:
        return 0
    return inbox(user).filter(read_at__isnull=True).count()


def mark_read(user, mention_ids: list[int] | None = None) -> int:
    """Mark the user's mentions read (all of them with None); only their own rows."""
    rows = Mention.objects.filter(user=user, read_at__isnull=True)
    if mention_ids is not None:
        rows = rows.filter(pk__in=mention_ids)
    return rows.update(read_at=timezone.now())


# --- review status --------------------------------------------------------------------------


STATUS_CHOICES = ReviewStatus.Status.choices


def set_status(user, conversation: Conversation, status: str) -> ReviewStatus:
    if status not in ReviewStatus.Status.values:
        raise AnnotationError("Pick unreviewed, in review, approved or flagged.")
    if not can_annotate(user, conversation):
        raise AnnotationError("Viewers can read the review but not change it.")
    with transaction.atomic():
        review_status = ReviewStatus.set(conversation, status, user)
        live.announce(conversation.pk, user.pk)
    return review_status


def status_of(conversation: Conversation) -> ReviewStatus:
    """The saved status, or an unsaved 'unreviewed' one."""
    found = ReviewStatus.objects.select_related("set_by").filter(conversation=conversation).first()
    return found or ReviewStatus(conversation=conversation)


def bulk_set_status(user, ids: list[int], status: str) -> tuple[int, int]:
    """Set the status of each listed conversation the user may change; (changed, refused).
    Each is loaded through the same helper as a single change; one not visible counts as
    refused, like one where the user is a viewer."""
    if status not in ReviewStatus.Status.values:
        raise AnnotationError("Pick unreviewed, in review, approved or flagged.")
    changed = refused = 0
    roles = dict(
        Membership.objects.filter(user=user).values_list("team_id", "role")
    )  # one query, not one per conversation
    visible = {c.pk: c for c in Conversation.objects.visible_to(user).filter(pk__in=ids)}
    with transaction.atomic():
        for pk in ids:
            conversation = visible.get(pk)
            if conversation is None:
                refused += 1
                continue
            if conversation.team_id is None:
                allowed = conversation.owner_id == user.pk
            else:
                allowed = roles.get(conversation.team_id) not in (None, Membership.Role.VIEWER)
            if not allowed:
                refused += 1
                continue
            ReviewStatus.set(conversation, status, user)
            live.announce(conversation.pk, user.pk)
            changed += 1
    return changed, refused


# --- what the transcript shows under a reply ------------------------------------------------


@dataclass
class ReplyReview:
    message: Message
    mine: Annotation | None = None
    others: list[Annotation] = field(default_factory=list)
    comments: list[tuple[Comment, SafeString]] = field(default_factory=list)

    @property
    def all(self) -> list[Annotation]:
        return ([self.mine] if self.mine else []) + self.others

    @property
    def ups(self) -> int:
        return sum(1 for a in self.all if a.thumbs == 1)

    @property
    def downs(self) -> int:
        return sum(1 for a in self.all if a.thumbs == -1)

    @property
    def scores(self) -> list[int]:
        return [a.score for a in self.all if a.score is not None]

    @property
    def mean_score(self) -> str:
        scores = self.scores
        return f"{sum(scores) / len(scores):.1f}" if scores else ""

    @property
    def my_label_ids(self) -> set[int]:
        return {label.pk for label in self.mine.labels.all()} if self.mine else set()

    @property
    def label_counts(self) -> list[tuple[Label, int]]:
        counts: dict[int, tuple[Label, int]] = {}
        for annotation in self.all:
            for label in annotation.labels.all():
                counts[label.pk] = (label, counts.get(label.pk, (label, 0))[1] + 1)
        return sorted(counts.values(), key=lambda item: item[0].name)


def reviews(user, messages: list[Message]) -> list[ReplyReview]:
    """Everything the transcript shows under these replies, in a fixed number of queries."""
    ids = [m.pk for m in messages]
    annotations = (
        Annotation.objects.filter(message_id__in=ids)
        .select_related("author")
        .prefetch_related("labels")
    )
    mention_names = Prefetch("mention_rows", queryset=Mention.objects.select_related("user"))
    comments = (
        Comment.objects.filter(message_id__in=ids)
        .select_related("author")
        .prefetch_related(mention_names)
    )
    found = {m.pk: ReplyReview(m) for m in messages}
    for annotation in annotations:
        review = found[annotation.message_id]
        if annotation.author_id == user.pk:
            review.mine = annotation
        else:
            review.others.append(annotation)
    for comment in comments:
        names = {row.user.get_username() for row in comment.mention_rows.all()}
        found[comment.message_id].comments.append((comment, render_comment(comment.text, names)))
    return [found[m.pk] for m in messages]


def parse_thumbs(raw: str) -> int | None:
    return {"up": 1, "down": -1, "": None, "clear": None}[raw]


def reply_context(user, message: Message, **extra: Any) -> dict[str, Any]:
    conversation = message.conversation
    return {
        "review": reviews(user, [message])[0],
        "labels": list(Label.objects.for_conversation(conversation)),
        "can_annotate": can_annotate(user, conversation),
        "scores": range(1, 6),
        **extra,
    }
