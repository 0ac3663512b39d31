"""Load-and-authorize for run groups (compares and sweeps), used by views and the socket.

A group belongs to a space like a conversation does, and its columns are conversations of
that same space, so who may see and run them is decided the same way: a personal group's
owner; in a team, every member sees it and the role decides who may run it."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from playground.accounts.models import Membership
from playground.chat.models import RunGroup

KINDS = (RunGroup.Kind.COMPARE, RunGroup.Kind.SWEEP)


def may_run(user, group: RunGroup) -> bool:
    """Send, stop, start a sweep, continue a column: as Conversation.can_run."""
    if group.team_id is None:
        return user.pk == group.owner_id
    membership = Membership.objects.filter(team_id=group.team_id, user=user).first()
    return bool(membership and membership.can_run())


def get_group_for_user(user, pk: int | str, *, run: bool = False) -> RunGroup:
    """The compare or sweep if `user` may see it (and run it, with run=True), else 404/403.
    Experiments are groups too, but theirs to open."""
    try:
        group = (
            RunGroup.objects.visible_to(user)
            .filter(kind__in=KINDS)
            .select_related("team")
            .get(pk=int(pk))
        )
    except (RunGroup.DoesNotExist, ValueError, TypeError):
        raise Http404("No such compare or sweep") from None
    if run and not may_run(user, group):
        raise PermissionDenied("Viewers can watch but not run.")
    return group


def get_group_and_role(user, pk: int | str) -> tuple[RunGroup, bool]:
    """The group if `user` may see it, and whether they may run it; else 404."""
    group = get_group_for_user(user, pk)
    return group, may_run(user, group)
