"""Load-and-authorize for teams: the team and the user's membership, or 404/403.

Every team page calls this, so no view can forget the object-level check."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.core.exceptions import PermissionDenied
from django.http import Http404

from playground.accounts.models import Membership, Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


def get_team_for_user(
    user: User | AnonymousUser, pk: int | str, *, manage: bool = False
) -> tuple[Team, Membership]:
    """The team and `user`'s membership if they belong to it (404 otherwise, so strangers
    cannot tell which teams exist); with manage=True an owner or admin only (403)."""
    try:
        team = Team.objects.visible_to(user).get(pk=int(pk))
    except (Team.DoesNotExist, ValueError, TypeError):
        raise Http404("No such team") from None
    # visible_to found the team through this user's membership: the user is an account.
    membership = team.memberships.select_related("user").get(user=cast("User", user))
    if manage and not membership.can_manage():
        raise PermissionDenied("Only the team's owners and admins can do that.")
    return team, membership
