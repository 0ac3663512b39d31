"""Spaces: Personal and each of the user's teams; conversations and presets belong to one."""

from __future__ import annotations

import pytest

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Preset
from tests.html import attr, find, find_all, text

MODEL = "empiriolabs:gemma-4-e4b"
HX = {"HX-Request": "true"}
pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(user, other_user) -> Team:
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=other_user, role=Membership.Role.OWNER)
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    return team


def part(page, element_id: str) -> str:
    return text(find(page, id=element_id))


def items_of(page) -> list[int]:
    return [int(attr(li, "id").removeprefix("conv-")) for li in find_all(page, "li", class_="conv")]


def switch(client, space) -> None:
    response = client.post("/space/", {"space": space})
    assert response.status_code == 302


def test_the_header_lists_personal_and_each_team_of_the_user(client, user, lab):
    Team.objects.create(name="Secret society")
    client.force_login(user)
    page = client.get("/", follow=True).content.decode()
    switcher = part(page, "space-switcher")
    assert "Personal" in switcher and "Lab" in switcher
    assert "Secret society" not in page


def test_switching_to_a_team_makes_new_conversations_there(client, user, lab):
    client.force_login(user)
    switch(client, lab.pk)
    assert client.session["space"] == lab.pk
    response = client.post("/c/new/")
    created = Conversation.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))
    assert created.team == lab and created.owner == user
    home = client.get("/")
    assert Conversation.objects.get(pk=int(home["Location"].strip("/").split("/")[-1])).team == lab
    switch(client, "personal")
    response = client.post("/c/new/")
    personal = Conversation.objects.order_by("-pk").first()
    assert personal.team is None and client.session["space"] is None


def test_a_user_cannot_switch_into_a_team_they_do_not_belong_to(client, user, other_user):
    theirs = Team.objects.create(name="Theirs")
    Membership.objects.create(team=theirs, user=other_user, role=Membership.Role.OWNER)
    client.force_login(user)
    assert client.post("/space/", {"space": theirs.pk}).status_code == 404
    assert client.post("/space/", {"space": "nonsense"}).status_code == 404
    assert client.session.get("space") is None
    client.post("/c/new/")
    assert not Conversation.objects.filter(team=theirs).exists()


def test_a_viewer_cannot_start_a_conversation_in_the_team(client, user, lab):
    Membership.objects.filter(team=lab, user=user).update(role=Membership.Role.VIEWER)
    client.force_login(user)
    switch(client, lab.pk)
    assert client.post("/c/new/").status_code == 403
    response = client.get("/")
    assert response.status_code == 200 and b"not start one" in response.content
    assert not Conversation.objects.exists()
    shared = Conversation.objects.create(owner=lab.memberships.first().user, team=lab, model=MODEL)
    assert client.get("/")["Location"] == f"/c/{shared.pk}/"


def test_a_removed_member_falls_back_to_personal(client, user, lab):
    client.force_login(user)
    switch(client, lab.pk)
    Membership.objects.get(team=lab, user=user).delete()
    client.get("/")
    assert client.session.get("space") is None
    assert Conversation.objects.get(owner=user).team is None


def test_opening_a_conversation_enters_its_space_and_lists_only_that_space(
    client, user, other_user, lab
):
    mine = Conversation.objects.create(owner=user, model=MODEL, title="Personal notes")
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL, title="Shared")
    client.force_login(user)
    page = client.get(f"/c/{shared.pk}/").content.decode()
    assert client.session["space"] == lab.pk
    assert items_of(page) == [shared.pk]
    assert "Team Lab" in part(page, "conversation-head")
    page = client.get(f"/c/{mine.pk}/").content.decode()
    assert client.session["space"] is None
    assert items_of(page) == [mine.pk]


def test_the_owner_moves_a_personal_conversation_into_a_team(client, user, other_user, lab):
    mine = Conversation.objects.create(owner=user, model=MODEL, title="Draft")
    client.force_login(user)
    page = client.get(f"/c/{mine.pk}/").content.decode()
    assert "Move to team" in page
    response = client.post(f"/c/{mine.pk}/move/", {"team": lab.pk}, headers=HX)
    assert response.status_code == 200 and response["HX-Redirect"] == f"/c/{mine.pk}/"
    mine.refresh_from_db()
    assert mine.team == lab
    assert Conversation.objects.visible_to(other_user).filter(pk=mine.pk).exists()
    assert client.session["space"] == lab.pk
    # Once in a team it stays there: no second move.
    assert client.post(f"/c/{mine.pk}/move/", {"team": lab.pk}).status_code == 403


def test_only_the_owner_moves_and_only_into_a_team_where_they_may_run(
    client, user, other_user, lab
):
    mine = Conversation.objects.create(owner=user, model=MODEL)
    client.force_login(other_user)
    assert client.post(f"/c/{mine.pk}/move/", {"team": lab.pk}).status_code == 404
    theirs = Team.objects.create(name="Theirs")
    Membership.objects.create(team=theirs, user=other_user, role=Membership.Role.OWNER)
    client.force_login(user)
    assert client.post(f"/c/{mine.pk}/move/", {"team": theirs.pk}).status_code == 404
    Membership.objects.filter(team=lab, user=user).update(role=Membership.Role.VIEWER)
    response = client.post(f"/c/{mine.pk}/move/", {"team": lab.pk})
    assert response.status_code == 403 and b"cannot start conversations" in response.content
    mine.refresh_from_db()
    assert mine.team is None


def test_a_refused_move_shows_the_team_name_as_text_not_markup(client, user, lab):
    # The team's owner chose its name; a viewer's refusal must not turn it into markup.
    Team.objects.filter(pk=lab.pk).update(name='<form action="/keys/"><b>Lab</b>')
    Membership.objects.filter(team=lab, user=user).update(role=Membership.Role.VIEWER)
    mine = Conversation.objects.create(owner=user, model=MODEL)
    client.force_login(user)
    response = client.post(f"/c/{mine.pk}/move/", {"team": lab.pk})
    assert response.status_code == 403
    body = response.content.decode()
    as_text = response["Content-Type"].startswith("text/plain")
    assert as_text or ("<form" not in body and "<b>" not in body)
    assert "Lab" in body


def test_presets_belong_to_the_conversations_space(client, user, other_user, lab):
    personal = Conversation.objects.create(owner=user, model=MODEL)
    shared = Conversation.objects.create(owner=user, team=lab, model=MODEL)
    client.force_login(user)
    client.post(f"/c/{personal.pk}/presets/", {"preset_name": "Mine", "model": MODEL}, headers=HX)
    client.post(f"/c/{shared.pk}/presets/", {"preset_name": "Ours", "model": MODEL}, headers=HX)
    assert Preset.objects.get(name="Mine").team is None
    assert Preset.objects.get(name="Ours").team == lab
    page = client.get(f"/c/{shared.pk}/").content.decode()
    assert "Ours" in part(page, "presets") and "Mine" not in part(page, "presets")
    # A teammate sees and loads the team's preset, never ada's personal one.
    client.force_login(other_user)
    page = client.get(f"/c/{shared.pk}/").content.decode()
    assert "Ours" in part(page, "presets") and "Mine" not in page
    mine = Preset.objects.get(name="Mine")
    assert client.post(f"/c/{shared.pk}/presets/{mine.pk}/load/", headers=HX).status_code == 404
    ours = Preset.objects.get(name="Ours")
    assert client.post(f"/c/{shared.pk}/presets/{ours.pk}/load/", headers=HX).status_code == 200


def test_a_viewer_uses_team_presets_but_cannot_change_them(client, user, other_user, lab):
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
    ours = Preset.objects.create(owner=other_user, team=lab, name="Ours", model=MODEL)
    Membership.objects.filter(team=lab, user=user).update(role=Membership.Role.VIEWER)
    client.force_login(user)
    base = f"/c/{shared.pk}/presets/"
    assert client.post(base, {"preset_name": "X", "model": MODEL}, headers=HX).status_code == 403
    assert client.post(f"{base}{ours.pk}/rename/", {"name": "Y"}, headers=HX).status_code == 403
    assert client.post(f"{base}{ours.pk}/delete/", headers=HX).status_code == 403
    assert list(Preset.objects.values_list("name", flat=True)) == ["Ours"]
    page = client.get(f"/c/{shared.pk}/").content.decode()
    assert "Ours" in part(page, "presets") and 'id="preset-name"' not in page
