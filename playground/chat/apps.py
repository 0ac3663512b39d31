from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "playground.chat"
    label = "chat"

    def ready(self) -> None:
        # The signals that revoke the access decisions sockets keep (chat/access.py).
        from playground.chat import budgets, signals

        signals.connect()
        budgets.connect()  # budgets are cached: a change must reach every process
