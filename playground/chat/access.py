"""Load-and-authorize: one place that decides who may see and run a conversation or use a
preset.

HTTP views and WebSocket consumers both call these, so a permission check cannot be skipped
by choosing the other door.

A socket keeps its decision instead of asking the database on every message; whatever could
change the decision (a membership or its role, a team, a conversation's owner or team, a
session, the user's active flag or password) calls `revoke_access`, through the signals in
playground/chat/signals.py. Revocation is immediate: in this process through a counter every
socket compares before it trusts its decision, in the others through the channel layer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404

from playground.chat.models import Conversation, Preset
from playground.chat.runs import group_name

log = logging.getLogger(__name__)

REVOKE = "access.revoke"  # the channel-layer message type sockets re-check on

# How many times each user's (and each conversation's) access was revoked in this process.
# Plain ints in a dict: written from database threads, read on the event loop, no lock needed.
_user_epochs: defaultdict[int, int] = defaultdict(int)
_conversation_epochs: defaultdict[int, int] = defaultdict(int)
# Broadcasts scheduled on a running loop, kept so they are not garbage-collected.
_pending: set[asyncio.Task] = set()


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


def get_conversation_and_role(user, pk: int | str) -> tuple[Conversation, bool]:
    """The conversation if `user` may see it, and whether they may run in it; else 404.
    A personal conversation needs no second query (and every socket opens through here)."""
    conversation = get_conversation_for_user(user, pk)
    if conversation.team_id is None:
        return conversation, conversation.owner_id == user.pk
    return conversation, conversation.can_run(user)


def user_group(user_id: int) -> str:
    """The channel-layer group every socket of this user joins, to hear of revocations."""
    return f"access-user-{user_id}"


def epoch(user_id: int, conversation_id: int) -> tuple[int, int]:
    """Take this before checking access; a decision is good while the epoch is unchanged."""
    return _user_epochs[user_id], _conversation_epochs[conversation_id]


def revoke_access(user_ids: Iterable[int]) -> None:
    """Every socket of these users checks its access again before it sends or shows anything
    more, in every process. Call it where the change is saved: the news goes out when the
    transaction commits, so the re-check reads the new state."""
    ids = sorted({int(pk) for pk in user_ids if pk is not None})
    if ids:
        transaction.on_commit(lambda: _revoke(_user_epochs, ids, [user_group(i) for i in ids]))


def revoke_conversation_access(conversation_ids: Iterable[int]) -> None:
    """revoke_access for everyone watching these conversations (deleted, or moved to another
    owner or team)."""
    ids = sorted({int(pk) for pk in conversation_ids if pk is not None})
    if ids:
        groups = [group_name(i) for i in ids]
        transaction.on_commit(lambda: _revoke(_conversation_epochs, ids, groups))


def _revoke(epochs: defaultdict[int, int], ids: list[int], groups: list[str]) -> None:
    for pk in ids:
        epochs[pk] += 1
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        try:
            async_to_sync(_broadcast)(layer, groups)
        except Exception:
            # The change itself is saved, and this process's sockets already know; the others
            # fall back to their periodic re-check (REAUTH_INTERVAL).
            log.exception("could not tell other processes' sockets that access was revoked")
        return
    task = loop.create_task(_broadcast(layer, groups), name="access-revoke")
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _broadcast(layer, groups: list[str]) -> None:
    for group in groups:
        try:
            await layer.group_send(group, {"type": REVOKE})
        except Exception:
            log.exception("could not tell the sockets of %s that access was revoked", group)
