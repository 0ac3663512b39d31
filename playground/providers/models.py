from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from playground.providers.specs import BUILTIN_PROVIDERS


class CustomEndpoint(models.Model):
    """An OpenAI-compatible server an admin adds: a team's own vLLM or llama.cpp."""

    slug = models.SlugField(
        max_length=40, unique=True, help_text="Short id, used to store API keys for it."
    )
    name = models.CharField(max_length=100)
    base_url = models.URLField(help_text="Up to and including /v1, e.g. http://gpu-box:8000/v1")
    model_ids = models.TextField(help_text="One model id per line, as the server names them.")
    requires_key = models.BooleanField(
        default=False, help_text="Send the user's stored key as a Bearer token."
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output = models.PositiveIntegerField(null=True, blank=True)
    supports_images = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.slug in BUILTIN_PROVIDERS:
            raise ValidationError({"slug": "That id belongs to a built-in provider."})
        if not self.model_list():
            raise ValidationError({"model_ids": "List at least one model id."})

    def model_list(self) -> list[str]:
        return [line.strip() for line in self.model_ids.splitlines() if line.strip()]
