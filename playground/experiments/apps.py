from __future__ import annotations

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "playground.experiments"
    label = "experiments"

    def ready(self) -> None:
        from playground.chat import extensions
        from playground.chat.models import Conversation
        from playground.experiments import panels

        extensions.page_panels.connect(panels.panel, sender=Conversation)
