from __future__ import annotations

from django.apps import AppConfig


class PromptsConfig(AppConfig):
    name = "playground.prompts"
    label = "prompts"
