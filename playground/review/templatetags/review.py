"""The header's inbox badge: the count of unread @mentions, on every page."""

from __future__ import annotations

from typing import Any

from django import template

from playground.review.annotating import unread_count

register = template.Library()


@register.inclusion_tag("review/inbox_badge.html", takes_context=True)
def inbox_badge(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    return {"unread": unread_count(user) if user is not None else 0}
