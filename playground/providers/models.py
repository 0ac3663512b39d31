from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from playground.providers import specs
from playground.providers.specs import BUILTIN_PROVIDERS


def _default_groups() -> list[str]:
    return list(specs.DEFAULT_GROUPS)


class CustomEndpoint(models.Model):
    """An OpenAI-compatible server an admin adds: a team's own vLLM or llama.cpp."""

    slug = models.SlugField(
        max_length=40, unique=True, help_text="Short id, used to store API keys for it."
    )
    name = models.CharField(max_length=100)
    base_url = models.URLField(help_text="Up to and including /v1, e.g. http://gpu-box:8000/v1")
    requires_key = models.BooleanField(
        default=False, help_text="Send the user's stored key as a Bearer token."
    )
    param_groups = models.JSONField(
        default=_default_groups,
        help_text="Which parameter groups the server takes (see specs.PARAM_GROUPS).",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.slug in BUILTIN_PROVIDERS:
            raise ValidationError({"slug": "That id belongs to a built-in provider."})
        groups = self.param_groups if isinstance(self.param_groups, list) else []
        unknown = [g for g in groups if g not in specs.PARAM_GROUPS]
        if unknown:
            raise ValidationError({"param_groups": f"Unknown groups: {', '.join(unknown)}."})
        if specs.GROUP_VLLM in groups and specs.GROUP_LLAMACPP in groups:
            raise ValidationError(
                {
                    "param_groups": "Tick the vLLM or the llama.cpp extras, not both: they send "
                    "the repetition penalty under different names."
                }
            )
        parts = urlsplit(self.base_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError({"base_url": "Give an http:// or https:// URL with a host."})
        if parts.username or parts.password:
            raise ValidationError(
                {"base_url": "Put no credentials in the URL: tick 'requires a key' instead."}
            )
        # Every request is the base URL plus a path: a query or fragment would end up before it.
        if parts.query or "?" in self.base_url:
            raise ValidationError(
                {"base_url": "Give the URL with no query string (nothing from '?' on)."}
            )
        if parts.fragment or "#" in self.base_url:
            raise ValidationError(
                {"base_url": "Give the URL with no fragment (nothing from '#' on)."}
            )
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 0 < port < 65536:
            raise ValidationError(
                {"base_url": "The port must be between 1 and 65535 (a whole number)."}
            )

    @property
    def host(self) -> str:
        try:
            return urlsplit(self.base_url).hostname or ""
        except ValueError:  # an unclosed [IPv6 bracket
            return ""

    @property
    def port(self) -> int | None:
        """The TCP port requests go to, or None when the URL names none a connection can have
        (a row saved before the check on save: out of range, 0, not a number)."""
        try:
            parts = urlsplit(self.base_url)
            port = parts.port
        except ValueError:
            return None
        if port is None:
            return 443 if parts.scheme == "https" else 80
        return port if 0 < port < 65536 else None

    def groups(self) -> tuple[str, ...]:
        groups = self.param_groups if isinstance(self.param_groups, list) else []
        return tuple(g for g in groups if g in specs.PARAM_GROUPS)


class EndpointModel(models.Model):
    """One model an endpoint serves: what its admin offers, and what the server accepts."""

    CAPABILITIES = (
        (specs.IMAGES, "Images"),
        (specs.TOOLS, "Tools"),
        (specs.JSON_SCHEMA, "JSON schema"),
        (specs.THINKING, "Thinking"),
        (specs.LOGPROBS, "Logprobs"),
    )

    endpoint = models.ForeignKey(CustomEndpoint, on_delete=models.CASCADE, related_name="models")
    model_id = models.CharField(max_length=200, help_text="As the server names it.")
    offered = models.BooleanField(default=True, help_text="Users can pick it.")
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output = models.PositiveIntegerField(null=True, blank=True)
    images = models.BooleanField(default=False)
    tools = models.BooleanField(default=False)
    json_schema = models.BooleanField(default=False)
    thinking = models.BooleanField(default=False)
    logprobs = models.BooleanField(default=False)
    # Wire formats besides Chat Completions (always on): ticked by the admin, or found by Probe.
    FORMATS = ((specs.RESPONSES, "Responses API"), (specs.MESSAGES, "Messages API"))
    responses = models.BooleanField(
        default=False, help_text="The server also answers POST /responses for this model."
    )
    messages = models.BooleanField(
        default=False, help_text="The server also answers POST /messages for this model."
    )
    # Only a price its admin entered is ever shown: a self-hosted model has none by default.
    price_per_message = models.DecimalField(max_digits=10, decimal_places=6, null=True, blank=True)
    # What Probe found: {capability: {"ok": bool, "detail": str}}, and whether the server
    # counts tokens for us ("tokenize": {"ok": ...}).
    probe_results = models.JSONField(default=dict, blank=True)
    probed_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "model_id"], name="one_model_id")
        ]

    def __str__(self) -> str:
        return f"{self.model_id} ({self.endpoint})"

    def capabilities(self) -> frozenset[str]:
        found = {specs.SYSTEM_ROLE}
        if specs.GROUP_OPENAI in self.endpoint.groups():
            found.add(specs.JSON_OUTPUT)  # json_object is part of the OpenAI set
        found.update(name for name, _ in self.CAPABILITIES if getattr(self, name))
        return frozenset(found)

    def record_probe(self, results: dict[str, dict[str, Any]]) -> None:
        """Store what the server accepted and set the capabilities from it."""
        self.probe_results = results
        self.probed_at = timezone.now()
        for name, _ in (*self.CAPABILITIES, *self.FORMATS):
            if name in results:
                setattr(self, name, bool(results[name].get("ok")))

    def formats(self) -> tuple[str, ...]:
        """The wire formats the model is offered in, Chat Completions first."""
        return (specs.CHAT, *(name for name, _ in self.FORMATS if getattr(self, name)))
