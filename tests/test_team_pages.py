"""Team pages: create a team, add members by name or invitation link, change roles, remove,
leave; the last owner stays; every view checks the team and the role."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from html import unescape
from pathlib import Path

import pytest
from django.db.models.signals import post_delete, post_save
from django.test import Client
from django.utils import timezone

from playground.accounts.models import Invitation, Membership, Team, TeamError
from tests.html import find, text

pytestmark = pytest.mark.django_db
Role = Membership.Role


@pytest.fixture
def carol(django_user_model):
    return django_user_model.objects.create_user("carol", password="correct horse battery")


@pytest.fixture
def lab(user) -> Team:
    """ada owns Lab."""
    return Team.create(name="Lab", owner=user)


def join(team: Team, user, role: str) -> Membership:
    return Membership.objects.create(team=team, user=user, role=role)


def role_of(team: Team, user) -> str | None:
    return team.memberships.filter(user=user).values_list("role", flat=True).first()


def error_of(response) -> str:
    return text(find(response.content, role="alert"))


def test_the_creator_of_a_team_is_its_owner(client, user):
    client.force_login(user)
    response = client.post("/teams/", {"name": "  Research   lab "})
    team = Team.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/teams/{team.pk}/"
    assert team.name == "Research lab" and role_of(team, user) == Role.OWNER
    assert client.session["space"] == team.pk
    page = client.get(f"/teams/{team.pk}/").content.decode()
    assert "ada" in text(find(page, "table", class_="members"))


def test_a_team_name_must_be_new_and_not_empty(client, user, lab):
    client.force_login(user)
    response = client.post("/teams/", {"name": "lab"})
    assert response.status_code == 400 and "already a team called lab" in error_of(response)
    response = client.post("/teams/", {"name": "   "})
    assert response.status_code == 400 and "name" in error_of(response)
    assert Team.objects.count() == 1


def test_strangers_cannot_see_a_team_page(client, other_user, lab):
    client.force_login(other_user)
    assert client.get(f"/teams/{lab.pk}/").status_code == 404
    assert client.post(f"/teams/{lab.pk}/members/", {"username": "eve"}).status_code == 404


def test_the_members_list_shows_each_role(client, user, other_user, carol, lab):
    join(lab, other_user, Role.VIEWER)
    join(lab, carol, Role.ADMIN)
    client.force_login(other_user)
    rows = text(find(client.get(f"/teams/{lab.pk}/").content, "table", class_="members"))
    assert "ada owner" in rows and "carol admin" in rows and "eve (you) viewer" in rows


def test_an_admin_adds_a_member_by_username(client, user, other_user, lab):
    client.force_login(user)
    response = client.post(f"/teams/{lab.pk}/members/", {"username": "eve", "role": "viewer"})
    assert response.status_code == 302
    assert role_of(lab, other_user) == Role.VIEWER


@pytest.mark.parametrize(
    ("username", "role", "message"),
    [
        ("nobody", "member", "no account called nobody"),
        ("ada", "member", "ada is already a member of Lab"),
        ("eve", "emperor", "Give a username and a role"),
        ("", "member", "Give a username and a role"),
    ],
)
def test_adding_a_member_explains_what_is_wrong(
    client, user, other_user, lab, username, role, message
):
    client.force_login(user)
    response = client.post(f"/teams/{lab.pk}/members/", {"username": username, "role": role})
    assert response.status_code == 400 and message in error_of(response)
    assert lab.memberships.count() == 1


def test_a_deactivated_account_cannot_be_added(client, user, other_user, lab):
    other_user.is_active = False
    other_user.save()
    client.force_login(user)
    response = client.post(f"/teams/{lab.pk}/members/", {"username": "eve", "role": "member"})
    assert response.status_code == 400 and "deactivated" in error_of(response)


def test_members_and_viewers_cannot_manage_the_team(client, user, other_user, carol, lab):
    join(lab, other_user, Role.MEMBER)
    viewer = join(lab, carol, Role.VIEWER)
    client.force_login(other_user)
    base = f"/teams/{lab.pk}"
    assert (
        client.post(f"{base}/members/", {"username": "carol", "role": "member"}).status_code == 403
    )
    assert client.post(f"{base}/members/{viewer.pk}/role/", {"role": "owner"}).status_code == 403
    assert client.post(f"{base}/members/{viewer.pk}/remove/").status_code == 403
    assert client.post(f"{base}/invitations/", {"role": "member"}).status_code == 403
    assert role_of(lab, carol) == Role.VIEWER and not Invitation.objects.exists()


def test_an_admin_cannot_make_or_touch_owners(client, user, other_user, carol, lab):
    admin = join(lab, other_user, Role.ADMIN)
    member = join(lab, carol, Role.MEMBER)
    owner = lab.memberships.get(user=user)
    client.force_login(other_user)
    base = f"/teams/{lab.pk}/members"
    response = client.post(f"{base}/{member.pk}/role/", {"role": "owner"})
    assert response.status_code == 400 and "cannot" in error_of(response)
    assert client.post(f"{base}/{owner.pk}/role/", {"role": "viewer"}).status_code == 400
    assert client.post(f"{base}/{owner.pk}/remove/").status_code == 400
    assert client.post(f"{base}/{member.pk}/role/", {"role": "admin"}).status_code == 302
    assert (role_of(lab, user), role_of(lab, carol)) == (Role.OWNER, Role.ADMIN)
    assert admin.pk  # the admin kept their own role


def test_the_last_owner_cannot_be_demoted_or_leave(client, user, lab):
    me = lab.memberships.get(user=user)
    client.force_login(user)
    response = client.post(f"/teams/{lab.pk}/members/{me.pk}/role/", {"role": "admin"})
    assert response.status_code == 400 and "last owner" in error_of(response)
    response = client.post(f"/teams/{lab.pk}/leave/")
    assert response.status_code == 400 and "last owner" in error_of(response)
    assert role_of(lab, user) == Role.OWNER


def test_with_a_second_owner_the_first_may_step_down(client, user, other_user, lab):
    join(lab, other_user, Role.OWNER)
    me = lab.memberships.get(user=user)
    client.force_login(user)
    assert (
        client.post(f"/teams/{lab.pk}/members/{me.pk}/role/", {"role": "member"}).status_code == 302
    )
    assert role_of(lab, user) == Role.MEMBER
    # ...and now eve is the last owner.
    eve = lab.memberships.get(user=other_user)
    client.force_login(other_user)
    assert (
        client.post(f"/teams/{lab.pk}/members/{eve.pk}/role/", {"role": "admin"}).status_code == 400
    )


def test_a_deactivated_owner_does_not_count_as_another_owner(client, user, other_user, carol, lab):
    """Otherwise the team could be left with no owner who can sign in."""
    gone = join(lab, other_user, Role.OWNER)
    other_user.is_active = False
    other_user.save()
    join(lab, carol, Role.MEMBER)
    me = lab.memberships.get(user=user)
    client.force_login(user)
    response = client.post(f"/teams/{lab.pk}/members/{me.pk}/role/", {"role": "admin"})
    assert response.status_code == 400 and "last owner" in error_of(response)
    response = client.post(f"/teams/{lab.pk}/leave/")
    assert response.status_code == 400 and "last owner" in error_of(response)
    assert role_of(lab, user) == Role.OWNER
    with pytest.raises(TeamError, match="last owner"):
        me.remove(by=gone)  # removed by the other owner, were they still able to act
    assert role_of(lab, user) == Role.OWNER
    # The active owner may still demote or remove the deactivated one.
    assert (
        client.post(f"/teams/{lab.pk}/members/{gone.pk}/role/", {"role": "member"}).status_code
        == 302
    )
    assert role_of(lab, other_user) == Role.MEMBER


def test_an_owner_removes_a_member_through_the_model(client, user, other_user, lab):
    """Removal is a model delete: the signals that cut off open sockets fire."""
    member = join(lab, other_user, Role.MEMBER)
    deleted = []

    def record(sender, instance, **kwargs):
        deleted.append(instance.pk)

    post_delete.connect(record, sender=Membership)
    try:
        client.force_login(user)
        response = client.post(f"/teams/{lab.pk}/members/{member.pk}/remove/")
    finally:
        post_delete.disconnect(record, sender=Membership)
    assert response.status_code == 302
    assert deleted == [member.pk] and role_of(lab, other_user) is None


def test_a_role_change_is_a_model_save(client, user, other_user, lab):
    member = join(lab, other_user, Role.MEMBER)
    saved = []

    def record(sender, instance, **kwargs):
        saved.append((instance.pk, instance.role))

    post_save.connect(record, sender=Membership)
    try:
        client.force_login(user)
        client.post(f"/teams/{lab.pk}/members/{member.pk}/role/", {"role": "viewer"})
    finally:
        post_save.disconnect(record, sender=Membership)
    assert saved == [(member.pk, Role.VIEWER)]


def test_a_member_leaves(client, user, other_user, lab):
    join(lab, other_user, Role.MEMBER)
    client.force_login(other_user)
    response = client.post(f"/teams/{lab.pk}/leave/")
    assert response.status_code == 302 and response["Location"] == "/teams/"
    assert role_of(lab, other_user) is None
    assert client.get(f"/teams/{lab.pk}/").status_code == 404


def test_a_member_cannot_be_removed_through_another_teams_url(client, user, other_user, lab):
    theirs = Team.create(name="Theirs", owner=other_user)
    victim = theirs.memberships.get()
    client.force_login(user)
    assert client.post(f"/teams/{lab.pk}/members/{victim.pk}/remove/").status_code == 404
    assert theirs.memberships.count() == 1


def test_team_forms_need_the_csrf_token(user, other_user, lab):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(f"/teams/{lab.pk}/members/", {"username": "eve", "role": "member"})
    assert response.status_code == 403 and role_of(lab, other_user) is None


# Invitation links


def invite(client, team, role="member") -> str:
    """Create a link on the team page; its token, from the link's fragment."""
    response = client.post(f"/teams/{team.pk}/invitations/", {"role": role})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    link = unescape(text(find(response.content, id="invite-url")))
    match = re.fullmatch(r"http://testserver/invite/#([A-Za-z0-9_-]+)", link)
    assert match, link
    return match[1]


def accept(client, token: str):
    return client.post("/invite/", {"token": token})


def test_an_invitation_link_is_shown_once_and_stored_as_a_hash(client, user, lab):
    client.force_login(user)
    token = invite(client, lab, "viewer")
    assert len(token) >= 43  # 256 bits, url-safe base64
    invitation = Invitation.objects.get()
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert invitation.role == Role.VIEWER
    assert token not in client.get(f"/teams/{lab.pk}/").content.decode()


def test_the_token_travels_after_the_hash_so_no_server_log_sees_it(client, user, other_user, lab):
    """Browsers never send a URL's fragment: the page gets the token into its form by
    script and posts it. The GET that opening the link makes carries no token at all."""
    client.force_login(user)
    invite(client, lab)
    client.force_login(other_user)
    page = client.get("/invite/")
    assert page.status_code == 200
    field = find(page.content, "input", name="token")
    assert dict(field.attributes)["id"] == "invite-token" and not dict(field.attributes)["value"]
    assert "invite-token" in (Path(__file__).parents[1] / "static/js/app.js").read_text()


def test_an_invitation_link_works_once_with_its_role(client, user, other_user, carol, lab):
    client.force_login(user)
    token = invite(client, lab, "viewer")
    client.force_login(other_user)
    response = accept(client, token)
    # Its own fragment, so the browser does not carry "#token" over to the team page.
    assert response.status_code == 302 and response["Location"] == f"/teams/{lab.pk}/#members"
    assert role_of(lab, other_user) == Role.VIEWER
    assert "You joined Lab as viewer" in client.get(response["Location"]).content.decode()
    assert client.session["space"] == lab.pk
    client.force_login(carol)
    response = accept(client, token)
    assert response.status_code == 400 and "used" in error_of(response)
    assert role_of(lab, carol) is None


def test_expired_revoked_and_unknown_links_are_refused(client, user, other_user, lab):
    client.force_login(user)
    expired = invite(client, lab)
    Invitation.objects.update(expires=timezone.now() - timedelta(seconds=1))
    revoked = invite(client, lab)
    pending = Invitation.objects.get(expires__gt=timezone.now())
    assert client.post(f"/teams/{lab.pk}/invitations/{pending.pk}/revoke/").status_code == 302
    client.force_login(other_user)
    response = accept(client, expired)
    assert response.status_code == 400 and "expired" in error_of(response)
    response = accept(client, revoked)
    assert response.status_code == 400 and "revoked" in error_of(response)
    response = accept(client, "not-a-real-token")
    assert response.status_code == 404 and "not valid" in error_of(response)
    assert accept(client, "").status_code == 404
    assert role_of(lab, other_user) is None


@pytest.mark.parametrize(
    ("change", "state"),
    [
        ({"revoked_at": timezone.now}, "revoked"),
        ({"expires": lambda: timezone.now() - timedelta(seconds=1)}, "expired"),
    ],
)
def test_a_link_revoked_or_expired_while_being_accepted_lets_nobody_in(
    client, user, other_user, lab, change, state
):
    """The check passed on the row as read; the claim must still find the link pending."""
    client.force_login(user)
    token = invite(client, lab)
    invitation = Invitation.find(token)
    assert invitation is not None and invitation.state == "pending"
    # Revoked (or expired) after the accepting request read the row, before its claim.
    Invitation.objects.filter(pk=invitation.pk).update(**{k: f() for k, f in change.items()})
    with pytest.raises(TeamError, match=f"This invitation is {state}: ask for a new one."):
        invitation.accept(other_user)
    assert role_of(lab, other_user) is None
    fresh = Invitation.objects.get()
    assert fresh.state == state and fresh.used_at is None and fresh.used_by is None


def test_accepting_needs_login_and_the_csrf_token(user, other_user, lab):
    owner = Client()
    owner.force_login(user)
    token = invite(owner, lab)
    anonymous = Client()
    response = anonymous.post("/invite/", {"token": token})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(other_user)
    assert strict.post("/invite/", {"token": token}).status_code == 403
    assert role_of(lab, other_user) is None and Invitation.objects.get().state == "pending"


def test_an_admin_cannot_invite_an_owner_and_strangers_cannot_revoke(
    client, user, other_user, carol, lab
):
    join(lab, other_user, Role.ADMIN)
    client.force_login(other_user)
    response = client.post(f"/teams/{lab.pk}/invitations/", {"role": "owner"})
    assert response.status_code == 400 and not Invitation.objects.exists()
    invite(client, lab, "admin")
    theirs = Team.create(name="Theirs", owner=carol)
    client.force_login(carol)
    pending = Invitation.objects.get()
    assert client.post(f"/teams/{theirs.pk}/invitations/{pending.pk}/revoke/").status_code == 404
    assert client.post(f"/teams/{lab.pk}/invitations/{pending.pk}/revoke/").status_code == 404
    assert Invitation.objects.get().state == "pending"


def test_a_member_cannot_join_twice_by_link(client, user, lab):
    client.force_login(user)
    response = accept(client, invite(client, lab))
    assert response.status_code == 400 and "already a member" in error_of(response)
    assert Invitation.objects.get().state == "pending"


def test_a_removed_admin_cannot_come_back_through_a_link_they_made(
    client, user, other_user, carol, lab
):
    """A link carries its maker's right to invite: removed, or demoted below the role it
    gives, the maker no longer has it, so neither they nor whoever holds the link join."""
    admin = join(lab, other_user, Role.ADMIN)
    client.force_login(other_user)
    comeback = invite(client, lab, "admin")
    for_carol = invite(client, lab, "admin")
    client.force_login(user)
    me = lab.memberships.get(user=user)
    admin.remove(by=me)
    client.force_login(other_user)
    response = accept(client, comeback)
    assert response.status_code == 400 and "ask for a new one" in error_of(response)
    assert role_of(lab, other_user) is None
    join(lab, other_user, Role.ADMIN).set_role(Role.MEMBER, by=me)
    client.force_login(carol)
    assert accept(client, for_carol).status_code == 400
    assert role_of(lab, carol) is None
