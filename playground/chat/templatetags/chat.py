from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django import template
from django.urls import (
    NoReverseMatch,
    Resolver404,
    get_script_prefix,
    get_urlconf,
    resolve,
    reverse,
)
from django.utils import timezone
from django.utils.formats import time_format
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString

from playground.chat.models import Message
from playground.chat.render import highlight_json, render_markdown
from playground.providers.specs import BUILTIN_MODELS

register = template.Library()
_LABELS = {m.key: m.label for m in BUILTIN_MODELS}


@register.tag
def id_url(parser: template.base.Parser, token: template.base.Token) -> IdUrlNode:
    """{% id_url name id… %}: {% url name id… %} for URLs whose every argument is an <int:…>
    id, a message's and a conversation row's links, drawn on every turn. {% url %} cost 50 µs a
    link, two fifths of a finished reply's rendering; this one puts the ids between the pieces
    of a reverse() done once per name, prefix and urlconf, and checked then (see _pieces). Any
    other name or argument goes through reverse() as {% url %} does. Escaped likewise."""
    bits = token.split_contents()
    if len(bits) < 2:
        raise template.TemplateSyntaxError("id_url takes a URL name, then its ids")
    return IdUrlNode([parser.compile_filter(bit) for bit in bits[1:]])


class IdUrlNode(template.Node):
    def __init__(self, bits: list[template.base.FilterExpression]) -> None:
        self.bits = bits

    def render(self, context: template.Context) -> str:
        name, *ids = (bit.resolve(context) for bit in self.bits)
        url = url_with_ids(name, ids)
        return conditional_escape(url) if context.autoescape else url


def url_with_ids(name: str, ids: list[Any]) -> str:
    """reverse(name, args=ids), with the pieces around the ids built once (see id_url)."""
    pieces = _pieces(name, len(ids), get_script_prefix(), get_urlconf())
    if pieces is None or not all(type(i) is int and i >= 0 for i in ids):
        return reverse(name, args=ids)
    parts = [pieces[0]]
    for i, piece in zip(ids, pieces[1:], strict=True):
        parts += (str(i), piece)
    return "".join(parts)


# Ids no URL contains by chance: 11 digits, each a different number.
_PROBES = (73450123891, 84561234902, 95672345013, 16783456124)
_CHECKS = (0, 7, 42, 1234567)


@functools.lru_cache(maxsize=256)
def _pieces(name: str, count: int, prefix: str, urlconf: str | None) -> tuple[str, ...] | None:
    """The text around the ids in `name`'s URL, or None when building it so is not sure to be
    what reverse() returns: the route must take exactly `count` arguments, all <int:…>, and
    the pieces must rebuild reverse()'s URL for other ids as well."""
    if count > len(_PROBES):
        return None
    try:
        url = reverse(name, args=_PROBES[:count], urlconf=urlconf)
        route = resolve(url.removeprefix(prefix.rstrip("/")), urlconf=urlconf).route
    except (NoReverseMatch, Resolver404):
        return None
    if route.count("<") != count or route.count("<int:") != count:
        return None
    pieces, rest = [], url
    for probe in map(str, _PROBES[:count]):
        if rest.count(probe) != 1 or url.count(probe) != 1:
            return None
        before, rest = rest.split(probe)
        pieces.append(before)
    pieces.append(rest)
    checks = _CHECKS[:count]
    rebuilt = pieces[0] + "".join(
        str(i) + piece for i, piece in zip(checks, pieces[1:], strict=True)
    )
    if rebuilt != reverse(name, args=checks, urlconf=urlconf):
        return None
    return tuple(pieces)


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
