"""Reviewing saved replies: history and search, branches and diffs, annotations, review
queues, share links, export and import.

May import chat, accounts and providers; none of those imports this app.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


def _ensure_search_triggers(using: str = "default", **kwargs: Any) -> None:
    """After every migrate: a chat migration that rebuilt a table on SQLite dropped its
    triggers; put them back (and re-index) so the search index keeps up."""
    from playground.review import schema

    connection = connections[using]
    if schema.is_installed(connection):
        schema.ensure_triggers(connection)


class ReviewConfig(AppConfig):
    name = "playground.review"
    label = "review"

    def ready(self) -> None:
        post_migrate.connect(_ensure_search_triggers, sender=self)
