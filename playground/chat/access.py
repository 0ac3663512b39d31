"""Load-and-authorize: one place that decides who may see and run a conversation or use a
preset.

HTTP views and WebSocket consumers both call these, so a permission check cannot be skipped
by choosing the other door.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from playground.chat.models import Conversation, Preset


def get_conversation_for_user(user, pk: int | str, *, run: bool = False) -> Conversation:
    """The conversation if `user` may see it (and run in it, with run=True), else 404/403."""
    try:
        conversation = Conversation.objects.visible_to(user).get(pk=int(pk))
    except (Conversation.DoesNotExist, ValueError, TypeError):
        raise Http404("No such conversation") from None
    if run and not conversation.can_run(user):
        raise PermissionDenied("Viewers can watch but not run.")
    return conversation


def get_preset_for_user(user, pk: int | str, *, change: bool = False) -> Preset:
    """The preset if `user` may load it (and rename or delete it, with change=True)."""
    try:
        preset = Preset.objects.visible_to(user).get(pk=int(pk))
    except (Preset.DoesNotExist, ValueError, TypeError):
        raise Http404("No such preset") from None
    if change and not preset.can_change(user):
        raise PermissionDenied("Viewers can use the team's presets but not change them.")
    return preset
