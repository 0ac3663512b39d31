"""Team pages: create a team, its members and roles, invitation links, the team's keys.

Every view loads the team through `get_team_for_user` (404 to strangers, 403 for a role
that may not do it); the rules themselves (who may assign which role, the last owner) are
model methods, so the page and any future door share them. Memberships change through
model save() and delete(), never queryset update(), so the access signals fire and a
removed member's open sockets are cut off."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from playground.accounts.access import get_team_for_user
from playground.accounts.forms import ROLE_CHOICES, AddMemberForm, ApiKeyForm, RoleForm, TeamForm
from playground.accounts.models import ApiKey, Invitation, Membership, Team, TeamError
from playground.accounts.spaces import set_space
from playground.http import AuthenticatedHttpRequest
from playground.providers import catalog

TEAM_PAGE = "accounts/team.html"


@require_http_methods(["GET", "POST"])
@login_required
def teams(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The user's teams, and a form to create one (its creator is its first owner)."""
    form = TeamForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            team = Team.create(name=form.cleaned_data["name"], owner=request.user)
        except TeamError as exc:
            error = str(exc)
        else:
            set_space(request, team)
            messages.success(request, f"{team.name} created. Add members below.")
            return redirect("team", pk=team.pk)
    elif request.method == "POST":
        error = "Give the team a name (at most 100 characters)."
    memberships = Membership.objects.select_related("team").filter(user=request.user)
    context = {"memberships": memberships.order_by("team__name"), "form": form, "error": error}
    return render(request, "accounts/teams.html", context, status=400 if error else 200)


def _team_page(
    request: AuthenticatedHttpRequest,
    team: Team,
    me: Membership,
    *,
    error: str = "",
    status: int = 200,
    extra: dict[str, Any] | None = None,
) -> HttpResponse:
    members = team.memberships.select_related("user").order_by("user__username")
    rows = [{"m": m, "changeable": me.may_change(m) and m.pk != me.pk} for m in members]
    assignable = [(value, label) for value, label in ROLE_CHOICES if me.may_assign(value)]
    saved = {k.provider: k for k in ApiKey.objects.filter(team=team)}
    context = {
        "team": team,
        "me": me,
        "rows": rows,
        "assignable": assignable,
        "invitations": team.invitations.select_related("created_by", "used_by")[:50]
        if me.can_manage()
        else [],
        "key_rows": [{"provider": p, "key": saved.get(p.slug)} for p in catalog.providers()],
        "error": error,
        **(extra or {}),
    }
    return render(request, TEAM_PAGE, context, status=status)


@require_GET
@login_required
def team_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    team, me = get_team_for_user(request.user, pk)
    return _team_page(request, team, me)


@require_POST
@login_required
def member_add(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    team, me = get_team_for_user(request.user, pk, manage=True)
    form = AddMemberForm(request.POST)
    if not form.is_valid():
        return _team_page(request, team, me, error="Give a username and a role.", status=400)
    username, role = form.cleaned_data["username"], form.cleaned_data["role"]
    user = get_user_model().objects.filter(username=username).first()
    try:
        if user is None:
            raise TeamError(f"There is no account called {username}.")
        if not me.may_assign(role):
            raise TeamError(f"As {me.get_role_display().lower()} you cannot add an {role}.")
        team.add_member(user, role)
    except TeamError as exc:
        return _team_page(request, team, me, error=str(exc), status=400)
    messages.success(request, f"{username} joined {team.name} as {role}.")
    return redirect("team", pk=team.pk)


@require_POST
@login_required
def member_role(request: AuthenticatedHttpRequest, pk: int, member_pk: int) -> HttpResponse:
    team, me = get_team_for_user(request.user, pk, manage=True)
    member = get_object_or_404(team.memberships.select_related("user"), pk=member_pk)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _team_page(request, team, me, error="Pick one of the roles.", status=400)
    try:
        member.set_role(form.cleaned_data["role"], by=me)
    except TeamError as exc:
        return _team_page(request, team, me, error=str(exc), status=400)
    messages.success(request, f"{member.user} is now {member.role}.")
    return redirect("team", pk=team.pk)


@require_POST
@login_required
def member_remove(request: AuthenticatedHttpRequest, pk: int, member_pk: int) -> HttpResponse:
    team, me = get_team_for_user(request.user, pk, manage=True)
    member = get_object_or_404(team.memberships.select_related("user"), pk=member_pk)
    try:
        member.remove(by=me)
    except TeamError as exc:
        return _team_page(request, team, me, error=str(exc), status=400)
    messages.success(request, f"{member.user} was removed from {team.name}.")
    if member.pk == me.pk:
        return redirect("teams")
    return redirect("team", pk=team.pk)


@require_POST
@login_required
def team_leave(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    team, me = get_team_for_user(request.user, pk)
    try:
        me.remove(by=me)
    except TeamError as exc:
        return _team_page(request, team, me, error=str(exc), status=400)
    messages.success(request, f"You left {team.name}.")
    return redirect("teams")


@require_POST
@login_required
def invite_create(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """A one-time link, shown once: only its hash is stored."""
    team, me = get_team_for_user(request.user, pk, manage=True)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _team_page(request, team, me, error="Pick the role the link gives.", status=400)
    try:
        invitation, token = Invitation.create(team, form.cleaned_data["role"], by=me)
    except TeamError as exc:
        return _team_page(request, team, me, error=str(exc), status=400)
    # The token goes after "#": browsers do not send it, so no access log ever holds it.
    link = request.build_absolute_uri(reverse("invite")) + "#" + token
    # Never stored and never in a redirect: the page that creates it is the only one to show it.
    response = _team_page(request, team, me, extra={"new_link": link, "new_invite": invitation})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def invite_revoke(request: AuthenticatedHttpRequest, pk: int, invite_pk: int) -> HttpResponse:
    team, _ = get_team_for_user(request.user, pk, manage=True)
    invitation = get_object_or_404(team.invitations, pk=invite_pk)
    if invitation.state == "pending":
        invitation.revoke()
        messages.success(request, "The invitation link no longer works.")
    return redirect("team", pk=team.pk)


@require_http_methods(["GET", "POST"])
@login_required
@sensitive_post_parameters("token")
def invite_accept(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The page an invitation link opens. The token is in the link's fragment (after "#"),
    which no server, proxy log or Referer header sees; app.js puts it in this page's form,
    and joining takes that POST (CSRF-protected), so a link preview cannot use it up."""
    if request.method == "GET":
        return _invite_page(request, {"error": ""}, status=200)
    invitation = Invitation.find(request.POST.get("token", ""))
    if invitation is None:
        error = "This invitation link is not valid: ask for a new one."
        return _invite_page(request, {"error": error}, status=404)
    try:
        invitation.accept(request.user)
    except TeamError as exc:
        return _invite_page(request, {"error": str(exc), "invitation": invitation}, status=400)
    set_space(request, invitation.team)
    messages.success(request, f"You joined {invitation.team.name} as {invitation.role}.")
    # A fragment of its own: without one, the browser would carry the link's "#token" over
    # to the team page's address (and history).
    return redirect(reverse("team", args=[invitation.team_id]) + "#members")


def _invite_page(request: HttpRequest, context: dict[str, Any], *, status: int) -> HttpResponse:
    # No Referrer-Policy of its own: the fragment is never in a Referer anyway, and with
    # "no-referrer" browsers send "Origin: null" on the form's POST, which CSRF refuses.
    return render(request, "accounts/invite.html", context, status=status)


@require_POST
@login_required
@sensitive_variables("form")
@sensitive_post_parameters("key")
def team_key_save(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Save or replace the team's key for a provider: write-only, like personal keys."""
    team, me = get_team_for_user(request.user, pk, manage=True)
    form = ApiKeyForm(request.POST)
    slugs = {p.slug for p in catalog.providers()}
    if not form.is_valid() or form.cleaned_data["provider"] not in slugs:
        errors = form.errors.get("key") or ["Pick a provider."]
        return _team_page(request, team, me, error=str(errors[0]), status=400)
    ApiKey.store(
        provider=form.cleaned_data["provider"], plaintext=form.cleaned_data["key"], team=team
    )
    messages.success(request, "Team key saved. It will not be shown again, to anyone.")
    return redirect("team", pk=team.pk)


@require_POST
@login_required
def team_key_delete(request: AuthenticatedHttpRequest, pk: int, provider: str) -> HttpResponse:
    team, _ = get_team_for_user(request.user, pk, manage=True)
    deleted, _ = ApiKey.objects.filter(team=team, provider=provider).delete()
    if deleted:
        messages.success(request, "Team key deleted: members' own keys pay from now on.")
    return redirect("team", pk=team.pk)
