from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from playground.review import schema


class Command(BaseCommand):
    help = (
        "Re-index every message and conversation for search (SQLite FTS5 or PostgreSQL), "
        "and put back any missing sync trigger. Safe to run at any time."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            if not schema.is_installed(connection):
                schema.install(connection)
            else:
                schema.ensure_triggers(connection, rebuild_if_missing=False)
            count = schema.rebuild(connection)
        self.stdout.write(f"Indexed {count} messages.")
