"""Versioned prompt templates with {{variables}}, labels, the read API; compare columns and
parameter sweeps.

May import chat, accounts and providers; none of those imports this app: it plugs into the
playground through chat/extensions.py's signals.
"""

from __future__ import annotations

from django.apps import AppConfig


class PromptsConfig(AppConfig):
    name = "playground.prompts"
    label = "prompts"

    def ready(self) -> None:
        from playground.chat import extensions
        from playground.chat.models import Conversation
        from playground.prompts import play

        # A send without a prompt version is none of play's business (prepare_send returns
        # at once without one, and then record_turn has no plan to record).
        extensions.connect_send(
            play.prepare_send, play.record_turn, fields=[play.VERSION_FIELD], sender=Conversation
        )
        extensions.reply_repeated.connect(play.record_rerun, sender=Conversation)
        extensions.page_panels.connect(play.panel, sender=Conversation)
