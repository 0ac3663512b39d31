from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


class MessageSearch(models.Model):
    """PostgreSQL's search document of one message (text weighted A, reasoning B).

    Unmanaged: review/schema.py creates the table, its GIN index and the triggers that fill
    it, on PostgreSQL only (SQLite keeps an FTS5 table instead)."""

    message = models.OneToOneField(
        "chat.Message",
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    document = SearchVectorField()

    class Meta:
        managed = False
        db_table = "review_message_search"


class ConversationSearch(models.Model):
    """PostgreSQL's search document of a conversation's title (A) and system prompt (B)."""

    conversation = models.OneToOneField(
        "chat.Conversation",
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    document = SearchVectorField()

    class Meta:
        managed = False
        db_table = "review_conversation_search"


class ShareLinkQuerySet(models.QuerySet["ShareLink"]):
    def live(self) -> ShareLinkQuerySet:
        """Not revoked and not expired: the only links a visitor can open."""
        from django.db.models import Q
        from django.utils import timezone

        return self.filter(revoked__isnull=True).filter(
            Q(expires__isnull=True) | Q(expires__gt=timezone.now())
        )


class ShareLink(models.Model):
    """A read-only link to a conversation or one reply of it.

    Only the SHA-256 of the token is stored: a database dump or a log of queries cannot be
    turned back into working links. The token itself is shown once, when the link is made."""

    token_hash = models.CharField(max_length=64, unique=True)
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="share_links"
    )
    # A single reply, or None for the whole conversation.
    message = models.ForeignKey(
        "chat.Message", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="share_links"
    )
    show_names = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    objects = ShareLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"share of {self.conversation_id}"


# --- Annotations, comments, mentions, review status ------------------------------------------
#
# Every one of these hangs off a chat Message or Conversation, so chat needs no change and
# the arrows stay one way (review imports chat, never the reverse). Who and when is kept on
# each row: its author (or set_by) and its created/updated times.

HEX_COLOUR = RegexValidator(r"^#[0-9a-f]{6}$", "A colour is #rrggbb in lower-case hex.")


class LabelQuerySet(models.QuerySet["Label"]):
    def in_space(self, team_id: int | None, owner_id: int | None) -> LabelQuerySet:
        """One space's label set: a team's, or (team None) `owner_id`'s personal one."""
        if team_id is not None:
            return self.filter(team_id=team_id)
        return self.filter(team__isnull=True, owner_id=owner_id)

    def for_conversation(self, conversation) -> LabelQuerySet:
        """The labels a reply of `conversation` may carry: its space's set."""
        return self.in_space(conversation.team_id, conversation.owner_id)

    def visible_to(self, user) -> LabelQuerySet:
        """Own personal labels plus those of the user's teams. Start every lookup here."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(
            Q(owner=user, team__isnull=True) | Q(team__memberships__user=user)
        ).distinct()


class Label(models.Model):
    """A coloured label of one space. A team's admins (a personal space: its owner) define
    the set; anyone who may annotate picks from it.

    `owner` is the personal space's owner when `team` is empty; for a team label it is
    whoever made it (kept for who/when, it does not decide anything)."""

    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="labels"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_labels"
    )
    name = models.CharField(max_length=40)
    colour = models.CharField(max_length=7, validators=[HEX_COLOUR], default="#6b7280")
    created = models.DateTimeField(auto_now_add=True)

    objects = LabelQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"],
                condition=Q(team__isnull=True),
                name="personal_label_name",
            ),
            models.UniqueConstraint(
                fields=["team", "name"], condition=Q(team__isnull=False), name="team_label_name"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class AnnotationQuerySet(models.QuerySet["Annotation"]):
    def visible_to(self, user) -> AnnotationQuerySet:
        """Annotations on replies of conversations `user` may see."""
        from playground.chat.models import Conversation

        return self.filter(message__conversation__in=Conversation.objects.visible_to(user))


class Annotation(models.Model):
    """One person's judgement of one reply: thumbs, a 1–5 score and labels, each optional.
    One row per (reply, author); changing it updates the row (`updated` says when)."""

    class Thumbs(models.IntegerChoices):
        UP = 1, "Thumbs up"
        DOWN = -1, "Thumbs down"

    message = models.ForeignKey(
        "chat.Message", on_delete=models.CASCADE, related_name="annotations"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotations"
    )
    thumbs = models.SmallIntegerField(choices=Thumbs.choices, null=True, blank=True)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    labels: models.ManyToManyField[Label, Any] = models.ManyToManyField(
        Label, blank=True, related_name="annotations"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = AnnotationQuerySet.as_manager()

    class Meta:
        ordering = ["created", "id"]
        constraints = [
            models.UniqueConstraint(fields=["message", "author"], name="one_annotation"),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__gte=1, score__lte=5),
                name="annotation_score_1_to_5",
            ),
            models.CheckConstraint(
                condition=Q(thumbs__isnull=True) | Q(thumbs__in=[1, -1]),
                name="annotation_thumbs_up_or_down",
            ),
        ]

    def __str__(self) -> str:
        return f"annotation of {self.message_id} by {self.author_id}"


class CommentQuerySet(models.QuerySet["Comment"]):
    def visible_to(self, user) -> CommentQuerySet:
        from playground.chat.models import Conversation

        return self.filter(message__conversation__in=Conversation.objects.visible_to(user))


class Comment(models.Model):
    """A comment in the thread under one reply. `text` is stored as typed and rendered
    escaped; @username mentions of people who can see the conversation become Mentions."""

    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_comments"
    )
    text = models.TextField(max_length=5000)
    mentions: models.ManyToManyField[Any, Mention] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Mention", related_name="mentioned_in", blank=True
    )
    created = models.DateTimeField(auto_now_add=True)

    objects = CommentQuerySet.as_manager()

    class Meta:
        ordering = ["created", "id"]
        indexes = [models.Index(fields=["message", "created"], name="comment_thread")]

    def __str__(self) -> str:
        return f"comment {self.pk} on {self.message_id}"


class Mention(models.Model):
    """`user` was @mentioned in `comment`: an inbox entry until they mark it read."""

    comment = models.ForeignKey(Comment, on_delete=models.CASCADE, related_name="mention_rows")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_mentions"
    )
    created = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["comment", "user"], name="one_mention")]
        # The header badge counts a user's unread mentions on every page.
        indexes = [models.Index(fields=["user", "read_at"], name="mention_inbox")]

    def __str__(self) -> str:
        return f"mention of {self.user_id} in {self.comment_id}"


class ReviewStatus(models.Model):
    """A conversation's review status. No row means unreviewed; the row keeps who set the
    current status and when (a conversation's whole history is not kept)."""

    class Status(models.TextChoices):
        UNREVIEWED = "unreviewed", "Unreviewed"
        IN_REVIEW = "in_review", "In review"
        APPROVED = "approved", "Approved"
        FLAGGED = "flagged", "Flagged"

    conversation = models.OneToOneField(
        "chat.Conversation", primary_key=True, on_delete=models.CASCADE, related_name="review"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UNREVIEWED)
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    set_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "review statuses"
        indexes = [models.Index(fields=["status", "set_at"], name="review_status_set")]

    def __str__(self) -> str:
        return f"{self.conversation_id}: {self.status}"

    @classmethod
    def set(cls, conversation, status: str, user) -> ReviewStatus:
        """Set `conversation`'s status as `user`, now. The caller has checked the permission."""
        if status not in cls.Status.values:
            raise ValueError(f"Unknown review status {status!r}.")
        row, _ = cls.objects.update_or_create(
            conversation=conversation,
            defaults={"status": status, "set_by": user, "set_at": timezone.now()},
        )
        return row


# --- Review queues -----------------------------------------------------------------------------


class ReviewQueueQuerySet(models.QuerySet["ReviewQueue"]):
    def visible_to(self, user) -> ReviewQueueQuerySet:
        """Queues of the user's spaces: their personal ones and their teams'. Start here."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(
            Q(owner=user, team__isnull=True) | Q(team__memberships__user=user)
        ).distinct()

    def in_space(self, team_id: int | None, owner_id: int | None) -> ReviewQueueQuerySet:
        if team_id is not None:
            return self.filter(team_id=team_id)
        return self.filter(team__isnull=True, owner_id=owner_id)


class ReviewQueue(models.Model):
    """A named set of replies, picked by a History filter when the queue was made (a
    snapshot: later replies matching the filter are not added), split between reviewers.

    `owner` is the personal space's owner when `team` is empty; for a team queue it is the
    admin who made it (kept for who/when, it decides nothing)."""

    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="review_queues",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_queues"
    )
    name = models.CharField(max_length=80)
    # The History query string the items were picked with, to show and to reopen History.
    filter_query = models.CharField(max_length=2000, blank=True)
    reviewers: models.ManyToManyField[Any, Any] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="assigned_review_queues", blank=True
    )
    created = models.DateTimeField(auto_now_add=True)

    objects = ReviewQueueQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.name


class QueueItem(models.Model):
    """One reply of a queue, given to one reviewer at one place in their list. Done means
    the reviewer has finished with it: `done_by` and `done_at` say who and when."""

    queue = models.ForeignKey(ReviewQueue, on_delete=models.CASCADE, related_name="items")
    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="queue_items"
    )
    position = models.PositiveIntegerField()  # 1-based, in the reviewer's list
    done_at = models.DateTimeField(null=True, blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["queue", "reviewer", "position"]
        constraints = [
            models.UniqueConstraint(fields=["queue", "message"], name="queue_item_once"),
            models.UniqueConstraint(
                fields=["queue", "reviewer", "position"], name="queue_item_position"
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.position} of queue {self.queue_id} for {self.reviewer_id}"

    @property
    def done(self) -> bool:
        return self.done_at is not None

    def mark_done(self, user, done: bool = True) -> None:
        """Record that `user` finished this item now (or reopen it). Caller checked access."""
        self.done_at = timezone.now() if done else None
        self.done_by = user if done else None
        self.save(update_fields=["done_at", "done_by"])
