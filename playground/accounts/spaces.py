"""The current space: Personal or one of the user's teams, remembered in the session.

New conversations and presets are made in it and the sidebar lists it. The session holds
only a team id; it is checked against the memberships on every read, so someone removed
from a team falls back to Personal instead of seeing the team's name."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from playground.accounts.models import Membership, Team

SESSION_KEY = "space"


def current_space(request: HttpRequest) -> Membership | None:
    """The user's membership of the current team space, or None for Personal."""
    team_id = request.session.get(SESSION_KEY)
    if team_id is None or not request.user.is_authenticated:
        return None
    membership = (
        Membership.objects.select_related("team").filter(team_id=team_id, user=request.user).first()
    )
    if membership is None:
        request.session.pop(SESSION_KEY, None)
    return membership


def set_space(request: HttpRequest, team: Team | None) -> None:
    """Make `team` (None: Personal) current. The caller has checked the membership."""
    team_id = team.pk if team is not None else None
    if request.session.get(SESSION_KEY) != team_id:
        request.session[SESSION_KEY] = team_id


def spaces(request: HttpRequest) -> dict[str, Any]:
    """Template context for the header's space switcher."""
    if not request.user.is_authenticated:
        return {}
    memberships = list(
        Membership.objects.select_related("team").filter(user=request.user).order_by("team__name")
    )
    team_id = request.session.get(SESSION_KEY)
    current = next((m for m in memberships if m.team_id == team_id), None)
    return {"space_memberships": memberships, "current_space": current}
