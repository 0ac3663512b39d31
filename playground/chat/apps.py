from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "playground.chat"
    label = "chat"

    def ready(self) -> None:
        # The signals that revoke the access decisions sockets keep (chat/access.py).
        from django.db.models.signals import post_migrate

        from playground.chat import budgets, signals, usage

        signals.connect()
        budgets.connect()  # budgets are cached: a change must reach every process
        post_migrate.connect(usage.ensure_day_index, sender=self, dispatch_uid="usage-day-index")
