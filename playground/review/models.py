from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models


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
