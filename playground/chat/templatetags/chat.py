from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from playground.chat.render import render_markdown
from playground.providers.specs import BUILTIN_MODELS

register = template.Library()
_LABELS = {m.key: m.label for m in BUILTIN_MODELS}


@register.filter
def markdown(text: str) -> SafeString:
    """Model output as sanitized HTML: nothing a model writes can run script."""
    return render_markdown(text or "")


@register.filter
def model_label(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    return key.split(":", 1)[-1] if key else "Assistant"


@register.filter
def seconds(milliseconds: float | None) -> str:
    if milliseconds is None:
        return ""
    return f"{milliseconds / 1000:.1f} s"
