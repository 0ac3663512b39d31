from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.formats import time_format
from django.utils.safestring import SafeString

from playground.chat.models import Message
from playground.chat.render import highlight_json, render_markdown
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


@register.filter
def ago(moment: datetime | None) -> str:
    """How long ago, for today's rows ("5 min ago"); an earlier day's heading already says
    which day, so its rows show the time of day."""
    if moment is None:
        return ""
    now = timezone.now()
    seconds = (now - moment).total_seconds()
    if seconds < 60:
        return "just now"
    if timezone.localdate(moment) != timezone.localdate(now):
        return time_format(timezone.localtime(moment), "H:i")
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h ago"


@register.filter
def json_reply(message: Message) -> SafeString:
    """A reply to a request for structured output, indented and highlighted when it is JSON;
    "" otherwise, and the reply is drawn as Markdown like any other."""
    if not message.schema_check:
        return SafeString("")
    return highlight_json(message.text or "")
