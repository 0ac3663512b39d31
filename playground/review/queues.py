"""Review queues: a snapshot of the replies a History filter matches, split between
reviewers, each of whom steps through their own items one at a time.

Who may do what (docs/permissions.md): every member of the queue's space sees its queues
and their summaries; its owners and admins (a personal space: its owner) create and delete
them; only an assigned reviewer steps through, and only their own items. Reviewers are
members who may annotate, so viewers are never offered: reviewing means scoring, labelling,
commenting and setting review status, which viewers cannot do anywhere else either.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.http import Http404

from playground.accounts.models import Membership, Team
from playground.chat.models import Message
from playground.providers.storable import refusal
from playground.review import annotating, history, search
from playground.review.models import Annotation, QueueItem, ReviewQueue

MAX_ITEMS = 1000  # replies per queue: a queue is a day's work, not an export
MAX_NAME = 80


class QueueError(ValueError):
    """A queue that could not be made; the message says why, for the person who asked."""


# --- spaces and roles -----------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    team: Team | None
    owner_id: int  # the personal space's owner (team None)

    @property
    def key(self) -> str:
        return str(self.team.pk) if self.team else history.PERSONAL

    @property
    def name(self) -> str:
        return self.team.name if self.team else "Personal"


def managed_spaces(user) -> list[Space]:
    """Where `user` may create queues: Personal, and teams they own or administer."""
    roles = [Membership.Role.OWNER, Membership.Role.ADMIN]
    teams = Team.objects.filter(memberships__user=user, memberships__role__in=roles)
    return [Space(None, user.pk), *(Space(t, user.pk) for t in teams.order_by("name"))]


def can_manage(user, queue: ReviewQueue) -> bool:
    """Create and delete: a team's owners and admins; a personal space's owner."""
    if queue.team_id is None:
        return queue.owner_id == user.pk
    membership = Membership.objects.filter(team_id=queue.team_id, user=user).first()
    return bool(membership and membership.can_manage())


def eligible_reviewers(space: Space):
    """Who may be assigned: the people who may annotate in the space (viewers only read)."""
    users = get_user_model().objects.filter(is_active=True)
    if space.team is None:
        return users.filter(pk=space.owner_id)
    runners = [r for r in Membership.Role if r != Membership.Role.VIEWER]
    return users.filter(memberships__team=space.team, memberships__role__in=runners).order_by(
        "username"
    )


def may_review(user, queue: ReviewQueue) -> bool:
    """An assigned reviewer who may still annotate in the space (not demoted to viewer)."""
    if not queue.reviewers.filter(pk=user.pk).exists():
        return False
    if queue.team_id is None:
        return queue.owner_id == user.pk
    membership = Membership.objects.filter(team_id=queue.team_id, user=user).first()
    return bool(membership and membership.can_run())


# --- load and authorize ---------------------------------------------------------------------


def get_queue_for_user(user, pk: int | str, *, manage: bool = False) -> ReviewQueue:
    """The queue if it is in one of `user`'s spaces (404 otherwise, so strangers cannot tell
    which queues exist); with manage=True, only for the space's owners and admins (403)."""
    try:
        queue = ReviewQueue.objects.visible_to(user).select_related("team").get(pk=int(pk))
    except (ReviewQueue.DoesNotExist, ValueError, TypeError):
        raise Http404("No such queue") from None
    if manage and not can_manage(user, queue):
        raise PermissionDenied("Only the space's owners and admins can do that.")
    return queue


def get_item_for_reviewer(user, queue: ReviewQueue, position: int | str) -> QueueItem:
    """The reviewer's own item at `position` of their own list: another reviewer's items
    cannot even be named. A member who is not (or no longer may be) a reviewer gets 403; a
    position with no item of theirs gets 404."""
    if not may_review(user, queue):
        raise PermissionDenied("Only the queue's reviewers step through it.")
    try:
        return (
            QueueItem.objects.select_related("message__conversation", "done_by")
            .filter(queue=queue, reviewer=user)
            .get(position=int(position))
        )
    except (QueueItem.DoesNotExist, ValueError, TypeError):
        raise Http404("No such item") from None


# --- making a queue -------------------------------------------------------------------------


def matched_replies(user, form: history.HistoryForm, space: Space) -> list[Message]:
    """The replies of the conversations the (valid) History form matches in `space`, in
    History's order (newest conversation first, each one's replies oldest first), at most
    MAX_ITEMS + 1 so the caller can tell there were too many."""
    conversations = history.filtered(user, form)
    if space.team is None:
        conversations = conversations.filter(team__isnull=True, owner_id=space.owner_id)
    else:
        conversations = conversations.filter(team=space.team)
    query: search.Query | None = form.cleaned_data.get("q")
    if query is not None:
        conversations = search.backend().matching(query, conversations, MAX_ITEMS + 1)
    ids = list(conversations.values_list("pk", flat=True)[: MAX_ITEMS + 1])
    order = {pk: i for i, pk in enumerate(ids)}
    replies = list(
        Message.objects.filter(conversation_id__in=ids, role=Message.Role.ASSISTANT)
        .exclude(status=Message.Status.STREAMING)
        .only("id", "conversation_id", "created")
        .order_by("created", "id")
    )
    replies.sort(key=lambda m: order[m.conversation_id])  # stable: keeps created order
    return replies[: MAX_ITEMS + 1]


def split(replies: list[Message], reviewer_ids: list[int]) -> dict[int, list[Message]]:
    """Each conversation's replies go to one reviewer (they read it once), the reviewer with
    the fewest items so far: the lists come out within one conversation of even."""
    lists: dict[int, list[Message]] = {pk: [] for pk in reviewer_ids}
    by_conversation: dict[int, list[Message]] = defaultdict(list)
    for reply in replies:
        by_conversation[reply.conversation_id].append(reply)
    for group in by_conversation.values():  # dicts keep the replies' (History's) order
        fewest = min(reviewer_ids, key=lambda pk: (len(lists[pk]), reviewer_ids.index(pk)))
        lists[fewest].extend(group)
    return lists


def create_queue(
    user, space: Space, name: str, form: history.HistoryForm, reviewer_ids: list[int]
) -> ReviewQueue:
    """Make the queue and its items now, as `user` (who may manage `space`)."""
    name = " ".join(name.split())
    if not name:
        raise QueueError("Give the queue a name.")
    if len(name) > MAX_NAME:
        raise QueueError(f"A queue name has at most {MAX_NAME} characters.")
    if refused := refusal("The queue name", name):
        raise QueueError(refused)
    allowed = set(eligible_reviewers(space).values_list("pk", flat=True))
    reviewer_ids = list(dict.fromkeys(reviewer_ids))
    if not reviewer_ids:
        raise QueueError("Assign at least one reviewer.")
    if not set(reviewer_ids) <= allowed:
        raise QueueError("Reviewers are members of the space who may annotate (not viewers).")
    replies = matched_replies(user, form, space)
    if not replies:
        raise QueueError(f"No replies in {space.name} match these filters.")
    if len(replies) > MAX_ITEMS:
        raise QueueError(f"These filters match more than {MAX_ITEMS} replies; narrow them.")
    with transaction.atomic():
        queue = ReviewQueue.objects.create(
            team=space.team, owner=user, name=name, filter_query=form.query_string()[:2000]
        )
        queue.reviewers.set(reviewer_ids)
        QueueItem.objects.bulk_create(
            QueueItem(queue=queue, message=reply, reviewer_id=reviewer, position=n)
            for reviewer, items in split(replies, reviewer_ids).items()
            for n, reply in enumerate(items, start=1)
        )
    return queue


def reassign(queue: ReviewQueue, from_id: int, to_id: int) -> int:
    """Hand `from_id`'s items not yet done to `to_id` (a member who may review in the
    queue's space), after their own; done items keep who did them. Returns how many moved.
    The caller may manage the queue."""
    space = Space(queue.team, queue.owner_id)
    if from_id == to_id:
        raise QueueError("Pick someone else to hand the items to.")
    if abs(from_id) > annotating.MAX_ID:  # names no one; SQLite raises OverflowError for it
        raise QueueError("They have no open items to hand on.")
    if not eligible_reviewers(space).filter(pk=to_id).exists():
        raise QueueError("Reviewers are members of the space who may annotate (not viewers).")
    with transaction.atomic():
        items = list(
            QueueItem.objects.select_for_update()
            .filter(queue=queue, reviewer_id=from_id, done_at__isnull=True)
            .order_by("position")
        )
        if not items:
            raise QueueError("They have no open items to hand on.")
        last = (
            QueueItem.objects.filter(queue=queue, reviewer_id=to_id)
            .order_by("-position")
            .values_list("position", flat=True)
            .first()
        ) or 0
        for n, item in enumerate(items, start=last + 1):
            item.reviewer_id, item.position = to_id, n
        QueueItem.objects.bulk_update(items, ["reviewer", "position"])
        queue.reviewers.add(to_id)
        if not QueueItem.objects.filter(queue=queue, reviewer_id=from_id).exists():
            queue.reviewers.remove(from_id)
    return len(items)


# --- progress and summary -------------------------------------------------------------------


# Items and those finished, as aggregates (not named "done": QueueItem has that property).
COUNTS = {"items": Count("id"), "finished": Count("id", filter=Q(done_at__isnull=False))}


@dataclass
class Progress:
    done: int
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def progress(queue: ReviewQueue, reviewer) -> Progress:
    counts = QueueItem.objects.filter(queue=queue, reviewer=reviewer).aggregate(**COUNTS)
    return Progress(counts["finished"], counts["items"])


SCORES = range(1, 6)


@dataclass
class ReviewerRow:
    reviewer: Any
    progress: Progress
    scores: list[int] = field(default_factory=lambda: [0] * 5)  # count of 1 … 5

    @property
    def scored(self) -> int:
        return sum(self.scores)

    @property
    def mean(self) -> str:
        if not self.scored:
            return ""
        return f"{sum(n * c for n, c in zip(SCORES, self.scores, strict=True)) / self.scored:.1f}"

    @property
    def bars(self) -> list[tuple[int, int, int]]:
        """(score, count, percent of the largest count) for drawing the distribution."""
        top = max(self.scores) or 1
        return [(n, c, round(100 * c / top)) for n, c in zip(SCORES, self.scores, strict=True)]


@dataclass
class Summary:
    rows: list[ReviewerRow]
    total: ReviewerRow


def summary(queue: ReviewQueue) -> Summary:
    """Per reviewer: items done of total, and the distribution of the scores they gave the
    queue's replies; then the same for the whole queue. A fixed number of queries."""
    counts = list(
        QueueItem.objects.filter(queue=queue).values("reviewer").annotate(**COUNTS).order_by()
    )
    people = get_user_model().objects.in_bulk([c["reviewer"] for c in counts])
    rows = {
        c["reviewer"]: ReviewerRow(people[c["reviewer"]], Progress(c["finished"], c["items"]))
        for c in counts
    }
    # Only a reviewer's score of their own items: other people's annotations of the same
    # replies are not this queue's work.
    own_item = QueueItem.objects.filter(
        queue=queue, message_id=OuterRef("message_id"), reviewer_id=OuterRef("author_id")
    )
    scored = (
        Annotation.objects.filter(Exists(own_item), score__isnull=False)
        .values("author_id", "score")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in scored:
        rows[row["author_id"]].scores[row["score"] - 1] += row["n"]
    ordered = sorted(rows.values(), key=lambda r: r.reviewer.get_username())
    total = ReviewerRow(
        None,
        Progress(sum(r.progress.done for r in ordered), sum(r.progress.total for r in ordered)),
        [sum(r.scores[i] for r in ordered) for i in range(5)],
    )
    return Summary(ordered, total)


def reviewer_progress(user, found: list[ReviewQueue]):
    """(queue, done, total) of `user`'s own items in each of these queues, in one query."""
    return (
        QueueItem.objects.filter(queue__in=found, reviewer=user)
        .values("queue")
        .annotate(**COUNTS)
        .order_by()
    )


def describe(form: history.HistoryForm) -> list[tuple[str, str]]:
    """The (valid) History filters as (label, value) pairs a person reads: choices by
    their label, not their id."""
    described = []
    for name, bound in ((n, form[n]) for n in form.fields):
        value = form.cleaned_data.get(name)
        if value in (None, "", False):
            continue
        if name == "q":
            value = form.data.get("q", "")
        choices = dict(getattr(bound.field, "choices", []))
        text = choices.get(str(value), "yes" if value is True else str(value))
        described.append((str(bound.label), str(text)))
    return described


# --- stepping through -----------------------------------------------------------------------


def item_context(user, queue: ReviewQueue, item: QueueItem, **extra: Any) -> dict[str, Any]:
    """What the focused review page shows for one item: the reply, the question it answers,
    the reviewer's annotation, the thread, the conversation's status and their progress."""
    message = annotating.get_reply_for_user(user, item.message_id)
    conversation = message.conversation
    prompt = None
    if message.parent_id is not None:
        prompt = Message.objects.filter(pk=message.parent_id, role=Message.Role.USER).first()
    mine = progress(queue, user)
    # Neighbours by query, not position ± 1: a reply deleted since leaves a gap.
    own = QueueItem.objects.filter(queue=queue, reviewer=user).values_list("position", flat=True)
    previous = own.filter(position__lt=item.position).order_by("-position").first()
    following = own.filter(position__gt=item.position).order_by("position").first()
    return {
        "queue": queue,
        "item": item,
        "message": message,
        "conversation": conversation,
        "prompt": prompt,
        "progress": mine,
        "previous": previous,
        "next": following,
        "number": own.filter(position__lte=item.position).count(),
        "review_status": annotating.status_of(conversation),
        "status_choices": annotating.STATUS_CHOICES,
        **annotating.reply_context(user, message),
        **extra,
    }


THUMBS = {"up": 1, "down": -1}
VERDICTS = {"approve": "approved", "flag": "flagged"}  # these also mark the item done


def act(user, item: QueueItem, data) -> None:
    """One change to an item, from the review page's buttons and keys. The reply is loaded
    again through the annotation helper, so access is checked where the change is made."""
    message = annotating.get_reply_for_user(user, item.message_id, annotate=True)
    action = data.get("action", "")
    try:
        if action == "score":
            score = data.get("score", "")
            if score not in {str(n) for n in SCORES}:
                raise QueueError("A score is a whole number from 1 to 5.")
            annotating.annotate(user, message, score=int(score))
        elif action == "thumbs":
            if data.get("thumbs") not in THUMBS:
                raise QueueError("Thumbs are up or down.")
            annotating.annotate(user, message, thumbs=THUMBS[data["thumbs"]])
        elif action == "labels":
            try:
                ids = [int(v) for v in data.getlist("label")]
            except ValueError:
                raise QueueError("Pick labels from this space's label set.") from None
            annotating.annotate(user, message, label_ids=ids)
        elif action == "comment":
            annotating.add_comment(user, message, data.get("text", ""))
        elif action in VERDICTS:
            with transaction.atomic():
                annotating.set_status(user, message.conversation, VERDICTS[action])
                item.mark_done(user)
        elif action in ("done", "undone"):
            item.mark_done(user, action == "done")
        else:
            raise QueueError("Nothing to change.")
    except annotating.AnnotationError as exc:
        raise QueueError(str(exc)) from None
