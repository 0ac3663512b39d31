from __future__ import annotations

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
