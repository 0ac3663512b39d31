"""Deleting a compare or sweep: from its page (behind a confirm page) or from a History row;
for whoever started it and the team's owners and admins; runs still streaming are stopped
first through the one stop function; its conversations and messages go with it."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from playground.accounts.models import Membership, Team
from playground.chat import runs
from playground.chat.models import Conversation, Message, RunGroup
from tests.test_compare import MODEL, client_for, make_compare, open_group
from tests.test_stopping import told
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]


def _with_replies(group: RunGroup) -> list[Message]:
    return [
        Message.objects.create(conversation=c, role="assistant", text=f"Said {c.position}")
        for c in group.conversations.all()
    ]


def _team(owner, django_user_model) -> Team:
    team = Team.create(name="Lab", owner=owner)
    for name, role in (("mia", "member"), ("max", "member"), ("adam", "admin"), ("vic", "viewer")):
        team.add_member(django_user_model.objects.create_user(name), role)
    return team


def _role(team: Team, name: str):
    return team.memberships.get(user__username=name).user


def test_deleting_removes_the_group_its_conversations_and_messages(user):
    group = make_compare(user)
    _with_replies(group)
    continued = group.conversations.first()
    continued.group = None  # continued in the playground: a plain chat now
    continued.save()
    Message.objects.create(conversation=continued, role="user", text="Mine now")
    plain = Conversation.objects.create(owner=user, model=MODEL, title="Plain")

    response = client_for(user).post(f"/compare/{group.pk}/delete/")

    assert response.status_code == 302 and response["Location"] == "/compare/"
    assert not RunGroup.objects.exists()
    assert set(Conversation.objects.values_list("pk", flat=True)) == {continued.pk, plain.pk}
    assert set(Message.objects.values_list("conversation_id", flat=True)) == {continued.pk}


def test_the_page_links_a_confirm_page_that_says_what_goes(user):
    group = make_compare(user)
    _with_replies(group)
    client = client_for(user)

    page = client.get(f"/compare/{group.pk}/").content.decode()
    assert f'href="/compare/{group.pk}/delete/"' in page

    confirm = client.get(f"/compare/{group.pk}/delete/")
    text = confirm.content.decode()
    assert confirm.status_code == 200 and "Delete Duel?" in text
    assert "2 conversations and 2 replies" in text
    assert f'<form method="post" action="/compare/{group.pk}/delete/"' in text
    assert RunGroup.objects.filter(pk=group.pk).exists()  # a GET deletes nothing


def test_htmx_is_sent_to_the_list(user):
    group = make_compare(user)
    response = client_for(user).post(f"/compare/{group.pk}/delete/", headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == "/compare/"
    assert not RunGroup.objects.exists()


def test_who_may_delete_a_team_group(user, django_user_model):
    team = _team(user, django_user_model)
    mine = make_compare(_role(team, "mia"), team, title="Mia's")
    _with_replies(mine)

    for name, status in (("max", 403), ("vic", 403)):
        client = client_for(_role(team, name))
        assert client.post(f"/compare/{mine.pk}/delete/").status_code == status
        assert client.get(f"/compare/{mine.pk}/delete/").status_code == status
        assert f"/compare/{mine.pk}/delete/" not in client.get(f"/compare/{mine.pk}/").text
    stranger = client_for(django_user_model.objects.create_user("eve2"))
    assert stranger.post(f"/compare/{mine.pk}/delete/").status_code == 404
    assert Message.objects.filter(conversation__group=mine).count() == 2

    client_for(_role(team, "mia")).post(f"/compare/{mine.pk}/delete/")
    assert not RunGroup.objects.filter(pk=mine.pk).exists()

    others = make_compare(_role(team, "mia"), team, title="Tidied")
    client_for(_role(team, "adam")).post(f"/compare/{others.pk}/delete/")
    assert not RunGroup.objects.filter(pk=others.pk).exists()


def test_a_starter_demoted_to_viewer_deletes_nothing(user, django_user_model):
    team = _team(user, django_user_model)
    mia = _role(team, "mia")
    group = make_compare(mia, team)
    Membership.objects.filter(team=team, user=mia).update(role=Membership.Role.VIEWER)
    assert client_for(mia).post(f"/compare/{group.pk}/delete/").status_code == 403
    assert RunGroup.objects.filter(pk=group.pk).exists()


def test_an_experiment_group_is_not_deleted_here(user):
    group = RunGroup.objects.create(kind=RunGroup.Kind.EXPERIMENT, owner=user)
    assert client_for(user).post(f"/compare/{group.pk}/delete/").status_code == 404
    assert RunGroup.objects.filter(pk=group.pk).exists()


async def test_runs_still_streaming_are_told_to_stop_before_the_rows_go(user, monkeypatch):
    monkeypatch.setattr(runs, "STOP_REPEAT_AFTER", 0.2)
    group = await database_sync_to_async(make_compare)(user)
    column = await group.conversations.afirst()
    await Message.objects.acreate(
        conversation=column, role="assistant", status="streaming", run_channel="run.col"
    )
    web = AsyncClient()
    await web.aforce_login(user)

    response = await web.post(f"/compare/{group.pk}/delete/")

    assert response.status_code == 302
    assert not await Message.objects.aexists()
    assert await told("run.col") == ["run.stop", "run.stop"]


async def test_deleting_a_compare_mid_stream_closes_every_columns_upstream(upstream, user, api_key):
    upstream.default = Behaviour(n_tokens=500, interval=0.01)
    group = await database_sync_to_async(make_compare)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="Go on")
    await socket.until(lambda f: f.startswith("+t"))
    web = AsyncClient()
    await web.aforce_login(user)

    response = await web.post(f"/compare/{group.pk}/delete/")

    assert response.status_code == 302
    for _ in range(2):
        assert await asyncio.to_thread(upstream.wait_for_disconnect, 5)
    assert all(d.tokens_sent < 500 for d in upstream.disconnects[-2:])
    assert not await Conversation.objects.filter(group_id=group.pk).aexists()
    await socket.close()


def test_history_deletes_a_groups_rows_in_place(user, django_user_model):
    team = _team(user, django_user_model)
    mia = _role(team, "mia")
    group = make_compare(mia, team)
    _with_replies(group)
    others = make_compare(_role(team, "max"), team, title="Max's")
    _with_replies(others)
    client = client_for(mia)
    columns = list(group.conversations.values_list("pk", flat=True))

    page = client.get("/review/").content.decode()
    delete = f'hx-post="/compare/{group.pk}/delete/"'
    assert page.count(delete) == 2  # on each of its rows, with a confirm
    assert f'hx-post="/compare/{others.pk}/delete/"' not in page  # not Mia's to delete
    assert "hx-confirm=" in page and 'hx-vals=\'{"from": "history"}\'' in page

    response = client.post(
        f"/compare/{group.pk}/delete/", {"from": "history"}, headers={"HX-Request": "true"}
    )

    answer = response.content.decode()
    assert response.status_code == 200
    for pk in columns:
        assert f'<li id="history-{pk}" hx-swap-oob="delete"></li>' in answer
    assert 'id="history-notice" hx-swap-oob="true" role="status"' in answer
    assert "Deleted Duel and its 2 conversations." in answer
    assert not RunGroup.objects.filter(pk=group.pk).exists()
    assert RunGroup.objects.filter(pk=others.pk).exists()


def test_history_offers_an_admin_every_groups_delete_and_a_viewer_none(user, django_user_model):
    team = _team(user, django_user_model)
    group = make_compare(_role(team, "mia"), team)
    assert (
        f'hx-post="/compare/{group.pk}/delete/"'
        in client_for(_role(team, "adam")).get("/review/").content.decode()
    )
    assert "/delete/" not in client_for(_role(team, "vic")).get("/review/").content.decode()
